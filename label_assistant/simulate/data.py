"""The data of an experiment: pool and test images with ground truth, and their sequences."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.datasets import Example, load_example, pair_files
from label_assistant.labelmap import UNLABELED
from label_assistant.simulate.settings import SimulationError, SimulationSettings

# ---------------------------------------------------------------- data


@dataclass
class Dataset:
    """The pool and test images, ground truth included, and the pool's sequences. The pool
    is in name order, or sequence by sequence (then name) when --groups or --sequence-regex
    give the sequences: the order a folder is labeled in, which `sequential` follows."""

    pool: list[Example]
    test: list[Example]
    sequences: list[str | None]
    class_names: list[str]  # background first

    @property
    def n_classes(self) -> int:
        return len(self.class_names) - 1

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data in the settings hash."""
        digest = hashlib.sha256()
        for e in self.pool + self.test:
            digest.update(f"{e.name}:{e.content_hash};".encode())
        for s in self.sequences:
            digest.update(f"{s};".encode())
        return {"pool": len(self.pool), "test": [e.name for e in self.test],
                "data_hash": digest.hexdigest()[:12]}


def parse_test_split(spec: str, names: Sequence[str],
                     groups: Sequence[str] | None = None) -> list[int]:
    """Indices of the test images among ``names`` (name order).

    ``last:N`` / ``first:N``: the last / first N; ``every:N``: positions 0, N, 2N, ...;
    ``list:a,b``: these images (file name or stem); ``stratified:N``: N images of each group
    of ``groups`` (one id per name), evenly spaced in name order within the group, and never
    a group's last image (every group keeps one in the pool). At least one image must stay in
    the pool.
    """
    kind, _, value = str(spec).partition(":")
    n = len(names)
    if kind == "stratified":
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise SimulationError(f"test split {spec!r}: stratified needs a positive count per "
                                  "group, like stratified:2")
        if groups is None or len(set(groups)) == len(groups):
            raise SimulationError(f"test split {spec!r} needs groups: give --groups, "
                                  "--sequence-regex or --sequence-clusters")
        chosen = _stratified(int(value), groups)
    elif kind in ("last", "first", "every"):
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise SimulationError(f"test split {spec!r}: {kind} needs a positive count, "
                                  f"like {kind}:3")
        k = int(value)
        if kind == "last":
            chosen = list(range(max(n - k, 0), n))
        elif kind == "first":
            chosen = list(range(min(k, n)))
        else:
            chosen = list(range(0, n, k))
    elif kind == "list":
        chosen = _named(value, names, spec)
    else:
        raise SimulationError(f"test split {spec!r}: use last:N, first:N, every:N, "
                              "stratified:N or list:a,b,c")
    if not chosen:
        raise SimulationError(f"test split {spec!r} selects no image")
    if len(chosen) >= n:
        raise SimulationError(f"test split {spec!r} leaves no image for the pool ({n} images)")
    return chosen


def _stratified(per_group: int, groups: Sequence[str]) -> list[int]:
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    chosen: list[int] = []
    for indices in members.values():
        k = min(per_group, len(indices) - 1)
        # evenly spaced: the middle of each of k equal parts of the group
        chosen += [indices[int((j + 0.5) * len(indices) / k)] for j in range(k)]
    return sorted(chosen)


def read_groups(path: str | Path) -> dict[str, str]:
    """``name -> group`` from a CSV file with the columns ``name`` and ``group`` (a header
    row); a name is a file name or its stem."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        raise SimulationError(f"can't read --groups {path}: {error.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise SimulationError(f"--groups {path} is not a CSV file: {error}") from None
    if not rows or not {"name", "group"} <= set(rows[0]):
        raise SimulationError(f"--groups {path} needs a header row with the columns name and "
                              "group, and at least one row")
    groups: dict[str, str] = {}
    for row in rows:
        name, group = (row.get("name") or "").strip(), (row.get("group") or "").strip()
        if name and group:
            groups[name] = group
            groups.setdefault(Path(name).stem, group)
    return groups


def _group_ids(examples: list[Example], settings: SimulationSettings) -> list[str] | None:
    """Each image's group (experiment or sequence) from --groups, the name pattern or clusters
    of the image descriptors; None when none is given (or --sequence-chunks: pool order)."""
    from label_assistant.selectors.diversity import image_descriptor
    from label_assistant.selectors.pool import PoolError, stack_vectors
    from label_assistant.selectors.sequences import (
        SequencePatternError,
        cluster_ids,
        sequence_ids,
    )

    names = [e.name for e in examples]
    if settings.groups is not None:
        table = read_groups(settings.groups)
        missing = [n for n in names if n not in table and Path(n).stem not in table]
        if missing:
            raise SimulationError(f"--groups {settings.groups} has no group for {missing[0]} "
                                  f"({len(missing)} images without one)")
        return [table.get(n, table.get(Path(n).stem, "")) for n in names]
    if settings.sequence_clusters is not None:
        # grey and colour images mixed: stack_vectors makes their descriptors comparable
        k = None if settings.sequence_clusters == "auto" else int(settings.sequence_clusters)
        try:
            descriptors = stack_vectors([image_descriptor(e.image) for e in examples],
                                        "image descriptors")
            return cluster_ids(descriptors, k=k)
        except (PoolError, SequencePatternError) as error:
            raise SimulationError(str(error)) from None
    if settings.sequence_regex is not None:
        try:
            return sequence_ids(names, regex=settings.sequence_regex)
        except SequencePatternError as error:
            raise SimulationError(str(error)) from None
    return None


def _named(value: str, names: Sequence[str], spec: str) -> list[int]:
    index = {}
    for i, name in enumerate(names):
        index[name] = i
        index.setdefault(Path(name).stem, i)
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    missing = [v for v in wanted if v not in index]
    if missing:
        raise SimulationError(f"test split {spec!r}: no image named {missing[0]!r}")
    return sorted({index[v] for v in wanted})


def sequence_chunks(n: int, chunks: int) -> list[str]:
    """Sequence ids cutting ``n`` ordered images into ``chunks`` contiguous runs (sizes differ
    by at most one, the longer ones first): a single z-stack or movie as several sequences."""
    if not 1 <= chunks <= n:
        raise SimulationError(f"--sequence-chunks must be in 1..{n} (pool images), got {chunks}")
    width = len(str(chunks))
    ids: list[str] = []
    for c, part in enumerate(np.array_split(np.arange(n), chunks), start=1):
        ids.extend([f"chunk{c:0{width}d}"] * len(part))
    return ids


def load_dataset(
    images: Sequence[Path], masks: Sequence[Path], settings: SimulationSettings,
    progress: Callable[[Any], Any] | None = None,
) -> Dataset:
    """Pair, read and split the data; sequences (groups) from --groups, the regex, clusters of
    the image descriptors or the chunks; without any, each image is its own sequence."""
    from label_assistant.datasets import DatasetError
    from label_assistant.images import ImageError
    from label_assistant.selectors.sequences import sequence_ids

    try:
        pairs = pair_files(list(images), list(masks))
        pairs = progress(pairs) if progress is not None else pairs
        examples = [load_example(i, m, settings.mask_type, settings.invert) for i, m in pairs]
    except (DatasetError, ImageError) as error:
        raise SimulationError(str(error)) from None
    groups = _group_ids(examples, settings)
    test_index = set(parse_test_split(settings.test_split, [e.name for e in examples], groups))
    pool = [e for i, e in enumerate(examples) if i not in test_index]
    test = [e for i, e in enumerate(examples) if i in test_index]
    if settings.budgets[-1] > len(pool):
        raise SimulationError(
            f"the last round needs {settings.budgets[-1]} images but the pool has {len(pool)}"
        )
    sequences: list[str | None]
    if settings.sequence_chunks is not None:
        sequences = list(sequence_chunks(len(pool), settings.sequence_chunks))
    elif groups is not None:
        sequences = [g for i, g in enumerate(groups) if i not in test_index]
    else:
        sequences = list(sequence_ids([e.name for e in pool]))
    if settings.groups is not None or settings.sequence_regex is not None:
        # Acquisition order: a folder is labeled sequence by sequence (experiment by
        # experiment), so `sequential` takes one sequence before the next, as in the
        # reference's sequential baseline, not the name order of hashed file names.
        order = sorted(range(len(pool)), key=lambda i: (sequences[i] or "", pool[i].name))
        pool, sequences = [pool[i] for i in order], [sequences[i] for i in order]
    k = max(int(e.label_map[e.label_map != UNLABELED].max(initial=0)) for e in examples)
    return Dataset(pool, test, sequences, ["Background", *[f"Class{i}" for i in
                                                           range(1, max(k, 1) + 1)]])


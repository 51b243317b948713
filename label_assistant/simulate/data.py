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
    """The pool (name order) and test images, ground truth included, and the pool's sequences."""

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
        return {"pool": len(self.pool), "test": [e.name for e in self.test],
                "data_hash": digest.hexdigest()[:12]}


def parse_test_split(spec: str, names: Sequence[str]) -> list[int]:
    """Indices of the test images among ``names`` (name order).

    ``last:N`` / ``first:N``: the last / first N; ``every:N``: positions 0, N, 2N, ...;
    ``list:a,b``: these images (file name or stem). At least one image must stay in the pool.
    """
    kind, _, value = str(spec).partition(":")
    n = len(names)
    if kind in ("last", "first", "every"):
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
        raise SimulationError(f"test split {spec!r}: use last:N, first:N, every:N or list:a,b,c")
    if not chosen:
        raise SimulationError(f"test split {spec!r} selects no image")
    if len(chosen) >= n:
        raise SimulationError(f"test split {spec!r} leaves no image for the pool ({n} images)")
    return chosen


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
    """Pair, read and split the data; sequences from the regex or the chunks."""
    from label_assistant.datasets import DatasetError
    from label_assistant.images import ImageError
    from label_assistant.selectors.sequences import SequencePatternError, sequence_ids

    try:
        pairs = pair_files(list(images), list(masks))
        pairs = progress(pairs) if progress is not None else pairs
        examples = [load_example(i, m, settings.mask_type, settings.invert) for i, m in pairs]
    except (DatasetError, ImageError) as error:
        raise SimulationError(str(error)) from None
    test_index = set(parse_test_split(settings.test_split, [e.name for e in examples]))
    pool = [e for i, e in enumerate(examples) if i not in test_index]
    test = [e for i, e in enumerate(examples) if i in test_index]
    if settings.budgets[-1] > len(pool):
        raise SimulationError(
            f"the last round needs {settings.budgets[-1]} images but the pool has {len(pool)}"
        )
    if settings.sequence_chunks is not None:
        sequences: list[str | None] = list(sequence_chunks(len(pool), settings.sequence_chunks))
    else:
        try:
            sequences = list(sequence_ids([e.name for e in pool], regex=settings.sequence_regex))
        except SequencePatternError as error:
            raise SimulationError(str(error)) from None
    k = max(int(e.label_map[e.label_map != UNLABELED].max(initial=0)) for e in examples)
    return Dataset(pool, test, sequences, ["Background", *[f"Class{i}" for i in
                                                           range(1, max(k, 1) + 1)]])


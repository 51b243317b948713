"""Sequence ids of pool images: from a task data field, a file-name pattern, or clusters.

Images of one time-lapse sequence look alike, so labeling one per sequence first covers the
data set best (Schilling et al. 2021: 32 images, one per sequence, 80.6 Dice vs 77.7 random).
An image without a sequence id is its own sequence, with the id ``own_sequence_id(i, name)``.
Where nothing names the experiment an image comes from, :func:`cluster_ids` groups images by
their descriptors (k-means), so that "one per experiment" still works without metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Own sequence ids start with this, so they can't be mistaken for a data field value.
OWN_PREFIX = "#"


class SequencePatternError(ValueError):
    """The sequence pattern is not a valid regular expression, or the inputs don't line up."""


def own_sequence_id(index: int, name: str) -> str:
    """The id of an image that belongs to no named sequence (unique by its pool index)."""
    return f"{OWN_PREFIX}{index}:{name}"


def is_own_sequence(sequence_id: str) -> bool:
    """True for ids made by :func:`own_sequence_id`."""
    return sequence_id.startswith(OWN_PREFIX)


def compile_pattern(regex: str) -> re.Pattern[str]:
    """Compile a sequence pattern; the id is group ``seq``, else group 1, else the match."""
    try:
        return re.compile(regex)
    except re.error as err:
        raise SequencePatternError(f"invalid sequence pattern {regex!r}: {err}") from None


def _from_match(pattern: re.Pattern[str], name: str) -> str | None:
    match = pattern.search(name)
    if match is None:
        return None
    if "seq" in pattern.groupindex:
        value = match.group("seq")
    elif pattern.groups:
        value = match.group(1)
    else:
        value = match.group(0)
    return value or None


def _from_data(item: Mapping[str, Any] | None, field: str) -> str | None:
    if not item:
        return None
    value = item.get(field)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def sequence_ids(
    names: Sequence[str],
    *,
    data: Sequence[Mapping[str, Any] | None] | None = None,
    field: str = "sequence",
    regex: str | None = None,
) -> list[str]:
    """One sequence id per name, in order.

    The task data ``field`` wins where it holds a non-empty value; else ``regex`` is searched
    in the name (``re.search``; the named group ``seq``, else the first group, else the whole
    match); else the image is its own sequence.
    """
    if data is not None and len(data) != len(names):
        raise SequencePatternError(f"{len(data)} data items for {len(names)} names")
    pattern = compile_pattern(regex) if regex is not None else None
    ids = []
    for i, name in enumerate(names):
        seq = _from_data(data[i], field) if data is not None else None
        if seq is None and pattern is not None:
            seq = _from_match(pattern, name)
        ids.append(seq if seq is not None else own_sequence_id(i, name))
    return ids


#: Cluster ids look like ``cluster03``; k is chosen in 2..MAX_CLUSTERS when not given.
CLUSTER_PREFIX = "cluster"
MAX_CLUSTERS = 12
_CLUSTER_ID = re.compile(rf"{CLUSTER_PREFIX}\d{{2,}}")


def is_cluster_id(sequence_id: str) -> bool:
    """True for ids made by :func:`cluster_ids` (``cluster03``; a data field value of that
    form reads the same)."""
    return _CLUSTER_ID.fullmatch(sequence_id) is not None


def cluster_ids(embeddings: np.ndarray, k: int | None = None, seed: int = 0) -> list[str]:
    """One sequence id per row of ``embeddings`` (N, D): k-means clusters (scikit-learn) of
    the standardized rows. ``k`` None picks the k in 2..min(MAX_CLUSTERS, N - 1) with the best
    silhouette; fewer than 3 images are one cluster. Ids are numbered by first appearance."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise SequencePatternError(f"embeddings must be (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise SequencePatternError("embeddings hold NaN or infinite values")
    n = len(x)
    if k is not None and not 1 <= k <= max(n, 1):
        raise SequencePatternError(f"cluster count must be in 1..{n}, got {k}")
    if n == 0:
        return []
    distinct = len(np.unique(x, axis=0)) if n else 0
    sd = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if k is None:
        if n < 3 or distinct < 2:
            labels = np.zeros(n, np.int64)
        else:
            best = None
            for candidate in range(2, min(MAX_CLUSTERS, n - 1, distinct) + 1):
                fit = KMeans(candidate, n_init=4, random_state=seed).fit_predict(x)
                if len(np.unique(fit)) < 2:
                    continue
                quality = silhouette_score(x, fit)
                if best is None or quality > best[0] + 1e-12:
                    best = (quality, fit)
            labels = best[1] if best is not None else np.zeros(n, np.int64)
    elif min(k, distinct) > 1:
        labels = KMeans(min(k, distinct), n_init=4, random_state=seed).fit_predict(x)
    else:
        labels = np.zeros(n, np.int64)
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order) + 1)
    width = max(2, len(str(len(order))))
    return [f"{CLUSTER_PREFIX}{order[label]:0{width}d}" for label in labels.tolist()]

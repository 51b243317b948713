"""Diversity: cheap image descriptors, core-set (k-center greedy) and ranked batch selection.

Selection is greedy: each pick maximizes a utility that depends on the distance of every
candidate to its nearest already labeled or already chosen image. :class:`NearestDistance`
keeps those distances up to date with one matrix-vector product per pick: a pick costs
O(N D), where ``modAL.batch.select_instance`` recomputes the distances to the whole labeled and
chosen set, O(N (L + k) D) for the k-th pick, and its cold start holds an N x N matrix.

The utilities are modAL's (tested equal to ``modAL.batch``):

- k-center (Sener & Savarese 2018): the distance itself, farthest first;
- ranked batch (Cardoso et al. 2017): ``alpha (1 - 1 / (1 + d)) + (1 - alpha) u`` with
  ``alpha = |unlabeled| / (|unlabeled| + |labeled|)`` and ``u`` the uncertainty in [0, 1].

With nothing labeled, the first pick is modAL's cold start: the most central candidate (least
mean distance to the others).

Long rankings: only the first ``exact_picks`` picks update the distances (one O(N D) product
each); after them the distances are frozen and the rest of the ranking is ordered by the same
utility (and eligibility rule) over those frozen distances, in one sort (:func:`_frozen_tail`;
ranked batch's alpha is frozen there too). Ranking a whole pool of 10,000 images (D = 512, 1%
labeled, 2 shared cores; benchmarks/bench_select.py) took 7.6-12.5 s fully exact, and takes
1.1-2.8 s with ``EXACT_PICKS = 1000``. A round's labeling budget is far below 1000, so every
image a person labels next is an exact greedy pick; the tail only orders what comes after,
where a ranking matters little. PCA to fewer dimensions was the other choice; it would have
made *every* pick approximate.

At 100,000 images (benchmarks/bench_dask_pool.py) three things were quadratic or close and
are not any more: the distances to the labeled set were one matrix-vector product per labeled
image (1000 of them: now blocks of matrix products, :meth:`NearestDistance.add_many`); each
frozen pick scanned the pool and asked the eligibility rule (99,000 x O(N): now one sort, the
sequence rule as rounds); and 1000 exact picks cost 1000 x O(N D): the exact picks now shrink
with the pool past 10,000 candidates (:func:`exact_picks_for`: 100 at 100,000), still more
than a round's labeling budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import pairwise_distances_chunked
from threadpoolctl import threadpool_limits


class DiversityError(ValueError):
    """Embeddings, indices or images that can't be used for diversity selection."""


# ---------------------------------------------------------------- descriptors


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    c, h, w = image.shape
    h2, w2 = h // factor * factor, w // factor * factor
    view = image[:, :h2, :w2].reshape(c, h2 // factor, factor, w2 // factor, factor)
    return view.mean(axis=(2, 4))


def _grid_mean(channel: np.ndarray, cells: int) -> np.ndarray:
    """Mean of each cell of a cells x cells grid (cells may hold unequal pixel counts)."""
    rows = np.array_split(np.arange(channel.shape[0]), cells)
    cols = np.array_split(np.arange(channel.shape[1]), cells)
    return np.array(
        [[channel[r[0] : r[-1] + 1, q[0] : q[-1] + 1].mean() for q in cols] for r in rows]
    )


def image_descriptor(
    image: np.ndarray,
    *,
    bins: int = 16,
    thumbnail: int = 8,
    max_side: int = 512,
) -> np.ndarray:
    """A float32 vector describing an image before any model exists.

    ``image`` is the model input: float32 (C, H, W) normalized to [0, 1]. Per channel:
    intensity histogram (square-rooted, so Euclidean distance is the Hellinger distance),
    mean, std and percentiles, gradient-magnitude statistics, and a thumbnail x thumbnail
    thumbnail. Each block is scaled by 1/sqrt(its length) so that every block weighs about the
    same in a Euclidean distance whatever its size. Images larger than ``max_side`` are block-
    averaged first (cost stays flat). The length depends only on C and the settings.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or min(image.shape) < 1:
        raise DiversityError(f"image must be (C, H, W), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DiversityError("image holds NaN or infinite values")
    factor = max(1, math.ceil(max(image.shape[1:]) / max_side))
    if factor > 1:
        image = _block_mean(image, factor)
    parts: list[np.ndarray] = []
    for channel in np.clip(image, 0.0, 1.0):
        hist, _ = np.histogram(channel, bins=bins, range=(0.0, 1.0))
        percentiles = np.percentile(channel, [1, 5, 25, 50, 75, 95, 99])
        levels = [channel.mean(), channel.std(), *percentiles]
        if min(channel.shape) > 1:
            gy, gx = np.gradient(channel)
            grad = np.hypot(gx, gy)
        else:
            grad = np.zeros_like(channel)
        edges = [grad.mean(), grad.std(), *np.percentile(grad, [50, 90, 99])]
        thumb = _grid_mean(channel, min(thumbnail, *channel.shape)).ravel()
        thumb = np.resize(thumb, thumbnail * thumbnail)  # tiny images: repeat to a fixed length
        # sqrt(histogram share) has unit norm (Hellinger); the others are [0, 1]-ish values
        # whose block norm is brought to the same scale.
        parts.append(np.sqrt(hist / channel.size))
        parts.extend(_rms_scaled(np.asarray(b, np.float64)) for b in (levels, edges, thumb))
    return np.concatenate(parts).astype(np.float32)


def _rms_scaled(block: np.ndarray) -> np.ndarray:
    return block / math.sqrt(block.size)


# ---------------------------------------------------------------- greedy selection


def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise DiversityError(f"embeddings must be (N, D), got shape {embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating):
        embeddings = embeddings.astype(np.float64)
    if not np.isfinite(embeddings).all():
        raise DiversityError("embeddings hold NaN or infinite values")
    return embeddings


def _check_indices(indices: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    out = np.asarray(indices, dtype=np.int64).ravel()
    if out.size and (out.min() < 0 or out.max() >= n):
        raise DiversityError(f"{what} must be in 0..{n - 1}")
    return np.unique(out)


#: Elements of one block of distances in :meth:`NearestDistance.add_many` (about 64 MB).
_BLOCK_ELEMENTS = 1 << 24


class NearestDistance:
    """Distance of every row to its nearest selected row, updated one selection at a time.

    Rows no longer tracked (chosen ones) are dropped from the working copy when they make up
    half of it, so later picks get cheaper.
    """

    def __init__(self, embeddings: np.ndarray, tracked: np.ndarray, selected: np.ndarray):
        # Centering keeps |x|^2 + |c|^2 - 2 x.c from cancelling digits when embeddings are far
        # from the origin; distances don't change.
        self._all = embeddings - embeddings.mean(axis=0, dtype=np.float64).astype(embeddings.dtype)
        self.distance = np.full(len(embeddings), np.inf)
        self._rows = np.asarray(tracked, dtype=np.int64)
        self._x = self._all[self._rows]
        self._sq = np.einsum("ij,ij->i", self._x, self._x)
        self._keep = np.ones(len(self._rows), bool)
        self.n_selected = 0
        self.add_many(np.asarray(selected, dtype=np.int64))

    def add_many(self, indices: np.ndarray) -> None:
        """Count the rows ``indices`` as selected at once (the labeled set): blocks of
        matrix-matrix products instead of one matrix-vector product per row, the same
        distances."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        centres = self._all[indices]
        centre_sq = np.einsum("ij,ij->i", centres, centres)
        nearest = np.full(len(self._rows), np.inf)
        block = max(1, _BLOCK_ELEMENTS // max(1, len(centres)))
        for start in range(0, len(self._rows), block):
            stop = start + block
            d2 = (self._sq[start:stop, None] - 2.0 * (self._x[start:stop] @ centres.T)
                  + centre_sq[None, :])
            nearest[start:stop] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        self.distance[self._rows] = np.minimum(self.distance[self._rows], nearest)
        self.distance[indices] = 0.0
        self.n_selected += len(indices)
        hit = np.isin(self._rows, indices)
        if hit.any():
            self._keep[hit] = False
            self._rows, self._x = self._rows[self._keep], self._x[self._keep]
            self._sq, self._keep = self._sq[self._keep], self._keep[self._keep]

    def add(self, index: int) -> None:
        """Count row ``index`` as selected; stop tracking it."""
        centre = self._all[index]
        d2 = self._sq - 2.0 * (self._x @ centre) + float(centre @ centre)
        d = np.sqrt(np.maximum(d2, 0.0))
        rows = self.distance[self._rows]
        self.distance[self._rows] = np.minimum(rows, d)
        self.distance[index] = 0.0
        self.n_selected += 1
        hit = np.flatnonzero(self._rows == index)
        if hit.size:
            self._keep[hit] = False
            if (~self._keep).sum() * 2 > len(self._keep):
                self._rows, self._x = self._rows[self._keep], self._x[self._keep]
                self._sq, self._keep = self._sq[self._keep], self._keep[self._keep]


def most_central(
    embeddings: np.ndarray, candidates: np.ndarray, among: np.ndarray, max_among: int = 2048
) -> int:
    """The candidate with the least mean distance to the rows ``among``: modAL's cold start
    (``modAL.batch.select_cold_start_instance``), in chunks instead of an N x N matrix.

    Over ``max_among`` rows the mean is taken over evenly spaced ones among them: the exact
    mean costs O(N^2 D), 4 s at N = 10,000, D = 512 here; the estimate picks a central image
    all the same.
    """
    among = np.asarray(among)
    if len(among) > max_among:
        among = among[np.linspace(0, len(among) - 1, max_among).astype(np.int64)]
    sums = np.concatenate(
        list(
            pairwise_distances_chunked(
                embeddings[candidates],
                embeddings[among],
                reduce_func=lambda chunk, start: chunk.sum(axis=1),
            )
        )
    )
    return int(candidates[int(np.argmin(sums))])


def ranked_batch_utility(
    distance: np.ndarray, uncertainty: np.ndarray, n_unlabeled: int, n_labeled: int
) -> np.ndarray:
    """Cardoso et al.'s score, as in ``modAL.batch.select_instance``: dissimilarity to the
    labeled set balanced against uncertainty, with alpha = |U| / (|U| + |L|)."""
    alpha = n_unlabeled / (n_unlabeled + n_labeled)
    similarity = 1.0 / (1.0 + np.asarray(distance))
    return alpha * (1.0 - similarity) + (1.0 - alpha) * np.asarray(uncertainty)


@dataclass(frozen=True)
class GreedyPick:
    """One greedy pick: pool index, distance to the nearest labeled/chosen row before the pick
    (``inf`` for a cold start) and the utility it won with. ``exact`` is False for picks after
    the first ``exact_picks``: their distance is to the nearest row chosen up to then."""

    index: int
    distance: float
    utility: float
    exact: bool = True


#: Greedy picks that update the distances; later ones use frozen distances (module docstring).
EXACT_PICKS = 1000
#: Rows x exact picks that a ranking may spend on exact picks (1000 picks of 10,000 rows);
#: larger pools get fewer exact picks (:func:`exact_picks_for`), never under MIN_EXACT_PICKS.
EXACT_WORK = 10_000_000
MIN_EXACT_PICKS = 100


def exact_picks_for(n_candidates: int) -> int:
    """How many exact greedy picks a ranking of ``n_candidates`` gets: ``EXACT_PICKS`` up to
    ``EXACT_WORK / EXACT_PICKS`` candidates, then fewer (the work of each is O(N D)), at
    least ``MIN_EXACT_PICKS``: 1000 at 10,000 candidates, 100 at 100,000."""
    return int(min(EXACT_PICKS, max(MIN_EXACT_PICKS, EXACT_WORK // max(1, n_candidates))))


def greedy_select(
    embeddings: np.ndarray,
    budget: int | None,
    *,
    selected: Sequence[int] | np.ndarray = (),
    candidates: Sequence[int] | np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    eligible: Callable[[np.ndarray], np.ndarray] | None = None,
    tie_break: np.ndarray | None = None,
    exact_picks: int | None = EXACT_PICKS,
    tail_rounds: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    narrow: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[GreedyPick]:
    """Greedy diverse selection, the loop shared by k-center, ranked batch and strategies.

    ``selected``: rows already labeled (never picked). ``candidates``: rows that may be picked
    (default: all others). Without ``uncertainty`` the utility is the distance (k-center), with
    it the ranked batch score. ``eligible(available) -> mask`` narrows each pick (sequence
    rules); ``tie_break``: among equal utilities the lowest value wins (default: lowest index).
    ``exact_picks``: picks after this many use frozen distances (None: all exact); those
    picks are one sort (:func:`_frozen_tail`) unless ``eligible`` is given without
    ``tail_rounds(order, available) -> round of each row of order``, the same rule as rounds
    (a row's round: its sequence's labeled and chosen rows, plus the rows of its sequence
    before it in ``order``); without it each frozen pick still asks ``eligible``, O(N).
    ``narrow(rows, available) -> rows``: the eligible rows an exact pick may take (a
    sequence's first pick, its most typical image).
    """
    embeddings = _check_embeddings(embeddings)
    n = len(embeddings)
    selected = _check_indices(selected, n, "selected indices")
    if candidates is None:
        candidates = np.setdiff1d(np.arange(n), selected)
    else:
        candidates = np.setdiff1d(_check_indices(candidates, n, "candidates"), selected)
    if budget is not None and budget < 0:
        raise DiversityError(f"budget must be >= 0, got {budget}")
    budget = len(candidates) if budget is None else min(budget, len(candidates))
    if exact_picks is not None and exact_picks < 1:
        raise DiversityError(f"exact_picks must be >= 1 or None, got {exact_picks}")
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty, dtype=np.float64)
        if uncertainty.shape != (n,):
            raise DiversityError(f"uncertainty must be ({n},), got {uncertainty.shape}")
    order = np.arange(n) if tie_break is None else np.asarray(tie_break)
    available = np.zeros(n, bool)
    available[candidates] = True
    picks: list[GreedyPick] = []
    # One BLAS thread: the products are matrix-vector, where threads cost more than they give
    # (measured: 10,000 x 512 float32, 3.4 ms with 2 threads vs 1.2 ms with one).
    with threadpool_limits(limits=1, user_api="blas"):
        tracker = NearestDistance(embeddings, candidates, selected)
        for _ in range(budget):
            if (exact_picks is not None and len(picks) >= exact_picks
                    and (eligible is None or tail_rounds is not None)):
                picks += _frozen_tail(tracker, available, uncertainty, budget - len(picks),
                                      order, tail_rounds)
                break
            mask = available if eligible is None else available & eligible(available)
            pool = np.flatnonzero(mask)
            if pool.size == 0:  # the eligibility rule left nothing: fall back to all available
                pool = np.flatnonzero(available)
            if narrow is not None:
                pool = narrow(pool, available)
            if tracker.n_selected == 0:
                index = most_central(embeddings, pool, np.flatnonzero(available))
                distance, utility = math.inf, 0.0
            else:
                distance_all = tracker.distance[pool]
                if uncertainty is None:
                    util = distance_all
                else:
                    util = ranked_batch_utility(
                        distance_all, uncertainty[pool], int(available.sum()), tracker.n_selected
                    )
                best = np.flatnonzero(util == util.max())
                pick = best[np.argmin(order[pool[best]])] if best.size > 1 else best[0]
                index = int(pool[pick])
                distance, utility = float(distance_all[pick]), float(util[pick])
            exact = exact_picks is None or len(picks) < exact_picks
            picks.append(GreedyPick(index, distance, utility, exact))
            available[index] = False
            if exact:
                tracker.add(index)
            else:
                tracker.n_selected += 1  # alpha of ranked batch still counts every pick
    return picks


def _frozen_tail(tracker: NearestDistance, available: np.ndarray,
                 uncertainty: np.ndarray | None, count: int, order: np.ndarray,
                 tail_rounds: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
                 ) -> list[GreedyPick]:
    """The picks after the exact ones, in one sort: the utility over the frozen distances
    (ranked batch: alpha frozen too, at its value when the exact picks end), best first, ties
    by ``order``; with ``tail_rounds``, by round first (what the eligibility rule gives when
    utilities don't change: each open sequence's best row per round)."""
    rows = np.flatnonzero(available)
    distance = tracker.distance[rows]
    if uncertainty is None:
        utility = distance
    else:
        utility = ranked_batch_utility(distance, uncertainty[rows], len(rows),
                                       tracker.n_selected)
    sort = np.lexsort((order[rows], -utility))
    if tail_rounds is not None:
        sort = sort[np.argsort(tail_rounds(rows[sort], available), kind="stable")]
    sort = sort[:count]
    return [GreedyPick(int(i), float(d), float(u), False)
            for i, d, u in zip(rows[sort], distance[sort], utility[sort], strict=True)]


def k_center_greedy(
    embeddings: np.ndarray, budget: int | None, already_selected: Sequence[int] = ()
) -> list[int]:
    """Core-set selection: repeatedly the row farthest from everything selected so far.

    Deterministic (ties: lowest index); at most N - len(already_selected) rows; with nothing
    selected the first pick is the most central row.
    """
    # Exact all the way: this is the reference k-center (strategies use the frozen tail).
    picks = greedy_select(embeddings, budget, selected=already_selected, exact_picks=None)
    return [p.index for p in picks]


def ranked_batch(
    embeddings: np.ndarray,
    uncertainty: np.ndarray,
    labeled_indices: Sequence[int],
    budget: int | None,
) -> list[int]:
    """Ranked batch-mode selection (``modAL.batch.ranked_batch``) over the unlabeled rows.

    ``uncertainty`` (N,) should be in [0, 1] like modAL's ``1 - max p`` (entries of labeled
    rows are ignored). Equal to modAL's ranking when something is labeled; with nothing
    labeled, modAL's cold-start pick stays in its pool and may be picked again, here it can't.
    """
    picks = greedy_select(
        embeddings, budget, selected=labeled_indices, uncertainty=np.asarray(uncertainty),
        exact_picks=None,
    )
    return [p.index for p in picks]

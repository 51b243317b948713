"""Strategies: which unlabeled images of a pool to label next, as a ranked list.

A strategy is a plain callable ``(pool, budget, rng) -> list[RankedItem]``: the best image
first, at most ``budget`` of them, never an already labeled one. :func:`rank` is the usual
entry point (``budget=None`` ranks the whole unlabeled pool).

Strategies are named by joining parts with ``+`` (order and case don't matter; the canonical
name orders them ``sequence+<score>+diversity``):

- ``random`` or ``sequential`` (pool order): baselines, always alone;
- a score name from ``scores.SCORES`` (``entropy``, ``margin``, ``least_confidence``,
  ``variance``, ``bald``, ``class_balance``): highest score first; needs ``pool.scores[name]``;
- ``diversity``: greedy k-center on ``pool.embeddings``; with a score it becomes ranked batch
  selection, the score rescaled to [0, 1] over the unlabeled images as the uncertainty; picks
  after the first ``diversity.exact_picks_for(candidates)`` (1000 up to 10,000 candidates,
  fewer beyond, at least 100) use the distances frozen at that point and are one sort, so
  that a whole pool of 10,000 ranks in 1-3 s instead of 8-12 s, and one of 100,000 in
  26-46 s instead of 104-623 s on 2 busy shared cores (see ``diversity``);
- ``sequence``: one image per sequence until every sequence has one (sequences that already
  hold labeled images come last), then round-robin; each pick is the best image of the
  eligible sequences by the rest of the strategy; alone, random within and across sequences.
  With ``diversity``, of the sequences that hold no labeled or chosen image the largest come
  first, each with its most typical image (``_Sequences.typical``), not its outlier.

A strategy that needs a score or embeddings the pool lacks raises
:class:`MissingPoolDataError` instead of silently falling back to random: a ranking called
"entropy" must be one. Before any model exists use ``sequence``, ``diversity`` (image
descriptors as embeddings) or ``random``.
Ties are broken by a random order drawn from ``rng``, so a seed makes every strategy
deterministic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from label_assistant.selectors.diversity import exact_picks_for, greedy_select, most_central
from label_assistant.selectors.scores import SCORES
from label_assistant.selectors.sequences import (
    is_cluster_id,
    is_own_sequence,
    own_sequence_id,
)


class StrategyError(ValueError):
    """A strategy can't run: bad pool arrays or a bad budget."""


class UnknownStrategyError(StrategyError):
    """The strategy name doesn't parse."""


class MissingPoolDataError(StrategyError):
    """The strategy needs scores or embeddings that the pool doesn't hold."""


@dataclass(frozen=True, eq=False)
class Pool:
    """The images to rank, as arrays aligned by pool index.

    ``sequences``: one id per image (None, or a None entry: the image is its own sequence).
    ``scores``: score name -> (N,) image scores, higher = more informative.
    ``embeddings``: (N, D). ``labeled``: a bool mask (N,) or the indices of labeled images.
    ``labeled_elsewhere``: sequence id -> labeled images of that sequence that are not in the
    pool (their image could not be read, so they have no scores or embeddings); they count in
    their sequence all the same.
    """

    names: Sequence[str]
    sequences: Sequence[str | None] | None = None
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    labeled: np.ndarray | Sequence[int] | None = None
    labeled_elsewhere: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [str(name) for name in self.names]
        n = len(names)
        set_ = object.__setattr__  # frozen: normalize once, here
        set_(self, "names", names)
        sequences = [None] * n if self.sequences is None else list(self.sequences)
        if len(sequences) != n:
            raise StrategyError(f"{len(sequences)} sequence ids for {n} images")
        sequences = [
            own_sequence_id(i, name) if s is None else str(s)
            for i, (name, s) in enumerate(zip(names, sequences, strict=True))
        ]
        set_(self, "sequences", sequences)
        scores = {}
        for key, values in dict(self.scores).items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (n,):
                raise StrategyError(f"scores {key!r} must have shape ({n},), got {values.shape}")
            if not np.isfinite(values).all():
                raise StrategyError(f"scores {key!r} hold NaN or infinite values")
            scores[key] = values
        set_(self, "scores", scores)
        if self.embeddings is not None:
            embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != n:
                raise StrategyError(f"embeddings must be ({n}, D), got {embeddings.shape}")
            if not np.isfinite(embeddings).all():
                raise StrategyError("embeddings hold NaN or infinite values")
            set_(self, "embeddings", embeddings)
        set_(self, "labeled", _labeled_mask(self.labeled, n))
        elsewhere = {str(k): int(v) for k, v in dict(self.labeled_elsewhere).items()}
        if any(v < 0 for v in elsewhere.values()):
            raise StrategyError("labeled_elsewhere counts must be 0 or more")
        set_(self, "labeled_elsewhere", elsewhere)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def unlabeled_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.labeled)


def _labeled_mask(labeled: np.ndarray | Sequence[int] | None, n: int) -> np.ndarray:
    if labeled is None:
        return np.zeros(n, bool)
    labeled = np.asarray(labeled)
    if labeled.dtype == bool:
        if labeled.shape != (n,):
            raise StrategyError(f"labeled mask must have shape ({n},), got {labeled.shape}")
        return labeled.copy()
    indices = labeled.astype(np.int64).ravel()
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise StrategyError(f"labeled indices must be in 0..{n - 1}")
    mask = np.zeros(n, bool)
    mask[indices] = True
    return mask


@dataclass(frozen=True)
class RankedItem:
    """One ranked image: pool index, the value the strategy ranked it by, its parts, and why."""

    index: int
    name: str
    sequence: str
    score: float
    components: dict[str, float]
    reason: str


Strategy = Callable[[Pool, int, np.random.Generator], list[RankedItem]]

SEQUENCE = "sequence"
DIVERSITY = "diversity"
BASELINES: tuple[str, ...] = ("random", "sequential")


@dataclass(frozen=True)
class StrategySpec:
    """The parts of a strategy name."""

    sequence: bool = False
    score: str | None = None
    diversity: bool = False
    baseline: str | None = None

    @property
    def name(self) -> str:
        if self.baseline:
            return self.baseline
        parts = [SEQUENCE] if self.sequence else []
        parts += [self.score] if self.score else []
        parts += [DIVERSITY] if self.diversity else []
        return "+".join(parts)


def _valid_help() -> str:
    return f"parts: {', '.join([*BASELINES, SEQUENCE, *SCORES, DIVERSITY])} (see strategy_names())"


def parse_strategy(name: str) -> StrategySpec:
    """Parse ``"sequence+entropy+diversity"`` and friends (rules in the module docstring)."""
    parts = [p.strip().lower() for p in str(name).split("+")]
    if any(not p for p in parts):
        raise UnknownStrategyError(f"strategy {name!r} has an empty part; {_valid_help()}")
    unknown = [p for p in parts if p not in {*BASELINES, SEQUENCE, DIVERSITY, *SCORES}]
    if unknown:
        raise UnknownStrategyError(f"unknown strategy part {unknown[0]!r}; {_valid_help()}")
    if len(set(parts)) != len(parts):
        raise UnknownStrategyError(f"strategy {name!r} repeats a part")
    baselines = [p for p in parts if p in BASELINES]
    if baselines and len(parts) > 1:
        raise UnknownStrategyError(f"{baselines[0]!r} is a baseline and can't be combined")
    scores = [p for p in parts if p in SCORES]
    if len(scores) > 1:
        raise UnknownStrategyError(f"strategy {name!r} names two scores; pick one")
    return StrategySpec(
        sequence=SEQUENCE in parts,
        score=scores[0] if scores else None,
        diversity=DIVERSITY in parts,
        baseline=baselines[0] if baselines else None,
    )


def strategy_names() -> list[str]:
    """Every canonical strategy name."""
    names = list(BASELINES)
    for sequence, score, diversity in itertools.product(
        (False, True), (None, *SCORES), (False, True)
    ):
        if sequence or score or diversity:
            names.append(StrategySpec(sequence, score, diversity).name)
    return names


def make_strategy(name: str) -> Strategy:
    """The strategy callable for ``name``."""
    spec = parse_strategy(name)

    def strategy(pool: Pool, budget: int, rng: np.random.Generator) -> list[RankedItem]:
        return _run(spec, pool, budget, rng)

    strategy.__name__ = strategy.__qualname__ = spec.name
    strategy.__doc__ = f"Strategy {spec.name!r} (see label_assistant.selectors.strategies)."
    return strategy


def rank(
    pool: Pool, strategy: str = "sequence", budget: int | None = None, seed: int = 0
) -> list[RankedItem]:
    """Rank the unlabeled images of ``pool`` by ``strategy`` (a name); the whole unlabeled
    pool when ``budget`` is None."""
    if budget is None:
        budget = int((~pool.labeled).sum())
    return make_strategy(strategy)(pool, budget, np.random.default_rng(seed))


# ---------------------------------------------------------------- the one implementation


def _check(spec: StrategySpec, pool: Pool, budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise StrategyError(f"budget must be an integer >= 0, got {budget!r}")
    if spec.score and spec.score not in pool.scores:
        have = ", ".join(pool.scores) or "none"
        raise MissingPoolDataError(
            f"strategy {spec.name!r} needs scores {spec.score!r}; the pool has: {have}"
        )
    if spec.diversity and pool.embeddings is None:
        raise MissingPoolDataError(f"strategy {spec.name!r} needs embeddings; the pool has none")


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (ranked batch mixes uncertainty with a [0, 1) dissimilarity)."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


class _Sequences:
    """Sequence bookkeeping: codes, labeled counts, and the eligibility rule."""

    def __init__(self, pool: Pool, candidates: np.ndarray):
        ids, self.codes = np.unique(np.asarray(pool.sequences, dtype=object), return_inverse=True)
        self.ids = ids.tolist()
        k = len(ids)
        self.labeled = np.bincount(self.codes[pool.labeled], minlength=k) + np.array(
            [pool.labeled_elsewhere.get(i, 0) for i in self.ids], dtype=np.int64)
        self.initial = np.bincount(self.codes[candidates], minlength=k)
        self.embeddings = pool.embeddings
        self._typical = np.full(k, -1, np.int64)  # a fresh sequence's most typical image

    def coverage(self, available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per sequence, ``(images left to pick, images labeled or chosen)``."""
        left = np.bincount(self.codes[available], minlength=len(self.ids))
        return left, self.labeled + self.initial - left

    def eligible(self, available: np.ndarray) -> np.ndarray:
        """Images of the open sequences with the fewest labeled or chosen images."""
        left, coverage = self.coverage(available)
        lowest = coverage[left > 0].min() if (left > 0).any() else 0
        return (coverage == lowest)[self.codes]

    def typical(self, rows: np.ndarray, available: np.ndarray) -> np.ndarray:
        """``rows`` narrowed where sequences hold no labeled or chosen image yet: of those,
        only the largest (most images left) may be picked, each by its most typical image
        (the least mean distance to the rest of its sequence,
        :func:`~label_assistant.selectors.diversity.most_central`). A sequence's first image
        is one like the rest of it, not its outlier, and large sequences come first:
        TypiClust's rule (Hacohen et al. 2022, at small budgets typical images of the
        largest uncovered clusters teach more than diverse ones); with equal sizes (each
        image its own sequence, say) diversity alone orders them.

        Why here: on the DSB 2018 subset (``benchmarks/bench_selection_dsb.py``, v4),
        ``sequence+entropy+diversity``'s first 6 images, the farthest image of each of 6
        groups, gave test Dice 0.37-0.57 over 3 seeds where ``sequence`` (a random image of
        each group, mostly the same groups) gave 0.68-0.81."""
        left, coverage = self.coverage(available)
        fresh = coverage == 0
        codes = self.codes[rows]
        in_fresh = fresh[codes]
        if not in_fresh.any():
            return rows
        largest = left[codes][in_fresh].max()
        chosen = in_fresh & (left[codes] == largest)
        if largest > 1:  # (a sequence of one image is its own most typical image)
            for code in np.unique(codes[chosen]):
                if self._typical[code] < 0:
                    members = np.flatnonzero(available & (self.codes == code))
                    self._typical[code] = most_central(self.embeddings, members, members)
            chosen &= rows == self._typical[codes]
        narrowed = rows[~in_fresh | chosen]
        return narrowed if narrowed.size else rows

    def rounds(self, order: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        """Round of each image of ``order`` (best first within its sequence): labeled images
        of its sequence (and those already chosen: candidates not ``available``) + images of
        its sequence before it in ``order``."""
        start = self.labeled
        if available is not None:
            start = start + self.initial - np.bincount(self.codes[available],
                                                       minlength=len(self.ids))
        codes = self.codes[order]
        by_sequence = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[by_sequence], codes[by_sequence])
        within = np.empty(len(order), np.int64)
        within[by_sequence] = np.arange(len(order)) - starts
        return start[codes] + within


def _run(spec: StrategySpec, pool: Pool, budget: int, rng: np.random.Generator) -> list:
    _check(spec, pool, budget)
    candidates = pool.unlabeled_indices
    budget = min(int(budget), len(candidates))
    priority = rng.permutation(pool.n)  # random order: baseline, and tie-break everywhere
    values = pool.scores[spec.score] if spec.score else None
    sequences = _Sequences(pool, candidates) if spec.sequence else None
    picks: list[tuple[int, float, dict[str, float]]] = []  # index, total, extra components
    frozen: set[int] = set()  # diversity picks ranked with frozen distances

    if spec.baseline == "sequential":
        picks = [(int(i), 0.0, {}) for i in candidates[:budget]]
    elif spec.baseline == "random":
        picks = [(int(i), 0.0, {}) for i in candidates[np.argsort(priority[candidates])][:budget]]
    elif spec.diversity:
        greedy = greedy_select(
            pool.embeddings,
            budget,
            selected=np.flatnonzero(pool.labeled),
            candidates=candidates,
            uncertainty=None if values is None else _scaled_uncertainty(values, candidates),
            eligible=sequences.eligible if sequences else None,
            tie_break=priority,
            tail_rounds=sequences.rounds if sequences else None,
            exact_picks=exact_picks_for(len(candidates)),
            narrow=sequences.typical if sequences else None,
        )
        for p in greedy:
            extra = {} if math.isinf(p.distance) else {"distance": p.distance}
            if values is not None:
                extra["utility"] = p.utility
            picks.append((p.index, p.utility, extra))
            if not p.exact:
                frozen.add(p.index)
    else:
        if values is None:
            order = candidates[np.argsort(priority[candidates])]
        else:
            order = candidates[np.lexsort((priority[candidates], -values[candidates]))]
        if sequences is not None:
            rounds = sequences.rounds(order)
            order = order[np.argsort(rounds, kind="stable")]
        picks = [(int(i), 0.0 if values is None else float(values[i]), {}) for i in order[:budget]]

    return _explain(spec, pool, picks, candidates, values, sequences, priority, frozen)


def _scaled_uncertainty(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    scaled = np.zeros_like(values)
    if len(candidates):
        scaled[candidates] = _unit_range(values[candidates])
    return scaled


def _explain(
    spec: StrategySpec,
    pool: Pool,
    picks: list[tuple[int, float, dict[str, float]]],
    candidates: np.ndarray,
    values: np.ndarray | None,
    sequences: _Sequences | None,
    priority: np.ndarray,
    frozen: set[int] | frozenset[int] = frozenset(),
) -> list[RankedItem]:
    """RankedItems with components and a one-line reason per pick."""
    score_rank = np.zeros(pool.n, np.int64)
    if values is not None and len(candidates):
        by_score = candidates[np.lexsort((priority[candidates], -values[candidates]))]
        score_rank[by_score] = np.arange(1, len(by_score) + 1)
    chosen_in = {} if sequences is None else dict.fromkeys(range(len(sequences.ids)), 0)
    items = []
    for index, total, extra in picks:
        reasons: list[str] = []
        components: dict[str, float] = {}
        if spec.baseline == "random":
            reasons.append("random order")
        elif spec.baseline == "sequential":
            reasons.append("pool order")
        if sequences is not None:
            code = sequences.codes[index]
            before, labeled = chosen_in[code], int(sequences.labeled[code])
            chosen_in[code] += 1
            components["round"] = float(labeled + before + 1)
            sequence = pool.sequences[index]
            if is_own_sequence(sequence):
                what = "own sequence"
            else:
                what = sequence if is_cluster_id(sequence) else f"sequence {sequence}"
            if before == 0 and labeled == 0:
                typical = (", its most typical image"
                           if spec.diversity and sequences.initial[code] > 1 else "")
                reasons.append(f"{what} (first pick{typical})")
            elif before == 0:
                reasons.append(f"{what} (first pick; {labeled} already labeled)")
            else:
                reasons.append(f"{what} (pick {before + 1}, round {labeled + before + 1})")
            if values is None and not spec.diversity:
                group = "cluster" if is_cluster_id(sequence) else "sequence"
                reasons.append(f"random within {group}")
        if values is not None:
            components[spec.score] = float(values[index])
            reasons.append(
                f"{spec.score} {values[index]:.3g} (rank {score_rank[index]} of {len(candidates)})"
            )
        if spec.diversity:
            if "distance" in extra:
                what = "labeled/chosen" if index not in frozen else (
                    f"labeled/first {len(picks) - len(frozen)} chosen")
                reasons.append(f"distance {extra['distance']:.3g} to nearest {what}")
            else:
                reasons.append("most central image (nothing labeled or chosen yet)")
        components.update(extra)
        items.append(
            RankedItem(
                index=index,
                name=pool.names[index],
                sequence=pool.sequences[index],
                score=float(total),
                components=components,
                reason=", ".join(reasons),
            )
        )
    return items


#: Every canonical strategy name -> its callable.
STRATEGIES: dict[str, Strategy] = {name: make_strategy(name) for name in strategy_names()}

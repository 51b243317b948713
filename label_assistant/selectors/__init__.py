"""Ranking of unlabeled images: uncertainty, diversity, sequence-aware sampling, baselines.

- ``scores``: per-pixel uncertainty (least confidence, margin, entropy: modAL's measures),
  epistemic scores from several samples (variance, BALD), class balance (images rich in the
  classes with the fewest labeled pixels), aggregation to one number per image; ``SCORES``
  maps a name to its image score.
- ``diversity``: image descriptors before any model exists, k-center greedy (core-set),
  ranked batch selection (modAL's formula, incremental).
- ``sequences``: sequence ids from a task data field or a file-name pattern, or clusters of
  look-alike images (``cluster_ids``) where nothing names the sequence.
- ``strategies``: ``Pool`` -> ranked ``RankedItem`` list; strategies are plain callables
  named like ``"sequence+entropy+diversity"`` (``make_strategy``, ``rank``, ``STRATEGIES``).
- ``pool``: a ``Pool`` from images, given the model as callables (predict, embed);
  ``score_image`` is its per-image step, which may also run elsewhere (Dask workers).

Everything here is pure: arrays in, lists and arrays out; no files, no network, no torch
(the caller hands in a version's ``Predictor.predict`` / ``Predictor.embed``).
"""

from label_assistant.selectors.diversity import (
    DiversityError,
    image_descriptor,
    k_center_greedy,
    ranked_batch,
)
from label_assistant.selectors.scores import (
    SCORES,
    MissingInputError,
    ScoreError,
    image_score,
    score_prediction,
)
from label_assistant.selectors.sequences import SequencePatternError, sequence_ids
from label_assistant.selectors.strategies import (
    STRATEGIES,
    MissingPoolDataError,
    Pool,
    RankedItem,
    Strategy,
    StrategyError,
    UnknownStrategyError,
    make_strategy,
    parse_strategy,
    rank,
    strategy_names,
)

__all__ = [
    "SCORES",
    "STRATEGIES",
    "DiversityError",
    "MissingInputError",
    "MissingPoolDataError",
    "Pool",
    "RankedItem",
    "ScoreError",
    "SequencePatternError",
    "Strategy",
    "StrategyError",
    "UnknownStrategyError",
    "image_descriptor",
    "image_score",
    "k_center_greedy",
    "make_strategy",
    "parse_strategy",
    "rank",
    "ranked_batch",
    "score_prediction",
    "sequence_ids",
    "strategy_names",
]

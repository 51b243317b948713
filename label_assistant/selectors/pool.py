"""Building a :class:`~label_assistant.selectors.strategies.Pool` from images, given the
model's callables: nothing here reads files or runs torch.

The caller hands the model in as two callables (usually a version's
:meth:`~label_assistant.model.predictor.Predictor.predict` and
:meth:`~label_assistant.model.predictor.Predictor.embed`): ``predict(image)`` returns a
prediction (``probabilities`` and, with several samples, ``spread`` /
``mean_sample_entropy``) that :func:`~label_assistant.selectors.scores.score_prediction`
scores, ``embed(image)`` a feature vector. Images stream through one at a time and only the
per-image numbers are kept, so a pool of any size fits in memory.

- With ``predict``: every score the prediction supports (the epistemic ones need several
  samples: the caller's ``tta`` or ``mc_samples``, which :func:`check_strategy` checks).
- Without it: no scores, and cheap image descriptors as embeddings
  (:func:`~label_assistant.selectors.diversity.image_descriptor`) unless ``embed`` is given;
  only the model-free strategies (:func:`model_free_strategies`) can rank such a pool.

Images marked labeled are embedded (diversity measures the distance to them) but not
predicted: they are never ranked, so their scores are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from label_assistant.selectors.diversity import image_descriptor
from label_assistant.selectors.scores import EPISTEMIC_SCORES, SCORES, score_prediction
from label_assistant.selectors.strategies import (
    Pool,
    StrategySpec,
    parse_strategy,
    strategy_names,
)


class PoolError(ValueError):
    """A pool can't be built for this strategy: no model, no samples, wrong image channels."""


def model_free_strategies() -> list[str]:
    """Canonical strategy names that need no model (no score part)."""
    return [name for name in strategy_names() if parse_strategy(name).score is None]


def check_strategy(
    strategy: str, *, has_model: bool, tta: bool = False, mc_samples: int = 0
) -> StrategySpec:
    """The parsed strategy, or :class:`PoolError` when its inputs can't be computed."""
    spec = parse_strategy(strategy)
    if spec.score and not has_model:
        raise PoolError(
            f"strategy {spec.name!r} needs a trained model and there is none yet; "
            f"without a model use one of: {', '.join(model_free_strategies())}"
        )
    if spec.score in EPISTEMIC_SCORES and not (tta or mc_samples > 0):
        raise PoolError(
            f"strategy {spec.name!r} needs several predictions per image: "
            "turn on test-time augmentation (tta) or Monte-Carlo dropout samples (mc_samples)"
        )
    return spec


def pool_from_images(
    items: Iterable[tuple[str, np.ndarray]],
    *,
    predict: Callable[[np.ndarray], Any] | None = None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    strategy: str | None = None,
    sequences: Sequence[str | None] | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    tta: bool = False,
    mc_samples: int = 0,
) -> Pool:
    """A pool from ``(name, image)`` pairs (images as the callables take them), consumed one
    at a time. ``tta`` / ``mc_samples`` say what ``predict`` does (for :func:`check_strategy`).

    ``strategy`` (optional) limits the work to what it needs (embeddings only for diversity)
    and checks up front that it can run; without it everything that can be computed is.
    ``labeled``: indices or a bool mask in ``items`` order.
    """
    spec = None
    if strategy is not None:
        spec = check_strategy(strategy, has_model=predict is not None, tta=tta,
                              mc_samples=mc_samples)
    want_embeddings = spec is None or spec.diversity
    want_scores = predict is not None and (spec is None or spec.score is not None)
    labeled_set = _labeled_set(labeled)
    embed = embed or image_descriptor

    names: list[str] = []
    per_image: list[dict[str, float]] = []
    embeddings: list[np.ndarray] = []
    for index, (name, image) in enumerate(items):
        names.append(name)
        if want_scores and index not in labeled_set:
            per_image.append(score_prediction(predict(image)))
        else:
            per_image.append({})
        if want_embeddings:
            embeddings.append(embed(image))
    return Pool(
        names=names,
        sequences=sequences,
        scores=_score_columns(per_image),
        embeddings=np.stack(embeddings) if embeddings else None,
        labeled=_labeled_mask(labeled, len(names)),
    )


def _score_columns(per_image: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Score name -> (N,) array; images without scores (labeled ones) get 0."""
    keys = list(dict.fromkeys(k for values in per_image for k in values))
    return {k: np.array([values.get(k, 0.0) for values in per_image]) for k in keys}


def _labeled_set(labeled: np.ndarray | Sequence[int] | None) -> set[int]:
    if labeled is None:
        return set()
    labeled = np.asarray(labeled)
    if labeled.dtype == bool:
        return set(np.flatnonzero(labeled).tolist())
    return set(labeled.astype(np.int64).ravel().tolist())


def _labeled_mask(labeled: np.ndarray | Sequence[int] | None, n: int) -> np.ndarray | None:
    """As given, but a bool mask must fit the number of images actually read."""
    if labeled is None:
        return None
    labeled = np.asarray(labeled)
    if labeled.dtype == bool and labeled.shape != (n,):
        raise PoolError(f"labeled mask has {labeled.size} entries for {n} images")
    return labeled


def pool_from_predictions(
    names: Sequence[str],
    predictions: Iterable[Any],
    *,
    embeddings: np.ndarray | None = None,
    sequences: Sequence[str | None] | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    score_names: Iterable[str] | None = None,
) -> Pool:
    """A pool from predictions already made (objects with ``probabilities`` and optionally
    ``spread`` / ``mean_sample_entropy``, in ``names`` order), e.g. the backend's last ones."""
    wanted = list(score_names) if score_names is not None else None
    if wanted is not None:
        unknown = [n for n in wanted if n not in SCORES]
        if unknown:
            raise PoolError(f"unknown score {unknown[0]!r}; valid: {', '.join(SCORES)}")
    per_image = [score_prediction(prediction, wanted) for prediction in predictions]
    if len(per_image) != len(names):
        raise PoolError(f"{len(per_image)} predictions for {len(names)} names")
    return Pool(
        names=list(names),
        sequences=sequences,
        scores=_score_columns(per_image),
        embeddings=embeddings,
        labeled=labeled,
    )

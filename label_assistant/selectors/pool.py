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

A pool may mix grey and colour images: their image descriptors (one and three channels) are
made comparable by :func:`stack_vectors`.

The per-image step is :func:`score_image` (what :func:`plan` says the strategy needs);
:func:`pool_from_numbers` assembles its results. :func:`pool_from_images` runs the step here,
one image after the other; :mod:`label_assistant.model.dask_pool` runs the same step on Dask
workers, and the backend's ranking (:mod:`label_assistant.ml_backend.ranking`) either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

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


@dataclass(frozen=True)
class Work:
    """What a strategy needs of each image: image scores (a model's prediction), embeddings,
    and image descriptors whatever the embeddings are (to cluster images into sequences:
    :func:`~label_assistant.selectors.sequences.cluster_ids`)."""

    scores: bool
    embeddings: bool
    descriptors: bool = False


def plan(strategy: str | None, *, has_model: bool, tta: bool = False,
         mc_samples: int = 0) -> Work:
    """The per-image work ``strategy`` needs (everything computable when it is None); raises
    :class:`PoolError` when it can't run (:func:`check_strategy`)."""
    spec = None
    if strategy is not None:
        spec = check_strategy(strategy, has_model=has_model, tta=tta, mc_samples=mc_samples)
    return Work(scores=has_model and (spec is None or spec.score is not None),
                embeddings=spec is None or spec.diversity)


class ImageNumbers(NamedTuple):
    """What is kept of one image: its image scores (empty when not scored), embedding, and
    image descriptor (only when the work asks for descriptors)."""

    scores: dict[str, float]
    embedding: np.ndarray | None
    descriptor: np.ndarray | None = None


def score_image(
    image: np.ndarray,
    work: Work,
    *,
    predict: Callable[[np.ndarray], Any] | None = None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    labeled: bool = False,
    labeled_counts: np.ndarray | Sequence[int] | None = None,
) -> ImageNumbers:
    """The numbers of one image (a model input), the per-image step of every pool: scores of
    ``predict(image)`` unless ``labeled``, ``embed(image)`` (image descriptors without
    ``embed``) when ``work`` wants embeddings, the image descriptor when it wants descriptors.
    ``labeled_counts``: labeled pixels per class 0..K so far, for the ``class_balance`` score
    (:func:`~label_assistant.selectors.scores.class_balance`; without them it is the
    predicted foreground share). Run in this process by :func:`pool_from_images`, or on Dask
    workers (:mod:`label_assistant.model.dask_pool`)."""
    scores: dict[str, float] = {}
    if work.scores and predict is not None and not labeled:
        scores = score_prediction(predict(image), labeled_counts=labeled_counts)
    descriptor = image_descriptor(image) if work.descriptors else None
    embedding = None
    if work.embeddings:
        embedding = embed(image) if embed is not None else (
            descriptor if descriptor is not None else image_descriptor(image))
    return ImageNumbers(scores, embedding, descriptor)


def pool_from_numbers(
    names: Sequence[str],
    numbers: Sequence[ImageNumbers],
    *,
    sequences: Sequence[str | None] | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    labeled_elsewhere: Mapping[str, int] | None = None,
) -> Pool:
    """A pool from per-image numbers (:func:`score_image`) in ``names`` order: score columns
    (0 for images without scores), embeddings when every image has one;
    ``labeled_elsewhere``: see :class:`~label_assistant.selectors.strategies.Pool`."""
    if len(numbers) != len(names):
        raise PoolError(f"{len(numbers)} scored images for {len(names)} names")
    embeddings = None
    if numbers and all(n.embedding is not None for n in numbers):
        embeddings = stack_vectors([n.embedding for n in numbers], "embeddings")
    return Pool(
        names=list(names),
        sequences=sequences,
        scores=_score_columns([n.scores for n in numbers]),
        embeddings=embeddings,
        labeled=_labeled_mask(labeled, len(names)),
        labeled_elsewhere=labeled_elsewhere or {},
    )


def stack_vectors(vectors: Sequence[np.ndarray], what: str = "embeddings") -> np.ndarray:
    """Per-image vectors as one (N, D) array. A pool mixing grey and colour images has image
    descriptors of two lengths, L (one channel) and 3L (three): the descriptor of a grey image
    repeated to three channels is exactly ``np.tile(descriptor, 3)``, so when the lengths are
    L and 3L the short ones are tiled; any other mismatch is a :class:`PoolError`."""
    rows = [np.asarray(v).ravel() for v in vectors]
    lengths = sorted({len(r) for r in rows})
    if len(lengths) == 2 and lengths[1] == 3 * lengths[0]:
        rows = [np.tile(r, 3) if len(r) == lengths[0] else r for r in rows]
    elif len(lengths) > 1:
        raise PoolError(f"{what} of different lengths ({', '.join(map(str, lengths))}) can't "
                        "be compared; only one- and three-channel image descriptors mix")
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


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
    labeled_counts: np.ndarray | Sequence[int] | None = None,
) -> Pool:
    """A pool from ``(name, image)`` pairs (images as the callables take them), consumed one
    at a time. ``tta`` / ``mc_samples`` say what ``predict`` does (for :func:`check_strategy`).
    ``labeled_counts``: labeled pixels per class 0..K, for the ``class_balance`` score
    (:func:`score_image`; without them that score is the predicted foreground share).

    ``strategy`` (optional) limits the work to what it needs (embeddings only for diversity)
    and checks up front that it can run; without it everything that can be computed is.
    ``labeled``: indices or a bool mask in ``items`` order.
    """
    work = plan(strategy, has_model=predict is not None, tta=tta, mc_samples=mc_samples)
    labeled_set = _labeled_set(labeled)
    names: list[str] = []
    numbers: list[ImageNumbers] = []
    for index, (name, image) in enumerate(items):
        names.append(name)
        numbers.append(score_image(image, work, predict=predict, embed=embed,
                                   labeled=index in labeled_set, labeled_counts=labeled_counts))
    return pool_from_numbers(names, numbers, sequences=sequences, labeled=labeled)


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

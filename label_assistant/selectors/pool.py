"""Building a :class:`~label_assistant.selectors.strategies.Pool` from images: the I/O side.

The rest of ``selectors`` is pure; this module runs the model. It streams: one image is read,
predicted (:func:`~label_assistant.model.inference.predict_proba`), scored
(:func:`~label_assistant.selectors.scores.score_prediction`) and embedded at a time, and only
the per-image numbers are kept, so a folder of any size fits in memory.

- With a model: every score the prediction supports (the epistemic ones need ``tta`` or
  ``mc_samples``), and the model's pooled encoder features as embeddings
  (:func:`~label_assistant.model.inference.embed`).
- Without one: no scores, and cheap image descriptors as embeddings
  (:func:`~label_assistant.selectors.diversity.image_descriptor`); only the model-free
  strategies (:func:`model_free_strategies`) can rank such a pool.

Images marked labeled are embedded (diversity measures the distance to them) but not
predicted: they are never ranked, so their scores are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.selectors.diversity import image_descriptor
from label_assistant.selectors.scores import EPISTEMIC_SCORES, SCORES, score_prediction
from label_assistant.selectors.sequences import sequence_ids
from label_assistant.selectors.strategies import (
    Pool,
    StrategySpec,
    parse_strategy,
    strategy_names,
)

Progress = Callable[[Iterable[Any]], Iterable[Any]]


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


def _model_in_channels(model: Any) -> int | None:
    """Input channels of the model's first convolution (None if it has none)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return None


def pool_from_images(
    items: Iterable[tuple[str, np.ndarray]],
    *,
    model: Any | None = None,
    strategy: str | None = None,
    sequences: Sequence[str | None] | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    tta: bool = False,
    mc_samples: int = 0,
    device: Any = "cpu",
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
) -> Pool:
    """A pool from ``(name, image)`` pairs, images float32 (C, H, W) in [0, 1] (the model
    input), consumed one at a time.

    ``strategy`` (optional) limits the work to what it needs (embeddings only for diversity)
    and checks up front that it can run (:func:`check_strategy`); without it everything that
    can be computed is. ``labeled``: indices or a bool mask in ``items`` order.
    """
    spec = None
    if strategy is not None:
        spec = check_strategy(strategy, has_model=model is not None, tta=tta,
                              mc_samples=mc_samples)
    want_embeddings = spec is None or spec.diversity
    want_scores = model is not None and (spec is None or spec.score is not None)
    labeled_set = _labeled_set(labeled)
    channels = _model_in_channels(model) if model is not None else None

    names: list[str] = []
    per_image: list[dict[str, float]] = []
    embeddings: list[np.ndarray] = []
    for index, (name, image) in enumerate(items):
        if channels is not None and image.shape[0] != channels:
            raise PoolError(
                f"{name}: image has {image.shape[0]} channel(s), the model expects {channels}"
            )
        names.append(name)
        if want_scores and index not in labeled_set:
            per_image.append(_score(model, image, tta=tta, mc_samples=mc_samples, device=device,
                                    tile=tile, overlap=overlap, batch_size=batch_size))
        else:
            per_image.append({})
        if want_embeddings:
            embeddings.append(_embedding(model, image, device))
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


def _score(model: Any, image: np.ndarray, **inference: Any) -> dict[str, float]:
    from label_assistant.model.inference import predict_proba

    prediction = predict_proba(model, image, **inference)
    return score_prediction(prediction)


def _embedding(model: Any | None, image: np.ndarray, device: Any) -> np.ndarray:
    if model is None:
        return image_descriptor(image)
    from label_assistant.model.inference import embed

    return embed(model, image, device=device)


def read_model_input(path: Path) -> np.ndarray:
    """An image file as the model sees it: float32 (C, H, W) in [0, 1]."""
    from label_assistant.images import normalize_for_model, read_image

    return normalize_for_model(read_image(path))


def _read(paths: Iterable[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for path in paths:
        yield path.name, read_model_input(path)


def pool_from_folder(
    images: Sequence[Path],
    *,
    model: Any | None = None,
    strategy: str | None = None,
    sequence_regex: str | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    tta: bool = False,
    mc_samples: int = 0,
    device: Any = "cpu",
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> Pool:
    """A pool from image files, read one at a time (see :func:`pool_from_images`).

    Sequence ids come from ``sequence_regex`` over the file names (no match: own sequence).
    ``progress`` wraps the iteration over the files (a progress bar).
    """
    images = [Path(p) for p in images]
    sequences = sequence_ids([p.name for p in images], regex=sequence_regex)
    if strategy is not None:  # fail before reading a single image
        check_strategy(strategy, has_model=model is not None, tta=tta, mc_samples=mc_samples)
    paths: Iterable[Path] = progress(images) if progress is not None else images
    return pool_from_images(
        _read(paths),
        model=model,
        strategy=strategy,
        sequences=sequences,
        labeled=labeled,
        tta=tta,
        mc_samples=mc_samples,
        device=device,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
    )


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

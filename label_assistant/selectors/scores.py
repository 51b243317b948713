"""How informative one image is, from its predicted probabilities (pure functions on arrays).

Per-pixel measures take the probabilities contract, a float32 (K+1) x H x W softmax with
channel 0 = background, and return an H x W map. The three classical measures are modAL's own
(``modAL.uncertainty._proba_*``) applied to the pixels as rows, (H*W, K+1): measured on a
(2, 4096, 4096) map (benchmarks/bench_select.py, 2 shared cores) that costs 1.3-1.6x the plain
``scipy.special.entr`` sum for entropy (0.29-0.31 s vs 0.20-0.23 s) and the same as numpy for
least confidence and margin; small next to inference on such a map, so modAL's own
definitions are kept (tests check them against the plain formulas).

Epistemic measures use the summary of several stochastic forward passes (TTA / MC dropout):
``spread`` (std over samples, (K+1) x H x W) and ``mean_sample_entropy`` (H x W, nats).

Class balance (:func:`class_balance`) measures what an image holds, not how unsure the model
is: its expected pixel share of each class, weighted towards the classes with the fewest
labeled pixels so far (``labeled_counts``, classes 0..K).

Image scores = a per-pixel map where higher means more informative, aggregated per image
(``mean``, ``top_quantile``, ``class_weighted``). ``SCORES`` maps a score name to its image
score function; ``margin`` there is ``1 - (p1 - p2)`` so that higher is more informative too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty


class ScoreError(ValueError):
    """Arrays that break the probabilities contract, or an unknown score/aggregation name."""


class MissingInputError(ScoreError):
    """The score needs the sample summary (spread, mean_sample_entropy) and it is absent."""


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] < 1:
        raise ScoreError(f"probabilities must be (K+1, H, W), got shape {probabilities.shape}")
    return probabilities


def _pixels(probabilities: np.ndarray) -> np.ndarray:
    """(K+1, H, W) -> (H*W, K+1) view: the pixels as modAL's samples."""
    return _check_probabilities(probabilities).reshape(probabilities.shape[0], -1).T


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    """1 - max_c p_c per pixel (modAL's ``classifier_uncertainty``); 0 = certain."""
    h, w = probabilities.shape[1:]
    return _proba_uncertainty(_pixels(probabilities)).reshape(h, w)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """p_top1 - p_top2 per pixel (modAL's ``classifier_margin``); *low* = uncertain."""
    h, w = probabilities.shape[1:]
    return _proba_margin(_pixels(probabilities)).reshape(h, w)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats per pixel (modAL's ``classifier_entropy``); 0 log 0 = 0."""
    h, w = probabilities.shape[1:]
    return _proba_entropy(_pixels(probabilities)).reshape(h, w)


def variance(spread: np.ndarray) -> np.ndarray:
    """Mean over classes of the per-class variance across samples (spread is the std)."""
    spread = _check_probabilities(spread)
    return np.mean(np.square(spread, dtype=np.float32), axis=0)


def bald(probabilities: np.ndarray, mean_sample_entropy: np.ndarray) -> np.ndarray:
    """BALD mutual information per pixel: H(mean p) - mean over samples of H(p_sample).

    Non-negative in exact arithmetic (entropy is concave); clipped at 0 because the two terms
    come from different float32 sums.
    """
    mean_sample_entropy = np.asarray(mean_sample_entropy)
    if mean_sample_entropy.shape != probabilities.shape[1:]:
        raise ScoreError(
            f"mean_sample_entropy shape {mean_sample_entropy.shape} != "
            f"probabilities H x W {probabilities.shape[1:]}"
        )
    return np.maximum(entropy(probabilities) - mean_sample_entropy, 0.0)


def _balance_weights(k1: int, labeled_counts: np.ndarray | Iterable[int] | None) -> np.ndarray:
    """Class weights summing to 1: ``1 / (labeled pixels + 1)`` per class 0..K, normalised;
    without counts 0 for background and equal for the K classes (a single class: 1)."""
    if labeled_counts is None:
        weights = np.ones(k1)
        if k1 > 1:
            weights[0] = 0.0
        return weights / weights.sum()
    counts = np.asarray(labeled_counts, dtype=np.float64)
    if counts.shape != (k1,):
        raise ScoreError(f"labeled_counts needs {k1} values (classes 0..K), got shape "
                         f"{counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ScoreError("labeled_counts must be finite and non-negative")
    weights = class_weights_from_counts(counts + 1.0)  # 1 / (count + 1), mean 1
    return weights / weights.sum()


def class_balance_map(
    probabilities: np.ndarray, labeled_counts: np.ndarray | Iterable[int] | None = None
) -> np.ndarray:
    """Per pixel, the class probabilities weighted as in :func:`class_balance` (H x W); its
    mean over the pixels is the class balance score."""
    probabilities = _check_probabilities(probabilities)
    weights = _balance_weights(probabilities.shape[0], labeled_counts)
    return np.tensordot(weights, probabilities, axes=1)


def class_balance(
    probabilities: np.ndarray, labeled_counts: np.ndarray | Iterable[int] | None = None
) -> float:
    """How rich an image is in the classes with the fewest labeled pixels so far.

    The expected pixel share of each class c in the image (the mean of its softmax
    probabilities over the pixels, classes 0..K) weighted by w_c = 1 / (labeled pixels of c +
    1), the weights normalised to sum 1, summed: in [0, 1], high for an image rich in the
    rarest-labeled class. ``labeled_counts`` (K+1 values, background first; e.g. the sum of
    ``labelmap.labeled_pixel_counts`` over what is labeled) None: background weighs 0 and the
    K classes equally, so the score is the predicted foreground share and prefers
    foreground-rich images. (All counts equal, e.g. all 0, weigh every class equally, and then
    every image scores 1 / (K+1).)
    """
    return mean_score(class_balance_map(probabilities, labeled_counts))


def _informative_margin(probabilities: np.ndarray, **_: Any) -> np.ndarray:
    return 1.0 - margin(probabilities)


def _needs(name: str, value: np.ndarray | None, field: str) -> np.ndarray:
    if value is None:
        raise MissingInputError(f"score {name!r} needs {field} (inference with n_samples > 1)")
    return value


def _variance_map(probabilities: np.ndarray, spread=None, **_: Any) -> np.ndarray:
    spread = _needs("variance", spread, "spread")
    if np.shape(spread) != probabilities.shape:
        raise ScoreError(f"spread shape {np.shape(spread)} != probabilities {probabilities.shape}")
    return variance(spread)


def _bald_map(probabilities: np.ndarray, mean_sample_entropy=None, **_: Any) -> np.ndarray:
    return bald(probabilities, _needs("bald", mean_sample_entropy, "mean_sample_entropy"))


#: Score name -> per-pixel map (H x W), higher = more informative. Every function takes the
#: probabilities and the optional keywords ``spread``, ``mean_sample_entropy`` and
#: ``labeled_counts``.
PIXEL_SCORES: dict[str, Callable[..., np.ndarray]] = {
    "entropy": lambda probabilities, **_: entropy(probabilities),
    "margin": _informative_margin,
    "least_confidence": lambda probabilities, **_: least_confidence(probabilities),
    "variance": _variance_map,
    "bald": _bald_map,
    "class_balance": lambda probabilities, labeled_counts=None, **_: class_balance_map(
        probabilities, labeled_counts),
}

#: Scores that need several samples (TTA / MC dropout), not one forward pass.
EPISTEMIC_SCORES: frozenset[str] = frozenset({"variance", "bald"})
#: Scores of what an image holds (its predicted classes), not of the model's uncertainty.
COMPOSITION_SCORES: frozenset[str] = frozenset({"class_balance"})


# ---------------------------------------------------------------- aggregation over pixels


def mean_score(pixel_scores: np.ndarray) -> float:
    """Mean over all pixels."""
    return float(np.mean(pixel_scores, dtype=np.float64))


def top_quantile_mean(pixel_scores: np.ndarray, quantile: float = 0.1) -> float:
    """Mean of the ``quantile`` share of most informative pixels (at least one pixel).

    Large images with a small hard region are not drowned by their easy background.
    """
    if not 0.0 < quantile <= 1.0:
        raise ScoreError(f"quantile must be in (0, 1], got {quantile}")
    flat = np.ravel(pixel_scores)
    k = max(1, math.ceil(quantile * flat.size))
    top = np.partition(flat, flat.size - k)[flat.size - k :]
    return float(np.mean(top, dtype=np.float64))


def class_weighted_mean(
    pixel_scores: np.ndarray, probabilities: np.ndarray, class_weights: np.ndarray
) -> float:
    """Mean weighted by the weight of each pixel's predicted class (rare classes count more)."""
    probabilities = _check_probabilities(probabilities)
    class_weights = np.asarray(class_weights, dtype=np.float64)
    if class_weights.shape != (probabilities.shape[0],):
        raise ScoreError(
            f"class_weights needs {probabilities.shape[0]} values (K+1), got {class_weights.shape}"
        )
    if (class_weights < 0).any():
        raise ScoreError("class_weights must be non-negative")
    weights = class_weights[np.argmax(probabilities, axis=0)]
    total = weights.sum()
    return float((weights * pixel_scores).sum() / total) if total > 0 else 0.0


def class_weights_from_counts(pixel_counts: Iterable[int]) -> np.ndarray:
    """Inverse-frequency weights (mean 1) from labeled pixels per class 0..K.

    ``labelmap.labeled_pixel_counts`` summed over the labeled set is the intended input; a
    class with no labeled pixel yet gets the largest weight (it counts as one pixel).
    """
    counts = np.maximum(np.asarray(list(pixel_counts), dtype=np.float64), 1.0)
    if counts.ndim != 1 or counts.size == 0:
        raise ScoreError("pixel_counts must be a non-empty 1-D sequence")
    inverse = 1.0 / counts
    return inverse / inverse.mean()


AGGREGATIONS: tuple[str, ...] = ("mean", "top_quantile", "class_weighted")


def aggregate(
    pixel_scores: np.ndarray,
    how: str = "mean",
    *,
    probabilities: np.ndarray | None = None,
    quantile: float = 0.1,
    class_weights: np.ndarray | None = None,
) -> float:
    """One image score from a per-pixel map; ``how`` is one of ``AGGREGATIONS``."""
    if how == "mean":
        return mean_score(pixel_scores)
    if how == "top_quantile":
        return top_quantile_mean(pixel_scores, quantile)
    if how == "class_weighted":
        if probabilities is None or class_weights is None:
            raise ScoreError("class_weighted aggregation needs probabilities and class_weights")
        return class_weighted_mean(pixel_scores, probabilities, class_weights)
    raise ScoreError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")


# ---------------------------------------------------------------- image scores


def pixel_score(
    name: str,
    probabilities: np.ndarray,
    *,
    spread: np.ndarray | None = None,
    mean_sample_entropy: np.ndarray | None = None,
    labeled_counts: np.ndarray | Iterable[int] | None = None,
) -> np.ndarray:
    """The per-pixel map of score ``name`` (higher = more informative)."""
    try:
        measure = PIXEL_SCORES[name]
    except KeyError:
        raise ScoreError(f"unknown score {name!r}; valid: {', '.join(PIXEL_SCORES)}") from None
    probabilities = _check_probabilities(probabilities)
    return measure(probabilities, spread=spread, mean_sample_entropy=mean_sample_entropy,
                   labeled_counts=labeled_counts)


def image_score(
    name: str,
    probabilities: np.ndarray,
    *,
    spread: np.ndarray | None = None,
    mean_sample_entropy: np.ndarray | None = None,
    how: str = "mean",
    quantile: float = 0.1,
    class_weights: np.ndarray | None = None,
    labeled_counts: np.ndarray | Iterable[int] | None = None,
) -> float:
    """Score ``name`` of one image, aggregated over its pixels ``how`` (``labeled_counts``:
    only ``class_balance`` uses them)."""
    pixels = pixel_score(
        name, probabilities, spread=spread, mean_sample_entropy=mean_sample_entropy,
        labeled_counts=labeled_counts,
    )
    return aggregate(
        pixels, how, probabilities=probabilities, quantile=quantile, class_weights=class_weights
    )


#: Score name -> ``f(probabilities, *, spread=None, mean_sample_entropy=None, how="mean",
#: quantile=0.1, class_weights=None, labeled_counts=None) -> float``; higher = more informative.
SCORES: dict[str, Callable[..., float]] = {n: partial(image_score, n) for n in PIXEL_SCORES}


def score_prediction(prediction: Any, names: Iterable[str] | None = None, **kwargs: Any) -> dict:
    """Image scores of a prediction-like object (``probabilities``, ``spread``,
    ``mean_sample_entropy`` attributes; absent ones count as None).

    ``names=None`` gives every score whose inputs are present (epistemic ones need samples).
    ``kwargs`` go to :func:`image_score` (``how``, ``quantile``, ``class_weights``,
    ``labeled_counts``).
    """
    probabilities = prediction.probabilities
    spread = getattr(prediction, "spread", None)
    mean_sample_entropy = getattr(prediction, "mean_sample_entropy", None)
    if names is None:
        names = [
            n
            for n in SCORES
            if not (n == "variance" and spread is None)
            and not (n == "bald" and mean_sample_entropy is None)
        ]
    return {
        n: image_score(
            n, probabilities, spread=spread, mean_sample_entropy=mean_sample_entropy, **kwargs
        )
        for n in names
    }

"""Per-pixel scores, aggregation and the SCORES registry on tiny arrays with obvious answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty

from label_assistant.selectors import scores
from label_assistant.selectors.scores import (
    SCORES,
    MissingInputError,
    ScoreError,
    aggregate,
    class_balance,
    class_weighted_mean,
    class_weights_from_counts,
    image_score,
    score_prediction,
    top_quantile_mean,
)


def _map(*pixels: list[float]) -> np.ndarray:
    """(K+1, 1, n) probabilities from per-pixel class lists."""
    return np.asarray(pixels, dtype=np.float32).T[:, None, :]


def _samples_summary(samples: np.ndarray) -> SimpleNamespace:
    """What inference gives from S samples (S, K+1, H, W): mean, std, mean sample entropy."""
    sample_entropy = np.stack([-(s * np.log(np.where(s > 0, s, 1))).sum(0) for s in samples])
    return SimpleNamespace(
        probabilities=samples.mean(0).astype(np.float32),
        spread=samples.std(0).astype(np.float32),
        mean_sample_entropy=sample_entropy.mean(0).astype(np.float32),
    )


def _random_map(rng: np.random.Generator, k1: int, h: int, w: int) -> np.ndarray:
    return rng.dirichlet(np.ones(k1), size=(h, w)).transpose(2, 0, 1).astype(np.float32)


def test_hand_values_uniform_and_certain_pixels():
    probs = _map([0.5, 0.5], [1.0, 0.0], [0.2, 0.8])
    np.testing.assert_allclose(scores.entropy(probs)[0], [math.log(2), 0.0, 0.5004024], rtol=1e-5)
    np.testing.assert_allclose(scores.least_confidence(probs)[0], [0.5, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(scores.margin(probs)[0], [0.0, 1.0, 0.6], rtol=1e-6)


class _Proba:
    """A stand-in classifier for modAL: predict_proba returns the pixels as rows."""

    def __init__(self, probabilities: np.ndarray):
        self.rows = probabilities.reshape(probabilities.shape[0], -1).T

    def predict_proba(self, x):
        return self.rows


@settings(max_examples=25, deadline=None)
@given(k1=st.integers(2, 5), h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 99))
def test_pixel_measures_equal_modal_and_plain_formulas(k1, h, w, seed):
    probs = _random_map(np.random.default_rng(seed), k1, h, w)
    clf, x = _Proba(probs), np.zeros((h * w, 1))
    np.testing.assert_allclose(scores.entropy(probs).ravel(), classifier_entropy(clf, x), 1e-6)
    np.testing.assert_allclose(scores.margin(probs).ravel(), classifier_margin(clf, x), 1e-6)
    np.testing.assert_allclose(
        scores.least_confidence(probs).ravel(), classifier_uncertainty(clf, x), 1e-6
    )
    p = probs.astype(np.float64)
    plain_entropy = -(p * np.log(p)).sum(0)
    top2 = np.sort(p, axis=0)[-2:]
    np.testing.assert_allclose(scores.entropy(probs), plain_entropy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.margin(probs), top2[1] - top2[0], atol=1e-6)
    np.testing.assert_allclose(scores.least_confidence(probs), 1 - p.max(0), atol=1e-6)


def test_variance_is_mean_squared_spread():
    spread = np.stack([np.full((2, 2), 0.1), np.full((2, 2), 0.3)]).astype(np.float32)
    np.testing.assert_allclose(scores.variance(spread), np.full((2, 2), (0.01 + 0.09) / 2), 1e-6)


def test_bald_hand_values():
    # Two confident samples that disagree: mean is uniform (ln 2), each sample has entropy 0.
    disagree = _samples_summary(np.array([_map([1.0, 0.0]), _map([0.0, 1.0])]))
    agree = _samples_summary(np.array([_map([0.7, 0.3]), _map([0.7, 0.3])]))
    np.testing.assert_allclose(
        scores.bald(disagree.probabilities, disagree.mean_sample_entropy), [[math.log(2)]], 1e-6
    )
    np.testing.assert_allclose(
        scores.bald(agree.probabilities, agree.mean_sample_entropy), [[0.0]], atol=1e-6
    )


def test_bald_equals_entropy_of_mean_minus_mean_entropy_and_is_non_negative():
    rng = np.random.default_rng(1)
    samples = np.stack([_random_map(rng, 3, 4, 5) for _ in range(6)])
    summary = _samples_summary(samples)
    expected = scores.entropy(summary.probabilities) - summary.mean_sample_entropy
    got = scores.bald(summary.probabilities, summary.mean_sample_entropy)
    np.testing.assert_allclose(got, np.maximum(expected, 0), atol=1e-6)
    assert (got >= 0).all() and got.max() > 0


def test_aggregations_by_hand():
    pixels = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert aggregate(pixels, "mean") == pytest.approx(49.5)
    assert top_quantile_mean(pixels, 0.1) == pytest.approx(94.5)  # mean of 90..99
    assert top_quantile_mean(pixels, 0.001) == 99.0  # at least one pixel
    assert top_quantile_mean(pixels, 1.0) == pytest.approx(49.5)
    with pytest.raises(ScoreError, match="quantile"):
        top_quantile_mean(pixels, 0.0)
    with pytest.raises(ScoreError, match="unknown aggregation"):
        aggregate(pixels, "median")


def test_class_weighted_mean_counts_rare_class_more():
    probs = _map([0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8])
    pixel = np.array([[0.1, 0.1, 0.1, 0.5]])
    assert class_weighted_mean(pixel, probs, [1.0, 1.0]) == pytest.approx(0.2)
    # class 1 three times as heavy: (3 * 0.1 + 3 * 0.5) / (3 + 3)
    assert class_weighted_mean(pixel, probs, [1.0, 3.0]) == pytest.approx(0.3)
    with pytest.raises(ScoreError, match="K\\+1"):
        class_weighted_mean(pixel, probs, [1.0, 1.0, 1.0])


def test_class_weights_from_counts():
    weights = class_weights_from_counts([1000, 10, 0])
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2]
    assert weights[1] / weights[0] == pytest.approx(100.0)


def _uncertain_and_certain():
    rng = np.random.default_rng(2)
    h = w = 4
    disagree = np.stack(
        [np.stack([np.full((h, w), a), np.full((h, w), 1 - a)]) for a in (0.9, 0.1)]
    )
    agree = np.stack([np.stack([np.full((h, w), 0.95), np.full((h, w), 0.05)])] * 2)
    noise = rng.uniform(-0.01, 0.01, size=(h, w))
    disagree[:, 0] += noise  # keep the maps from being perfectly flat
    disagree[:, 1] -= noise
    return _samples_summary(disagree), _samples_summary(agree)


@pytest.mark.parametrize("name", sorted(set(SCORES) - scores.COMPOSITION_SCORES))
@pytest.mark.parametrize("how", ["mean", "top_quantile", "class_weighted"])
def test_every_uncertainty_score_ranks_the_uncertain_image_higher(name, how):
    uncertain, certain = _uncertain_and_certain()
    kwargs = {"how": how, "class_weights": np.array([1.0, 2.0])}

    def score(pred):
        return SCORES[name](
            pred.probabilities,
            spread=pred.spread,
            mean_sample_entropy=pred.mean_sample_entropy,
            **kwargs,
        )

    high, low = score(uncertain), score(certain)
    assert isinstance(high, float) and math.isfinite(high) and math.isfinite(low)
    assert low >= 0.0
    assert high > low


@pytest.mark.parametrize("name", sorted(scores.EPISTEMIC_SCORES))
def test_epistemic_scores_need_samples(name):
    probs = _map([0.5, 0.5])
    with pytest.raises(MissingInputError, match=name):
        image_score(name, probs)


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ScoreError, match="unknown score 'foo'"):
        image_score("foo", _map([0.5, 0.5]))
    with pytest.raises(ScoreError, match=r"\(K\+1, H, W\)"):
        image_score("entropy", np.ones((2, 2)))
    with pytest.raises(ScoreError, match="spread shape"):
        image_score("variance", _map([0.5, 0.5]), spread=np.ones((3, 1, 1)))
    with pytest.raises(ScoreError, match="mean_sample_entropy shape"):
        image_score("bald", _map([0.5, 0.5]), mean_sample_entropy=np.ones((2, 2)))


def test_score_prediction_uses_what_the_prediction_has():
    uncertain, _ = _uncertain_and_certain()
    single = SimpleNamespace(probabilities=uncertain.probabilities, spread=None)
    assert set(score_prediction(single)) == {"entropy", "margin", "least_confidence",
                                             "class_balance"}
    full = score_prediction(uncertain, how="top_quantile")
    assert set(full) == set(SCORES)
    assert full["entropy"] == pytest.approx(
        image_score("entropy", uncertain.probabilities, how="top_quantile")
    )


# ---------------------------------------------------------------- class balance


def test_class_balance_by_hand():
    # 4 pixels, certain: background, background, class 1, class 2 -> shares 1/2, 1/4, 1/4
    probs = _map([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    # w ~ 1/(count + 1) = 1/100, 1/10, 1/1, normalised: sum = 1.11
    expected = (0.5 / 100 + 0.25 / 10 + 0.25 / 1) / 1.11
    assert class_balance(probs, [99, 9, 0]) == pytest.approx(expected)
    # all counts equal: every class weighs 1/3 and the shares sum to 1
    assert class_balance(probs, [5, 5, 5]) == pytest.approx(1 / 3)
    # no counts: the foreground share (background weighs 0, classes 1 and 2 one half each)
    assert class_balance(probs) == pytest.approx(0.5 * 0.25 + 0.5 * 0.25)
    # soft probabilities: the share is the mean probability
    soft = _map([0.5, 0.5], [0.9, 0.1])
    assert class_balance(soft, [1, 0]) == pytest.approx((0.7 / 2 + 0.3 / 1) / 1.5)
    # the registered score is the same number, with labeled_counts as a keyword
    assert SCORES["class_balance"](probs, labeled_counts=[99, 9, 0]) == pytest.approx(expected)
    assert score_prediction(SimpleNamespace(probabilities=probs), ["class_balance"],
                            labeled_counts=[99, 9, 0]) == {"class_balance": pytest.approx(expected)}


def test_class_balance_prefers_the_image_rich_in_the_rarest_labeled_class():
    rich_in_1 = _map([0.1, 0.8, 0.1], [0.1, 0.8, 0.1])
    rich_in_2 = _map([0.1, 0.1, 0.8], [0.1, 0.1, 0.8])
    counts = [10_000, 50, 5_000]  # class 1 is the rarest labeled
    assert class_balance(rich_in_1, counts) > class_balance(rich_in_2, counts)
    counts = [10_000, 5_000, 50]
    assert class_balance(rich_in_2, counts) > class_balance(rich_in_1, counts)


def test_class_balance_bad_counts_are_one_line_errors():
    probs = _map([0.5, 0.5])
    with pytest.raises(ScoreError, match=r"labeled_counts needs 2 values \(classes 0..K\)"):
        class_balance(probs, [1, 2, 3])
    with pytest.raises(ScoreError, match="non-negative"):
        class_balance(probs, [1, -1])
    with pytest.raises(ScoreError, match="non-negative"):
        class_balance(probs, [1, float("nan")])
    with pytest.raises(ScoreError, match=r"\(K\+1, H, W\)"):
        class_balance(np.ones((2, 2)))

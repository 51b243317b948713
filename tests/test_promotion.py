"""Champion and challenger (model.promotion): the validation split, the scores, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.labelmap import UNLABELED
from label_assistant.model.promotion import (
    MIN_VALIDATION_PIXELS,
    Scores,
    decide,
    score,
    validation_keys,
)

CLASSES = ["Background", "Nucleus"]


def test_the_validation_share_is_stable_as_the_set_grows():
    keys = [f"task-{i}" for i in range(200)]
    held = validation_keys(keys, 0.2)
    assert 25 <= len(held) <= 55  # about a fifth
    for n in (20, 50, 120):  # earlier, smaller sets: the same keys are held out of them
        assert validation_keys(keys[:n], 0.2) == held & set(keys[:n]) or n < 3
    assert validation_keys(reversed(keys), 0.2) == held  # order does not matter


def test_small_sets_hold_out_one_once_there_are_three_and_never_all():
    assert validation_keys(["a"], 0.2) == set()
    assert validation_keys(["a", "b"], 0.2) <= {"a", "b"}
    three = validation_keys(["a", "b", "c"], 0.2)
    assert len(three) >= 1 and len(three) < 3
    assert validation_keys(["a", "b", "c"], 0.0) == set()
    assert len(validation_keys([str(i) for i in range(5)], 0.99)) == 4  # one always trains
    with pytest.raises(ValueError, match="share"):
        validation_keys(["a"], 1.0)


def test_a_collapse_cannot_hide_behind_foreground_dice():
    # Partial truth: a nucleus and background around it, the rest unlabeled.
    truth = np.full((20, 20), UNLABELED, np.uint8)
    truth[5:10, 5:10] = 1
    truth[2:13, 2:4] = 0
    truth[2:13, 11:13] = 0
    blob = np.ones((20, 20), np.uint8)  # everything foreground
    good = np.zeros((20, 20), np.uint8)
    good[5:10, 5:10] = 1
    collapsed, right = score([truth], [blob], 1), score([truth], [good], 1)
    assert collapsed.dice[1] > 0.5  # its foreground Dice looks fine ...
    assert collapsed.dice[0] == 0.0 and collapsed.mean_dice < 0.5  # ... the mean does not
    assert right.mean_dice == 1.0 and right.pixel_accuracy == 1.0
    assert right.pixels == (44, 25)


def test_scores_of_a_confusion_matrix_by_hand():
    s = Scores.of_confusion(np.array([[8, 2], [0, 10]]))
    assert s.dice == pytest.approx((16 / 18, 20 / 22))
    assert s.mean_dice == pytest.approx((16 / 18 + 20 / 22) / 2)
    assert s.pixel_accuracy == pytest.approx(0.9) and s.pixels == (10, 10)
    absent = Scores.of_confusion(np.array([[5, 0, 0], [0, 0, 0], [0, 0, 5]]))
    assert absent.dice[1] is None and absent.mean_dice == 1.0  # a class in neither map


def _scores(mean: float, pixels: tuple[int, int] = (1000, 1000)) -> Scores:
    return Scores(dice=(mean, mean), mean_dice=mean, pixel_accuracy=mean, pixels=pixels)


def test_the_candidate_serves_only_when_it_beats_the_champion():
    won = decide(_scores(0.8), _scores(0.7), "otsu-1234", CLASSES)
    assert won.promoted and "0.8000 beats otsu-1234's 0.7000" in won.reason
    lost = decide(_scores(0.7), _scores(0.7), "v0002", CLASSES)
    assert not lost.promoted and "does not beat" in lost.reason
    assert not decide(_scores(0.71), _scores(0.7), "v0002", CLASSES, min_gain=0.02).promoted
    few = decide(_scores(0.9, (1000, MIN_VALIDATION_PIXELS - 1)), _scores(0.1), "v1", CLASSES)
    assert not few.promoted and "too few validation pixels" in few.reason
    assert "Nucleus 199" in few.reason
    none = decide(None, None, "otsu-1", CLASSES)
    assert not none.promoted and "no validation annotations" in none.reason
    assert none.to_dict()["candidate_scores"] is None and won.to_dict()["promoted"] is True

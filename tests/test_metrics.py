import numpy as np
import pytest

from label_assistant.labelmap import UNLABELED
from label_assistant.metrics import confusion_matrix, dice_per_class, foreground_dice


def test_dice_by_hand():
    truth = np.array([[1, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 0, 0]], np.uint8)
    # class 1: tp=1, fp=0, fn=1 -> 2/3; class 0: tp=2, fp=1, fn=0 -> 4/5
    np.testing.assert_allclose(dice_per_class(truth, pred, 1), [4 / 5, 2 / 3])


def test_unlabeled_truth_pixels_are_ignored():
    truth = np.array([[1, UNLABELED, UNLABELED]], np.uint8)
    pred = np.array([[1, 0, 1]], np.uint8)
    assert foreground_dice(truth, pred) == 1.0
    assert confusion_matrix(truth, pred, 1).sum() == 1


def test_absent_class_is_nan_and_shape_mismatch_raises():
    truth = np.zeros((2, 2), np.uint8)
    assert np.isnan(dice_per_class(truth, truth, 1)[1])
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_class(truth, np.zeros((3, 2), np.uint8), 1)

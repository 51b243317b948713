"""Segmentation metrics over labeled pixels only (unlabeled = 255 is ignored)."""

from __future__ import annotations

import numpy as np

from label_assistant.labelmap import UNLABELED


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, n_classes: int
) -> np.ndarray:
    """(K+1) x (K+1) counts, rows = truth, columns = prediction, over pixels labeled in truth."""
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, prediction {prediction.shape}")
    k1 = n_classes + 1
    keep = truth != UNLABELED
    t = truth[keep].astype(np.int64)
    p = prediction[keep].astype(np.int64)
    p = np.where(p < k1, p, 0)  # an unlabeled prediction counts as background
    return np.bincount(t * k1 + p, minlength=k1 * k1).reshape(k1, k1)


def dice_iou_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Dice and IoU from a confusion matrix (or a stack of them, (..., K+1, K+1));
    NaN for a class absent in both."""
    cm = np.asarray(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
    return dice, iou


def dice_per_class(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice for each value 0..K over labeled pixels; NaN where a class is absent in both."""
    return dice_iou_from_confusion(confusion_matrix(truth, prediction, n_classes))[0]


def foreground_dice(truth: np.ndarray, prediction: np.ndarray, n_classes: int = 1) -> float:
    """Mean Dice over the foreground classes 1..K (the number the reference paper reports)."""
    dice = dice_per_class(truth, prediction, n_classes)[1:]
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")

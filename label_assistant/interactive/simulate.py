"""The standard click simulator of interactive-segmentation papers, and the numbers they
report.

:func:`next_click`: the next click goes to the centre of the largest error region (the
pixel farthest from the region's border and from the image's border, by the distance
transform, as RITM and its predecessors place it): positive where the object was missed,
negative where too much was taken. :func:`noc`: the number of clicks to reach an IoU
threshold (NoC@85, NoC@90), capped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from label_assistant.interactive.prompts import Box, Click


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def next_click(prediction: np.ndarray, truth: np.ndarray) -> Click | None:
    """The click an annotator would make next: at the deepest point of the larger error
    (missed object -> positive, extra pixels -> negative); None when there is no error."""
    missed = truth & ~prediction
    extra = prediction & ~truth
    best: tuple[float, Click] | None = None
    for error, positive in ((missed, True), (extra, False)):
        if not error.any():
            continue
        # Padded with non-error: the image's border counts as the region's border.
        depth = ndi.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if best is None or depth[row, col] > best[0]:
            best = (float(depth[row, col]), Click(col + 0.5, row + 0.5, positive))
    return None if best is None else best[1]


def box_of(truth: np.ndarray) -> Box:
    """The tight bounding box of an object (what an annotator drags)."""
    rows, cols = np.nonzero(truth)
    return Box(float(cols.min()), float(rows.min()), float(cols.max() + 1),
               float(rows.max() + 1))


def extreme_points_of(truth: np.ndarray) -> tuple[Click, Click, Click, Click]:
    """The left-, right-, top- and bottom-most pixels of an object (pixel centres)."""
    rows, cols = np.nonzero(truth)
    picks = (np.argmin(cols), np.argmax(cols), np.argmin(rows), np.argmax(rows))
    return tuple(Click(cols[i] + 0.5, rows[i] + 0.5, True) for i in picks)  # type: ignore[return-value]


def noc(ious: list[float], threshold: float, cap: int = 20) -> int:
    """Clicks until the IoU reaches ``threshold``: ``ious[i]`` is the IoU after ``i + 1``
    clicks; ``cap`` when it never does within them."""
    for i, value in enumerate(ious[:cap]):
        if value >= threshold:
            return i + 1
    return cap

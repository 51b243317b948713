"""Label maps drawn over their image: what a person looks at to judge a pre-label.

A label map PNG holds 0, 1, ..., K: black in any viewer. :func:`overlay` draws each class's
outlines (scikit-image's ``find_boundaries``) in its colour over the image as it is shown
for labeling (:func:`label_assistant.images.to_display_uint8`), as an RGB uint8 array.
"""

from __future__ import annotations

import numpy as np

from label_assistant.images import to_display_uint8
from label_assistant.labelmap import UNLABELED

#: Outline colours of classes 1, 2, ... (repeated past the last): red, green, blue, ...
COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)], np.uint8)


def overlay(image: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: ``image`` for display with the outlines of every object of
    ``label_map`` (classes 1..K; 0 and 255 draw nothing), two pixels wide."""
    from skimage.segmentation import find_boundaries

    shown = to_display_uint8(image)
    if shown.shape[:2] != label_map.shape:
        raise ValueError(f"label map {label_map.shape} and image {shown.shape[:2]} differ in "
                         "size")
    rgb = np.repeat(shown[..., :1], 3, axis=2) if shown.shape[2] < 3 else shown[..., :3].copy()
    classes = np.where(label_map == UNLABELED, 0, label_map)
    for value in np.unique(classes):
        if value == 0:
            continue
        edges = find_boundaries(classes == value, mode="inner")
        edges |= find_boundaries(classes == value, mode="outer") & (classes != value)
        rgb[edges] = COLOURS[(int(value) - 1) % len(COLOURS)]
    return rgb

"""The label-map contract shared by every part of label-assistant.

A *label map* is a ``uint8`` H x W array: ``0`` = background, ``1..K`` = the classes in
label-config order, ``255`` = unlabeled (ignored by every loss and metric, the PASCAL VOC
"void" convention). An *instance map* is an integer H x W array: ``0`` = none, ``1..N`` = objects.

This module is the one place these values are defined.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BACKGROUND: int = 0
UNLABELED: int = 255
#: The largest number of foreground classes a uint8 label map can hold (1..254).
MAX_CLASSES: int = 254

# 8-connectivity: objects touching only at a corner count as touching too.
_NEIGHBOURHOOD = np.ones((3, 3), dtype=bool)


def check_label_map(label_map: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Return ``label_map`` if it honours the contract, else raise ``ValueError``.

    ``n_classes`` is K (foreground classes); when given, values must be in 0..K or 255.
    """
    if not isinstance(label_map, np.ndarray) or label_map.ndim != 2:
        raise ValueError("a label map must be a 2-D numpy array")
    if label_map.dtype != np.uint8:
        raise ValueError(f"a label map must be uint8, got {label_map.dtype}")
    if n_classes is not None:
        bad = (label_map > n_classes) & (label_map != UNLABELED)
        if bad.any():
            values = sorted(set(np.unique(label_map[bad]).tolist()))
            raise ValueError(
                f"label map holds values {values[:5]} outside 0..{n_classes} and {UNLABELED}"
            )
    return label_map


def separate_touching(instances: np.ndarray) -> np.ndarray:
    """Return a copy of ``instances`` where no two different objects touch.

    Where a pixel of object ``i`` touches (8-connectivity) a pixel of an object with a larger
    id, the pixel is set to 0. Afterwards every pair of different objects is separated by at
    least one pixel of 0, and only the pixels that touched another object changed.
    """
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError("an instance map must be 2-D")
    out = instances.copy()
    if out.size == 0:
        return out
    largest_neighbour = ndi.grey_dilation(instances, footprint=_NEIGHBOURHOOD, mode="constant")
    out[(instances > 0) & (largest_neighbour > instances)] = 0
    return out


def instances_to_label_map(
    instances: np.ndarray,
    class_of_instance: dict[int, int] | int = 1,
    separate: bool = True,
) -> np.ndarray:
    """Semantic label map from an instance map; background where there is no object.

    ``class_of_instance`` maps instance id -> class (1..K), or one class for all objects.
    With ``separate`` (the default, as training from instances requires), touching objects
    keep at least one pixel of background between them.
    """
    if separate:
        instances = separate_touching(instances)
    label_map = np.zeros(instances.shape, dtype=np.uint8)
    if isinstance(class_of_instance, int):
        label_map[instances > 0] = class_of_instance
        return label_map
    ids = np.asarray(list(class_of_instance.keys()), dtype=np.int64)
    classes = np.asarray(list(class_of_instance.values()), dtype=np.uint8)
    lookup = np.zeros(int(max(ids.max(initial=0), instances.max(initial=0))) + 1, np.uint8)
    lookup[ids] = classes
    label_map[:] = lookup[instances]
    return label_map


def labeled_pixel_counts(label_map: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels per value 0..K (background first); unlabeled pixels are not counted."""
    counts = np.bincount(label_map.ravel(), minlength=256)
    return counts[: n_classes + 1].copy()

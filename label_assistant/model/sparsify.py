"""Turn a dense ground-truth label map into a partial annotation, like an annotator's.

An annotator labels a few *whole* objects and a little context around them, and leaves the
rest unlabeled. To simulate that generically, for nuclei (small foreground blobs on one large
background) as for EM membranes (class 1 = one sprawling membrane network; the cells are the
background components it encloses):

- **objects** are the 4-connected components of equal value (any value, background too) whose
  area is below ``max_object_fraction`` of the image. Sprawling components (the background
  around nuclei, the membrane network, very large cells) are never objects: they are
  *context*. 4-connectivity keeps cells apart across one-pixel diagonal membranes.
- objects are taken in a seeded random order; each one kept is labeled whole, together with a
  band of ``band`` pixels (Euclidean) around it in which the *context* pixels keep their true
  value (the background ring around a nucleus, the membrane around a cell). Other objects
  inside the band stay unlabeled: every object ends up either wholly labeled or wholly
  unlabeled, never cut.
- an object is kept when the labeled count stays within ``fraction`` of the image's pixels
  (+1% of that target); objects that would overshoot are skipped, and the smallest of them is
  added at the end only if that gets closer to the target. When the objects run out first,
  the result holds fewer labeled pixels than asked (``labeled_fraction`` says how many).

The dense map holds no instance information: touching objects of the same class are one
component and are kept (or not) together.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from label_assistant.labelmap import UNLABELED

# 4-connectivity (see the module docstring)
_CONNECTIVITY = ndi.generate_binary_structure(2, 1)


class SparsifyError(ValueError):
    """Input that can't be sparsified: not a dense 2-D label map, or a bad fraction."""


def objects_of(label_map: np.ndarray, max_object_fraction: float = 0.05) -> np.ndarray:
    """int32 map of objects (1..N; 0 = context): small components of equal value."""
    components = np.zeros(label_map.shape, np.int32)
    n = 0
    for value in np.unique(label_map):
        # per value, so equal neighbours join and different values never do
        labeled, count = ndi.label(label_map == value, structure=_CONNECTIVITY)
        components[labeled > 0] = labeled[labeled > 0] + n
        n += count
    areas = np.bincount(components.ravel(), minlength=n + 1)
    small = areas < max_object_fraction * label_map.size
    small[0] = False
    ids = np.zeros(n + 1, np.int32)
    ids[small] = np.arange(1, int(small.sum()) + 1)
    return ids[components]


def sparsify(
    label_map: np.ndarray,
    fraction: float,
    *,
    band: int = 3,
    max_object_fraction: float = 0.05,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """A copy of dense ``label_map`` (0..K) with about ``fraction`` of its pixels kept and the
    rest UNLABELED: whole objects plus a ``band`` of context around each (see module doc)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or label_map.dtype != np.uint8:
        raise SparsifyError("a label map must be a 2-D uint8 array")
    if (label_map == UNLABELED).any():
        raise SparsifyError(f"the label map must be dense (no {UNLABELED})")
    if not 0.0 < fraction <= 1.0:
        raise SparsifyError(f"fraction must be in (0, 1], got {fraction}")
    if band < 0:
        raise SparsifyError(f"band must be >= 0, got {band}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    objects = objects_of(label_map, max_object_fraction)
    context = objects == 0
    keep = np.zeros(label_map.shape, bool)
    boxes = ndi.find_objects(objects)

    def region_of(index: int) -> tuple[tuple[slice, ...], np.ndarray]:
        """The object with its band of context pixels, in a window around it."""
        box = boxes[index - 1]
        window = tuple(
            slice(max(s.start - band, 0), min(s.stop + band, n))
            for s, n in zip(box, label_map.shape, strict=True)
        )
        inside = objects[window] == index
        ring = ndi.distance_transform_edt(~inside) <= band if band > 0 else inside
        return window, inside | (ring & context[window])

    target = fraction * label_map.size
    tolerance = 0.01 * target
    kept = 0
    overshooter, overshoot = 0, np.inf  # the object that would overshoot least
    for index in (rng.permutation(len(boxes)) + 1).tolist():
        if kept >= target - tolerance:
            break
        window, region = region_of(index)
        new = int(np.count_nonzero(region & ~keep[window]))
        if kept + new <= target + tolerance:
            keep[window] |= region
            kept += new
        elif new < overshoot:
            overshooter, overshoot = index, new
    if kept < target - tolerance and overshooter:
        # every object left overshoots: take the smallest one if it gets closer to the target
        window, region = region_of(overshooter)
        new = int(np.count_nonzero(region & ~keep[window]))
        if abs(kept + new - target) < abs(kept - target):
            keep[window] |= region
    out = np.full(label_map.shape, UNLABELED, np.uint8)
    out[keep] = label_map[keep]
    return out


def labeled_fraction(label_map: np.ndarray) -> float:
    """Share of pixels that are labeled (not UNLABELED)."""
    return float(np.count_nonzero(label_map != UNLABELED)) / max(label_map.size, 1)

"""Post-assistance: cleanup of a submitted annotation before it is inspected and trained on.

Annotators label partially: some objects fully, background around them, the rest unlabeled
(``255``, ignored in training). Cleanup therefore never turns unlabeled pixels into labels on
a guess, and never turns doubtful labels into background; doubtful labels become unlabeled.

Operations, in the order applied (each one reported in ``CleanupResult.changes``):

1. ``open`` (off by default): per-class morphological opening with a disk of
   ``open_radius``; removed pixels become unlabeled.
2. ``close`` (off by default): per-class closing with a disk of ``close_radius``; it may
   only add pixels that were unlabeled (classes in ascending order; the first class to claim
   a pixel gets it). Besides hole filling, the only operation that adds labels.
3. ``fill_holes``: a hole of class ``c`` (a 4-connected region of non-``c`` pixels that
   ``c``'s 8-connected region encloses) is filled with ``c`` when it holds only unlabeled
   pixels and has at most ``max_hole_size`` pixels: an outlined or painted ring means a
   filled object. Holes holding another class, or any explicit background, are left alone
   (background inside an object may be deliberate, e.g. a lumen). Background itself is never
   hole-filled: unlabeled pixels inside a ring of background are more likely an object the
   annotator has not labeled yet.
4. ``remove_fragments``: 8-connected fragments of a class (1..K) smaller than
   ``min_fragment_size`` become unlabeled, never background: we don't know what they are.
   Background fragments are kept: thin background lines between objects are what teach
   the model to separate them.
5. ``separate_touching``: with an instance map, objects of the same class with different
   ids that touch (8-connectivity) get a one-pixel background line carved between them
   (``labelmap.separate_touching``, per class). Without an instance map, touching objects
   of one class form one region and can't be told apart, so nothing is carved.

Instance maps are kept consistent: pixels that become unlabeled or background get instance
0; pixels added to class ``c`` take the id of the nearest object of class ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi

from label_assistant.labelmap import BACKGROUND, UNLABELED, check_label_map, separate_touching

#: Fragments of a class below this many pixels are taken as stray brush strokes.
DEFAULT_MIN_FRAGMENT_SIZE = 10

_EIGHT = np.ones((3, 3), dtype=bool)  # objects: 8-connectivity, as in labelmap
_FOUR = ndi.generate_binary_structure(2, 1)  # holes: 4-connectivity, the dual of 8


class CleanupError(ValueError):
    """Bad cleanup input: parameters out of range, arrays of the wrong shape or type."""


@dataclass(frozen=True)
class CleanupParams:
    """What :func:`cleanup` does; the defaults only remove, fill enclosed holes and separate."""

    fill_holes: bool = True
    #: Largest unlabeled hole (pixels) that is filled; None = any size.
    max_hole_size: int | None = None
    #: Class fragments smaller than this become unlabeled; 0 or 1 = off.
    min_fragment_size: int = DEFAULT_MIN_FRAGMENT_SIZE
    #: Disk radius of the per-class opening; 0 = off.
    open_radius: int = 0
    #: Disk radius of the per-class closing (adds unlabeled pixels only); 0 = off.
    close_radius: int = 0
    #: Carve one pixel of background between touching objects of one class (needs instances).
    separate: bool = True

    def __post_init__(self) -> None:
        for name in ("min_fragment_size", "open_radius", "close_radius"):
            if getattr(self, name) < 0:
                raise CleanupError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_hole_size is not None and self.max_hole_size < 0:
            raise CleanupError(f"max_hole_size must be >= 0 or None, got {self.max_hole_size}")


@dataclass
class CleanupResult:
    """The cleaned label map (and instance map), and pixels changed per operation."""

    label_map: np.ndarray
    instances: np.ndarray | None
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Pixels changed in total (a pixel changed twice counts twice)."""
        return sum(self.changes.values())


def cleanup(
    label_map: np.ndarray,
    *,
    instances: np.ndarray | None = None,
    params: CleanupParams = CleanupParams(),  # noqa: B008  (frozen, so a shared default is safe)
) -> CleanupResult:
    """Clean a submitted label map (and its instance map); the inputs are not modified."""
    try:
        check_label_map(label_map)
    except ValueError as error:
        raise CleanupError(str(error)) from None
    out = label_map.copy()
    inst = None
    if instances is not None:
        instances = np.asarray(instances)
        if instances.shape != label_map.shape:
            raise CleanupError(
                f"instance map shape {instances.shape} differs from label map {label_map.shape}"
            )
        inst = instances.copy()

    changes: dict[str, int] = {}
    if params.open_radius > 0:
        changes["open"] = _open(out, inst, params.open_radius)
    if params.close_radius > 0:
        changes["close"] = _close(out, inst, params.close_radius)
    if params.fill_holes:
        changes["fill_holes"] = _fill_holes(out, inst, params.max_hole_size)
    if params.min_fragment_size > 1:
        changes["remove_fragments"] = _remove_fragments(out, inst, params.min_fragment_size)
    if params.separate:
        changes["separate_touching"] = _separate(out, inst, label_map == UNLABELED)
    return CleanupResult(label_map=out, instances=inst, changes=changes)


# --- the operations: each edits `out` / `inst` in place and returns pixels changed ---------


def _classes(label_map: np.ndarray) -> list[int]:
    """Foreground classes present (1..254), ascending."""
    values = np.flatnonzero(np.bincount(label_map.ravel(), minlength=256))
    return [int(v) for v in values if v not in (BACKGROUND, UNLABELED)]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _to_unlabeled(out: np.ndarray, inst: np.ndarray | None, where: np.ndarray) -> int:
    out[where] = UNLABELED
    if inst is not None:
        inst[where] = 0
    return int(where.sum())


def _add_to_class(
    out: np.ndarray, inst: np.ndarray | None, where: np.ndarray, value: int
) -> int:
    """Label ``where`` as ``value``; instance ids from the nearest object of that class."""
    n = int(where.sum())
    if n == 0:
        return 0
    out[where] = value
    if inst is not None:
        owners = (out == value) & ~where & (inst > 0)
        if owners.any():
            _, (rows, cols) = ndi.distance_transform_edt(~owners, return_indices=True)
            inst[where] = inst[rows[where], cols[where]]
    return n


def _open(out: np.ndarray, inst: np.ndarray | None, radius: int) -> int:
    kernel = _disk(radius)
    removed = np.zeros(out.shape, dtype=bool)
    for c in _classes(out):
        mask = (out == c).astype(np.uint8)
        # OpenCV's default border leaves objects at the image edge alone (no edge erosion).
        opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel).astype(bool)
        removed |= mask.astype(bool) & ~opened
    return _to_unlabeled(out, inst, removed)


def _close(out: np.ndarray, inst: np.ndarray | None, radius: int) -> int:
    kernel = _disk(radius)
    added = 0
    for c in _classes(out):
        mask = (out == c).astype(np.uint8)
        closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)
        added += _add_to_class(out, inst, closed & (out == UNLABELED), c)
    return added


def _fill_holes(out: np.ndarray, inst: np.ndarray | None, max_hole_size: int | None) -> int:
    # Holes are found on the map as it was before this step, so the order of classes
    # does not matter: an all-unlabeled hole is enclosed by exactly one class.
    before = out.copy()
    filled = 0
    for c in _classes(before):
        mask = before == c
        holes = ndi.binary_fill_holes(mask) & ~mask
        if not holes.any():
            continue
        hole_ids, n = ndi.label(holes, structure=_FOUR)
        size = np.bincount(hole_ids.ravel(), minlength=n + 1)
        labeled = np.bincount(hole_ids.ravel(), weights=before.ravel() != UNLABELED,
                              minlength=n + 1)
        keep = (labeled == 0) & (size <= (max_hole_size if max_hole_size is not None else size))
        keep[0] = False
        filled += _add_to_class(out, inst, keep[hole_ids], c)
    return filled


def _remove_fragments(out: np.ndarray, inst: np.ndarray | None, min_size: int) -> int:
    small = np.zeros(out.shape, dtype=bool)
    for c in _classes(out):
        ids, n = ndi.label(out == c, structure=_EIGHT)
        size = np.bincount(ids.ravel(), minlength=n + 1)
        tiny = size < min_size
        tiny[0] = False
        small |= tiny[ids]
    return _to_unlabeled(out, inst, small)


def _separate(out: np.ndarray, inst: np.ndarray | None, was_unlabeled: np.ndarray) -> int:
    """Carve background between touching objects; where the line crosses a filled hole (a
    pixel the annotator left unlabeled) it goes back to unlabeled: nobody called it background."""
    if inst is None:
        return 0
    carved = np.zeros(out.shape, dtype=bool)
    for c in _classes(out):
        of_class = np.where(out == c, inst, 0)
        carved |= (of_class > 0) & (separate_touching(of_class) == 0)
    out[carved] = np.where(was_unlabeled[carved], UNLABELED, BACKGROUND)
    inst[carved] = 0
    return int(carved.sum())

"""Objects of a label map and their measurements: pure functions, numpy in, rows out.

Objects (:func:`objects_of`): with an instance map, each instance id is one object, after
touching objects are split by the one-pixel rule of the cleanup
(:func:`label_assistant.labelmap.separate_touching`: where two objects touch, the pixels of
the lower id that touch a higher id become background); its class is the label map's class
under it. Without one, each 8-connected region of a class (1..K) is one object: touching
objects of one class can't be told apart (as in :mod:`label_assistant.assist.post`), and a
label map cleaned by the backend already has the line carved between them. Background (0)
and unlabeled (255) pixels are never objects.

Measurements (:func:`measure_objects`, one row per object), from ``regionprops``:
``area_px``; ``perimeter_px`` (scikit-image's 4-connected boundary estimate);
``equivalent_diameter_px`` (of the disc with the same area); ``eccentricity`` (of the
ellipse with the same second moments: 0 for a disc, near 1 for a line); ``solidity`` (area
over convex hull area); ``skeleton_length_px`` (the object's ``skeletonize`` skeleton,
orthogonal steps 1 and diagonal steps sqrt(2): a one-pixel line of n pixels is n - 1 long);
``centroid_y`` / ``centroid_x``; the bounding box ``bbox_min_row``, ``bbox_min_col``,
``bbox_max_row``, ``bbox_max_col`` (max exclusive); and per channel ``c``
``min_c`` / ``mean_c`` / ``max_c`` of the image values under the object (the original
values: 16-bit counts stay counts). With a pixel size (µm, ``(y, x)``): ``area_um2``, and
when pixels are square also the lengths in µm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from label_assistant.labelmap import BACKGROUND, UNLABELED, separate_touching

_EIGHT = np.ones((3, 3), dtype=bool)
#: Columns of every object row, in order (the intensity columns follow, per channel).
OBJECT_COLUMNS = (
    "image", "object_id", "class", "area_px", "area_um2", "perimeter_px", "perimeter_um",
    "equivalent_diameter_px", "equivalent_diameter_um", "eccentricity", "solidity",
    "skeleton_length_px", "skeleton_length_um", "centroid_y", "centroid_x",
    "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col",
)
SUMMARY_COLUMNS = ("image", "class", "objects", "mean_area_px", "mean_area_um2",
                   "total_area_px")


def objects_of(label_map: np.ndarray, instances: np.ndarray | None = None
               ) -> tuple[np.ndarray, dict[int, int]]:
    """``(object map, class of each object id)``: int32 H x W (0 = no object), ids 1..N."""
    label_map = np.asarray(label_map)
    is_class = (label_map != BACKGROUND) & (label_map != UNLABELED)
    if instances is not None:
        separated = np.where(is_class, separate_touching(np.asarray(instances)), 0)
        ids = np.unique(separated)
        ids = ids[ids > 0]
        objects = np.zeros(label_map.shape, np.int32)
        classes: dict[int, int] = {}
        for new, old in enumerate(ids, start=1):
            where = separated == old
            objects[where] = new
            values = np.bincount(label_map[where].ravel(), minlength=256)
            classes[new] = int(np.argmax(values))
        return objects, classes
    objects = np.zeros(label_map.shape, np.int32)
    classes = {}
    next_id = 1
    for c in np.unique(label_map[is_class]):
        regions, n = ndi.label(label_map == c, structure=_EIGHT)
        objects[regions > 0] = regions[regions > 0] + (next_id - 1)
        classes.update({i: int(c) for i in range(next_id, next_id + n)})
        next_id += n
    return objects, classes


def skeleton_length(mask: np.ndarray) -> float:
    """Length of a mask's ``skeletonize`` skeleton: orthogonal steps 1, diagonal sqrt(2);
    a diagonal step that an orthogonal corner already joins is not counted."""
    from skimage.morphology import skeletonize

    s = skeletonize(np.asarray(mask, dtype=bool))
    ortho = int((s[:, 1:] & s[:, :-1]).sum() + (s[1:, :] & s[:-1, :]).sum())
    down_right = s[1:, 1:] & s[:-1, :-1] & ~s[:-1, 1:] & ~s[1:, :-1]
    down_left = s[1:, :-1] & s[:-1, 1:] & ~s[:-1, :-1] & ~s[1:, 1:]
    return ortho + math.sqrt(2) * int(down_right.sum() + down_left.sum())


def measure_objects(
    objects: np.ndarray,
    classes: dict[int, int],
    image: np.ndarray | None = None,
    *,
    image_name: str = "",
    class_names: Sequence[str] | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per object (module doc), by object id. ``image``: ``(H, W)`` or
    ``(H, W, C)`` original values of the same size (None: no intensity columns);
    ``class_names``: name of class 1..K (index 0 = class 1); else the class number."""
    from skimage.measure import regionprops

    intensity = None
    if image is not None:
        intensity = np.asarray(image)
        if intensity.ndim == 2:
            intensity = intensity[..., None]
        if intensity.shape[:2] != objects.shape:
            raise ValueError(f"image size {intensity.shape[1]}x{intensity.shape[0]} differs "
                             f"from the labels' {objects.shape[1]}x{objects.shape[0]}")
    area_scale = pixel_size[0] * pixel_size[1] if pixel_size else None
    length_scale = None
    if pixel_size and math.isclose(pixel_size[0], pixel_size[1], rel_tol=1e-3):
        length_scale = pixel_size[1]
    rows = []
    for region in regionprops(objects.astype(np.int32)):
        cls = classes.get(region.label, 1)
        name = (class_names[cls - 1] if class_names is not None and 0 < cls <= len(class_names)
                else str(cls))
        skeleton = skeleton_length(region.image)
        row: dict[str, Any] = {
            "image": image_name, "object_id": int(region.label), "class": name,
            "area_px": int(region.area),
            "area_um2": _scaled(region.area, area_scale),
            "perimeter_px": float(region.perimeter),
            "perimeter_um": _scaled(region.perimeter, length_scale),
            "equivalent_diameter_px": float(region.equivalent_diameter_area),
            "equivalent_diameter_um": _scaled(region.equivalent_diameter_area, length_scale),
            "eccentricity": float(region.eccentricity),
            "solidity": float(region.solidity),
            "skeleton_length_px": float(skeleton),
            "skeleton_length_um": _scaled(skeleton, length_scale),
            "centroid_y": float(region.centroid[0]), "centroid_x": float(region.centroid[1]),
            "bbox_min_row": int(region.bbox[0]), "bbox_min_col": int(region.bbox[1]),
            "bbox_max_row": int(region.bbox[2]), "bbox_max_col": int(region.bbox[3]),
        }
        if intensity is not None:
            r0, c0, r1, c1 = region.bbox
            values = intensity[r0:r1, c0:c1][region.image]  # (pixels, C)
            for c in range(values.shape[1]):
                row[f"min_{c}"] = _number(values[:, c].min())
                row[f"mean_{c}"] = float(values[:, c].mean(dtype=np.float64))
                row[f"max_{c}"] = _number(values[:, c].max())
        rows.append(row)
    return rows


def summarize(rows: Sequence[dict[str, Any]], image_names: Sequence[str]
              ) -> list[dict[str, Any]]:
    """Per image and class: objects, mean and total area; an image without objects gets a
    row of class ``""`` and 0 objects."""
    out = []
    for name in image_names:
        mine = [r for r in rows if r["image"] == name]
        if not mine:
            out.append({"image": name, "class": "", "objects": 0, "mean_area_px": None,
                        "mean_area_um2": None, "total_area_px": 0})
            continue
        for cls in dict.fromkeys(r["class"] for r in mine):
            of_class = [r for r in mine if r["class"] == cls]
            areas = [r["area_px"] for r in of_class]
            um2 = [r["area_um2"] for r in of_class if r["area_um2"] is not None]
            out.append({"image": name, "class": cls, "objects": len(of_class),
                        "mean_area_px": float(np.mean(areas)),
                        "mean_area_um2": float(np.mean(um2)) if um2 else None,
                        "total_area_px": int(sum(areas))})
    return out


def _scaled(value: float, scale: float | None) -> float | None:
    return None if scale is None else float(value) * scale


def _number(value: Any) -> int | float:
    return int(value) if np.issubdtype(np.asarray(value).dtype, np.integer) else float(value)

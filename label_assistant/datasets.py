"""Image / mask pairs on disk -> training examples (the I/O side of training and simulation).

Ground-truth masks come in several forms; ``mask_to_label_map`` turns each into the project's
label map (0 = background, 1..K = classes, 255 = unlabeled):

- ``labelmap``: already a label map (255 = unlabeled), used as is;
- ``binary``: any non-zero pixel is class 1 (``invert`` swaps: zero pixels are class 1, as for
  the ISBI membrane masks where 0 = membrane);
- ``semantic``: pixel values are class indices 0..K;
- ``instance``: each non-zero value is one object of class 1; touching objects keep one
  pixel of background between them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from label_assistant.labelmap import check_label_map, instances_to_label_map

MASK_TYPES = ("labelmap", "binary", "semantic", "instance")


class DatasetError(ValueError):
    """Image/mask pairs that can't be used: missing pairs, sizes that differ, bad values."""


@dataclass
class Example:
    """One annotated image, ready for training: normalized image and label map."""

    name: str
    image: np.ndarray  # float32 (C, H, W), normalized to [0, 1]
    label_map: np.ndarray  # uint8 (H, W), 255 = unlabeled
    content_hash: str  # of the image and label map bytes, for the training manifest
    instances: np.ndarray | None = None  # int (H, W) when known, for contour weights


def content_hash(*arrays: np.ndarray) -> str:
    """Short sha256 over arrays' shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def mask_to_label_map(
    mask: np.ndarray, mask_type: str = "labelmap", invert: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """(label map, instance map or None) from a ground-truth mask of the given type."""
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask_type not in MASK_TYPES:
        choices = ", ".join(MASK_TYPES)
        raise DatasetError(f"unknown mask type {mask_type!r}; choose one of {choices}")
    if invert and mask_type != "binary":
        raise DatasetError("--invert only applies to binary masks")
    if mask_type == "binary":
        foreground = (mask == 0) if invert else (mask != 0)
        return foreground.astype(np.uint8), None
    if mask_type == "instance":
        instances = mask.astype(np.int64)
        return instances_to_label_map(instances, 1), instances
    if mask.max(initial=0) > 255 or mask.min(initial=0) < 0:
        raise DatasetError("a label map or semantic mask must hold values 0..255")
    # In a semantic mask too, 255 is the VOC "void" value and stays unlabeled.
    return check_label_map(mask.astype(np.uint8)), None


def pair_files(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Pair image and label files by file stem; error naming the first unpaired file."""
    by_stem = {p.stem: p for p in labels}
    pairs = []
    for image in images:
        label = by_stem.get(image.stem)
        if label is None:
            raise DatasetError(f"no label file for image {image.name!r} (paired by file name)")
        pairs.append((image, label))
    return pairs


def load_example(
    image_path: Path, label_path: Path, mask_type: str = "labelmap", invert: bool = False
) -> Example:
    """Read one pair from disk into an :class:`Example`; sizes must match."""
    from label_assistant.images import normalize_for_model, read_image

    image = read_image(image_path)
    mask = read_image(label_path, palette_indices=True)
    if mask.shape[:2] != image.shape[:2]:
        raise DatasetError(
            f"{label_path.name}: label size {mask.shape[1]}x{mask.shape[0]} differs from "
            f"image size {image.shape[1]}x{image.shape[0]}"
        )
    label_map, instances = mask_to_label_map(mask, mask_type, invert)
    normalized = normalize_for_model(image)
    return Example(
        name=image_path.stem,
        image=normalized,
        label_map=label_map,
        content_hash=content_hash(image, label_map),
        instances=instances,
    )

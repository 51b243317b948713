"""Where the label maps to measure come from, each with its original image.

- :func:`from_folders`: images and masks on disk, paired by file stem
  (:func:`label_assistant.datasets.pair_files`), masks of any type
  (:func:`label_assistant.datasets.mask_to_label_map`: an instance mask keeps its objects);
- :func:`from_store`: a backend project's admitted annotations: per task the newest
  admitted revision decoded with the project's current label config (the set training
  uses, :meth:`label_assistant.ml_backend.store.Store.training_set`), its cleaned label map
  and the image the backend stored (for imported tasks the original plane);
- :func:`from_model`: a model version's label maps of every plane of the files given
  (stacks read plane by plane, :mod:`label_assistant.microscopy.stacks`, with the channels
  chosen as ``import`` chooses them), through
  :class:`label_assistant.model.predictor.Predictor` (``current``: what serves, Otsu before
  any model).

Every item carries the image's pixel size when its file holds one
(:func:`label_assistant.microscopy.stacks.pixel_size_um`). In the first two forms images
are read by :func:`label_assistant.images.read_image` (a stack's first plane). An image that
can't be read or measured comes as a :class:`MeasureFailure`, and the others still come.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.images import read_image


class MeasureInputError(ValueError):
    """Inputs that can't be measured (one line)."""


@dataclass
class MeasureFailure:
    """An image that could not be read or labeled: its name and why (one line)."""

    name: str
    error: str


#: What a source yields (any of these may fail alone).
_READ_ERRORS = (ValueError, OSError)


@dataclass
class MeasureItem:
    """One labeled image: its name, original values, label map and (maybe) instances."""

    name: str
    image: np.ndarray
    label_map: np.ndarray
    instances: np.ndarray | None
    pixel_size: tuple[float, float] | None


def file_pixel_size(path: str | Path) -> tuple[float, float] | None:
    """µm per pixel of a TIFF that says so; None for other files and TIFFs that don't."""
    from label_assistant.microscopy.stacks import is_tiff, pixel_size_um

    try:
        if not is_tiff(path):
            return None
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return pixel_size_um(tif)
    except Exception:  # the size is optional: an unreadable header just has none
        return None


def _checked(name: str, image: np.ndarray, label_map: np.ndarray) -> None:
    if image.shape[:2] != label_map.shape[:2]:
        raise MeasureInputError(f"{name}: labels are {label_map.shape[1]}x{label_map.shape[0]}, "
                                f"the image {image.shape[1]}x{image.shape[0]}")


def from_folders(pairs: Sequence[tuple[Path, Path]], mask_type: str = "labelmap",
                 invert: bool = False) -> Iterator[MeasureItem | MeasureFailure]:
    """Image/mask pairs on disk (see the module doc)."""
    from label_assistant.datasets import mask_to_label_map

    for image_path, mask_path in pairs:
        try:
            image = read_image(image_path)
            mask = read_image(mask_path, palette_indices=True)
            _checked(image_path.name, image, mask)
            label_map, instances = mask_to_label_map(mask, mask_type, invert)
        except _READ_ERRORS as error:
            yield MeasureFailure(image_path.name, str(error))
            continue
        yield MeasureItem(image_path.name, image, label_map, instances,
                          file_pixel_size(image_path))


def from_store(workdir: Path, project: str
               ) -> tuple[list[str], Iterator[MeasureItem | MeasureFailure]]:
    """(class names 1..K, items) of a project's admitted annotations in a backend's store."""
    from label_assistant.labelstudio.config import LabelConfigError
    from label_assistant.ml_backend.protocol import load_label_config
    from label_assistant.ml_backend.store import Store

    store = Store.existing(workdir)
    if store is None:
        raise MeasureInputError(f"{workdir} has no backend store (backend.sqlite3)")
    row = store.get_project(str(project))
    if row is None or not row.get("label_config"):
        raise MeasureInputError(f"project {project} is not known to the backend in {workdir}")
    try:
        config = load_label_config(row["label_config"])
    except LabelConfigError as error:
        raise MeasureInputError(f"project {project}: {error}") from None
    annotations = store.training_set(str(project), config.config_hash)

    def items() -> Iterator[MeasureItem | MeasureFailure]:
        for annotation in annotations:
            image_path = Path(str(annotation["image_path"]))
            name = f"task {annotation['task_id']} annotation {annotation['annotation_id']}"
            try:
                label_map = read_image(str(annotation["label_path"]))[..., 0]
                image = read_image(image_path)
                _checked(name, image, label_map)
            except _READ_ERRORS as error:
                yield MeasureFailure(name, str(error))
                continue
            yield MeasureItem(name, image, label_map, None, file_pixel_size(image_path))

    return list(config.class_names), items()


def model_prelabeler(workdir: Path, version: str, project: str | None = None,
                     device: str | None = None) -> tuple[list[str], Any, str]:
    """(class names 1..K, image -> PreLabel, version id) of a version in ``workdir``'s
    registry (the project's when given); ``current`` with no version is Otsu."""
    from label_assistant.assist.pre import OtsuPrelabeler
    from label_assistant.model.registry import RegistryError
    from label_assistant.workspace import Workspace

    registry = Workspace(workdir).registry(project)
    if version == "current" and registry.current_id() is None:
        otsu = OtsuPrelabeler()
        return ["Object"], otsu.prelabel, otsu.version
    from label_assistant.model.predictor import Predictor

    try:
        predictor = Predictor.from_registry(registry, version, device=device)
    except RegistryError as error:
        raise MeasureInputError(str(error)) from None
    return list(predictor.class_names[1:]), predictor.prelabel, predictor.version


def from_model(files: Sequence[Path], prelabel: Any, *, split_axis: str | None = None,
               channel: int | None = None, channels: tuple[int, ...] | None = None
               ) -> Iterator[MeasureItem | MeasureFailure]:
    """Each plane's label map from ``prelabel`` (:func:`model_prelabeler`), named
    ``<file> T=3,Z=0`` (the file name alone for a single image)."""
    from label_assistant.microscopy.originals import choose_channels
    from label_assistant.microscopy.stacks import StackError, open_stack

    for path in files:
        try:
            stack = open_stack(path, split_axis)
        except StackError as error:
            yield MeasureFailure(path.name, str(error))
            continue
        with stack:
            for ref in stack.planes:
                name = f"{path.name} {ref.label}".strip()
                try:
                    image = choose_channels(stack.read(ref), channel, channels)
                    label_map = prelabel(image).label_map
                except _READ_ERRORS as error:
                    yield MeasureFailure(name, str(error))
                    continue
                yield MeasureItem(name, image, label_map, None, stack.pixel_size)

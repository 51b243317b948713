"""Label Studio annotation results <-> label maps.

Reading (:func:`annotation_to_label_map`): every ``brushlabels`` and ``polygonlabels``
result on the config's image becomes a region; regions are combined into a label map under
the project's contract:

- pixels in no region are unlabeled (255): partial annotation is allowed;
- background is cropped: a pixel in a background region and in a class region is the class;
- two different classes on one pixel is a *conflict*: counted per pair of classes and
  resolved by drawing order, **the region later in the result list wins** (as the later
  region is drawn on top in Label Studio);
- regions stay separate objects in the instance map, even when they have the same class.

Brush pixels are painted where the decoded alpha is above ``alpha_threshold`` (default 128:
the stroke covers more than half the pixel). Label Studio's own brush anti-aliases stroke
edges (alpha 1..254 there), shows any alpha > 0, and the SDK's ``image2rle`` imports an image
as painted where it is > 128; masks the SDK or this project write are 0/255 and read the same
under any threshold. Polygon points are in percent of the image size with (0, 0) the image's
top-left corner; a pixel is inside when its centre is (``skimage.draw.polygon``).

Writing (:func:`label_map_to_results`): one ``brushlabels`` result per class present, in the
exact shape Label Studio stores, with deterministic ids.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from skimage.draw import polygon as draw_polygon

from label_assistant.labelmap import BACKGROUND, UNLABELED, check_label_map
from label_assistant.labelstudio.config import LabelConfig, LabelConfigError, UnknownLabelError
from label_assistant.labelstudio.rle import RLEError, decode_rle, encode_rle

__all__ = [
    "DEFAULT_ALPHA_THRESHOLD",
    "AnnotationError",
    "DecodedAnnotation",
    "annotation_to_label_map",
    "check_result_size",
    "label_map_to_results",
    "region_mask",
]

DEFAULT_ALPHA_THRESHOLD = 128


class AnnotationError(ValueError):
    """An annotation result that cannot be read or written (the message names the result)."""


@dataclass
class DecodedAnnotation:
    """A Label Studio annotation as arrays (see the module docstring for the rules)."""

    label_map: np.ndarray  # uint8 H x W: 0 background, 1..K classes, 255 unlabeled
    instances: np.ndarray  # int32 H x W: region id (1.. in result order), 0 = none
    instance_classes: dict[int, int]  # region id -> class index (0 = background region)
    #: ``(class_a, class_b, pixels)`` with a < b: pixels covered by both (a pixel under three
    #: classes counts in each of its three pairs). Sorted by pair.
    conflicts: list[tuple[int, int, int]] = field(default_factory=list)
    conflict_pixels: int = 0  # pixels under two or more different classes, each counted once
    background_cropped: int = 0  # pixels of background regions that a class overrides
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (result id, reason)


def _rid(result: dict, i: int) -> str:
    return str(result.get("id", f"#{i}"))


def check_result_size(result: dict, rid: str, height: int, width: int) -> None:
    """:class:`AnnotationError` unless a result was drawn on this image size, unrotated."""
    ow, oh = result.get("original_width"), result.get("original_height")
    if ow is None or oh is None:
        raise AnnotationError(f"result {rid} has no original_width/original_height")
    if (ow, oh) != (width, height):
        raise AnnotationError(
            f"result {rid} was drawn on a {ow}x{oh} image (original_width x original_height), "
            f"but the image is {width}x{height}"
        )
    rotation = result.get("image_rotation", 0) or 0
    if rotation != 0:
        raise AnnotationError(
            f"result {rid} was drawn on an image rotated by {rotation} degrees; "
            "only unrotated images (image_rotation 0) are supported"
        )


def _label_of(result: dict, rid: str, kind: str, config: LabelConfig) -> int:
    labels = result["value"].get(kind)
    if not labels:
        raise AnnotationError(f"result {rid} has no label (value.{kind} is empty)")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise AnnotationError(f"result {rid}: value.{kind} must be a list of labels")
    if len(set(labels)) > 1:
        raise AnnotationError(f"result {rid} has several labels {labels}; one is needed")
    try:
        return config.class_index(labels[0])
    except UnknownLabelError as e:
        raise AnnotationError(f"result {rid}: {e}") from None


def region_mask(
    result: dict,
    height: int,
    width: int,
    *,
    alpha_threshold: int = DEFAULT_ALPHA_THRESHOLD,
) -> np.ndarray:
    """The bool H x W mask of one ``brushlabels`` or ``polygonlabels`` result."""
    rid = _rid(result, 0)
    kind = str(result.get("type", "")).lower()
    value = result.get("value")
    if not isinstance(value, dict):
        raise AnnotationError(f"result {rid} has no value")
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or "rle" not in value:
            raise AnnotationError(f"brush result {rid} has no RLE (format {value.get('format')})")
        try:
            alpha = decode_rle(value["rle"], height, width)
        except RLEError as e:
            raise AnnotationError(f"brush result {rid}: {e}") from e
        return alpha > alpha_threshold
    if kind == "polygonlabels":
        points = value.get("points")
        try:
            xy = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            xy = np.zeros((0, 0))
        if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
            raise AnnotationError(f"polygon result {rid} has no valid points (x, y in percent)")
        mask = np.zeros((height, width), dtype=bool)
        if len(xy) >= 3:
            # percent -> pixel edges, then -0.5: skimage puts pixel centres at integers
            rows = xy[:, 1] * height / 100.0 - 0.5
            cols = xy[:, 0] * width / 100.0 - 0.5
            rr, cc = draw_polygon(rows, cols, shape=(height, width))
            mask[rr, cc] = True
        return mask
    raise AnnotationError(f"result {rid} has type {kind!r}, not brushlabels/polygonlabels")


def annotation_to_label_map(
    results: list[dict],
    config: LabelConfig,
    height: int,
    width: int,
    *,
    alpha_threshold: int = DEFAULT_ALPHA_THRESHOLD,
) -> DecodedAnnotation:
    """Label map, instance map, conflicts and skipped results of one annotation's results.

    Results of other control types, of controls not in the config, or on another image are
    skipped and listed in ``ignored``. Raises :class:`AnnotationError` for a result that was
    drawn on another image size or rotation, has no label, several labels, a label not in the
    config, or an unreadable RLE or polygon.
    """
    if not isinstance(results, list):
        raise AnnotationError(f"results must be a list of dicts, got {type(results).__name__}")
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise AnnotationError(f"image size must be positive ints, got {height}x{width}")
    height, width = int(height), int(width)

    canvas = _Canvas(height, width)
    ignored: list[tuple[str, str]] = []
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise AnnotationError(f"result #{i} is a {type(result).__name__}, not a dict")
        rid = _rid(result, i)
        kind = str(result.get("type", "")).lower()
        if kind not in ("brushlabels", "polygonlabels"):
            ignored.append((rid, f"type {kind!r} is not a segmentation result"))
            continue
        control = config.control(result.get("from_name", ""))
        if control is None or control.result_type != kind:
            ignored.append((rid, f"{kind} control {result.get('from_name')!r} is not in the "
                                 "label config"))
            continue
        if result.get("to_name") != config.to_name:
            ignored.append((rid, f"drawn on image {result.get('to_name')!r}, "
                                 f"not {config.to_name!r}"))
            continue
        check_result_size(result, rid, height, width)
        if not isinstance(result.get("value"), dict):
            raise AnnotationError(f"result {rid} has no value")
        cls = _label_of(result, rid, kind, config)
        mask = region_mask(result, height, width, alpha_threshold=alpha_threshold)
        canvas.add(cls, mask)
    return canvas.result(ignored)


class _Canvas:
    """Regions painted one at a time (memory: a few planes per class, not one per region)."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)
        self.fg_label = np.zeros(self.shape, np.uint8)  # last class drawn, 0 = none
        self.fg_inst = np.zeros(self.shape, np.int32)
        self.bg_inst = np.zeros(self.shape, np.int32)  # last background region
        self.coverage: dict[int, np.ndarray] = {}  # class (0 = background) -> union of regions
        self.instance_classes: dict[int, int] = {}

    def add(self, cls: int, mask: np.ndarray) -> None:
        rid = len(self.instance_classes) + 1
        self.instance_classes[rid] = cls
        if cls == BACKGROUND:
            self.bg_inst[mask] = rid
        else:  # a later class region overwrites: it wins a conflict
            self.fg_label[mask] = cls
            self.fg_inst[mask] = rid
        if cls in self.coverage:
            self.coverage[cls] |= mask
        else:
            self.coverage[cls] = mask.copy()

    def result(self, ignored: list[tuple[str, str]]) -> DecodedAnnotation:
        has_class = self.fg_label > 0
        background = self.coverage.pop(BACKGROUND, None)
        # Classes crop background; pixels in no region are unlabeled.
        label_map = np.where(has_class, self.fg_label, np.uint8(UNLABELED))
        if background is not None:
            label_map[background & ~has_class] = BACKGROUND
        instances = np.where(has_class, self.fg_inst, self.bg_inst)
        cropped = int(np.count_nonzero(background & has_class)) if background is not None else 0

        classes = sorted(self.coverage)
        n_cover = np.zeros(self.shape, np.uint8)
        for cls in classes:
            n_cover += self.coverage[cls]
        multi = np.flatnonzero(n_cover > 1)  # few pixels: count pairs only there
        conflicts = []
        if multi.size:
            flat = {cls: self.coverage[cls].ravel()[multi] for cls in classes}
            for a, b in combinations(classes, 2):
                n = int(np.count_nonzero(flat[a] & flat[b]))
                if n:
                    conflicts.append((a, b, n))
        return DecodedAnnotation(
            label_map=label_map,
            instances=instances,
            instance_classes=self.instance_classes,
            conflicts=conflicts,
            conflict_pixels=int(multi.size),
            background_cropped=cropped,
            ignored=ignored,
        )


def _region_id(from_name: str, label: str, instance: int | None) -> str:
    # Deterministic: the same class (and instance) of the same control gets the same id in
    # every prediction, so results can be compared and re-sent idempotently.
    key = f"{from_name}\x00{label}\x00{'' if instance is None else instance}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def label_map_to_results(
    label_map: np.ndarray,
    config: LabelConfig,
    *,
    include_background: bool = False,
    instances: np.ndarray | None = None,
    score: float | None = None,
) -> list[dict[str, Any]]:
    """Label Studio ``brushlabels`` results for a label map, from the config's brush control.

    One result per class present, in class order (background first when
    ``include_background``; unlabeled pixels are in no result). With ``instances`` (integer
    H x W, 0 = none), every object is its own result, labelled with the one class of its
    pixels; class pixels outside any object form one more result for that class.
    ``score`` (finite) is added to every result.
    """
    control = config.brush_control
    if control is None:
        raise LabelConfigError("the label config has no BrushLabels control to send results from")
    try:
        check_label_map(label_map, config.n_classes)
    except ValueError as e:
        raise AnnotationError(str(e)) from None
    if score is not None and (isinstance(score, bool) or not math.isfinite(float(score))):
        raise AnnotationError(f"score must be a finite number, got {score!r}")
    height, width = label_map.shape
    if height == 0 or width == 0:
        raise AnnotationError(f"a label map must have pixels, got shape {label_map.shape}")
    if instances is not None:
        instances = np.asarray(instances)
        if instances.shape != label_map.shape or instances.dtype.kind not in "iu":
            raise AnnotationError(
                f"instances must be an integer array of shape {label_map.shape}, got "
                f"{instances.dtype} {instances.shape}"
            )
        if instances.min(initial=0) < 0:
            raise AnnotationError("instance ids must be >= 0")

    first = BACKGROUND if include_background else 1
    counts = np.bincount(label_map.ravel(), minlength=256)
    present = [c for c in range(first, config.n_classes + 1) if counts[c]]
    for cls in present:
        if config.class_name(cls) not in control.labels:
            raise AnnotationError(
                f"class {config.class_name(cls)!r} is not a label of brush control "
                f"{control.name!r} (labels: {list(control.labels)})"
            )

    def result(mask: np.ndarray, cls: int, instance: int | None) -> dict[str, Any]:
        label = config.class_name(cls)
        out: dict[str, Any] = {
            "id": _region_id(control.name, label, instance),
            "from_name": control.name,
            "to_name": config.to_name,
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_rle(mask), "brushlabels": [label]},
        }
        if score is not None:
            out["score"] = float(score)
        return out

    results = []
    for cls in present:
        in_class = label_map == cls
        if instances is None:
            results.append(result(in_class, cls, None))
            continue
        ids = np.unique(instances[in_class])
        for inst in ids[ids > 0].tolist():
            obj = instances == inst
            classes = np.unique(label_map[obj])
            if classes.size != 1:
                raise AnnotationError(
                    f"instance {inst} covers several label-map values {classes.tolist()}"
                )
            results.append(result(obj, cls, inst))
        rest = in_class & (instances == 0)
        if rest.any():
            results.append(result(rest, cls, None))
    return results

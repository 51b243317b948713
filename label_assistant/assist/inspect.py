"""Inspection of an annotation: rules, and the gate that admits it to training or not.

A rule is a plain function ``rule(ctx, config) -> list[Finding]`` registered with
:func:`register_rule` under a ``code`` and a default severity: ``"error"`` blocks the
annotation from training (it is quarantined until fixed), ``"warning"`` is reported to the
annotator and does not block. A project can change any rule's severity or turn it
``"off"`` in :class:`InspectionConfig`. :func:`inspect` runs the rules and decides.

Rules (code, default severity: what it finds):

- ``size_mismatch``, error: the label map's size differs from the image's.
- ``unknown_class``, error: label values above K that are not 255 (unlabeled).
- ``empty``, error: no labeled pixel at all.
- ``no_background``, error: classes drawn but no background, in a project that uses a
  background class; the model would learn nothing about what is *not* an object.
- ``class_overlap``, warning: two classes painted on the same pixels (the decoder's
  conflicts); the decoder resolves them, so it does not block by default.
- ``touching_objects``, warning: objects of one class touching without a gap (from the
  instance map); cleanup carves the gap.
- ``small_fragments``, warning: class fragments smaller than ``min_fragment_size``.
- ``background_far_from_objects``, warning: background painted, but not around the
  objects: most labeled objects have no background near their outline (typically
  background painted only in bands along the image border).
- ``background_over_object``, warning: background where the model confidently sees a class.
- ``class_over_background``, warning: a class where the model confidently sees background.

The two model rules run only when the current model's probabilities are given (and have
the label map's size); otherwise they are skipped silently. Per-class progress against the
labeled-pixel minimum is project-level progress (:func:`class_progress`), never an error.

Bounding boxes are ``(x0, y0, x1, y1)`` in pixels with ``x1``/``y1`` exclusive (slice
style): the region is ``label_map[y0:y1, x0:x1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from label_assistant.assist.post import DEFAULT_MIN_FRAGMENT_SIZE
from label_assistant.labelmap import BACKGROUND, UNLABELED, check_label_map, separate_touching

SEVERITIES = ("warning", "error")
LEVELS = ("off", *SEVERITIES)
BACKGROUND_NAME = "Background"

_EIGHT = np.ones((3, 3), dtype=bool)


class InspectionError(ValueError):
    """Bad inspection input or configuration (unknown rule code, wrong array shapes)."""


BBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class Finding:
    """One thing a rule found; ``message`` is written for the annotator."""

    code: str
    severity: str
    message: str
    bbox: BBox | None = None
    pixels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d


@dataclass
class InspectionContext:
    """Everything the rules may look at; only ``label_map`` and ``n_classes`` are required.

    ``class_names`` names classes 1..K (background excluded). ``probabilities`` is the
    current model's float32 (K+1) x H x W softmax, channel 0 = background. ``conflicts``
    lists ``(class_a, class_b, pixels)`` painted on the same pixels.
    """

    label_map: np.ndarray
    n_classes: int
    class_names: Sequence[str] | None = None
    image_shape: tuple[int, int] | None = None
    instances: np.ndarray | None = None
    conflicts: Sequence[tuple[int, int, int]] | None = None
    probabilities: np.ndarray | None = None
    uses_background: bool = True

    def __post_init__(self) -> None:
        try:
            check_label_map(self.label_map)
        except ValueError as error:
            raise InspectionError(str(error)) from None
        if self.n_classes < 1:
            raise InspectionError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise InspectionError(
                f"{len(self.class_names)} class names for {self.n_classes} classes"
            )
        if self.instances is not None and np.shape(self.instances) != self.label_map.shape:
            raise InspectionError(
                f"instance map shape {np.shape(self.instances)} differs from label map "
                f"{self.label_map.shape}"
            )
        if self.probabilities is not None:
            p = self.probabilities
            if p.ndim != 3 or p.shape[0] != self.n_classes + 1:
                raise InspectionError(
                    f"probabilities must be (K+1) x H x W with K+1 = {self.n_classes + 1}, "
                    f"got shape {p.shape}"
                )

    def name(self, value: int) -> str:
        """A class's name for messages."""
        if value == BACKGROUND:
            return BACKGROUND_NAME
        if self.class_names is not None and 1 <= value <= len(self.class_names):
            return self.class_names[value - 1]
        return f"class {value}"


# --- the registry ----------------------------------------------------------------------------

RuleFunction = Callable[[InspectionContext, "InspectionConfig"], list[Finding]]


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str
    description: str
    check: RuleFunction


#: Every registered rule by code, in registration order (the order findings are listed in).
RULES: dict[str, Rule] = {}


def register_rule(code: str, severity: str, description: str) -> Callable[[RuleFunction],
                                                                          RuleFunction]:
    """Decorator adding a rule function to :data:`RULES`."""
    if severity not in SEVERITIES:
        raise InspectionError(f"rule {code!r}: severity must be one of {SEVERITIES}")

    def decorate(check: RuleFunction) -> RuleFunction:
        if code in RULES:
            raise InspectionError(f"rule {code!r} is registered twice")
        RULES[code] = Rule(code, severity, description, check)
        return check

    return decorate


# --- configuration ---------------------------------------------------------------------------


@dataclass
class InspectionConfig:
    """Rule severities and thresholds for a project (JSON via ``from_dict``/``to_dict``)."""

    #: Rule code -> "off" | "warning" | "error", overriding the rule's default.
    severity: dict[str, str] = field(default_factory=dict)
    min_fragment_size: int = DEFAULT_MIN_FRAGMENT_SIZE
    model_confidence: float = 0.9
    model_min_area: int = 64
    #: Labeled pixels each class needs across the project (progress, not an error).
    min_class_pixels: int = 5000
    #: Findings kept per rule; the rest are counted in ``InspectionReport.omitted``.
    max_findings_per_rule: int = 20

    def __post_init__(self) -> None:
        for name in ("min_fragment_size", "model_min_area", "min_class_pixels",
                     "max_findings_per_rule", "model_confidence"):
            value = getattr(self, name)
            number = (int, float) if name == "model_confidence" else int
            if isinstance(value, bool) or not isinstance(value, number):
                raise InspectionError(f"{name} must be a number, got {value!r}")
        self.severity = dict(self.severity)
        for code, level in self.severity.items():
            if code not in RULES:
                raise InspectionError(
                    f"unknown rule {code!r}; rules are: {', '.join(RULES)}"
                )
            if level not in LEVELS:
                raise InspectionError(
                    f"rule {code!r}: level must be one of {', '.join(LEVELS)}, got {level!r}"
                )
        if not 0.0 < self.model_confidence <= 1.0:
            raise InspectionError(f"model_confidence must be in (0, 1], got "
                                  f"{self.model_confidence}")
        for name in ("min_fragment_size", "model_min_area", "min_class_pixels"):
            if getattr(self, name) < 0:
                raise InspectionError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_findings_per_rule < 1:
            raise InspectionError(
                f"max_findings_per_rule must be >= 1, got {self.max_findings_per_rule}"
            )

    def level(self, code: str) -> str:
        """The effective level of a rule: its override, else its default severity."""
        return self.severity.get(code, RULES[code].severity)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InspectionConfig:
        """From a JSON object with the field names as keys; unknown keys are an error."""
        if not isinstance(data, dict):
            raise InspectionError("an inspection config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InspectionError(
                f"unknown inspection setting {unknown[0]!r}; settings are: {', '.join(known)}"
            )
        if "severity" in data and not isinstance(data["severity"], dict):
            raise InspectionError("'severity' must map rule codes to off, warning or error")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the gate --------------------------------------------------------------------------------


@dataclass
class InspectionReport:
    """Findings (errors first, then by rule order, then by position) and the decision."""

    findings: list[Finding]
    admitted: bool
    reasons: list[str]
    omitted: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "admitted": self.admitted,
            "reasons": list(self.reasons),
            "findings": [f.to_dict() for f in self.findings],
            "omitted": dict(self.omitted),
        }


def inspect(ctx: InspectionContext, config: InspectionConfig | None = None) -> InspectionReport:
    """Run every rule that is not off; admitted when no finding is an error."""
    config = config or InspectionConfig()
    findings: list[Finding] = []
    omitted: dict[str, int] = {}
    for code, rule in RULES.items():
        level = config.level(code)
        if level == "off":
            continue
        found = rule.check(ctx, config)
        if len(found) > config.max_findings_per_rule:
            omitted[code] = len(found) - config.max_findings_per_rule
            found = found[: config.max_findings_per_rule]
        findings.extend(replace(f, severity=level) for f in found)
    # Stable sort: errors first, rule order and each rule's own order kept within.
    findings.sort(key=lambda f: f.severity != "error")
    reasons = [f.message for f in findings if f.severity == "error"]
    return InspectionReport(findings=findings, admitted=not reasons, reasons=reasons,
                            omitted=omitted)


# --- helpers for rules ------------------------------------------------------------------------


def _finding(code: str, message: str, bbox: BBox | None = None,
             pixels: int | None = None) -> Finding:
    return Finding(code, RULES[code].severity, message, bbox, pixels)


def _where(bbox: BBox) -> str:
    x0, y0, x1, y1 = bbox

    def span(a: int, b: int) -> str:
        return str(a) if b - a == 1 else f"{a}-{b - 1}"

    return f"at x {span(x0, x1)}, y {span(y0, y1)}"


def _px(n: int) -> str:
    return f"{n} pixel" if n == 1 else f"{n} pixels"


def _regions(mask: np.ndarray, min_size: int = 1, max_size: int | None = None
             ) -> list[tuple[BBox, int]]:
    """(bbox, pixels) of the 8-connected regions of ``mask`` within the size limits,
    ordered top to bottom, left to right."""
    ids, n = ndi.label(mask, structure=_EIGHT)
    if n == 0:
        return []
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    out = []
    for i, sl in enumerate(ndi.find_objects(ids), start=1):
        if sizes[i] < min_size or (max_size is not None and sizes[i] > max_size):
            continue
        bbox = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        out.append((tuple(int(v) for v in bbox), int(sizes[i])))
    return sorted(out, key=lambda r: (r[0][1], r[0][0]))


def _present_classes(label_map: np.ndarray, n_classes: int) -> list[int]:
    counts = np.bincount(label_map.ravel(), minlength=256)
    return [c for c in range(1, n_classes + 1) if counts[c]]


def _model_maps(ctx: InspectionContext, config: InspectionConfig
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """(predicted value, confident mask) of the model, or None when the model rules can't run."""
    p = ctx.probabilities
    if p is None or p.shape[1:] != ctx.label_map.shape:
        return None
    return np.argmax(p, axis=0), np.max(p, axis=0) >= config.model_confidence


# --- the rules --------------------------------------------------------------------------------


@register_rule("size_mismatch", "error", "label map size differs from the image")
def size_mismatch(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    if ctx.image_shape is None or tuple(ctx.image_shape[:2]) == ctx.label_map.shape:
        return []
    h, w = ctx.label_map.shape
    ih, iw = ctx.image_shape[:2]
    return [_finding(
        "size_mismatch",
        f"The annotation is {w}x{h} pixels but the image is {iw}x{ih}: it was drawn on "
        "another image or resized. Redo the annotation on this image.",
    )]


@register_rule("unknown_class", "error", "label values that are no class of the project")
def unknown_class(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    counts = np.bincount(ctx.label_map.ravel(), minlength=256)
    bad = [v for v in range(ctx.n_classes + 1, 256) if counts[v] and v != UNLABELED]
    if not bad:
        return []
    mask = (ctx.label_map > ctx.n_classes) & (ctx.label_map != UNLABELED)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    values = ", ".join(str(v) for v in bad[:5])
    return [_finding(
        "unknown_class",
        f"The annotation uses label values {values}, but the project has only "
        f"{ctx.n_classes} classes. Relabel those pixels with a class of this project.",
        bbox, int(mask.sum()),
    )]


@register_rule("empty", "error", "nothing labeled")
def empty(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    if (ctx.label_map != UNLABELED).any():
        return []
    return [_finding(
        "empty",
        "Nothing is labeled in this image. Paint at least one object and some background "
        "around it, or skip the task.",
        pixels=0,
    )]


@register_rule("no_background", "error", "classes drawn but no background")
def no_background(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    lm = ctx.label_map
    if not ctx.uses_background or (lm == BACKGROUND).any():
        return []
    if not ((lm != UNLABELED) & (lm != BACKGROUND)).any():
        return []  # nothing labeled at all: the `empty` rule's finding
    return [_finding(
        "no_background",
        f"No {BACKGROUND_NAME} is painted. Paint {BACKGROUND_NAME} around the objects you "
        "labeled (including the gaps between touching objects): without it the model "
        "learns nothing about what is not an object.",
        pixels=0,
    )]


@register_rule("class_overlap", "warning", "two classes painted on the same pixels")
def class_overlap(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    findings = []
    for a, b, pixels in sorted(ctx.conflicts or []):
        if pixels <= 0:
            continue
        findings.append(_finding(
            "class_overlap",
            f"{ctx.name(a)} and {ctx.name(b)} are both painted on {_px(pixels)}; it is "
            "unclear which is right. Erase the wrong one there.",
            pixels=int(pixels),
        ))
    return findings


@register_rule("touching_objects", "warning", "objects of one class touching without a gap")
def touching_objects(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    if ctx.instances is None:
        return []  # without instances, touching objects of one class are one region
    findings = []
    for c in _present_classes(ctx.label_map, ctx.n_classes):
        of_class = np.where(ctx.label_map == c, ctx.instances, 0)
        contact = (of_class > 0) & (separate_touching(of_class) == 0)
        for bbox, pixels in _regions(contact):
            findings.append(_finding(
                "touching_objects",
                f"Two {ctx.name(c)} objects touch without a gap {_where(bbox)}. A one-pixel "
                f"{BACKGROUND_NAME} line will be drawn between them; check that the split "
                "is where you meant it.",
                bbox, pixels,
            ))
    return findings


@register_rule("small_fragments", "warning", "tiny pieces of a class")
def small_fragments(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    if config.min_fragment_size <= 1:
        return []
    findings = []
    for c in _present_classes(ctx.label_map, ctx.n_classes):
        for bbox, pixels in _regions(ctx.label_map == c,
                                     max_size=config.min_fragment_size - 1):
            findings.append(_finding(
                "small_fragments",
                f"A tiny piece of {ctx.name(c)} ({_px(pixels)}) {_where(bbox)}, probably "
                "a stray brush stroke. It will be left out; erase it, or paint the whole "
                "object if it is real.",
                bbox, pixels,
            ))
    return findings


# ``background_far_from_objects``: an object "has background nearby" when a Background pixel
# lies within NEAR_BACKGROUND_PX (Euclidean, pixel centres) of its outline, with that distance
# growing to NEAR_BACKGROUND_FRACTION of the shorter image side on large images. A careful
# annotator's ring is 1-5 px wide and touches the object, so this is lenient: it only
# catches objects with no Background anywhere close. The rule fires when more than
# FAR_OBJECTS_FRACTION of the objects (8-connected class regions of at least
# ``min_fragment_size`` pixels) lack it. Whether Background lies only in the border band
# (BORDER_BAND_FRACTION of the shorter side from an edge, for at least BORDER_BACKGROUND_SHARE
# of the Background pixels) only chooses the message's wording.
NEAR_BACKGROUND_PX = 8
NEAR_BACKGROUND_FRACTION = 0.02
FAR_OBJECTS_FRACTION = 0.5
BORDER_BAND_FRACTION = 0.10
BORDER_BACKGROUND_SHARE = 0.9


def _near_distance(shape: tuple[int, ...]) -> int:
    """How close Background must come to an object (pixels) for a map of this shape."""
    return max(NEAR_BACKGROUND_PX, round(NEAR_BACKGROUND_FRACTION * min(shape)))


def _background_on_border_only(background: np.ndarray) -> bool:
    """At least BORDER_BACKGROUND_SHARE of the Background lies in the image's border band."""
    h, w = background.shape
    band = max(1, round(BORDER_BAND_FRACTION * min(h, w)))
    total = int(np.count_nonzero(background))
    inner = int(np.count_nonzero(background[band:h - band, band:w - band]))
    return total > 0 and (total - inner) >= BORDER_BACKGROUND_SHARE * total


@register_rule("background_far_from_objects", "warning",
               "background painted, but not around the labeled objects")
def background_far_from_objects(ctx: InspectionContext, config: InspectionConfig
                                ) -> list[Finding]:
    lm = ctx.label_map
    if not ctx.uses_background or lm.size == 0:
        return []
    background = lm == BACKGROUND
    if not background.any():
        return []  # the `no_background` rule's finding
    ids, n = ndi.label((lm >= 1) & (lm <= ctx.n_classes), structure=_EIGHT)
    if n == 0:
        return []  # background only: nothing to be around
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    counted = sizes >= max(config.min_fragment_size, 1)  # stray strokes don't count
    counted[0] = False
    if not counted.any():
        return []
    d = _near_distance(lm.shape)
    # Distance of every pixel to the nearest Background pixel (0 on Background itself).
    to_background = cv2.distanceTransform((~background).view(np.uint8), cv2.DIST_L2,
                                          cv2.DIST_MASK_PRECISE)
    # An object has Background within d of its outline iff one of its pixels has.
    near = np.bincount(ids[(ids > 0) & (to_background <= d)], minlength=n + 1) > 0
    far = counted & ~near
    n_far, n_counted = int(far.sum()), int(counted.sum())
    if n_far <= FAR_OBJECTS_FRACTION * n_counted:
        return []
    boxes = [box for i, box in enumerate(ndi.find_objects(ids), start=1) if far[i]]
    bbox = (min(b[1].start for b in boxes), min(b[0].start for b in boxes),
            max(b[1].stop for b in boxes), max(b[0].stop for b in boxes))
    bbox = tuple(int(v) for v in bbox)
    where = ("only along the image border, far from" if _background_on_border_only(background)
             else "far from")
    which = "the object" if n_counted == 1 else (
        f"all {n_counted} objects" if n_far == n_counted else f"{n_far} of {n_counted} objects")
    return [_finding(
        "background_far_from_objects",
        f"{BACKGROUND_NAME} is painted {where} the objects you labeled: {which} "
        f"{_where(bbox)} {'has' if n_far == 1 else 'have'} no {BACKGROUND_NAME} within "
        f"{_px(d)}. Paint {BACKGROUND_NAME} between and right around the objects too (a thin "
        f"ring around each one is enough): the model learns what is not an object from there.",
        bbox, int(sizes[far].sum()),
    )]


@register_rule("background_over_object", "warning",
               "background where the model confidently sees an object")
def background_over_object(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    model = _model_maps(ctx, config)
    if model is None:
        return []
    predicted, confident = model
    painted = (ctx.label_map == BACKGROUND) & confident
    findings = []
    for c in range(1, ctx.n_classes + 1):
        for bbox, pixels in _regions(painted & (predicted == c), config.model_min_area):
            findings.append(_finding(
                "background_over_object",
                f"{BACKGROUND_NAME} may cover an unlabeled {ctx.name(c)} {_where(bbox)} "
                f"({_px(pixels)} the model is sure about). If there is an object there, "
                f"label it; if you are unsure, erase the {BACKGROUND_NAME} there.",
                bbox, pixels,
            ))
    return findings


@register_rule("class_over_background", "warning",
               "a class where the model confidently sees background")
def class_over_background(ctx: InspectionContext, config: InspectionConfig) -> list[Finding]:
    model = _model_maps(ctx, config)
    if model is None:
        return []
    predicted, confident = model
    sure_background = confident & (predicted == BACKGROUND)
    findings = []
    for c in _present_classes(ctx.label_map, ctx.n_classes):
        for bbox, pixels in _regions((ctx.label_map == c) & sure_background,
                                     config.model_min_area):
            findings.append(_finding(
                "class_over_background",
                f"{ctx.name(c)} is painted {_where(bbox)} where the model is sure there is "
                f"{BACKGROUND_NAME} ({_px(pixels)}). Check that an object is really there "
                "and that the brush did not spill over its edge.",
                bbox, pixels,
            ))
    return findings


# --- project-level progress -------------------------------------------------------------------


@dataclass(frozen=True)
class ClassProgress:
    """Labeled pixels of one class across the project against the minimum."""

    value: int
    name: str
    pixels: int
    minimum: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.minimum <= 0 else min(1.0, self.pixels / self.minimum)

    @property
    def done(self) -> bool:
        return self.pixels >= self.minimum

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": round(self.fraction, 4), "done": self.done}


def class_progress(
    label_maps_or_counts: Iterable[np.ndarray],
    class_names: Sequence[str],
    minimum: int = 5000,
    include_background: bool = True,
) -> list[ClassProgress]:
    """Per-class labeled pixels summed over label maps (2-D) or count vectors (1-D, values
    0..K as from ``labelmap.labeled_pixel_counts``); background first when included."""
    k = len(class_names)
    total = np.zeros(k + 1, dtype=np.int64)
    for item in label_maps_or_counts:
        item = np.asarray(item)
        if item.ndim == 2:
            total += np.bincount(check_label_map(item).ravel(), minlength=256)[: k + 1]
        elif item.ndim == 1 and item.shape[0] == k + 1:
            total += item.astype(np.int64)
        else:
            raise InspectionError(
                f"expected label maps (2-D) or counts of length {k + 1}, got shape {item.shape}"
            )
    names = [BACKGROUND_NAME, *class_names]
    start = 0 if include_background else 1
    return [ClassProgress(v, names[v], int(total[v]), minimum) for v in range(start, k + 1)]

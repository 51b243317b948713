"""Label Studio's interactive ``context`` (``/predict``'s ``params.context``), read as one
object's prompt.

With a backend connected for interactive pre-annotations and Auto-Annotation on, each
smart-tool region the annotator finishes makes Label Studio 1.23.2 send ``{"result":
[...]}``: that region and every other *dynamic* (smart) region of the same type and the same
label on the same image, in drawing order (``docs/interactive.md``, measured). So clicks
accumulate, a rectangle comes alone, and a rectangle and clicks never come together.

Read here (:func:`parse_context`, pure; :meth:`InteractiveContext.prompt` with the image's
size):

- ``rectanglelabels`` results (``value``: ``x``, ``y``, ``width``, ``height`` in percent
  of the image, ``rotation`` 0): the box; with several, the last drawn;
- ``keypointlabels`` results (``value.x``, ``value.y`` in percent, ``is_positive`` at
  the result's top level; a point without it is positive): clicks, in order. Points of a
  prompt control whose name starts with ``extreme`` (e.g. ``<KeyPointLabels
  name="extreme" smart="true">``) are the four extreme points (DEXTR) instead: fewer than
  four is not yet a prompt (an empty answer with the reason), more than four an error;
- the label (``value.rectanglelabels`` / ``value.keypointlabels``, or ``value.labels``)
  names the class: the brush label of the same name (or alias); Background or a label that
  is no class of the brush control is an error. All results must share one label;
- every result's ``original_width`` / ``original_height`` must be the image's size and its
  ``image_rotation`` 0 (the format layer's check, :func:`.annotations.check_result_size`).

Results of other types or of controls that are not prompt controls of the config are
skipped and listed in ``ignored``. A context this can't read raises :class:`ContextError`
(``status`` 400 for a malformed one, 422 for one that doesn't fit the project or the
image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from label_assistant.interactive.prompts import Box, Click, Prompt, box_of_extreme_points
from label_assistant.labelmap import BACKGROUND
from label_assistant.labelstudio.annotations import AnnotationError, check_result_size
from label_assistant.labelstudio.config import LabelConfig, UnknownLabelError

__all__ = ["EXTREME_PREFIX", "ContextError", "InteractiveContext", "parse_context"]

#: A keypoint prompt control whose name starts with this gives extreme points, not clicks.
EXTREME_PREFIX = "extreme"
#: Results a context may hold (Label Studio sends the regions of one label; clicks add up).
MAX_RESULTS = 1000


class ContextError(ValueError):
    """A context that can't be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Point:
    x: float  # percent
    y: float
    positive: bool


@dataclass(frozen=True)
class InteractiveContext:
    """A context's prompt in percent of the image, its class, and what was skipped."""

    cls: int  # 1..K (0 when the context holds no region)
    label: str  # the brush label the answer carries ("" when no region)
    box: tuple[float, float, float, float] | None  # x, y, width, height in percent
    clicks: tuple[_Point, ...]
    extreme: tuple[_Point, ...]
    sizes: tuple[dict[str, Any], ...] = field(repr=False)  # the results, for the size check
    ignored: tuple[tuple[str, str], ...] = ()

    @property
    def reason(self) -> str | None:
        """Why this context is not yet a prompt (None when it may be one: clicks may still
        need a box the service remembers)."""
        if not self.sizes:
            return "the context holds no region (the last smart region was deleted)"
        if 0 < len(self.extreme) < 4:
            return (f"{len(self.extreme)} of 4 extreme points: the object's mask comes with "
                    "the fourth")
        return None

    def prompt(self, height: int, width: int) -> Prompt:
        """The prompt in pixels of an image of ``height`` x ``width``; :class:`ContextError`
        (422) when a result was drawn on another size or rotation."""
        for i, result in enumerate(self.sizes):
            try:
                check_result_size(result, str(result.get("id", f"#{i}")), height, width)
            except AnnotationError as error:
                raise ContextError(str(error), 422) from None

        def click(point: _Point) -> Click:
            return Click(point.x * width / 100.0, point.y * height / 100.0, point.positive)

        box = None
        if self.box is not None:
            x, y, w, h = self.box
            box = Box(x * width / 100.0, y * height / 100.0, (x + w) * width / 100.0,
                      (y + h) * height / 100.0)
        extreme = tuple(click(p) for p in self.extreme)
        if extreme:
            box_of_extreme_points(extreme)  # exactly four (checked in parse_context)
        return Prompt(box=box, clicks=tuple(click(p) for p in self.clicks), extreme=extreme)


def parse_context(context: Any, config: LabelConfig) -> InteractiveContext:
    """Read ``params.context`` (see the module docstring); :class:`ContextError` if it can't."""
    if not isinstance(context, dict):
        raise ContextError(f"the context must be an object, got {type(context).__name__}")
    results = context.get("result")
    if not isinstance(results, list):
        raise ContextError("the context has no 'result' list (Label Studio sends the smart "
                           "tool's regions there)")
    if len(results) > MAX_RESULTS:
        raise ContextError(f"the context has {len(results)} results; at most {MAX_RESULTS}",
                           413)
    labels: list[str] = []
    box = None
    clicks: list[_Point] = []
    extreme: list[_Point] = []
    used: list[dict[str, Any]] = []
    ignored: list[tuple[str, str]] = []
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise ContextError(f"context result #{i} is a {type(result).__name__}, not an "
                               "object")
        rid = str(result.get("id", f"#{i}"))[:100]
        kind = str(result.get("type", "")).lower()
        control = config.prompt_control(result.get("from_name")) \
            if isinstance(result.get("from_name"), str) else None
        if control is None or control.result_type != kind:
            ignored.append((rid, f"{kind or 'untyped'} result of "
                                 f"{str(result.get('from_name'))[:60]!r}, not a "
                                 "RectangleLabels/KeyPointLabels control of the config"))
            continue
        if result.get("to_name") != config.to_name:
            ignored.append((rid, f"drawn on {str(result.get('to_name'))[:60]!r}, not "
                                 f"{config.to_name!r}"))
            continue
        value = result.get("value")
        if not isinstance(value, dict):
            raise ContextError(f"context result {rid} has no 'value' object")
        labels.append(_label(value, kind, rid))
        used.append(result)
        if kind == "rectanglelabels":
            box = _box(value, rid)
            continue
        positive = result.get("is_positive", True)
        if not isinstance(positive, bool):
            raise ContextError(f"context result {rid}: 'is_positive' must be true or false, "
                               f"got {str(positive)[:40]!r}")
        point = _Point(_percent(value, "x", rid), _percent(value, "y", rid), positive)
        if control.name.lower().startswith(EXTREME_PREFIX):
            if not positive:
                raise ContextError(f"context result {rid}: an extreme point can't be negative",
                                   422)
            extreme.append(point)
        else:
            clicks.append(point)
    if not results:  # Label Studio sends this when the last smart region is deleted
        return InteractiveContext(cls=BACKGROUND, label="", box=None, clicks=(), extreme=(),
                                  sizes=())
    if not used:
        raise ContextError("the context holds no region of a smart RectangleLabels or "
                           "KeyPointLabels control on the image"
                           + (f" (skipped: {ignored[0][1]})" if ignored else ""), 422)
    if len(set(labels)) > 1:
        raise ContextError(f"the context's regions have several labels {sorted(set(labels))}; "
                           "one object has one", 422)
    if len(extreme) > 4:
        raise ContextError(f"{len(extreme)} extreme points; an object has 4 (left, right, top, "
                           "bottom)", 422)
    label = labels[0]
    try:
        cls = config.class_index(label)
    except UnknownLabelError:
        cls = -1
    brush = config.brush_control
    if cls in (-1, BACKGROUND) or brush is None or config.class_name(cls) not in brush.labels:
        raise ContextError(f"the smart tool's label {label!r} is not a class of the brush "
                           f"control (its classes: {list(config.class_names)}); give the smart "
                           "tool's labels the brush labels' names", 422)
    return InteractiveContext(cls=cls, label=config.class_name(cls), box=box,
                              clicks=tuple(clicks), extreme=tuple(extreme), sizes=tuple(used),
                              ignored=tuple(ignored))


def _label(value: dict[str, Any], kind: str, rid: str) -> str:
    labels = value.get(kind) or value.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ContextError(f"context result {rid} has no label (value.{kind})", 422)
    if len(set(labels)) > 1:
        raise ContextError(f"context result {rid} has several labels {labels[:5]}; one is "
                           "needed", 422)
    return labels[0]


def _percent(value: dict[str, Any], key: str, rid: str, low: float = 0.0) -> float:
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float)) \
            or not math.isfinite(number):
        raise ContextError(f"context result {rid}: value.{key} must be a number (percent of "
                           f"the image), got {str(number)[:40]!r}")
    if not low <= number <= 100.0:
        raise ContextError(f"context result {rid}: value.{key} = {number} is outside "
                           f"{low:g}..100 percent of the image", 422)
    return float(number)


def _box(value: dict[str, Any], rid: str) -> tuple[float, float, float, float]:
    rotation = value.get("rotation", 0) or 0
    if isinstance(rotation, bool) or not isinstance(rotation, (int, float)) \
            or not math.isfinite(rotation):
        raise ContextError(f"context result {rid}: value.rotation must be a number")
    if rotation % 360 != 0:
        raise ContextError(f"context result {rid}: a box rotated by {rotation} degrees; draw "
                           "it unrotated", 422)
    x, y = _percent(value, "x", rid), _percent(value, "y", rid)
    w, h = _percent(value, "width", rid), _percent(value, "height", rid)
    if w <= 0 or h <= 0:
        raise ContextError(f"context result {rid}: an empty box ({w} x {h} percent)", 422)
    return x, y, min(w, 100.0 - x), min(h, 100.0 - y)  # the image's edge ends it

"""The project's Label Studio label config: which image, which controls, which classes.

The classes of every label map come from here: background is the label named
``background_label`` (``"Background"`` by default) and gets index 0; the other labels of the
``BrushLabels`` / ``PolygonLabels`` controls on the image are classes 1..K in config order
(first appearance across controls). ``RectangleLabels`` and ``KeyPointLabels`` on the image
are *prompt controls* (``prompt_controls``): Label Studio's smart tools for interactive
labeling (``smart="true"``); they add no class, and each of their labels names the brush
class an object pointed at with them gets. Other controls (Choices, TextArea, ...) are
ignored.

Configs come from the network (``/setup``, ``/predict``, webhooks): they are parsed with
entity expansion and DTDs refused (:mod:`defusedxml`: no "billion laughs", no external
entities), and anything the parser can't use is a :class:`LabelConfigError`, never another
exception.
"""

from __future__ import annotations

import hashlib
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _safe_fromstring

from label_assistant.labelmap import BACKGROUND, MAX_CLASSES

#: The warnings' colour (a dark red: 6.5:1 contrast on white).
WARNING_COLOUR = "#b3261e"

__all__ = [
    "PARTIAL_LABELING_HINT",
    "PROMPT_CONTROLS",
    "SEGMENTATION_CONTROLS",
    "WARNINGS_FIELD",
    "WARNINGS_HEADER",
    "WARNING_COLOUR",
    "Control",
    "LabelConfig",
    "LabelConfigError",
    "UnknownLabelError",
    "brush_label_config",
    "config_hash",
    "labeling_instructions",
    "parse_label_config",
]

#: The task data field holding the inspection warnings (written by the client).
WARNINGS_FIELD = "la_warnings"
#: The block that shows them on the labeling screen: at most three lines high, scrolling
#: beyond, so that a long warning never pushes the label buttons off a 1440 x 900 screen;
#: empty (no height) when there is no warning. The colour is set on the wrapping ``View``
#: *and* the ``Header``: Label Studio 1.23.2 renders a Header as a ``Typography`` heading
#: whose inline ``style`` carries the colour (``libs/editor/src/tags/visual/Header.jsx``).
WARNINGS_HEADER = (
    f'<View style="max-height: 4.2em; overflow-y: auto; color: {WARNING_COLOUR}">'
    f'<Header value="${WARNINGS_FIELD}" size="5" style="color: {WARNING_COLOUR}; margin: 0; '
    f'font-size: 14px; line-height: 1.4em"/></View>')
#: How partial labeling works, in one line above the image (plain text: no ``$``, no XML).
PARTIAL_LABELING_HINT = (
    "Label a few objects completely, then paint Background between and around them. Leave "
    "the rest unlabeled: unlabeled pixels are ignored in training.")
_HINT_STYLE = "margin: 2px 0 6px; font-size: 14px; font-weight: normal; line-height: 1.4em"
#: A project's instructions (HTML), with ``{classes}`` and ``{background}`` to fill in: Label
#: Studio 1.23.2 shows them in a "Labeling Instructions" dialog when an annotator starts
#: labeling (project ``show_instruction``), and behind the "Instructions" button of the Data
#: Manager and the (i) button under the labeling screen (``expert_instruction``).
_INSTRUCTIONS = """\
<p><b>Partial labels are welcome.</b> You do not have to label every object. On each image:</p>
<p><b>1.</b> Paint <b>a few objects completely</b> with their class ({classes}): the whole
object, edge to edge. Pre-labels already mark the objects label-assistant found: every region
you submit counts as your label, so fix or delete the wrong ones.</p>
<p><b>2.</b> Paint <b>{background}</b> between and right around those objects (a thin ring
around each is enough), and over areas you are sure hold no object. {background} only along
the image border teaches the model little.</p>
<p><b>3.</b> <b>Leave the rest unlabeled</b>: unlabeled pixels are ignored in training.</p>
<p>After you submit, label-assistant checks the annotation. An annotation without
{background}, or an empty one, is <b>quarantined</b> (kept out of training); its problems show
in red above the image and in the Data Manager's <b>Quarantined</b> tab. Fix it and submit
again.</p>"""
#: Label colours: Background blue, then the classes.
_COLOURS = ("#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#fdd835",
            "#6d4c41")

#: Control tags this project reads, lower-cased tag name -> Label Studio result type.
SEGMENTATION_CONTROLS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}
#: Smart-tool controls whose regions are prompts for interactive labeling (no classes).
PROMPT_CONTROLS = {"rectanglelabels": "rectanglelabels", "keypointlabels": "keypointlabels"}


class LabelConfigError(ValueError):
    """A label config this project cannot serve (the message names what is missing)."""


class UnknownLabelError(LabelConfigError):
    """A label that is not in the label config."""


@dataclass(frozen=True)
class Control:
    """A labels control (``BrushLabels``, ``PolygonLabels``, or a prompt control:
    ``RectangleLabels``, ``KeyPointLabels``): ``name`` is the results' ``from_name``."""

    name: str
    type: str  # the tag as written in the config, e.g. "BrushLabels"
    to_name: tuple[str, ...]
    labels: tuple[str, ...]
    smart: bool = False  # smart="true": Label Studio sends its regions to the backend

    @property
    def result_type(self) -> str:
        """The ``type`` of its results: ``brushlabels``, ``polygonlabels``,
        ``rectanglelabels`` or ``keypointlabels``."""
        kind = self.type.lower()
        return SEGMENTATION_CONTROLS.get(kind) or PROMPT_CONTROLS[kind]


@dataclass(frozen=True)
class LabelConfig:
    """What this project needs from a label config. Build it with :func:`parse_label_config`."""

    to_name: str  # the Image tag's name: the results' ``to_name``
    data_key: str  # the task data field holding the image ("$image" -> "image")
    controls: tuple[Control, ...]  # segmentation controls on that image, config order
    class_names: tuple[str, ...]  # foreground classes 1..K, background excluded
    background_label: str
    config_hash: str
    xml: str = field(default="", repr=False, compare=False)
    #: ``(alias, value)`` of labels that have an ``alias``; both name the class.
    aliases: tuple[tuple[str, str], ...] = ()
    #: ``RectangleLabels`` / ``KeyPointLabels`` on the image: prompts for interactive
    #: labeling (see :mod:`label_assistant.labelstudio.context`), config order.
    prompt_controls: tuple[Control, ...] = ()
    # label (value or alias) -> class index; built in __post_init__
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {self.background_label: BACKGROUND}
        index.update({name: i for i, name in enumerate(self.class_names, start=1)})
        for alias, value in self.aliases:
            index.setdefault(alias, index[value])
        object.__setattr__(self, "_index", index)

    @property
    def n_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.class_names)

    @property
    def labels(self) -> tuple[str, ...]:
        """All labels by index: background first, then classes 1..K."""
        return (self.background_label, *self.class_names)

    def class_index(self, label: str) -> int:
        """0 for the background label, 1..K for the classes; :class:`UnknownLabelError` else.

        A label's ``alias`` names the same class as its ``value``.
        """
        try:
            return self._index[label]
        except (KeyError, TypeError):
            raise UnknownLabelError(
                f"label {label!r} is not in the label config (labels: {list(self.labels)})"
            ) from None

    def class_name(self, index: int) -> str:
        """The label of class ``index`` (0 = background)."""
        if not 0 <= index <= self.n_classes:
            raise UnknownLabelError(f"class index {index} is outside 0..{self.n_classes}")
        return self.labels[index]

    def control(self, name: str) -> Control | None:
        """The segmentation control named ``name`` (a result's ``from_name``), or None."""
        return next((c for c in self.controls if c.name == name), None)

    def prompt_control(self, name: str) -> Control | None:
        """The prompt control named ``name`` (a smart tool's ``from_name``), or None."""
        return next((c for c in self.prompt_controls if c.name == name), None)

    @property
    def brush_control(self) -> Control | None:
        """The control to send brush results from (the first BrushLabels), or None."""
        return next((c for c in self.controls if c.result_type == "brushlabels"), None)


def brush_label_config(classes: list[str] | tuple[str, ...], *,
                       background_label: str = "Background", image_field: str = "image",
                       smart_tools: bool = True) -> str:
    """The project's label config: the warnings header, the partial-labelling hint, a
    ``BrushLabels`` with ``background_label`` and ``classes`` and the image (``$image_field``)
    below them; with
    ``smart_tools``, the interactive prompts for each class too (a box, clicks, extreme
    points: ``smartOnly``, shown when the backend is connected as interactive; see
    ``docs/interactive.md``).

    The one builder of it (``make demo`` and ``label-assistant import``); it always parses
    with :func:`parse_label_config`. :class:`LabelConfigError` for no class, a repeated
    one, or a name that can't go into an XML attribute.
    """
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise LabelConfigError("a label config needs at least one class (and no empty name)")
    every = [background_label, *names]
    if len(set(every)) != len(every):
        raise LabelConfigError(f"the labels {every} repeat a name")
    bad = [n for n in every if any(c in n for c in '<>&"$') or not n.isprintable()]
    if bad:
        raise LabelConfigError(f"labels {bad} hold characters a label config can't carry")
    if len(names) > MAX_CLASSES:
        raise LabelConfigError(f"{len(names)} classes; a uint8 label map holds {MAX_CLASSES}")
    labels = "\n".join(f'    <Label value="{name}" background="{_COLOURS[i % len(_COLOURS)]}"/>'
                       for i, name in enumerate(every))
    smart = ""
    if smart_tools:
        prompt_labels = "\n".join(f'    <Label value="{name}"/>' for name in names)
        smart = "".join(
            f'\n  <{tag} name="{name}" toName="image" smart="true" smartOnly="true" '
            f'showInline="true">\n{prompt_labels}\n  </{tag}>'
            for tag, name in (("RectangleLabels", "box"), ("KeyPointLabels", "click"),
                              ("KeyPointLabels", "extreme")))
    # The label buttons sit above the image: a tall image (or a long warning) never pushes
    # them below the screen.
    return f"""<View>
  {WARNINGS_HEADER}
  <Header value="{PARTIAL_LABELING_HINT}" size="5" style="{_HINT_STYLE}"/>
  <BrushLabels name="tag" toName="image">
{labels}
  </BrushLabels>
  <Image name="image" value="${image_field}" zoom="true" zoomControl="true"/>{smart}
</View>"""


def labeling_instructions(classes: list[str] | tuple[str, ...], *,
                          background_label: str = "Background") -> dict[str, Any]:
    """The project settings that show the partial-labeling instructions before labeling:
    ``expert_instruction`` (HTML naming ``classes`` and ``background_label``) and
    ``show_instruction``; for ``create_project`` / ``update_project`` next to a
    :func:`brush_label_config` of the same classes."""
    names = ", ".join(html.escape(str(c).strip()) for c in classes)
    text = _INSTRUCTIONS.format(classes=names, background=html.escape(background_label))
    return {"expert_instruction": text, "show_instruction": True}


def config_hash(xml: str) -> str:
    """sha256 hex of the config with whitespace normalized (stable across re-indentation)."""
    text = re.sub(r">\s+<", "><", xml.strip())
    text = re.sub(r"\s+", " ", text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tag_name(tag: object) -> str:
    # Comments and processing instructions have a non-str tag; namespaces are dropped.
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _local(tag: object) -> str:
    return _tag_name(tag).lower()


def _names(attr: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (attr or "").split(",") if n.strip())


def parse_label_config(
    xml: str, background_label: str = "Background", image_name: str | None = None
) -> LabelConfig:
    """Parse a Label Studio label config; :class:`LabelConfigError` if this project can't serve it.

    ``image_name`` picks the ``Image`` tag when the config has several. Controls pointing at
    another image are ignored; a control pointing at no image of the config is an error.
    Tag names are matched case-insensitively, as Label Studio does; XML namespaces are
    dropped. A DTD (``<!DOCTYPE>``, entities) is refused.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the label config is empty")
    try:
        return _parse(xml, background_label, image_name)
    except LabelConfigError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError,
            RecursionError) as e:  # the contract: a config this parser can't use says so
        raise LabelConfigError(f"the label config can't be read ({type(e).__name__}: "
                               f"{str(e)[:200]})") from None


def _parse(xml: str, background_label: str, image_name: str | None) -> LabelConfig:
    try:
        root = _safe_fromstring(xml, forbid_dtd=True)
    except ET.ParseError as e:
        raise LabelConfigError(f"the label config is not XML ({e})") from None
    except DefusedXmlException as e:
        raise LabelConfigError(
            f"the label config has a DTD or entity declarations, which are not allowed "
            f"({type(e).__name__})") from None
    elements = list(root.iter())

    images = [el for el in elements if _local(el.tag) == "image"]
    image_names = [el.get("name", "") for el in images]
    if not images:
        raise LabelConfigError("the label config has no <Image> tag")
    if image_name is not None:
        if image_name not in image_names:
            raise LabelConfigError(
                f"the label config has no <Image name={image_name!r}> (images: {image_names})"
            )
        image = images[image_names.index(image_name)]
    elif len(images) > 1:
        raise LabelConfigError(
            f"the label config has {len(images)} <Image> tags {image_names}: "
            "say which one with image_name"
        )
    else:
        image = images[0]
    to_name = image.get("name")
    if not to_name:
        raise LabelConfigError("the <Image> tag has no name")
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(
            f"the <Image name={to_name!r}> tag has value {value!r}, not a $field of the task"
        )

    controls = []
    prompts = []
    aliases: list[tuple[str, str]] = []
    for el in elements:
        kind = _local(el.tag)
        if kind not in SEGMENTATION_CONTROLS and kind not in PROMPT_CONTROLS:
            continue
        name = el.get("name")
        targets = _names(el.get("toName"))
        if not name or not targets:
            raise LabelConfigError(f"a <{el.tag}> control has no name or no toName")
        unknown = [t for t in targets if t not in image_names]
        if unknown:
            raise LabelConfigError(
                f"control {name!r} points at {unknown}, which is not an <Image> of the config"
            )
        if to_name not in targets:
            continue  # a control for another image
        labels = []
        for lab in el.iter():
            if _local(lab.tag) == "label":
                label = lab.get("value")
                if not label:
                    raise LabelConfigError(f"control {name!r} has a <Label> with no value")
                if label in labels:
                    raise LabelConfigError(f"control {name!r} lists label {label!r} twice")
                labels.append(label)
                if lab.get("alias") and kind in SEGMENTATION_CONTROLS:
                    aliases.append((lab.get("alias"), label))
        if not labels:
            raise LabelConfigError(f"control {name!r} has no <Label>")
        control = Control(name, _tag_name(el.tag), targets, tuple(labels),
                          smart=(el.get("smart") or "").strip().lower() == "true")
        (controls if kind in SEGMENTATION_CONTROLS else prompts).append(control)

    if not controls:
        raise LabelConfigError(
            f"the label config has no BrushLabels or PolygonLabels control for image {to_name!r}"
        )
    all_labels = [lab for c in controls for lab in c.labels]
    background_label = dict(aliases).get(background_label, background_label)
    if background_label not in all_labels:
        raise LabelConfigError(
            f"no background label {background_label!r} among the labels {all_labels}"
        )
    class_names = tuple(dict.fromkeys(lab for lab in all_labels if lab != background_label))
    if len(class_names) > MAX_CLASSES:
        raise LabelConfigError(
            f"the label config has {len(class_names)} classes; a uint8 label map holds "
            f"at most {MAX_CLASSES}"
        )
    return LabelConfig(
        to_name=to_name,
        data_key=value[1:],
        controls=tuple(controls),
        class_names=class_names,
        background_label=background_label,
        config_hash=config_hash(xml),
        xml=xml,
        aliases=tuple(dict.fromkeys(a for a in aliases if a[0] not in all_labels)),
        prompt_controls=tuple(prompts),
    )

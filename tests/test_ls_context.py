"""Label Studio's interactive context (label_assistant.labelstudio.context): the payloads the
real Label Studio 1.23.2 sent (``tests/fixtures/interactive/``, captured by
``scripts/capture_interactive.py``) and hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from label_assistant.devtools.demo import CLASS_NAME, LABEL_CONFIG
from label_assistant.labelstudio.config import parse_label_config
from label_assistant.labelstudio.context import ContextError, parse_context

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "interactive"
CONFIG = parse_label_config(LABEL_CONFIG)


def captured(kind: str) -> list[tuple[str, dict]]:
    """(file name, request body) of the captured requests whose step names ``kind``."""
    return [(p.name, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))
            if p.name != "summary.json" and kind in p.name]


def context_of(body: dict) -> dict:
    return body["params"]["context"]


def test_the_demo_config_keeps_its_classes_and_has_the_smart_tools():
    assert CONFIG.labels == ("Background", CLASS_NAME)
    assert [(c.name, c.type, c.smart) for c in CONFIG.prompt_controls] == [
        ("box", "RectangleLabels", True), ("click", "KeyPointLabels", True),
        ("extreme", "KeyPointLabels", True)]


@pytest.mark.parametrize(("name", "body"), captured("box"))
def test_captured_boxes(name, body):
    parsed = parse_context(context_of(body), parse_label_config(body["label_config"]))
    assert parsed.label == CLASS_NAME and parsed.reason is None
    size = body["tasks"][0]["predictions"][0]["result"][0]["original_width"] \
        if body["tasks"][0].get("predictions") else None
    prompt = parsed.prompt(size or 512, size or 512) if size else None
    if prompt is not None:
        assert prompt.box is not None and prompt.box.width > 0 and not prompt.clicks


@pytest.mark.parametrize(("name", "body"), captured("click"))
def test_captured_clicks_accumulate_and_carry_their_sign(name, body):
    results = context_of(body)["result"]
    parsed = parse_context(context_of(body), parse_label_config(body["label_config"]))
    assert parsed.box is None and len(parsed.clicks) == len(results)
    assert [p.positive for p in parsed.clicks] == [r.get("is_positive", True) for r in results]
    if "negative" in name:
        assert parsed.clicks[-1].positive is False


@pytest.mark.parametrize(("name", "body"), captured("extreme"))
def test_captured_extreme_points(name, body):
    parsed = parse_context(context_of(body), parse_label_config(body["label_config"]))
    assert len(parsed.extreme) == 4 and parsed.reason is None


def result(kind="keypointlabels", control="click", label=CLASS_NAME, **value):
    base = {"x": 10.0, "y": 20.0, "width": 1.0}
    if kind == "rectanglelabels":
        base.update(width=30.0, height=40.0, rotation=0)
    return {"id": "r", "type": kind, "from_name": control, "to_name": "image",
            "original_width": 200, "original_height": 100, "image_rotation": 0,
            "value": {**base, **value, kind: [label]}}


def test_percent_becomes_pixels_of_the_image():
    parsed = parse_context({"result": [result("rectanglelabels", "box")]}, CONFIG)
    box = parsed.prompt(100, 200).box
    assert (box.x0, box.y0, box.x1, box.y1) == (20.0, 20.0, 80.0, 60.0)
    click = parse_context({"result": [result()]}, CONFIG).prompt(100, 200).clicks[0]
    assert (click.x, click.y, click.positive) == (20.0, 20.0, True)


def test_the_last_box_counts_and_a_box_ends_at_the_image_edge():
    first = result("rectanglelabels", "box")
    last = result("rectanglelabels", "box", x=90.0, width=30.0)
    box = parse_context({"result": [first, last]}, CONFIG).prompt(100, 200).box
    assert (box.x0, box.x1) == (180.0, 200.0)


def test_fewer_than_four_extreme_points_wait_with_a_reason():
    points = [result(control="extreme", x=float(x)) for x in (10, 20, 30)]
    parsed = parse_context({"result": points}, CONFIG)
    assert parsed.reason.startswith("3 of 4 extreme points")
    points.append(result(control="extreme", x=40.0))
    assert len(parse_context({"result": points}, CONFIG).prompt(100, 200).extreme) == 4


def test_an_empty_result_is_no_prompt_with_a_reason():
    assert "no region" in parse_context({"result": []}, CONFIG).reason


def test_other_regions_are_skipped_and_listed():
    brush = {"id": "b", "type": "brushlabels", "from_name": "tag", "to_name": "image",
             "value": {}}
    parsed = parse_context({"result": [brush, result()]}, CONFIG)
    assert [i[0] for i in parsed.ignored] == ["b"] and len(parsed.clicks) == 1


@pytest.mark.parametrize(("context", "status"), [
    ({"result": [result(label="Background")]}, 422),
    ({"result": [result(label="Cat")]}, 422),
    ({"result": [result(), result("rectanglelabels", "box", label="Background")]}, 422),
    ({"result": [result("rectanglelabels", "box", rotation=30)]}, 422),
    ({"result": [result("rectanglelabels", "box", width=0.0)]}, 422),
    ({"result": [result(x=float("nan"))]}, 400),
    ({"result": [result(x=True)]}, 400),
    ({"result": [{**result(control="extreme"), "is_positive": False}]}, 422),
    ({"result": None}, 400),
    ([], 400),
])
def test_unusable_contexts_raise_with_a_status(context, status):
    with pytest.raises(ContextError) as caught:
        parse_context(context, CONFIG)
    assert caught.value.status == status


def test_size_and_rotation_are_checked_against_the_image():
    parsed = parse_context({"result": [result()]}, CONFIG)
    with pytest.raises(ContextError, match="200x100"):
        parsed.prompt(100, 100)
    rotated = parse_context({"result": [{**result(), "image_rotation": 90}]}, CONFIG)
    with pytest.raises(ContextError, match="rotated"):
        rotated.prompt(100, 200)

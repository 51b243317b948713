"""Label Studio annotation results <-> label maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from label_studio_sdk.converter import brush as sdk

from label_assistant.labelmap import UNLABELED
from label_assistant.labelstudio.annotations import (
    AnnotationError,
    DecodedAnnotation,
    annotation_to_label_map,
    label_map_to_results,
    region_mask,
)
from label_assistant.labelstudio.config import LabelConfigError, parse_label_config
from label_assistant.labelstudio.rle import encode_rle

CONFIG = parse_label_config(
    """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Background"/><Label value="Cell"/><Label value="Nucleus"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="image">
    <Label value="Cell"/><Label value="Nucleus"/><Label value="Debris"/>
  </PolygonLabels>
  <Choices name="ok" toName="image"><Choice value="yes"/></Choices>
</View>"""
)
BG, CELL, NUC, DEBRIS = 0, 1, 2, 3


def brush(mask, label, rid="b", h=None, w=None, **extra):
    mask = np.asarray(mask)
    h, w = h or mask.shape[0], w or mask.shape[1]
    return {"id": rid, "from_name": "tag", "to_name": "image", "type": "brushlabels",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_rle(mask.astype(bool)),
                      "brushlabels": [label]}, **extra}


def poly(points_px, label, h, w, rid="p"):
    """A polygon from pixel-edge coordinates (x, y) -> percent, as Label Studio stores it."""
    pts = [[100.0 * x / w, 100.0 * y / h] for x, y in points_px]
    return {"id": rid, "from_name": "poly", "to_name": "image", "type": "polygonlabels",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"points": pts, "closed": True, "polygonlabels": [label]}}


def rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------------------------
# reading


def test_brush_and_polygon_regions_of_several_classes():
    h, w = 10, 10
    results = [
        brush(np.ones((h, w)), "Background", "bg"),
        brush(rect(h, w, 0, 3, 0, 3), "Cell", "c1"),
        poly([(6, 6), (9, 6), (9, 9), (6, 9)], "Nucleus", h, w, "n1"),  # pixels 6..8
        poly([(0, 8), (2, 8), (2, 10), (0, 10)], "Debris", h, w, "d1"),  # rows 8-9, cols 0-1
    ]
    out = annotation_to_label_map(results, CONFIG, h, w)
    assert isinstance(out, DecodedAnnotation)
    expect = np.zeros((h, w), np.uint8)
    expect[0:3, 0:3] = CELL
    expect[6:9, 6:9] = NUC
    expect[8:10, 0:2] = DEBRIS
    np.testing.assert_array_equal(out.label_map, expect)
    assert out.label_map.dtype == np.uint8 and out.instances.dtype == np.int32
    assert out.instance_classes == {1: BG, 2: CELL, 3: NUC, 4: DEBRIS}
    inst = np.ones((h, w), np.int32)
    inst[0:3, 0:3], inst[6:9, 6:9], inst[8:10, 0:2] = 2, 3, 4
    np.testing.assert_array_equal(out.instances, inst)
    assert out.background_cropped == 9 + 9 + 4
    assert out.conflicts == [] and out.conflict_pixels == 0 and out.ignored == []


def test_partial_annotation_is_unlabeled_elsewhere():
    out = annotation_to_label_map([brush(rect(4, 5, 1, 2, 1, 4), "Cell")], CONFIG, 4, 5)
    expect = np.full((4, 5), UNLABELED, np.uint8)
    expect[1, 1:4] = CELL
    np.testing.assert_array_equal(out.label_map, expect)
    assert out.background_cropped == 0


def test_empty_annotation():
    out = annotation_to_label_map([], CONFIG, 3, 2)
    assert (out.label_map == UNLABELED).all() and (out.instances == 0).all()
    assert out.instance_classes == {}


def test_background_cropped_whatever_the_order():
    cell = brush(rect(4, 4, 0, 2, 0, 2), "Cell", "c")
    bg = brush(rect(4, 4, 0, 4, 0, 3), "Background", "bg")
    for results in ([cell, bg], [bg, cell]):
        out = annotation_to_label_map(results, CONFIG, 4, 4)
        assert (out.label_map[0:2, 0:2] == CELL).all()
        assert (out.label_map[2:, 0:3] == BG).all() and (out.label_map[:2, 2] == BG).all()
        assert (out.label_map[:, 3] == UNLABELED).all()
        assert out.background_cropped == 4 and out.conflicts == []


def test_class_conflict_counted_and_later_region_wins():
    a = brush(rect(4, 8, 0, 4, 0, 5), "Cell", "a")  # cols 0-4
    b = brush(rect(4, 8, 0, 4, 3, 8), "Nucleus", "b")  # cols 3-7: overlap cols 3-4 = 8 px
    out = annotation_to_label_map([a, b], CONFIG, 4, 8)
    assert out.conflicts == [(CELL, NUC, 8)] and out.conflict_pixels == 8
    assert (out.label_map[:, 3:5] == NUC).all() and (out.instances[:, 3:5] == 2).all()
    out = annotation_to_label_map([b, a], CONFIG, 4, 8)
    assert out.conflicts == [(CELL, NUC, 8)]
    assert (out.label_map[:, 3:5] == CELL).all() and (out.instances[:, 3:5] == 2).all()
    assert (out.label_map[:, :3] == CELL).all() and (out.label_map[:, 5:] == NUC).all()


def test_three_classes_on_one_pixel_count_in_each_pair():
    one = np.zeros((2, 2), bool)
    one[0, 0] = True
    results = [brush(one, "Cell", "a"), poly([(0, 0), (1, 0), (1, 1), (0, 1)], "Debris", 2, 2),
               brush(np.ones((2, 2)), "Nucleus", "c")]
    out = annotation_to_label_map(results, CONFIG, 2, 2)
    assert out.conflicts == [(CELL, NUC, 1), (CELL, DEBRIS, 1), (NUC, DEBRIS, 1)]
    assert out.conflict_pixels == 1
    assert (out.label_map == NUC).all()  # the last region wins


def test_same_class_regions_stay_separate_instances():
    a = brush(rect(3, 6, 0, 3, 0, 3), "Cell", "a")
    b = brush(rect(3, 6, 0, 3, 2, 6), "Cell", "b")  # touches and overlaps a in column 2
    out = annotation_to_label_map([a, b], CONFIG, 3, 6)
    assert (out.label_map == CELL).all() and out.conflicts == []
    assert out.instance_classes == {1: CELL, 2: CELL}
    assert (out.instances[:, :2] == 1).all() and (out.instances[:, 2:] == 2).all()


def test_alpha_threshold_for_anti_aliased_strokes():
    alpha = np.array([[0, 1, 128, 129, 255]], np.uint8)
    r = brush(alpha, "Cell")
    r["value"]["rle"] = encode_rle(alpha)
    assert region_mask(r, 1, 5).tolist() == [[False, False, False, True, True]]
    assert region_mask(r, 1, 5, alpha_threshold=0).tolist() == [[False, True, True, True, True]]
    out = annotation_to_label_map([r], CONFIG, 1, 5)
    assert out.label_map.tolist() == [[255, 255, 255, CELL, CELL]]


@pytest.mark.parametrize("h, w", [(10, 10), (7, 13), (1, 50)])
def test_polygon_covers_pixel_centres(h, w):
    # A rectangle with pixel-edge corners covers exactly those pixels, at any image size.
    r = poly([(1, 0), (w - 1, 0), (w - 1, h), (1, h)], "Cell", h, w)
    np.testing.assert_array_equal(region_mask(r, h, w), rect(h, w, 0, h, 1, w - 1))


def test_polygon_triangle_and_clipping():
    # lower-left half-triangle of a 4x4 image: pixel centres with x <= y (diagonal included
    # by skimage) -- and a point outside the image is clipped, not an error.
    r = poly([(0, 0), (0, 4), (4, 4)], "Cell", 4, 4)
    mask = region_mask(r, 4, 4)
    assert mask.sum() >= 6 and not mask[0, 3] and mask[3, 0]
    big = poly([(-2, -2), (9, -2), (9, 9), (-2, 9)], "Cell", 4, 4)
    assert region_mask(big, 4, 4).all()


def test_degenerate_polygon_is_empty():
    r = poly([(0, 0), (2, 2)], "Cell", 4, 4)
    assert not region_mask(r, 4, 4).any()


def test_ignored_results():
    m = rect(2, 2, 0, 1, 0, 1)
    other_image = brush(m, "Cell", "x", to_name="other")
    results = [
        {"id": "ch", "from_name": "ok", "to_name": "image", "type": "choices",
         "value": {"choices": ["yes"]}},
        {**brush(m, "Cell", "gone"), "from_name": "removed_control"},
        {**brush(m, "Cell", "wrongtype"), "from_name": "poly"},
        other_image,
        brush(m, "Cell", "kept"),
    ]
    out = annotation_to_label_map(results, CONFIG, 2, 2)
    assert [rid for rid, _ in out.ignored] == ["ch", "gone", "wrongtype", "x"]
    assert out.instance_classes == {1: CELL}


def test_size_mismatch_names_both_sizes():
    r = brush(np.ones((4, 6)), "Cell")
    with pytest.raises(AnnotationError, match=r"6x4 image.*8x4"):
        annotation_to_label_map([r], CONFIG, 4, 8)
    # a transposed image has the same RLE length: only original_width/height can tell
    with pytest.raises(AnnotationError, match="6x4.*4x6"):
        annotation_to_label_map([r], CONFIG, 6, 4)
    r.pop("original_width")
    with pytest.raises(AnnotationError, match="original_width"):
        annotation_to_label_map([r], CONFIG, 4, 6)


def test_rotation_is_refused():
    r = brush(np.ones((4, 4)), "Cell", image_rotation=90)
    with pytest.raises(AnnotationError, match="rotated by 90"):
        annotation_to_label_map([r], CONFIG, 4, 4)


@pytest.mark.parametrize(
    "labels, match",
    [(["Mitochondrion"], "not in the label config"), ([], "no label"),
     (["Cell", "Nucleus"], "several labels"), ("Cell", "list of labels")],
)
def test_bad_labels(labels, match):
    r = brush(np.ones((2, 2)), "Cell")
    r["value"]["brushlabels"] = labels
    with pytest.raises(AnnotationError, match=match):
        annotation_to_label_map([r], CONFIG, 2, 2)


def test_missing_label_key_and_bad_payloads():
    r = brush(np.ones((2, 2)), "Cell")
    del r["value"]["brushlabels"]
    with pytest.raises(AnnotationError, match="no label"):
        annotation_to_label_map([r], CONFIG, 2, 2)
    r = brush(np.ones((2, 2)), "Cell")
    r["value"]["rle"] = r["value"]["rle"][:-3]
    with pytest.raises(AnnotationError, match="brush result b"):
        annotation_to_label_map([r], CONFIG, 2, 2)
    p = poly([(0, 0), (1, 0), (1, 1)], "Cell", 2, 2)
    p["value"]["points"] = [[1, "a"], [2]]
    with pytest.raises(AnnotationError, match="points"):
        annotation_to_label_map([p], CONFIG, 2, 2)
    with pytest.raises(AnnotationError):
        annotation_to_label_map(["not a dict"], CONFIG, 2, 2)
    with pytest.raises(AnnotationError):
        annotation_to_label_map([], CONFIG, 0, 2)


# ---------------------------------------------------------------------------------------
# writing


def test_results_shape_exactly_as_label_studio_stores_them():
    lm = np.array([[0, 1, 1], [255, 2, 0]], np.uint8)
    results = label_map_to_results(lm, CONFIG, score=0.25)
    assert [r["value"]["brushlabels"] for r in results] == [["Cell"], ["Nucleus"]]
    r = results[0]
    assert set(r) == {"id", "from_name", "to_name", "type", "original_width",
                      "original_height", "image_rotation", "value", "score"}
    assert (r["from_name"], r["to_name"], r["type"]) == ("tag", "image", "brushlabels")
    assert (r["original_width"], r["original_height"], r["image_rotation"]) == (3, 2, 0)
    assert set(r["value"]) == {"format", "rle", "brushlabels"} and r["value"]["format"] == "rle"
    assert r["score"] == 0.25 and isinstance(r["score"], float)
    assert sdk.decode_rle(r["value"]["rle"]).reshape(2, 3, 4)[:, :, 3].tolist() == [
        [0, 255, 255], [0, 0, 0]]
    assert r["value"]["rle"] == sdk.mask2rle((lm == 1).astype(np.uint8) * 255)
    json.dumps(results)  # plain JSON types only
    assert "score" not in label_map_to_results(lm, CONFIG)[0]


def test_ids_are_deterministic_and_unique():
    lm = np.array([[0, 1, 2]], np.uint8)
    a = label_map_to_results(lm, CONFIG, include_background=True)
    b = label_map_to_results(np.array([[2, 1, 0]], np.uint8), CONFIG, include_background=True)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert len({r["id"] for r in a}) == 3
    assert [r["value"]["brushlabels"][0] for r in a] == ["Background", "Cell", "Nucleus"]


def test_background_only_when_asked():
    lm = np.zeros((2, 2), np.uint8)
    assert label_map_to_results(lm, CONFIG) == []
    assert len(label_map_to_results(lm, CONFIG, include_background=True)) == 1


@pytest.mark.parametrize(
    "lm",
    [np.array([[0, 4]], np.uint8), np.array([[0, 254]], np.uint8), np.array([[0, 1]], np.int64),
     np.zeros((2, 2, 1), np.uint8)],
)
def test_bad_label_maps(lm):
    with pytest.raises(AnnotationError):
        label_map_to_results(lm, CONFIG)


def test_class_without_brush_label_is_refused():
    # Debris is only a PolygonLabels label: it cannot be sent as a brush result
    with pytest.raises(AnnotationError, match="Debris"):
        label_map_to_results(np.array([[DEBRIS]], np.uint8), CONFIG)


def test_no_brush_control():
    cfg = parse_label_config('<View><Image name="i" value="$x"/><PolygonLabels name="p" '
                             'toName="i"><Label value="Background"/><Label value="A"/>'
                             "</PolygonLabels></View>")
    with pytest.raises(LabelConfigError, match="no BrushLabels"):
        label_map_to_results(np.array([[1]], np.uint8), cfg)


@pytest.mark.parametrize("score", [float("nan"), float("inf"), True])
def test_bad_score(score):
    with pytest.raises(AnnotationError, match="score"):
        label_map_to_results(np.array([[1]], np.uint8), CONFIG, score=score)


def test_instances_give_one_result_per_object():
    lm = np.array([[1, 1, 0, 1, 1, 2]], np.uint8)
    inst = np.array([[1, 1, 0, 2, 0, 3]], np.int32)  # pixel (0, 4) is Cell in no object
    results = label_map_to_results(lm, CONFIG, instances=inst)
    assert len(results) == 4 and len({r["id"] for r in results}) == 4
    out = annotation_to_label_map(results, CONFIG, 1, 6)
    np.testing.assert_array_equal(out.label_map, np.where(lm == 0, 255, lm))
    assert out.instance_classes == {1: CELL, 2: CELL, 3: CELL, 4: NUC}
    assert out.instances.tolist() == [[1, 1, 0, 2, 3, 4]]
    with pytest.raises(AnnotationError, match="several"):
        label_map_to_results(lm, CONFIG, instances=np.array([[1, 1, 0, 1, 1, 1]]))
    with pytest.raises(AnnotationError, match="shape"):
        label_map_to_results(lm, CONFIG, instances=np.zeros((2, 6), np.int32))


@st.composite
def label_maps(draw):
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    return draw(hnp.arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 255])))


@settings(max_examples=80, deadline=None)
@given(label_maps())
def test_round_trip(lm):
    h, w = lm.shape
    out = annotation_to_label_map(label_map_to_results(lm, CONFIG, include_background=True),
                                  CONFIG, h, w)
    np.testing.assert_array_equal(out.label_map, lm)
    assert out.conflicts == [] and out.background_cropped == 0
    # without background, background pixels come back unlabeled
    out = annotation_to_label_map(label_map_to_results(lm, CONFIG), CONFIG, h, w)
    np.testing.assert_array_equal(out.label_map, np.where(lm == 0, UNLABELED, lm))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.data())
def test_polygon_rectangles_are_pixel_exact(h, w, data):
    r0, r1 = sorted(data.draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
    c0, c1 = sorted(data.draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
    r = poly([(c0, r0), (c1, r0), (c1, r1), (c0, r1)], "Cell", h, w)
    np.testing.assert_array_equal(region_mask(r, h, w), rect(h, w, r0, r1, c0, c1))


# ---------------------------------------------------------------------------------------
# the real thing


def test_real_webhook_payload(ls_fixtures):
    payload = json.loads((ls_fixtures / "015_POST_webhook_ANNOTATION_CREATED.json").read_text())
    body = payload["json"]
    config = parse_label_config(body["project"]["label_config"])
    results = body["annotation"]["result"]
    h, w = results[0]["original_height"], results[0]["original_width"]
    out = annotation_to_label_map(results, config, h, w)
    alpha = sdk.decode_rle(results[0]["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
    cls = config.class_index(results[0]["value"]["brushlabels"][0])
    np.testing.assert_array_equal(out.label_map, np.where(alpha > 128, cls, UNLABELED))
    assert out.instance_classes == {1: cls} and out.ignored == []
    assert (out.label_map == cls).sum() > 0
    # and writing it back gives Label Studio's bytes
    again = label_map_to_results(out.label_map, config)
    assert again[0]["value"]["rle"] == results[0]["value"]["rle"]

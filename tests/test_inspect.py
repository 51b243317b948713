"""Inspection rules and the gate: each rule on tiny maps, overrides, the decision, and one
contract test run over every registered rule."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.assist.inspect import (
    RULES,
    SEVERITIES,
    ClassProgress,
    Finding,
    InspectionConfig,
    InspectionContext,
    InspectionError,
    class_progress,
    inspect,
)
from label_assistant.labelmap import BACKGROUND, UNLABELED

U = UNLABELED


def good_map() -> np.ndarray:
    """A 10x10 map: a 4x4 object of class 1 in background, the right column unlabeled."""
    lm = np.zeros((10, 10), np.uint8)
    lm[2:6, 2:6] = 1
    lm[:, 9] = U
    return lm


def ctx_for(lm: np.ndarray, **kwargs) -> InspectionContext:
    kwargs.setdefault("n_classes", 2)
    return InspectionContext(label_map=lm, **kwargs)


#: Fragments under 2 pixels only, so that the tiny objects of these tests are no fragments.
CONFIG = InspectionConfig(min_fragment_size=2)


def codes(ctx: InspectionContext, config: InspectionConfig = CONFIG) -> list[str]:
    return [f.code for f in inspect(ctx, config).findings]


def probabilities(shape: tuple[int, int], value: int, k: int = 2,
                  confidence: float = 0.95) -> np.ndarray:
    """Softmax maps saying ``value`` everywhere with ``confidence``."""
    p = np.full((k + 1, *shape), (1 - confidence) / k, np.float32)
    p[value] = confidence
    return p


def agreeing(lm: np.ndarray, k: int = 2) -> np.ndarray:
    """Softmax maps that agree with ``lm`` (unlabeled pixels: background)."""
    values = np.where(lm == U, 0, lm)
    return np.stack([np.where(values == v, 0.95, 0.05 / k) for v in range(k + 1)]).astype(
        np.float32)


# --- each rule: positive and negative case --------------------------------------------------


def test_a_good_annotation_has_no_findings_and_is_admitted():
    report = inspect(ctx_for(good_map(), image_shape=(10, 10)))
    assert report.findings == []
    assert report.admitted and report.reasons == []


def test_empty():
    report = inspect(ctx_for(np.full((4, 4), U, np.uint8)))
    assert [f.code for f in report.findings] == ["empty"]  # not no_background as well
    assert not report.admitted
    assert codes(ctx_for(good_map())) == []


def test_background_only_is_not_empty():
    assert codes(ctx_for(np.zeros((4, 4), np.uint8))) == []


def test_no_background():
    lm = np.full((6, 6), U, np.uint8)
    lm[1:4, 1:4] = 1
    report = inspect(ctx_for(lm), CONFIG)
    assert [f.code for f in report.findings] == ["no_background"]
    assert not report.admitted
    assert "Background" in report.reasons[0]
    # a project without a background class: nothing to say
    assert codes(ctx_for(lm, uses_background=False)) == []


def test_size_mismatch():
    lm = good_map()
    report = inspect(ctx_for(lm, image_shape=(12, 10)))
    assert [f.code for f in report.findings] == ["size_mismatch"]
    assert "10x10" in report.findings[0].message and "10x12" in report.findings[0].message
    assert not report.admitted
    assert codes(ctx_for(lm, image_shape=(10, 10))) == []
    assert codes(ctx_for(lm, image_shape=None)) == []


def test_unknown_class():
    lm = good_map()
    lm[7:9, 6:8] = 3
    (finding,) = inspect(ctx_for(lm, n_classes=2), CONFIG).findings
    assert finding.code == "unknown_class"
    assert finding.bbox == (6, 7, 8, 9) and finding.pixels == 4
    assert codes(ctx_for(lm, n_classes=3)) == []


def test_touching_objects():
    lm = np.zeros((5, 8), np.uint8)
    lm[1:4, 1:7] = 1
    inst = np.zeros(lm.shape, np.int32)
    inst[1:4, 1:4] = 1
    inst[1:4, 4:7] = 2
    (finding,) = inspect(ctx_for(lm, instances=inst), CONFIG).findings
    assert finding.code == "touching_objects" and finding.severity == "warning"
    assert finding.bbox == (3, 1, 4, 4) and finding.pixels == 3  # the column to carve
    # separated by a background column: nothing
    lm[1:4, 4] = BACKGROUND
    inst[1:4, 4] = 0
    assert codes(ctx_for(lm, instances=inst)) == []
    # without instances the rule can't tell objects apart
    assert codes(ctx_for(lm)) == []


def test_touching_objects_of_different_classes_are_fine():
    lm = np.zeros((5, 8), np.uint8)
    lm[1:4, 1:4] = 1
    lm[1:4, 4:7] = 2
    inst = np.zeros(lm.shape, np.int32)
    inst[1:4, 1:4] = 1
    inst[1:4, 4:7] = 2
    assert codes(ctx_for(lm, instances=inst)) == []


def test_small_fragments():
    lm = good_map()
    lm[8, 1] = 2
    (finding,) = inspect(ctx_for(lm), InspectionConfig(min_fragment_size=2)).findings
    assert finding.code == "small_fragments"
    assert finding.bbox == (1, 8, 2, 9) and finding.pixels == 1
    assert codes(ctx_for(good_map()), InspectionConfig(min_fragment_size=16)) == []
    assert codes(ctx_for(good_map()), InspectionConfig(min_fragment_size=17)) == [
        "small_fragments"]


def test_class_overlap():
    report = inspect(ctx_for(good_map(), class_names=["Nucleus", "Cell"],
                             conflicts=[(1, 2, 37)]))
    (finding,) = report.findings
    assert finding.code == "class_overlap" and finding.pixels == 37
    assert "Nucleus" in finding.message and "Cell" in finding.message
    assert report.admitted  # a warning by default
    assert codes(ctx_for(good_map(), conflicts=[])) == []


def test_background_over_object():
    lm = good_map()
    p = agreeing(lm)
    p[:, 6:9, 6:9] = probabilities((3, 3), 2)  # the model sees class 2 on painted background
    config = InspectionConfig(model_min_area=9)
    (finding,) = inspect(ctx_for(lm, probabilities=p), config).findings
    assert finding.code == "background_over_object"
    assert finding.bbox == (6, 6, 9, 9) and finding.pixels == 9
    # too small an area, or not confident enough: nothing
    assert codes(ctx_for(lm, probabilities=p), InspectionConfig(model_min_area=10)) == []
    unsure = agreeing(lm)
    unsure[:, 6:9, 6:9] = probabilities((3, 3), 2, confidence=0.6)
    assert codes(ctx_for(lm, probabilities=unsure), config) == []


def test_background_over_object_ignores_unlabeled_pixels():
    lm = good_map()
    p = agreeing(lm)
    p[:, :, 9:] = probabilities((10, 1), 1)  # the model's object lies in the unlabeled column
    assert codes(ctx_for(lm, probabilities=p), InspectionConfig(model_min_area=1)) == []


def test_class_over_background():
    lm = good_map()
    p = probabilities(lm.shape, 0)  # the model sees background everywhere, object included
    (finding,) = inspect(ctx_for(lm, probabilities=p),
                         InspectionConfig(model_min_area=16)).findings
    assert finding.code == "class_over_background"
    assert finding.bbox == (2, 2, 6, 6) and finding.pixels == 16
    assert codes(ctx_for(lm, probabilities=agreeing(lm)), InspectionConfig(model_min_area=1)) == []


def test_model_rules_are_skipped_without_probabilities_or_on_another_size():
    lm = good_map()
    assert codes(ctx_for(lm), InspectionConfig(model_min_area=1)) == []
    other = probabilities((5, 5), 0)
    assert codes(ctx_for(lm, probabilities=other), InspectionConfig(model_min_area=1)) == []


def border_bands(size: int = 40, width: int = 4) -> np.ndarray:
    """A size x size map with Background only in bands along the four edges (the real trial's
    mistake), the interior unlabeled."""
    lm = np.full((size, size), U, np.uint8)
    lm[:width], lm[-width:], lm[:, :width], lm[:, -width:] = 0, 0, 0, 0
    return lm


def test_background_far_from_objects_fires_on_border_bands():
    lm = border_bands()
    lm[15:19, 15:19] = 1  # two nuclei in the middle, 11+ px from the nearest band
    lm[15:19, 22:26] = 1
    report = inspect(ctx_for(lm), CONFIG)
    (finding,) = report.findings
    assert finding.code == "background_far_from_objects" and finding.severity == "warning"
    assert report.admitted
    assert finding.bbox == (15, 15, 26, 19) and finding.pixels == 32
    assert "only along the image border" in finding.message
    assert "all 2 objects" in finding.message and "thin ring" in finding.message


def test_background_far_from_objects_quiet_on_a_good_partial_annotation():
    # Whole objects, each with a thin Background ring (2 px), anywhere: against the image
    # edge, in a corner, in the middle; the rest unlabeled.
    lm = np.full((40, 40), U, np.uint8)
    for y, x in ((0, 10), (34, 34), (18, 18)):
        lm[max(y - 2, 0):y + 6, max(x - 2, 0):x + 6] = 0
        lm[y:y + 4, x:x + 4] = 1
    assert codes(ctx_for(lm)) == []
    # Edge bands as well as the rings are fine too.
    lm[:4], lm[:, :4] = 0, 0
    assert codes(ctx_for(lm)) == []


def test_background_far_from_objects_quiet_on_dense_and_one_sided_annotations():
    dense = np.zeros((40, 40), np.uint8)
    dense[15:19, 15:19] = 1
    dense[5:30, 25:35] = 2
    assert codes(ctx_for(dense)) == []
    objects_only = np.full((40, 40), U, np.uint8)
    objects_only[15:19, 15:19] = 1
    assert codes(ctx_for(objects_only)) == ["no_background"]  # not this rule as well
    assert codes(ctx_for(border_bands())) == []  # Background and no object
    lm = border_bands()
    lm[15:19, 15:19] = 1
    assert codes(ctx_for(lm, uses_background=False)) == []


def test_background_far_from_objects_needs_more_than_half_the_objects_far():
    lm = border_bands()
    lm[15:19, 15:19] = 1  # far: 11+ px from the bands
    lm[15:19, 22:26] = 1  # far
    lm[30:33, 30:33] = 2  # near: 3 px from the bottom and right bands
    (finding,) = inspect(ctx_for(lm), CONFIG).findings
    assert "2 of 3 objects" in finding.message
    assert finding.bbox == (15, 15, 26, 19) and finding.pixels == 32  # only the far ones
    lm[5:8, 30:33] = 2  # near the top band: 2 of 4 far is not more than half
    assert codes(ctx_for(lm)) == []


def test_background_far_from_objects_off_the_border_and_scaled_with_the_image():
    lm = np.full((40, 40), U, np.uint8)
    lm[0:4, 0:4] = 1
    lm[15:20, 15:20] = 0  # Background in the middle, the object in a corner
    (finding,) = inspect(ctx_for(lm), CONFIG).findings
    assert finding.code == "background_far_from_objects"
    assert "border" not in finding.message and "the object at x 0-3, y 0-3 has" in \
        finding.message
    # 9 px away: far on a small image, near on a large one (2% of 500 = 10 px)
    for size, expected in ((40, ["background_far_from_objects"]), (500, [])):
        lm = np.full((size, size), U, np.uint8)
        lm[10:14, 10:14] = 1
        lm[10:14, 22] = 0  # 9 px right of the object's last column (13)
        assert codes(ctx_for(lm)) == expected, size


def test_background_far_from_objects_ignores_stray_fragments():
    lm = border_bands()
    lm[15:19, 15:19] = 1
    lm[15:19, 22:26] = 1
    lm[1, 10], lm[1, 20], lm[1, 30] = 1, 1, 1  # stray one-pixel strokes in the top band
    assert "background_far_from_objects" in codes(ctx_for(lm), CONFIG)
    # counted as objects they would make the two nuclei a minority
    assert codes(ctx_for(lm), InspectionConfig(min_fragment_size=1)) == []


# --- severities and the gate ----------------------------------------------------------------


def test_override_makes_a_warning_block():
    ctx = ctx_for(good_map(), conflicts=[(1, 2, 5)])
    report = inspect(ctx, InspectionConfig(severity={"class_overlap": "error"}))
    assert not report.admitted
    assert report.findings[0].severity == "error"
    assert report.reasons == [report.findings[0].message]


def test_override_makes_an_error_pass_or_turns_it_off():
    ctx = ctx_for(np.full((3, 3), U, np.uint8))
    warned = inspect(ctx, InspectionConfig(severity={"empty": "warning"}))
    assert warned.admitted and [f.severity for f in warned.findings] == ["warning"]
    off = inspect(ctx, InspectionConfig(severity={"empty": "off"}))
    assert off.admitted and off.findings == []


def test_errors_come_first_and_order_is_deterministic():
    lm = good_map()
    lm[8, 1] = 2
    ctx = ctx_for(lm, image_shape=(11, 10), conflicts=[(1, 2, 3)])
    report = inspect(ctx, InspectionConfig(min_fragment_size=2))
    assert [f.code for f in report.findings] == ["size_mismatch", "class_overlap",
                                                 "small_fragments"]
    assert inspect(ctx, InspectionConfig(min_fragment_size=2)) == report


def test_findings_beyond_the_cap_are_counted():
    lm = np.zeros((9, 9), np.uint8)
    lm[::2, ::2] = 1  # 25 isolated one-pixel fragments
    report = inspect(ctx_for(lm), InspectionConfig(min_fragment_size=2,
                                                    max_findings_per_rule=3))
    assert len(report.findings) == 3
    assert report.omitted == {"small_fragments": 22}
    # ordered top to bottom, left to right
    assert [f.bbox[:2] for f in report.findings] == [(0, 0), (2, 0), (4, 0)]


def test_report_to_dict():
    report = inspect(ctx_for(np.full((3, 3), U, np.uint8)))
    d = report.to_dict()
    assert d["admitted"] is False
    assert d["findings"][0]["code"] == "empty"
    assert d["reasons"] == [d["findings"][0]["message"]]


# --- configuration --------------------------------------------------------------------------


def test_config_round_trips_through_a_dict():
    config = InspectionConfig(severity={"touching_objects": "off"}, model_confidence=0.8)
    assert InspectionConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("data", [
    {"severity": {"no_such_rule": "error"}},
    {"severity": {"empty": "fatal"}},
    {"severity": ["empty"]},
    {"no_such_setting": 1},
    {"model_confidence": 0},
    {"min_class_pixels": -1},
    {"min_fragment_size": "10"},
    {"model_min_area": 2.5},
])
def test_bad_config_raises_a_clear_error(data):
    with pytest.raises(InspectionError) as error:
        InspectionConfig.from_dict(data)
    assert "\n" not in str(error.value)


def test_unknown_rule_message_lists_the_rules():
    with pytest.raises(InspectionError, match="no_background"):
        InspectionConfig(severity={"typo": "off"})


def test_bad_context_raises():
    with pytest.raises(InspectionError):
        InspectionContext(label_map=np.zeros((3, 3), np.int64), n_classes=1)
    with pytest.raises(InspectionError):
        InspectionContext(label_map=np.zeros((3, 3), np.uint8), n_classes=2,
                          probabilities=np.zeros((2, 3, 3), np.float32))
    with pytest.raises(InspectionError):
        InspectionContext(label_map=np.zeros((3, 3), np.uint8), n_classes=1,
                          instances=np.zeros((2, 2), np.int32))


# --- the contract every registered rule honours ---------------------------------------------


def contexts() -> list[InspectionContext]:
    """Full and bare contexts, including an all-unlabeled map and Background only along
    the border."""
    lm = good_map()
    lm[8, 1] = 2
    inst = np.where(lm == 1, 1, 0).astype(np.int32)
    full = ctx_for(lm, class_names=["a", "b"], image_shape=(10, 10), instances=inst,
                   conflicts=[(1, 2, 4)], probabilities=probabilities(lm.shape, 2))
    far_from_background = border_bands(30, 3)
    far_from_background[12:18, 12:18] = 1
    return [
        full,
        ctx_for(lm),
        ctx_for(np.full((6, 7), U, np.uint8), image_shape=(6, 7),
                instances=np.zeros((6, 7), np.int32), conflicts=[],
                probabilities=probabilities((6, 7), 1)),
        ctx_for(np.full((6, 7), U, np.uint8)),
        ctx_for(np.zeros((0, 0), np.uint8)),
        ctx_for(far_from_background),
    ]


@pytest.mark.parametrize("code", list(RULES))
def test_rule_contract(code):
    rule = RULES[code]
    assert rule.code == code and rule.severity in SEVERITIES and rule.description
    config = InspectionConfig(min_fragment_size=2, model_min_area=1)
    for ctx in contexts():
        arrays = [a for a in (ctx.label_map, ctx.instances, ctx.probabilities) if a is not None]
        before = [a.copy() for a in arrays]
        found = rule.check(ctx, config)
        assert isinstance(found, list)
        for f in found:
            assert isinstance(f, Finding)
            assert f.code == code and f.severity == rule.severity
            assert f.message and "\n" not in f.message
            if f.bbox is not None:
                x0, y0, x1, y1 = f.bbox
                h, w = ctx.label_map.shape
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert f.pixels is None or f.pixels >= 0
        assert rule.check(ctx, config) == found  # deterministic
        assert all(np.array_equal(a, b) for a, b in zip(arrays, before, strict=True))  # untouched


def test_every_rule_fires_somewhere():
    """Each registered rule is reachable (guards against a rule that can never fail)."""
    config = InspectionConfig(min_fragment_size=2, model_min_area=1)
    fired = {f.code for ctx in contexts() for f in inspect(ctx, config).findings}
    lm = np.zeros((4, 4), np.uint8)
    lm[0, 0] = 9
    lm[1:3, 1:3] = 1
    inst = np.zeros((4, 4), np.int32)
    inst[1:3, 1] = 1
    inst[1:3, 2] = 2
    fired |= set(codes(ctx_for(lm, instances=inst, probabilities=probabilities((4, 4), 0)),
                       config))
    only_class = np.full((4, 4), U, np.uint8)
    only_class[1:3, 1:3] = 1
    fired |= set(codes(ctx_for(only_class, image_shape=(5, 4)), config))
    assert fired == set(RULES)


# --- class progress -------------------------------------------------------------------------


def test_class_progress_from_maps_and_counts():
    lm = good_map()  # 16 pixels of class 1, 74 of background
    rows = class_progress([lm, np.array([6, 4, 0])], ["Nucleus", "Cell"], minimum=20)
    assert rows == [ClassProgress(0, "Background", 80, 20), ClassProgress(1, "Nucleus", 20, 20),
                    ClassProgress(2, "Cell", 0, 20)]
    assert [r.done for r in rows] == [True, True, False]
    assert [r.fraction for r in rows] == [1.0, 1.0, 0.0]
    assert rows[2].to_dict()["done"] is False


def test_class_progress_fraction_and_no_background():
    rows = class_progress([np.array([0, 2500])], ["a"], include_background=False)
    assert len(rows) == 1 and rows[0].minimum == 5000 and rows[0].fraction == 0.5


def test_class_progress_rejects_wrong_counts():
    with pytest.raises(InspectionError):
        class_progress([np.array([1, 2, 3])], ["a"])

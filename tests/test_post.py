"""Cleanup of submitted annotations: each operation on tiny maps whose answer is obvious."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from label_assistant.assist.post import CleanupError, CleanupParams, cleanup
from label_assistant.labelmap import BACKGROUND, UNLABELED, separate_touching

U = UNLABELED
ONLY_HOLES = CleanupParams(min_fragment_size=0, separate=False)


def ring(size: int = 7, inside: int = U, outside: int = U, cls: int = 1) -> np.ndarray:
    """A one-pixel ring of ``cls`` (rows/cols 1..size-2) with ``inside`` in it."""
    lm = np.full((size, size), outside, np.uint8)
    lm[1:-1, 1:-1] = cls
    lm[2:-2, 2:-2] = inside
    return lm


# --- hole filling ---------------------------------------------------------------------------


def test_unlabeled_hole_inside_a_class_is_filled():
    lm = ring()
    result = cleanup(lm, params=ONLY_HOLES)
    assert (result.label_map[1:-1, 1:-1] == 1).all()
    assert (result.label_map[0] == U).all()  # outside the ring untouched
    assert result.changes == {"fill_holes": 9}


def test_hole_holding_another_class_is_not_touched():
    lm = ring()
    lm[3, 3] = 2  # one pixel of class 2 inside the ring of class 1
    result = cleanup(lm, params=ONLY_HOLES)
    assert np.array_equal(result.label_map, lm)
    assert result.changes == {"fill_holes": 0}


def test_hole_of_background_is_kept():
    lm = ring(inside=BACKGROUND)
    result = cleanup(lm, params=ONLY_HOLES)
    assert np.array_equal(result.label_map, lm)


def test_hole_mixing_background_and_unlabeled_is_kept():
    lm = ring()
    lm[2, 2] = BACKGROUND
    assert np.array_equal(cleanup(lm, params=ONLY_HOLES).label_map, lm)


def test_ring_of_background_is_not_filled():
    # unlabeled inside a background ring may be an object not labeled yet
    lm = ring(cls=BACKGROUND)
    assert np.array_equal(cleanup(lm, params=ONLY_HOLES).label_map, lm)


def test_open_region_is_not_a_hole():
    lm = ring()
    lm[2:-2, 1] = U  # gap in the left side of the ring: the inside leaks out
    assert np.array_equal(cleanup(lm, params=ONLY_HOLES).label_map, lm)


def test_diagonal_gap_does_not_open_a_hole():
    # 8-connected objects enclose 4-connected holes: a diagonal step still closes the ring
    lm = np.full((5, 5), U, np.uint8)
    lm[1, 2] = lm[2, 1] = lm[2, 3] = lm[3, 2] = 1  # diamond around (2, 2)
    assert cleanup(lm, params=ONLY_HOLES).label_map[2, 2] == 1


def test_max_hole_size_limits_filling():
    lm = ring()  # hole of 9 pixels
    small = CleanupParams(min_fragment_size=0, separate=False, max_hole_size=8)
    assert np.array_equal(cleanup(lm, params=small).label_map, lm)
    big = CleanupParams(min_fragment_size=0, separate=False, max_hole_size=9)
    assert (cleanup(lm, params=big).label_map[1:-1, 1:-1] == 1).all()


def test_hole_filling_can_be_turned_off():
    lm = ring()
    off = CleanupParams(fill_holes=False, min_fragment_size=0, separate=False)
    result = cleanup(lm, params=off)
    assert np.array_equal(result.label_map, lm)
    assert result.changes == {}


def test_filled_hole_takes_the_instance_of_its_object():
    lm = ring()
    inst = np.where(lm == 1, 7, 0).astype(np.int32)
    result = cleanup(lm, instances=inst, params=ONLY_HOLES)
    assert (result.instances[1:-1, 1:-1] == 7).all()


# --- fragments --------------------------------------------------------------------------------


def test_small_fragment_becomes_unlabeled_not_background():
    lm = np.full((6, 6), BACKGROUND, np.uint8)
    lm[0:3, 0:3] = 1  # 9 pixels: kept
    lm[5, 5] = 1  # 1 pixel: removed
    params = CleanupParams(min_fragment_size=2, fill_holes=False, separate=False)
    result = cleanup(lm, params=params)
    assert result.label_map[5, 5] == U
    assert (result.label_map[0:3, 0:3] == 1).all()
    assert result.changes == {"remove_fragments": 1}


def test_fragment_at_threshold_is_kept():
    lm = np.full((4, 4), U, np.uint8)
    lm[0, 0:3] = 2
    params = CleanupParams(min_fragment_size=3, fill_holes=False, separate=False)
    assert np.array_equal(cleanup(lm, params=params).label_map, lm)


def test_diagonal_pixels_form_one_fragment():
    lm = np.full((3, 3), U, np.uint8)
    lm[0, 0] = lm[1, 1] = lm[2, 2] = 1
    params = CleanupParams(min_fragment_size=3, fill_holes=False, separate=False)
    assert np.array_equal(cleanup(lm, params=params).label_map, lm)


def test_background_fragments_are_kept():
    lm = np.full((5, 5), U, np.uint8)
    lm[2, 2] = BACKGROUND  # e.g. a drawn separation point
    params = CleanupParams(min_fragment_size=10, fill_holes=False, separate=False)
    assert cleanup(lm, params=params).label_map[2, 2] == BACKGROUND


def test_removed_fragment_clears_its_instance():
    lm = np.full((3, 3), U, np.uint8)
    lm[1, 1] = 1
    inst = np.zeros((3, 3), np.int32)
    inst[1, 1] = 4
    params = CleanupParams(min_fragment_size=2, fill_holes=False, separate=False)
    assert cleanup(lm, instances=inst, params=params).instances[1, 1] == 0


# --- opening / closing --------------------------------------------------------------------------


def test_opening_removes_thin_line_to_unlabeled():
    lm = np.full((9, 9), BACKGROUND, np.uint8)
    lm[3:8, 3:8] = 1
    lm[0, 1:8] = 1  # a one-pixel-thin brush line
    params = CleanupParams(open_radius=1, fill_holes=False, min_fragment_size=0,
                           separate=False)
    result = cleanup(lm, params=params)
    assert (result.label_map[0, 1:8] == U).all()
    assert (result.label_map[4:7, 4:7] == 1).all()
    assert result.changes == {"open": int((result.label_map != lm).sum())}
    assert not (result.label_map == BACKGROUND)[lm != BACKGROUND].any()  # nothing -> background


def test_closing_adds_only_unlabeled_pixels():
    lm = np.full((5, 9), U, np.uint8)
    lm[1:4, 0:4] = 1
    lm[1:4, 5:9] = 1
    lm[1, 4] = BACKGROUND  # the gap column: one background pixel, two unlabeled
    params = CleanupParams(close_radius=1, fill_holes=False, min_fragment_size=0,
                           separate=False)
    result = cleanup(lm, params=params)
    assert result.label_map[1, 4] == BACKGROUND
    assert result.label_map[2, 4] == 1
    assert result.changes == {"close": int(((result.label_map != lm)).sum())}
    assert (lm[result.label_map != lm] == U).all()


def test_morphology_is_off_by_default():
    assert CleanupParams().open_radius == 0
    assert CleanupParams().close_radius == 0


# --- separation -----------------------------------------------------------------------------


def two_touching_objects() -> tuple[np.ndarray, np.ndarray]:
    lm = np.full((4, 6), BACKGROUND, np.uint8)
    lm[1:3, 0:6] = 1
    inst = np.zeros(lm.shape, np.int32)
    inst[1:3, 0:3] = 1
    inst[1:3, 3:6] = 2
    return lm, inst


def test_touching_objects_of_one_class_get_a_background_line():
    lm, inst = two_touching_objects()
    params = CleanupParams(fill_holes=False, min_fragment_size=0)
    result = cleanup(lm, instances=inst, params=params)
    assert (result.label_map[1:3, 2] == BACKGROUND).all()  # carved column
    assert (result.instances[1:3, 2] == 0).all()
    assert (result.label_map[1:3, [0, 1, 3, 4, 5]] == 1).all()
    assert result.changes == {"separate_touching": 2}


def test_touching_objects_of_different_classes_are_not_carved():
    lm, inst = two_touching_objects()
    lm[1:3, 3:6] = 2
    params = CleanupParams(fill_holes=False, min_fragment_size=0)
    result = cleanup(lm, instances=inst, params=params)
    assert np.array_equal(result.label_map, lm)


def test_without_instances_nothing_is_carved():
    lm, _ = two_touching_objects()
    result = cleanup(lm, params=CleanupParams(fill_holes=False, min_fragment_size=0))
    assert np.array_equal(result.label_map, lm)
    assert result.instances is None
    assert result.changes == {"separate_touching": 0}


# --- the whole ------------------------------------------------------------------------------


def test_inputs_are_not_modified_and_changes_are_in_order():
    lm = ring(size=9)
    lm[0, 0] = 1  # a fragment
    inst = np.where(lm == 1, 1, 0).astype(np.int32)
    lm_before, inst_before = lm.copy(), inst.copy()
    params = CleanupParams(open_radius=1, close_radius=1, min_fragment_size=2)
    result = cleanup(lm, instances=inst, params=params)
    assert np.array_equal(lm, lm_before) and np.array_equal(inst, inst_before)
    assert list(result.changes) == ["open", "close", "fill_holes", "remove_fragments",
                                    "separate_touching"]
    assert result.label_map is not lm and result.instances is not inst


def test_changes_account_for_every_changed_pixel_with_defaults():
    lm = ring(size=9)
    lm[0, 0] = 1
    result = cleanup(lm)
    assert result.changed == int((result.label_map != lm).sum())


def test_all_unlabeled_map_is_unchanged():
    lm = np.full((5, 5), U, np.uint8)
    result = cleanup(lm, instances=np.zeros((5, 5), np.int32))
    assert np.array_equal(result.label_map, lm)
    assert result.changed == 0


@pytest.mark.parametrize("kwargs", [{"min_fragment_size": -1}, {"open_radius": -2},
                                    {"max_hole_size": -1}])
def test_bad_params_raise(kwargs):
    with pytest.raises(CleanupError):
        CleanupParams(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(CleanupError):
        cleanup(np.zeros((3, 3), np.int32))
    with pytest.raises(CleanupError):
        cleanup(np.zeros((3, 3), np.uint8), instances=np.zeros((2, 3), np.int32))


# --- invariants on random maps ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(np.uint8, (8, 8), elements=st.sampled_from([0, 1, 2, U])),
    ids=hnp.arrays(np.int32, (8, 8), elements=st.integers(0, 3)),
    with_instances=st.booleans(),
)
def test_cleanup_invariants(values, ids, with_instances):
    inst = np.where((values != U) & (values != BACKGROUND), ids, 0) if with_instances else None
    result = cleanup(values, instances=inst)
    out = result.label_map
    changed = out != values
    # unlabeled pixels only ever become a class (hole filling), never background
    assert (out[changed & (values == U)] != BACKGROUND).all()
    # a class never turns into another class
    assert not (changed & (values != U) & (out != U) & (out != BACKGROUND)).any()
    # background is only carved between objects, out of pixels that were a class
    became_background = changed & (out == BACKGROUND)
    assert (values[became_background] != U).all()
    if inst is None:
        assert not became_background.any()
    else:
        assert (inst[became_background] > 0).all()
        assert (result.instances[out == U] == 0).all()
        for c in (1, 2):  # no two objects of one class touch any more
            of_class = np.where(out == c, result.instances, 0)
            assert np.array_equal(separate_touching(of_class), of_class)
    assert result.changed >= int(changed.sum())


def test_separation_line_through_a_filled_hole_goes_back_to_unlabeled():
    # Found by hypothesis: a one-pixel hole next to where object 2 touches object 1. Filling
    # makes it class 1, separation carves it; it must not become background.
    values = np.ones((8, 8), np.uint8)
    values[2, 1] = U
    inst = np.ones((8, 8), np.int32)
    inst[1, 0] = 2
    inst[values == U] = 0
    result = cleanup(values, instances=inst)
    assert result.label_map[2, 1] == U
    assert result.label_map[1, 0] == 1 and result.instances[1, 0] == 2  # object 2 kept

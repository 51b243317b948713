import numpy as np
import pytest
from scipy import ndimage as ndi

from label_assistant.labelmap import (
    UNLABELED,
    check_label_map,
    instances_to_label_map,
    labeled_pixel_counts,
    separate_touching,
)


def _touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different object ids that are 8-neighbours anywhere."""
    pairs = set()
    h, w = instances.shape
    padded = np.pad(instances, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            both = (instances > 0) & (shifted > 0) & (instances != shifted)
            pairs |= set(zip(instances[both].tolist(), shifted[both].tolist(), strict=True))
    return pairs


def test_separate_touching_side_by_side():
    inst = np.array([[1, 1, 2, 2]])
    assert separate_touching(inst).tolist() == [[1, 0, 2, 2]]


def test_separate_touching_diagonal_counts_as_touching():
    inst = np.array([[1, 0], [0, 2]])
    out = separate_touching(inst)
    assert _touching_pairs(out) == set()
    assert out.tolist() == [[0, 0], [0, 2]]


def test_separate_touching_leaves_separated_objects_alone():
    inst = np.array([[1, 0, 2], [1, 0, 2]])
    assert (separate_touching(inst) == inst).all()


def test_separate_touching_random_maps_never_touch_and_only_remove():
    rng = np.random.default_rng(0)
    for _ in range(20):
        inst = rng.integers(0, 5, size=(17, 23))
        out = separate_touching(inst)
        assert _touching_pairs(out) == set()
        changed = out != inst
        assert (out[changed] == 0).all()


def test_separate_touching_keeps_every_object_of_two_discs():
    yy, xx = np.mgrid[:40, :60]
    inst = np.zeros((40, 60), int)
    inst[(yy - 20) ** 2 + (xx - 18) ** 2 < 12**2] = 1
    inst[(yy - 20) ** 2 + (xx - 41) ** 2 < 12**2] = 2  # overlaps disc 1 -> they touch
    out = separate_touching(inst)
    assert _touching_pairs(out) == set()
    # still two objects, each one connected piece
    for i in (1, 2):
        assert ndi.label(out == i)[1] == 1


def test_instances_to_label_map_with_class_mapping():
    inst = np.array([[1, 1, 0, 2, 3]])
    lm = instances_to_label_map(inst, {1: 1, 2: 2, 3: 2}, separate=False)
    assert lm.dtype == np.uint8
    assert lm.tolist() == [[1, 1, 0, 2, 2]]
    separated = instances_to_label_map(inst, {1: 1, 2: 2, 3: 2})
    assert separated.tolist() == [[1, 1, 0, 0, 2]]


def test_check_label_map():
    ok = np.array([[0, 1, UNLABELED]], np.uint8)
    assert check_label_map(ok, n_classes=1) is ok
    with pytest.raises(ValueError, match="uint8"):
        check_label_map(ok.astype(np.int32))
    with pytest.raises(ValueError, match="outside"):
        check_label_map(np.array([[3]], np.uint8), n_classes=2)
    with pytest.raises(ValueError, match="2-D"):
        check_label_map(np.zeros((2, 2, 2), np.uint8))


def test_labeled_pixel_counts_ignore_unlabeled():
    lm = np.array([[0, 0, 1, 2, UNLABELED, UNLABELED]], np.uint8)
    assert labeled_pixel_counts(lm, 2).tolist() == [2, 1, 1]

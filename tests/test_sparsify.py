"""The sparsifier: partial annotations that are true, whole-object, near the target fraction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from label_assistant.labelmap import UNLABELED
from label_assistant.model.sparsify import (
    SparsifyError,
    labeled_fraction,
    objects_of,
    sparsify,
)


def _blobs(size=256, n=120, seed=0):
    """Dense nuclei-like map: disks of class 1 and 2 on one background."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    rows, cols = np.mgrid[:size, :size]
    for k in range(n):
        r, c = rng.integers(0, size, 2)
        radius = rng.integers(3, 8)
        label[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 1 + k % 2
    return label


def _membranes(size=240, cell=20, width=2):
    """EM-like map: a grid of class-1 membrane (one connected network) around background cells."""
    label = np.zeros((size, size), np.uint8)
    for start in range(0, size, cell):
        label[start:start + width, :] = 1
        label[:, start:start + width] = 1
    return label


def _check_whole_objects(truth, partial, max_object_fraction=0.05):
    objects = objects_of(truth, max_object_fraction)
    labeled = partial != UNLABELED
    per_object = ndi.sum_labels(labeled, objects, index=np.arange(1, objects.max() + 1))
    areas = np.bincount(objects.ravel())[1:]
    assert np.all((per_object == 0) | (per_object == areas)), "an object was cut"
    return objects


@pytest.mark.parametrize("fraction", [0.05, 0.10, 0.25])
def test_blobs_true_whole_and_near_the_target(fraction):
    truth = _blobs()
    partial = sparsify(truth, fraction, seed=1)
    labeled = partial != UNLABELED
    np.testing.assert_array_equal(partial[labeled], truth[labeled])
    assert abs(labeled_fraction(partial) - fraction) <= 0.1 * fraction
    objects = _check_whole_objects(truth, partial)
    assert np.any(labeled & (objects > 0)) and np.any(labeled & (truth == 0))


def test_band_holds_context_around_kept_objects_only():
    truth = _blobs()
    band = 3
    partial = sparsify(truth, 0.1, band=band, seed=2)
    objects = objects_of(truth)
    kept_objects = (partial != UNLABELED) & (objects > 0)
    context_kept = (partial != UNLABELED) & (objects == 0)
    distance = ndi.distance_transform_edt(~kept_objects)
    assert distance[context_kept].max() <= band
    # and the whole band of context is there
    ring = (distance <= band) & (objects == 0)
    assert np.all(partial[ring] != UNLABELED)


def test_membrane_network_is_context_and_cells_are_objects():
    truth = _membranes()
    objects = objects_of(truth)
    assert np.all(objects[truth == 1] == 0)  # the membrane network is never an object
    assert objects.max() == (240 // 20) ** 2  # every cell is one
    partial = sparsify(truth, 0.10, seed=0)
    labeled = partial != UNLABELED
    np.testing.assert_array_equal(partial[labeled], truth[labeled])
    _check_whole_objects(truth, partial)
    assert np.count_nonzero(partial == 1) > 0  # membrane kept around the kept cells
    assert abs(labeled_fraction(partial) - 0.10) <= 0.01


def test_deterministic_with_seed():
    truth = _blobs()
    np.testing.assert_array_equal(sparsify(truth, 0.1, seed=4), sparsify(truth, 0.1, seed=4))
    assert not np.array_equal(sparsify(truth, 0.1, seed=4), sparsify(truth, 0.1, seed=5))


def test_not_enough_objects_gives_what_there_is():
    truth = np.zeros((50, 50), np.uint8)
    truth[10:14, 10:14] = 1
    partial = sparsify(truth, 0.5, band=2)
    assert 0 < labeled_fraction(partial) < 0.5
    assert np.all(partial[10:14, 10:14] == 1)


@pytest.mark.parametrize(
    "label, fraction",
    [
        (np.full((8, 8), UNLABELED, np.uint8), 0.1),
        (np.zeros((8, 8), np.uint8), 0.0),
        (np.zeros((8, 8), np.uint8), 1.5),
        (np.zeros((8, 8), np.int32), 0.1),
    ],
)
def test_bad_inputs(label, fraction):
    with pytest.raises(SparsifyError):
        sparsify(label, fraction)


@pytest.mark.parametrize("fraction", [0.05, 0.10])
def test_isbi_membrane_slice(shared_data, fraction, capsys):
    path = shared_data / "isbi2012_em_membrane" / "masks" / "slice_00.png"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    from PIL import Image

    mask = np.asarray(Image.open(path))
    if mask.ndim == 3:
        mask = mask[..., 0]
    truth = (mask == 0).astype(np.uint8)  # membrane (black) -> class 1, interior -> 0
    partial = sparsify(truth, fraction, seed=0)
    labeled = partial != UNLABELED
    np.testing.assert_array_equal(partial[labeled], truth[labeled])
    _check_whole_objects(truth, partial)
    achieved = labeled_fraction(partial)
    membrane_share = np.count_nonzero(partial == 1) / np.count_nonzero(labeled)
    with capsys.disabled():
        print(f"\nISBI slice_00 target {fraction:.2f}: labeled {achieved:.4f}, "
              f"membrane share of labeled {membrane_share:.3f}")
    assert abs(achieved - fraction) <= 0.1 * fraction
    assert 0.05 < membrane_share < 0.6  # both classes present, as an annotator's cells would be

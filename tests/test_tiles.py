"""Tile sampling from partial labels, and augmentation that keeps labels aligned."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.labelmap import UNLABELED
from label_assistant.model.tiles import TileError, TileSampler, augment


def _sparse_scene(h=300, w=400, seed=0):
    """A 2-channel image, labels on ~1% of it: a few foreground blobs and background strokes."""
    rng = np.random.default_rng(seed)
    image = rng.random((2, h, w), dtype=np.float32)
    label = np.full((h, w), UNLABELED, np.uint8)
    label[20:26, 30:36] = 1  # 36 foreground pixels
    label[250:254, 350:356] = 2
    label[100, 50:250] = 0  # background strokes, far from the foreground
    label[200:210, 300] = 0
    return image, label


def test_shapes_and_dtypes():
    image, label = _sparse_scene()
    x, y = TileSampler([image], [label], tile=32, seed=0).sample(5)
    assert x.shape == (5, 2, 32, 32) and x.dtype == np.float32
    assert y.shape == (5, 32, 32) and y.dtype == np.uint8


def test_tiles_are_crops_of_the_image():
    image, label = _sparse_scene()
    # encode the position in the image so each tile says where it came from
    rows, cols = np.mgrid[: image.shape[1], : image.shape[2]].astype(np.float32)
    coded = np.stack([rows, cols])
    x, y = TileSampler([coded], [label], tile=16, seed=3).sample(20)
    for xk, yk in zip(x, y, strict=True):
        r0, c0 = int(xk[0, 0, 0]), int(xk[1, 0, 0])
        np.testing.assert_array_equal(yk, label[r0:r0 + 16, c0:c0 + 16])
        np.testing.assert_array_equal(xk, coded[:, r0:r0 + 16, c0:c0 + 16])


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_small_images_are_padded(pad_mode):
    image = np.full((1, 10, 12), 0.5, np.float32)
    label = np.zeros((10, 12), np.uint8)
    x, y = TileSampler([image], [label], tile=16, pad_mode=pad_mode).sample(3)
    assert x.shape == (3, 1, 16, 16)
    assert np.all(y[:, :10, :12] == 0)
    assert np.all(y[:, 10:, :] == UNLABELED) and np.all(y[:, :, 12:] == UNLABELED)
    expected_pad = 0.0 if pad_mode == "constant" else 0.5
    assert np.all(x[:, :, 10:, :] == expected_pad)


def test_every_tile_meets_min_labeled_pixels():
    image, label = _sparse_scene()
    sampler = TileSampler([image], [label], tile=32, min_labeled_pixels=30, seed=1)
    _, y = sampler.sample(200)
    counts = np.count_nonzero(y != UNLABELED, axis=(1, 2))
    assert counts.min() >= 30


def test_images_without_enough_labels_are_skipped_or_refused():
    image, label = _sparse_scene()
    empty = np.full(label.shape, UNLABELED, np.uint8)
    sampler = TileSampler([image, image], [empty, label], tile=32, seed=0)
    assert len(sampler.images) == 1
    with pytest.raises(TileError, match="labeled pixels"):
        TileSampler([image], [empty], tile=32)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_background_only_share_is_bounded(share):
    image, label = _sparse_scene()
    sampler = TileSampler([image], [label], tile=32, max_background_only_share=share, seed=2)
    _, y = sampler.sample(400)
    bg_only = np.array([not np.any((t != UNLABELED) & (t != 0)) for t in y])
    # the bound holds for every prefix, and sampling uses most of what it allows
    prefix_share = np.cumsum(bg_only) / np.arange(1, len(bg_only) + 1)
    assert np.all(prefix_share <= share + 1e-9)
    assert bg_only.mean() >= share - 0.05
    assert sampler.background_only == bg_only.sum()


def test_background_only_labels_still_give_tiles():
    image, label = _sparse_scene()
    only_bg = np.where(label == 0, 0, UNLABELED).astype(np.uint8)
    _, y = TileSampler([image], [only_bg], tile=32, max_background_only_share=0.0).sample(10)
    assert np.all(np.count_nonzero(y == 0, axis=(1, 2)) > 0)


def test_seed_reproducibility():
    image, label = _sparse_scene()
    a = TileSampler([image], [label], tile=32, seed=7).sample(10)
    b = TileSampler([image], [label], tile=32, seed=7).sample(10)
    c = TileSampler([image], [label], tile=32, seed=8).sample(10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_pixel_weights_come_with_their_tiles():
    image, label = _sparse_scene()
    weights = label.astype(np.float32) * 2.0
    x, y, w = TileSampler([image], [label], tile=32, pixel_weights=[weights], seed=0).sample(6)
    assert w.shape == y.shape and w.dtype == np.float32
    np.testing.assert_array_equal(w, y.astype(np.float32) * 2.0)


def test_sampling_finds_the_labeled_pixels_of_a_big_sparsely_labeled_image():
    # Its speed is benchmarked (benchmarks/bench_sparse_training.py), not asserted here.
    h = w = 2048
    image = np.zeros((1, h, w), np.float32)
    label = np.full((h, w), UNLABELED, np.uint8)
    label[1000:1020, 1000:1200] = 1  # 0.1% of the image labeled
    sampler = TileSampler([image], [label], tile=256, min_labeled_pixels=64, seed=0)
    _, y = sampler.sample(16)
    assert np.all(np.count_nonzero(y != UNLABELED, axis=(1, 2)) >= 64)


@pytest.mark.parametrize(("balance", "low", "high"), [("image", 0.40, 0.60), ("pixel", 0.0, 0.10)])
def test_balance_draws_each_image_alike_or_by_labeled_pixels(balance, low, high):
    """A 256 x 256 image beside a 1024 x 1024 one (16 times its labeled pixels): drawn in
    about half the tiles by image, in about 1 of 17 by pixel."""
    big, small = np.ones((1, 1024, 1024), np.float32), np.zeros((1, 256, 256), np.float32)
    labels = []
    for side in (1024, 256):
        label = np.zeros((side, side), np.uint8)
        label[::16, ::16] = 1  # foreground spread alike over both
        labels.append(label)
    sampler = TileSampler([big, small], labels, tile=32, seed=0, balance=balance)
    x, _ = sampler.sample(600)
    from_small = float(np.mean(x[:, 0, 0, 0] == 0))
    assert low <= from_small <= high


def test_bad_inputs_are_refused():
    image, label = _sparse_scene()
    with pytest.raises(TileError):
        TileSampler([image], [label[:10]], tile=32)
    with pytest.raises(TileError):
        TileSampler([image], [label.astype(np.int32)], tile=32)
    with pytest.raises(TileError):
        TileSampler([image, image[:1]], [label, label], tile=32)
    with pytest.raises(TileError):
        TileSampler([image], [label], tile=8, min_labeled_pixels=65)
    with pytest.raises(TileError, match="unknown balance"):
        TileSampler([image], [label], tile=32, balance="area")


# --- augmentation ----------------------------------------------------------------------------


def _image_equal_to_label(n=64, size=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, (n, size, size)).astype(np.uint8)
    y[:, 0, 0] = UNLABELED  # a corner marker: any flip or rotation moves it
    x = np.repeat(y[:, None].astype(np.float32), 3, axis=1)
    return x, y


def test_augmentation_keeps_image_and_labels_aligned():
    x, y = _image_equal_to_label()
    w = y.astype(np.float32) + 0.5
    xa, ya, wa = augment(x, y, np.random.default_rng(0), weights=w)
    assert xa.shape == x.shape and ya.dtype == np.uint8
    np.testing.assert_array_equal(wa, ya.astype(np.float32) + 0.5)
    for k in range(len(x)):
        for channel in xa[k]:
            # intensity is one affine map per tile: equal labels -> equal image values
            for value in np.unique(ya[k]):
                assert np.ptp(channel[ya[k] == value]) < 1e-5
            fit = np.polyfit(ya[k].ravel().astype(np.float64), channel.ravel(), 1)
            assert 0.9 - 1e-6 <= fit[0] <= 1.1 + 1e-6 and -0.1 - 1e-6 <= fit[1] <= 0.1 + 1e-6


def test_labels_are_only_moved():
    x, y = _image_equal_to_label()
    _, ya, _ = augment(x, y, np.random.default_rng(1))
    for k in range(len(y)):
        np.testing.assert_array_equal(np.sort(ya[k].ravel()), np.sort(y[k].ravel()))


def test_augmentation_reaches_all_eight_symmetries():
    x, y = _image_equal_to_label(n=200)
    _, ya, _ = augment(x, y, np.random.default_rng(2))
    seen = set()
    for k in range(len(y)):
        for turns in range(4):
            for flip in (False, True):
                candidate = np.rot90(y[k], turns)
                candidate = np.flip(candidate, -1) if flip else candidate
                if np.array_equal(candidate, ya[k]):
                    seen.add((turns, flip))
    assert len(seen) == 8


def test_no_augmentation_is_identity_and_seeded():
    x, y = _image_equal_to_label()
    xa, ya, wa = augment(x, y, np.random.default_rng(0), flips=False, rot90=False,
                         intensity_scale=None, intensity_shift=None)
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(ya, y)
    assert wa is None
    a = augment(x, y, np.random.default_rng(5))
    b = augment(x, y, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])


def test_augment_one_tile_and_non_square():
    x, y = _image_equal_to_label(n=1)
    xa, ya, _ = augment(x[0], y[0], np.random.default_rng(0))
    assert xa.shape == x[0].shape and ya.shape == y[0].shape
    rect_y = np.zeros((4, 6, 10), np.uint8)
    rect_x = np.zeros((4, 1, 6, 10), np.float32)
    xa, ya, _ = augment(rect_x, rect_y, np.random.default_rng(0))
    assert xa.shape == rect_x.shape and ya.shape == rect_y.shape


def test_batches_iterator():
    image, label = _sparse_scene()
    sampler = TileSampler([image], [label], tile=32, seed=0)
    batches = list(sampler.batches(4, n_batches=3))
    assert len(batches) == 3
    x, y, w = batches[0]
    assert x.shape == (4, 2, 32, 32) and y.shape == (4, 32, 32) and w is None

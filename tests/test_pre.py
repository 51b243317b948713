"""Otsu pre-labels on small synthetic images whose right answer is obvious."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from label_assistant.assist.pre import (
    OtsuParams,
    PreLabel,
    PreLabelError,
    auto_polarity,
    gray_normalized,
    otsu_prelabel,
    split_touching,
    threshold_confidence,
)
from label_assistant.metrics import foreground_dice

RAW = OtsuParams(min_size=0, fill_holes=False, separate_touching=False, smooth_sigma=0)


def disc(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def noisy(clean, sigma=5.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)


def test_bright_blobs_on_dark_are_class_1():
    truth = disc((64, 64), (20, 20), 8) | disc((64, 64), (44, 40), 10)
    image = noisy(np.where(truth, 200.0, 30.0))
    pre = otsu_prelabel(image)
    assert isinstance(pre, PreLabel)
    assert pre.polarity == "bright"
    assert pre.label_map.dtype == np.uint8 and set(np.unique(pre.label_map)) == {0, 1}
    assert foreground_dice(truth.astype(np.uint8), pre.label_map) > 0.95
    assert pre.n_objects == 2
    assert pre.instances.dtype == np.int32
    assert 0.0 < pre.threshold < 1.0


def test_dark_lines_on_bright_are_class_1_with_auto_polarity():
    lines = np.zeros((64, 64), bool)
    lines[:, 20:23] = True
    lines[40:43, :] = True
    image = noisy(np.where(lines, 40.0, 210.0))
    pre = otsu_prelabel(image, replace(RAW, min_size=10))
    assert pre.polarity == "dark"
    assert foreground_dice(lines.astype(np.uint8), pre.label_map) > 0.95
    # Thresholds are reported as normalized intensity: between the two levels.
    assert 0.1 < pre.threshold < 0.9


def test_polarity_can_be_forced():
    truth = disc((48, 48), (24, 24), 6)
    image = np.where(truth, 220, 20).astype(np.uint8)
    dark = otsu_prelabel(image, replace(RAW, polarity="dark"))
    assert dark.polarity == "dark"
    assert (dark.label_map[truth] == 0).all() and (dark.label_map[~truth] == 1).all()


def test_auto_polarity_takes_the_smaller_phase_as_objects():
    gray = np.zeros((10, 10), np.float32)
    gray[:3] = 1.0  # 30 % bright
    assert auto_polarity(gray) == "bright"
    assert auto_polarity(1.0 - gray) == "dark"


def test_local_threshold_handles_uneven_illumination_where_global_fails():
    shape = (96, 96)
    ramp = np.tile(np.linspace(0, 150, shape[1]), (shape[0], 1))
    truth = np.zeros(shape, bool)
    for cx in (12, 36, 60, 84):
        for cy in (20, 70):
            truth |= disc(shape, (cy, cx), 6)
    image = noisy(ramp + np.where(truth, 60.0, 10.0), sigma=2)
    base = replace(RAW, min_size=10)
    global_dice = foreground_dice(truth.astype(np.uint8), otsu_prelabel(image, base).label_map)
    local = otsu_prelabel(image, replace(base, method="local", block_size=31, polarity="bright"))
    local_dice = foreground_dice(truth.astype(np.uint8), local.label_map)
    assert global_dice < 0.8
    assert local_dice > 0.9


def test_touching_discs_are_separated_by_background():
    shape = (40, 60)
    a, b = disc(shape, (20, 20), 9), disc(shape, (20, 37), 9)  # overlapping discs
    assert ndi.label(a | b)[1] == 1
    image = np.where(a | b, 200, 20).astype(np.uint8)
    pre = otsu_prelabel(image, replace(RAW, separate_touching=True))
    assert pre.n_objects == 2
    assert ndi.label(pre.label_map == 1, structure=np.ones((3, 3)))[1] == 2
    # No two different objects are 8-neighbours.
    grown = ndi.grey_dilation(pre.instances, footprint=np.ones((3, 3)))
    touching = (pre.instances > 0) & (grown > pre.instances)
    assert not touching.any()
    # Separated pixels were object pixels: confidence 0 there.
    cut = (a | b) & (pre.label_map == 0)
    assert cut.any() and (pre.confidence[cut] == 0).all()


def test_without_separation_touching_discs_stay_one_object():
    shape = (40, 60)
    image = np.where(disc(shape, (20, 20), 9) | disc(shape, (20, 37), 9), 200, 20)
    pre = otsu_prelabel(image.astype(np.uint8), RAW)
    assert pre.n_objects == 1


def test_split_touching_keeps_thin_objects_whole():
    mask = np.zeros((10, 20), bool)
    mask[4:6, 2:18] = True  # too thin for any distance maximum of depth 2
    instances = split_touching(mask)
    assert instances.max() == 1 and (instances > 0).sum() == mask.sum()


def test_min_size_removes_specks():
    image = np.full((40, 40), 20, np.uint8)
    image[5:15, 5:15] = 200  # 100 px
    image[30:32, 30:32] = 200  # 4 px speck
    kept = otsu_prelabel(image, replace(RAW, min_size=10))
    assert kept.label_map[31, 31] == 0 and kept.label_map[10, 10] == 1
    assert kept.confidence[31, 31] == 0
    assert otsu_prelabel(image, RAW).label_map[31, 31] == 1


def test_fill_holes_fills_small_holes_only():
    image = np.full((60, 60), 20, np.uint8)
    image[5:25, 5:25] = 200
    image[13:16, 13:16] = 20  # 9 px hole
    image[30:58, 30:58] = 200
    image[34:54, 34:54] = 20  # 400 px hole
    filled = otsu_prelabel(image, replace(RAW, fill_holes=True, max_hole_size=50))
    assert filled.label_map[14, 14] == 1
    assert filled.label_map[44, 44] == 0
    every = otsu_prelabel(image, replace(RAW, fill_holes=True, max_hole_size=None))
    assert every.label_map[44, 44] == 1
    assert otsu_prelabel(image, RAW).label_map[14, 14] == 0


def test_multi_otsu_orders_classes_by_intensity_and_polarity():
    image = np.full((30, 90), 20, np.uint8)
    image[:, 30:60] = 120
    image[:, 60:] = 230
    bright = otsu_prelabel(image, replace(RAW, n_classes=2, polarity="bright"))
    assert (bright.label_map[:, :30] == 0).all()
    assert (bright.label_map[:, 30:60] == 1).all()
    assert (bright.label_map[:, 60:] == 2).all()
    assert len(bright.thresholds) == 2 and bright.thresholds[0] < bright.thresholds[1]
    dark = otsu_prelabel(image, replace(RAW, n_classes=2, polarity="dark"))
    assert (dark.label_map[:, 60:] == 0).all()
    assert (dark.label_map[:, 30:60] == 1).all()
    assert (dark.label_map[:, :30] == 2).all()


def test_multi_otsu_auto_picks_the_larger_extreme_as_background():
    image = np.full((30, 100), 20, np.uint8)  # dark: 60 % of the image
    image[:, 60:80] = 120
    image[:, 80:] = 230
    pre = otsu_prelabel(image, replace(RAW, n_classes=2))
    assert pre.polarity == "bright" and (pre.label_map[:, :60] == 0).all()


def test_multi_otsu_with_too_few_levels_is_a_clear_error():
    image = np.zeros((10, 10), np.uint8)
    image[:5] = 100
    with pytest.raises(PreLabelError, match="multi-Otsu"):
        otsu_prelabel(image, replace(RAW, n_classes=3, polarity="bright"))


def test_equalize_keeps_a_clear_result():
    truth = disc((48, 48), (24, 24), 8)
    image = noisy(np.where(truth, 180.0, 40.0))
    pre = otsu_prelabel(image, OtsuParams(equalize=True))
    assert foreground_dice(truth.astype(np.uint8), pre.label_map) > 0.9


def test_constant_image_gives_empty_prelabel():
    pre = otsu_prelabel(np.full((8, 8), 7, np.uint16))
    assert not pre.label_map.any() and not pre.confidence.any() and pre.n_objects == 0
    assert np.isfinite(pre.thresholds).all()


def test_confidence_is_in_range_and_low_near_the_threshold():
    ramp = np.tile(np.linspace(0, 255, 64), (16, 1)).astype(np.uint8)
    pre = otsu_prelabel(ramp, RAW)
    c = pre.confidence
    assert c.dtype == np.float32 and c.shape == ramp.shape
    assert 0.0 <= c.min() and c.max() <= 1.0
    edge = np.argmax(pre.label_map[0] > 0)
    assert c[0, edge - 1 : edge + 1].min() < 0.1 and c[0, 0] > 0.9 and c[0, -1] > 0.9
    assert threshold_confidence(np.array([0.5]), (0.5,))[0] == 0.0


def test_multichannel_images_use_the_mean_of_normalized_channels():
    truth = disc((32, 32), (16, 16), 6)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = np.where(truth, 250, 10)
    rgb[..., 1] = np.where(truth, 60, 5)  # dim channel counts as much once normalized
    # channel 2 is empty (0): left out, it would only dilute the contrast
    gray = gray_normalized(rgb)
    assert gray.shape == (32, 32) and gray.dtype == np.float32
    assert np.isclose(gray[truth].mean(), 1.0) and np.isclose(gray[~truth].mean(), 0.0)
    assert foreground_dice(truth.astype(np.uint8), otsu_prelabel(rgb, RAW).label_map) == 1.0


def test_version_name_changes_with_every_parameter():
    base = OtsuParams()
    name = base.version_name()
    assert name.startswith("otsu-") and len(name) == len("otsu-") + 8
    assert OtsuParams().version_name() == name
    changed = [
        replace(base, polarity="dark"), replace(base, n_classes=2), replace(base, method="local"),
        replace(base, block_size=51), replace(base, min_size=1), replace(base, fill_holes=False),
        replace(base, max_hole_size=None), replace(base, separate_touching=False),
        replace(base, split_depth=3.0), replace(base, equalize=True),
        replace(base, smooth_sigma=2.0),
    ]
    names = {p.version_name() for p in changed}
    assert name not in names and len(names) == len(changed)
    assert otsu_prelabel(np.eye(8, dtype=np.uint8)).version == name


@pytest.mark.parametrize(
    "kwargs",
    [{"polarity": "up"}, {"method": "adaptive"}, {"n_classes": 0}, {"n_classes": 9},
     {"block_size": 1}, {"min_size": -1}, {"max_hole_size": -5}, {"smooth_sigma": -1},
     {"split_depth": 0}],
)
def test_bad_params_raise(kwargs):
    with pytest.raises(PreLabelError):
        OtsuParams(**kwargs)


def test_bad_image_shape_raises():
    with pytest.raises(ValueError):
        otsu_prelabel(np.zeros((2, 3, 4, 5)))


def test_real_nuclei_reach_a_useful_dice(shared_data):
    from label_assistant.images import read_image

    folder = shared_data / "stardist_dsb2018_sample"
    if not folder.is_dir():
        pytest.skip("stardist sample absent")
    image = read_image(folder / "images" / "img2d.tif")
    truth = (read_image(folder / "masks" / "img2d.tif")[..., 0] > 0).astype(np.uint8)
    pre = otsu_prelabel(image)
    assert pre.polarity == "bright"
    assert foreground_dice(truth, pre.label_map) > 0.8

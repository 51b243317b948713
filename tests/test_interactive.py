"""Interactive segmentation (label_assistant.interactive) on synthetic objects whose right
answer is known: each prompt mode reaches an IoU floor; the click simulator and NoC."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.interactive import (
    Box,
    Click,
    Prompt,
    PromptError,
    box_of_extreme_points,
    box_to_mask,
    clicks_to_mask,
    extreme_points_to_mask,
    segment,
    working_image,
)
from label_assistant.interactive.simulate import (
    box_of,
    extreme_points_of,
    mask_iou,
    next_click,
    noc,
)


def ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def scene(size=256, seed=0, noise=20.0):
    """A bright target ellipse, a bright neighbour touching it, a dim far object."""
    shape = (size, size)
    target = ellipse(shape, size * 0.40, size * 0.45, size * 0.10, size * 0.14)
    neighbour = ellipse(shape, size * 0.40, size * 0.70, size * 0.09, size * 0.12) & ~target
    far = ellipse(shape, size * 0.80, size * 0.20, size * 0.06, size * 0.06)
    rng = np.random.default_rng(seed)
    image = 40 + 150 * target + 150 * neighbour + 100 * far + rng.normal(0, noise, shape)
    return np.clip(image, 0, 255).astype(np.uint8), target, neighbour


def probabilities_of(mask, wrong=0.0, seed=0):
    """A two-class model output that is right on ``mask`` except a ``wrong`` share."""
    rng = np.random.default_rng(seed)
    p = np.where(mask, 0.9, 0.1).astype(np.float32)
    flip = rng.random(mask.shape) < wrong
    p[flip] = 1 - p[flip]
    return np.stack([1 - p, p])


@pytest.fixture(scope="module")
def data():
    image, target, neighbour = scene()
    return working_image(image), target, neighbour


def test_working_image_is_uint8_rgb_for_any_input():
    for image in (np.zeros((5, 7), np.uint16), np.ones((5, 7, 4), np.float32),
                  np.arange(70, dtype=np.uint8).reshape(5, 7, 2)):
        work = working_image(image)
        assert work.dtype == np.uint8 and work.shape == (5, 7, 3)


def test_box_gives_the_object(data):
    work, target, _ = data
    found = box_to_mask(work, box_of(target))
    assert found.method == "grabcut" and found.reason is None
    assert mask_iou(found.mask, target) >= 0.9


def test_box_guided_by_a_model(data):
    work, target, neighbour = data
    # A loose box that also covers part of the neighbour; the model knows the target.
    box = Box(*(np.array([0.28, 0.26, 0.66, 0.54]) * 256))
    found = box_to_mask(work, box, probabilities_of(target, wrong=0.05))
    assert found.method == "grabcut+model"
    assert mask_iou(found.mask, target) >= 0.85
    assert not (found.mask & neighbour).sum() > 0.1 * neighbour.sum()


def test_single_click_grows_the_region_or_takes_the_model_object(data):
    work, target, _ = data
    click = Click(0.45 * 256, 0.40 * 256)
    grown = clicks_to_mask(work, [click])
    assert grown.method == "region-grow"
    assert mask_iou(grown.mask, target) >= 0.8
    modelled = clicks_to_mask(work, [click], probabilities_of(target))
    assert modelled.method == "model-object"
    assert mask_iou(modelled.mask, target) >= 0.95


def test_a_negative_click_removes_the_touching_neighbour(data):
    work, target, neighbour = data
    both = box_of(target | neighbour)
    before = box_to_mask(work, both)
    assert (before.mask & neighbour).sum() > 0.5 * neighbour.sum()  # one bright blob
    clicks = (Click(0.45 * 256, 0.40 * 256), Click(0.72 * 256, 0.40 * 256, positive=False))
    after = box_to_mask(work, both, clicks=clicks)
    assert mask_iou(after.mask, target) > mask_iou(before.mask, target)
    assert (after.mask & neighbour).sum() < 0.2 * neighbour.sum()


def test_clicks_without_a_box_are_recomputed_from_all_of_them(data):
    work, target, _ = data
    clicks = [Click(0.45 * 256, 0.40 * 256), Click(0.35 * 256, 0.40 * 256)]
    found = clicks_to_mask(work, clicks)
    assert found.method.startswith("grabcut+")
    assert mask_iou(found.mask, target) >= 0.85


def test_only_negative_clicks_give_nothing_and_say_why(data):
    work, _, _ = data
    found = clicks_to_mask(work, [Click(10, 10, positive=False)])
    assert found.empty and "positive" in found.reason


def test_extreme_points(data):
    work, target, _ = data
    points = extreme_points_of(target)
    found = extreme_points_to_mask(work, points)
    assert found.method.startswith("extreme-points")
    assert mask_iou(found.mask, target) >= 0.9
    assert all(found.mask[p.pixel(target.shape)] for p in points)
    with pytest.raises(PromptError):
        box_of_extreme_points(points[:3])


def test_segment_dispatches_on_the_prompt(data):
    work, target, _ = data
    assert segment(work, Prompt(box=box_of(target))).method == "grabcut"
    assert segment(work, Prompt(extreme=extreme_points_of(target))).method.startswith("extreme")
    assert segment(work, Prompt(clicks=(Click(115, 102),))).method == "region-grow"


def test_a_box_outside_the_image_is_empty_with_a_reason(data):
    work, _, _ = data
    found = box_to_mask(work, Box(300, 300, 320, 320))
    assert found.empty and "outside" in found.reason


def test_large_images_work_on_a_bounded_crop():
    image, target, _ = scene(size=2048, noise=25)
    work = working_image(image)
    found = box_to_mask(work, box_of(target))  # a 576 x 408 box, GrabCut on <= 256 pixels
    assert found.mask.shape == target.shape
    assert mask_iou(found.mask, target) >= 0.9


def test_click_simulator_goes_to_the_centre_of_the_largest_error():
    truth = np.zeros((40, 40), bool)
    truth[5:35, 5:35] = True
    prediction = truth.copy()
    prediction[5:35, 5:20] = False  # missed the left half
    prediction[0:3, 0:3] = True  # a little extra
    click = next_click(prediction, truth)
    assert click.positive and 5 <= click.x <= 20 and 10 <= click.y <= 30
    assert next_click(truth, truth) is None
    assert noc([0.5, 0.86, 0.95], 0.85) == 2
    assert noc([0.5, 0.6], 0.9, cap=20) == 20

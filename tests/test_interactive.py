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
    corrected,
    extreme_points_to_mask,
    segment,
    working_image,
)
from label_assistant.interactive.probabilities import (
    ArrayProbabilities,
    ModelRunError,
    Shifted,
    WindowedProbabilities,
    as_source,
)
from label_assistant.interactive.segment import ellipse_guess
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


def test_a_box_gives_an_unevenly_stained_object_whole():
    # A nucleus bright on its left half, dim on its right: an Otsu split of the box (the
    # earlier first guess) took the bright half only (IoU 0.49); GrabCut from the ellipse
    # inscribed in the box takes both halves.
    shape = (128, 128)
    nucleus = ellipse(shape, 64, 64, 22, 26)
    columns = np.mgrid[:128, :128][1]
    rng = np.random.default_rng(0)
    image = 30 + nucleus * np.where(columns < 64, 200, 90) + rng.normal(0, 6, shape)
    work = working_image(np.clip(image, 0, 255).astype(np.uint8))
    found = box_to_mask(work, box_of(nucleus))
    assert found.method == "grabcut" and mask_iou(found.mask, nucleus) >= 0.9


def test_the_ellipse_guess_fits_the_object_in_a_tight_or_a_loose_box():
    shape = (128, 128)
    nucleus = ellipse(shape, 64, 64, 20, 30)
    image = working_image((30 + 170 * nucleus).astype(np.uint8))
    for margin in (0, 10):  # pixels on each side of the tight box
        r0, r1, c0, c1 = 44 - margin, 85 + margin, 34 - margin, 95 + margin
        guess = np.zeros(shape, dtype=bool)
        guess[r0:r1, c0:c1] = ellipse_guess(image[r0:r1, c0:c1])
        assert mask_iou(guess, nucleus) >= 0.9
    inscribed = ellipse_guess(np.zeros((40, 60)), scales=(1.0,))
    assert inscribed[20, 30] and not inscribed[0, 0]
    assert np.array_equal(inscribed, inscribed[::-1, ::-1])  # centred
    assert abs(inscribed.mean() - np.pi / 4) < 0.05


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
    assert found.method == "clicks+region-grow"
    assert mask_iou(found.mask, target) >= 0.85
    assert np.array_equal(clicks_to_mask(work, clicks).mask, found.mask)  # no state, no dice


def test_corrective_clicks_add_and_remove_near_themselves(data):
    work, target, neighbour = data
    # Too small (the target's core): a positive click in the missed rim adds that side.
    core = ellipse(target.shape, 0.40 * 256, 0.45 * 256, 0.10 * 256 - 8, 0.14 * 256 - 8)
    click = next_click(core, target)
    assert click.positive
    grown = corrected(work, core, [click])
    added = grown & ~core
    assert added.sum() > 50 and (added & ~target).sum() <= 0.05 * added.sum()
    assert added[click.pixel(core.shape)] and mask_iou(grown, target) > mask_iou(core, target)
    far = np.hypot(*np.nonzero(added) - np.array(click.pixel(core.shape))[:, None])
    assert far.max() <= 2 * 8 + 2  # near the click: the rim's other side is another click's
    # Too much (target and neighbour): a negative click on the neighbour takes it away,
    # not just its own pixel, and the target, held by the first click, stays.
    both = target | neighbour
    first = Click(0.45 * 256, 0.40 * 256)
    negative = next_click(both, target)
    assert not negative.positive and neighbour[negative.pixel(both.shape)]
    after = corrected(work, both, [negative], held=(first,))
    assert (after & neighbour).sum() < 0.5 * neighbour.sum()
    assert (after & target).sum() > 0.95 * target.sum()
    # through clicks_to_mask: the same, from the click's region
    found = clicks_to_mask(work, [first, negative])
    assert mask_iou(found.mask, target) >= 0.85


def test_a_positive_click_keeps_the_boxs_object():
    # A bright nucleus and, in its box, a dim part apart from it: a positive click on the
    # dim part adds to the box's object and never replaces it (by the click's own disk).
    shape = (128, 128)
    bright = ellipse(shape, 64, 56, 20, 20)
    lobe = ellipse(shape, 64, 90, 8, 8)
    rng = np.random.default_rng(3)
    image = np.clip(30 + 180 * bright + 60 * lobe + rng.normal(0, 6, shape), 0, 255)
    work = working_image(image.astype(np.uint8))
    box = box_of(bright | lobe)
    first = box_to_mask(work, box).mask
    assert (first & bright).sum() > 0.9 * bright.sum()
    after = box_to_mask(work, box, clicks=(Click(90.5, 64.5),)).mask
    assert (after & bright).sum() > 0.9 * bright.sum() and after[64, 90]


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


# --- probabilities read window by window ---------------------------------------------------


class PointwiseModel:
    """A 'model' whose output at a pixel depends on that pixel only (so a crop's output equals
    the whole image's there); it records the crops it ran on."""

    def __init__(self):
        self.crops = []

    def __call__(self, crop):
        self.crops.append(crop.shape)
        p = np.clip(crop[0], 0.0, 1.0).astype(np.float32)
        return np.stack([1 - p, p])


def model_input_of(mask):
    return np.where(mask, 0.9, 0.1).astype(np.float32)[None]


def test_windowed_probabilities_run_the_model_once_per_window():
    target = ellipse((1024, 1024), 500, 400, 20, 30)
    x = model_input_of(target)
    model = PointwiseModel()
    source = WindowedProbabilities(x, model, classes=2, context=16, min_side=64)
    assert source.nbytes == x.nbytes + 1024 * 1024 + 2 * 4 * 1024 * 1024  # full size at once
    part = source.read(490, 510, 380, 420)
    assert part.shape == (2, 20, 40)
    np.testing.assert_allclose(part[1], x[0, 490:510, 380:420])
    # the window grew to 64 pixels, with 16 of context on each side: one 96 x 96 crop
    assert model.crops == [(1, 96, 96)] and source.known.sum() == 64 * 64
    source.read(480, 530, 370, 430)  # inside what is known: no run
    assert source.runs == 1
    source.read(480, 600, 370, 430)  # only the missing rows run
    assert source.runs == 2 and source.known[480:600, 370:430].all()
    assert source.pixels_run < 0.05 * 1024 * 1024  # two small crops
    known = source.known.copy()
    everything = source.read(0, 1024, 0, 1024)[1]  # the rest in one run
    assert source.runs == 3 and source.known.all()
    np.testing.assert_allclose(everything, x[0])
    assert np.array_equal(everything[known], part[1].base[1][known])  # kept, not rerun
    edge = WindowedProbabilities(x, PointwiseModel(), classes=2, context=16, min_side=64)
    assert edge.read(0, 3, 1020, 1024).shape == (2, 3, 4)  # at the image's corner
    assert edge.known[:64, -64:].all() and edge.known.sum() == 64 * 64


def test_windowed_probabilities_check_the_models_answer():
    source = WindowedProbabilities(np.zeros((1, 50, 50), np.float32),
                                   lambda crop: np.zeros((3, 5, 5), np.float32), classes=2)
    with pytest.raises(ModelRunError, match="shape"):
        source.read(0, 10, 0, 10)

    def broken(crop):
        raise RuntimeError("CUDA out of memory")

    failing = WindowedProbabilities(np.zeros((1, 50, 50), np.float32), broken, classes=2)
    with pytest.raises(ModelRunError, match="RuntimeError: CUDA out of memory"):
        failing.read(0, 10, 0, 10)


def test_a_box_and_a_click_on_a_large_image_run_the_model_near_them_only():
    image, target, _ = scene(size=2048, noise=25)
    work = working_image(image)
    x = model_input_of(target)
    whole = probabilities_of(target)
    box = box_of(target)
    model = PointwiseModel()
    source = WindowedProbabilities(x, model, classes=2)
    found = box_to_mask(work, box, source)
    assert found.method == "grabcut+model"
    # the box's probabilities scaled down alone, not within the crop: nearly the same mask
    assert mask_iou(found.mask, box_to_mask(work, box, whole).mask) >= 0.98
    assert mask_iou(found.mask, target) >= 0.9
    height, width = box.height + 2 * 32, box.width + 2 * 32  # the box, its context
    assert model.crops == [(1, height, width)]
    click = Click(0.45 * 2048, 0.40 * 2048)
    clicked = WindowedProbabilities(x, PointwiseModel(), classes=2)
    modelled = clicks_to_mask(work, [click], clicked)
    assert modelled.method == "model-object"
    assert np.array_equal(modelled.mask, clicks_to_mask(work, [click], whole).mask)
    # this large object grows out of windows of 49 (in the first 64), 97, 193, 385 and 769
    # pixels: the model ran on each (with its context), under a quarter of the image in all
    assert clicked.runs == 5 and clicked.pixels_run < 1.5 * (769 + 64) ** 2 < 2048 ** 2 / 4
    with pytest.raises(PromptError):
        box_to_mask(work, box, source, cls=2)


def test_a_shifted_source_reads_the_larger_images_pixels():
    x = np.random.default_rng(0).random((1, 300, 300)).astype(np.float32)
    source = WindowedProbabilities(x, PointwiseModel(), classes=2)
    shifted = Shifted(source, 100, 50, (40, 60))
    assert shifted.shape == (40, 60) and shifted.classes == 2
    np.testing.assert_allclose(shifted.read(0, 40, 0, 60)[1], x[0, 100:140, 50:110])
    assert isinstance(as_source(np.zeros((2, 4, 4))), ArrayProbabilities)
    assert as_source(None) is None and as_source(source) is source

"""Masked losses: a contract over every registered loss, hand computations, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from label_assistant.labelmap import UNLABELED
from label_assistant.model.losses import (
    CombinedLoss,
    LossSpecError,
    MaskedCrossEntropyLoss,
    MaskedDiceLoss,
    MaskedFocalLoss,
    available_losses,
    class_weights_from_counts,
    make_loss,
    masked_cross_entropy,
    masked_dice_loss,
    masked_focal_loss,
    unet_weight_map,
)

SPECS = available_losses() + ["ce+dice", "0.7*focal+0.3*dice"]


def _batch(seed: int = 0, n: int = 2, c: int = 3, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, size, size, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n, size, size), generator=g)
    unlabeled = torch.rand(n, size, size, generator=g) < 0.4
    target[unlabeled] = UNLABELED
    return logits, target, unlabeled


# --- the contract, run over every registered loss -------------------------------------------


@pytest.fixture(params=SPECS)
def loss_fn(request):
    return make_loss(request.param)


def test_registry_is_what_the_contract_covers():
    assert set(available_losses()) == {"ce", "focal", "dice"}


def test_contract_scalar_finite_nonnegative(loss_fn):
    logits, target, _ = _batch()
    value = loss_fn(logits, target)
    assert value.ndim == 0 and torch.isfinite(value) and value >= 0


def test_contract_unlabeled_pixels_get_exactly_zero_gradient(loss_fn):
    logits, target, unlabeled = _batch()
    logits.requires_grad_(True)
    loss_fn(logits, target).backward()
    grad = logits.grad.permute(0, 2, 3, 1)  # (N, H, W, C)
    assert torch.all(grad[unlabeled] == 0)
    assert torch.any(grad[~unlabeled] != 0)


def test_contract_unlabeled_values_do_not_matter(loss_fn):
    logits, target, unlabeled = _batch()
    changed = logits.clone()
    changed.permute(0, 2, 3, 1)[unlabeled] = 100.0 * torch.randn(int(unlabeled.sum()), 3,
                                                                  dtype=torch.float64)
    torch.testing.assert_close(loss_fn(logits, target), loss_fn(changed, target))


def test_contract_all_unlabeled_is_a_differentiable_zero(loss_fn):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), UNLABELED)
    value = loss_fn(logits, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_contract_an_unlabeled_tile_contributes_nothing(loss_fn):
    logits, target, _ = _batch(n=1)
    other = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    both = torch.cat([logits, other])
    both_target = torch.cat([target, torch.full_like(target, UNLABELED)])
    torch.testing.assert_close(loss_fn(both, both_target), loss_fn(logits, target))


def test_contract_right_beats_wrong(loss_fn):
    _, target, _ = _batch()
    safe = torch.where(target == UNLABELED, 0, target)
    right = 20.0 * torch.nn.functional.one_hot(safe, 3).permute(0, 3, 1, 2).double()
    wrong = 20.0 * torch.nn.functional.one_hot((safe + 1) % 3, 3).permute(0, 3, 1, 2).double()
    assert loss_fn(right, target) < 1e-3 < loss_fn(wrong, target)


def test_contract_zero_pixel_weight_means_zero_gradient(loss_fn):
    logits, target, unlabeled = _batch()
    logits.requires_grad_(True)
    weights = torch.ones(target.shape, dtype=torch.float64)
    weights[:, :4] = 0.0
    loss_fn(logits, target, pixel_weights=weights).backward()
    assert torch.all(logits.grad[:, :, :4] == 0)
    assert torch.any(logits.grad[:, :, 4:] != 0)


def test_contract_class_weights_follow_the_module(loss_fn):
    weighted = make_loss("ce", class_weights=[1.0, 2.0, 3.0])
    assert weighted.class_weights.dtype == torch.float32
    moved = weighted.to(torch.float64)
    assert moved.class_weights.dtype == torch.float64


# --- hand computations on a 1 x 2 x 2 x 2 example --------------------------------------------

# logits[c][i] for the 4 pixels (row-major); target 0, 1, unlabeled, 1
L0 = [1.0, 0.0, 5.0, 2.0]
L1 = [0.0, 2.0, -5.0, 1.0]
TARGET = [0, 1, UNLABELED, 1]


def _tiny():
    logits = torch.tensor([L0, L1], dtype=torch.float64).reshape(1, 2, 2, 2)
    target = torch.tensor(TARGET).reshape(1, 2, 2)
    return logits, target


def _p(i: int, c: int) -> float:
    """softmax probability of class c at pixel i."""
    a, b = math.exp(L0[i]), math.exp(L1[i])
    return (a if c == 0 else b) / (a + b)


LABELED = [0, 1, 3]


def test_cross_entropy_by_hand():
    logits, target = _tiny()
    expected = sum(-math.log(_p(i, TARGET[i])) for i in LABELED) / 3
    assert masked_cross_entropy(logits, target).item() == pytest.approx(expected)
    weighted = (1 * -math.log(_p(0, 0)) + 3 * -math.log(_p(1, 1)) + 3 * -math.log(_p(3, 1))) / 3
    got = masked_cross_entropy(logits, target, class_weights=torch.tensor([1.0, 3.0]))
    assert got.item() == pytest.approx(weighted)
    pw = torch.tensor([[2.0, 0.5], [9.0, 0.0]])
    by_pixel = (2 * -math.log(_p(0, 0)) + 0.5 * -math.log(_p(1, 1))) / 3
    assert masked_cross_entropy(logits, target, pixel_weights=pw).item() == pytest.approx(by_pixel)


def test_focal_by_hand():
    logits, target = _tiny()
    terms = [(1 - _p(i, TARGET[i])) ** 2 * -math.log(_p(i, TARGET[i])) for i in LABELED]
    assert masked_focal_loss(logits, target).item() == pytest.approx(sum(terms) / 3)
    # gamma = 0 is cross-entropy
    torch.testing.assert_close(masked_focal_loss(logits, target, gamma=0.0),
                               masked_cross_entropy(logits, target))


def test_dice_by_hand():
    logits, target = _tiny()
    dice = []
    for c in (0, 1):
        inter = sum(_p(i, c) for i in LABELED if TARGET[i] == c)
        card = sum(_p(i, c) for i in LABELED) + sum(1 for i in LABELED if TARGET[i] == c)
        dice.append(2 * inter / card)
    expected = 1 - (dice[0] + dice[1]) / 2
    assert masked_dice_loss(logits, target).item() == pytest.approx(expected)
    smooth = []
    for c in (0, 1):
        inter = sum(_p(i, c) for i in LABELED if TARGET[i] == c)
        card = sum(_p(i, c) for i in LABELED) + sum(1 for i in LABELED if TARGET[i] == c)
        smooth.append((2 * inter + 1) / (card + 1))
    got = masked_dice_loss(logits, target, smooth=1.0)
    assert got.item() == pytest.approx(1 - sum(smooth) / 2)


def test_dice_classes_present_only():
    logits, _ = _tiny()
    only_class_1 = torch.tensor([[[1, 1], [UNLABELED, 1]]])
    inter = sum(_p(i, 1) for i in LABELED)
    expected_present = 1 - 2 * inter / (inter + 3)
    assert masked_dice_loss(logits, only_class_1).item() == pytest.approx(expected_present)
    # with every class: background's Dice is 0 (no target, some prediction), loss rises
    everything = masked_dice_loss(logits, only_class_1, classes_present_only=False)
    assert everything.item() == pytest.approx((expected_present + 1) / 2)


def test_class_weights_raise_the_weight_of_the_badly_predicted_class():
    logits, target = _tiny()  # class 1 at pixel 3 is predicted badly (p1 < 0.5)
    base = masked_cross_entropy(logits, target)
    more_on_1 = masked_cross_entropy(logits, target, class_weights=torch.tensor([1.0, 2.0]))
    more_on_0 = masked_cross_entropy(logits, target, class_weights=torch.tensor([2.0, 1.0]))
    assert more_on_1 > base and more_on_0 > base
    loss_1 = -math.log(_p(1, 1)) - math.log(_p(3, 1))
    loss_0 = -math.log(_p(0, 0))
    assert (more_on_1 - base).item() == pytest.approx(loss_1 / 3)
    assert (more_on_0 - base).item() == pytest.approx(loss_0 / 3)


# --- factory ---------------------------------------------------------------------------------


def test_make_loss_builds_what_the_spec_says():
    assert isinstance(make_loss("ce"), MaskedCrossEntropyLoss)
    assert isinstance(make_loss(" Focal "), MaskedFocalLoss)
    assert isinstance(make_loss("dice"), MaskedDiceLoss)
    combined = make_loss("0.7*focal+0.3*dice")
    assert isinstance(combined, CombinedLoss) and combined.weights == [0.7, 0.3]
    logits, target, _ = _batch()
    expected = 0.7 * masked_focal_loss(logits, target) + 0.3 * masked_dice_loss(logits, target)
    torch.testing.assert_close(combined(logits, target), expected)
    ce_dice = make_loss("ce+dice")(logits, target)
    torch.testing.assert_close(
        ce_dice, masked_cross_entropy(logits, target) + masked_dice_loss(logits, target)
    )


def test_make_loss_passes_ignore_index_and_class_weights():
    logits, target, _ = _batch()
    relabeled = torch.where(target == UNLABELED, -100, target)
    torch.testing.assert_close(make_loss("ce", ignore_index=-100)(logits, relabeled),
                               make_loss("ce")(logits, target))
    weights = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(
        make_loss("ce", class_weights=weights)(logits, target),
        masked_cross_entropy(logits, target, class_weights=weights.double()),
    )


@pytest.mark.parametrize("spec", ["", "hinge", "ce+", "-1*ce", "0*dice", "ce*0.5", "ce++dice"])
def test_make_loss_rejects_bad_specs(spec):
    with pytest.raises(LossSpecError):
        make_loss(spec)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="logits"):
        masked_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# --- class weights from counts ---------------------------------------------------------------


def test_median_frequency_weights():
    w = class_weights_from_counts([900, 100])
    # frequencies 0.9, 0.1; median 0.5
    np.testing.assert_allclose(w, [0.5 / 0.9, 5.0], rtol=1e-6)
    three = class_weights_from_counts([600, 300, 100])
    np.testing.assert_allclose(three, [0.5, 1.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights_from_counts([600, 300, 100], "sqrt"),
                               np.sqrt([0.5, 1.0, 3.0]), rtol=1e-6)


def test_class_weights_absent_class_and_clip():
    np.testing.assert_allclose(class_weights_from_counts([100, 0, 100]), [1, 1, 1])
    w = class_weights_from_counts([10**6, 1], max_weight=100.0)
    assert w[1] == 100.0 and w[0] == pytest.approx(0.5, rel=1e-5)
    assert class_weights_from_counts([10**6, 1], max_weight=None)[1] > 1000
    with pytest.raises(ValueError):
        class_weights_from_counts([1, 2], method="magic")


# --- U-Net weight map ------------------------------------------------------------------------


def _reference_weight_map(instances, w0, sigma):
    """Straight from the paper: full distance transforms to every object."""
    ids = [i for i in np.unique(instances) if i != 0]
    dists = np.stack([ndi.distance_transform_edt(instances != i) for i in ids])
    dists.sort(axis=0)
    d1, d2 = dists[0], dists[1]
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return 1.0 + np.where(instances == 0, border, 0.0)


def _two_close_one_far():
    inst = np.zeros((64, 96), np.int32)
    inst[10:20, 10:20] = 1
    inst[10:20, 23:33] = 2  # 3-pixel gap to object 1
    inst[45:55, 75:85] = 3  # far from both
    return inst


def test_weight_map_is_high_between_close_objects():
    inst = _two_close_one_far()
    w = unet_weight_map(inst, w0=10.0, sigma=5.0)
    assert w.dtype == np.float32 and w.shape == inst.shape
    gap = w[15, 21]  # d1 = d2 = 2 -> 1 + 10 exp(-16/50)
    assert gap == pytest.approx(1 + 10 * math.exp(-16 / 50), rel=1e-5)
    assert gap > w[15, 8] > w[50, 60]  # between, beside the pair, far from everything
    assert w[50, 60] == 1.0
    assert np.all(w[inst > 0] == 1.0)


def test_weight_map_matches_the_paper_formula():
    rng = np.random.default_rng(1)
    inst = np.zeros((80, 80), np.int32)
    for k in range(1, 13):
        r, c = rng.integers(0, 74, 2)
        inst[r:r + 6, c:c + 6] = np.where(inst[r:r + 6, c:c + 6] == 0, k, inst[r:r + 6, c:c + 6])
    w = unet_weight_map(inst, w0=10.0, sigma=5.0)
    ref = _reference_weight_map(inst, 10.0, 5.0)
    # the cutoff drops only terms below w0 / 1000
    np.testing.assert_allclose(w, ref, atol=10.0 / 1000 + 1e-5)


def test_weight_map_from_a_label_map_ignores_unlabeled():
    inst = _two_close_one_far()
    label_map = (inst > 0).astype(np.uint8)
    label_map[:, 60:] = UNLABELED  # object 3 is inside the unlabeled part
    w = unet_weight_map(label_map)
    expected = unet_weight_map(np.where(np.arange(96) < 60, inst, 0))
    np.testing.assert_allclose(w, expected)


def test_weight_map_class_balance():
    inst = _two_close_one_far()
    w = unet_weight_map(inst, w0=0.0, class_balance=True)
    n_fg = np.count_nonzero(inst)
    bg, fg = class_weights_from_counts([inst.size - n_fg, n_fg], max_weight=None)
    assert w[0, 0] == pytest.approx(bg) and w[12, 12] == pytest.approx(fg)
    assert fg > bg

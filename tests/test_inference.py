"""Tiled inference: grid and window math, tiled == untiled, TTA, MC dropout, memory, embed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from label_assistant.model.inference import (
    InferenceError,
    Prediction,
    RunningMoments,
    axis_weight_sum,
    blend_window,
    default_device,
    embed,
    predict_proba,
    probabilities_to_label_map,
    round_up,
    tile_starts,
)


class Needs32(nn.Module):
    """Wraps a model and fails, as smp encoders do, on sides that are not multiples of 32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise RuntimeError(f"input {tuple(x.shape)} not a multiple of 32")
        return self.inner(x)


def conv1x1(in_channels: int = 1, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, classes, 1)


class WithRamp(nn.Module):
    """Not flip-equivariant: adds a left-to-right ramp to the logits of class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv1x1(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        ramp = torch.linspace(-2, 2, x.shape[-1])
        return out + torch.stack([0 * ramp, ramp, 0 * ramp])[None, :, None, :]


def dropout_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Dropout2d(0.5), nn.Conv2d(8, 3, 1))


def untiled(model: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(image)[None]), dim=1)[0].numpy()


def entropy_np(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=0)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 300, 517)).astype(np.float32)


# --- pure math ---------------------------------------------------------------------------------


def test_round_up() -> None:
    assert [round_up(v) for v in (1, 31, 32, 33, 512, 500)] == [32, 32, 32, 64, 512, 512]


def test_tile_starts_small_example() -> None:
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    assert tile_starts(128, 128, 32) == [0]
    assert tile_starts(50, 128, 32) == [0]


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 3000), tile=st.integers(2, 600), data=st.data())
def test_tile_starts_cover_the_axis_with_the_overlap(length: int, tile: int, data) -> None:
    overlap = data.draw(st.integers(0, tile - 1))
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length  # the last tile ends at the border, none leaves it
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + tile - b >= overlap  # neighbours overlap by at least `overlap`


def test_tile_starts_rejects_bad_overlap() -> None:
    with pytest.raises(InferenceError):
        tile_starts(100, 32, 32)
    with pytest.raises(InferenceError):
        tile_starts(100, 32, -1)


def test_blend_window_ramps_and_is_a_partition_of_unity() -> None:
    np.testing.assert_allclose(blend_window(6, 2), [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_array_equal(blend_window(4, 0), np.ones(4))
    w = blend_window(16, 4)
    # Two tiles overlapping by exactly 4 pixels: weights sum to 1 in the overlap.
    np.testing.assert_allclose(w[-4:] + w[:4], 1.0, rtol=1e-6)
    assert (w > 0).all() and w.dtype == np.float32


def test_axis_weight_sum() -> None:
    window = np.array([0.5, 1, 1, 0.5], np.float32)
    np.testing.assert_array_equal(axis_weight_sum(6, [0, 2], window), [0.5, 1, 1.5, 1.5, 1, 0.5])
    np.testing.assert_array_equal(axis_weight_sum(3, [0], window), [0.5, 1, 1])


@pytest.mark.parametrize("as_torch", [False, True])
def test_running_moments_match_mean_and_variance(as_torch: bool) -> None:
    samples = np.random.default_rng(1).random((7, 3, 4)).astype(np.float32)
    moments = RunningMoments()
    for s in samples:
        moments.update(torch.from_numpy(s) if as_torch else s)
    mean = np.asarray(moments.mean)
    var = np.asarray(moments.variance)
    np.testing.assert_allclose(mean, samples.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(var, samples.var(axis=0), rtol=1e-4, atol=1e-7)
    assert moments.count == 7


def test_running_moments_of_identical_samples_have_zero_variance() -> None:
    moments = RunningMoments()
    for _ in range(5):
        moments.update(np.full(3, 0.3, np.float32))
    assert (moments.variance == 0).all()


# --- predict_proba -----------------------------------------------------------------------------


def test_tiled_equals_untiled_on_an_odd_sized_image(image: np.ndarray) -> None:
    model = conv1x1()
    pred = predict_proba(Needs32(model), image, tile=128, overlap=32, batch_size=3)
    assert isinstance(pred, Prediction)
    assert pred.probabilities.shape == (3, 300, 517) and pred.probabilities.dtype == np.float32
    np.testing.assert_allclose(pred.probabilities, untiled(model, image), atol=1e-5)
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert pred.spread is None and pred.mean_sample_entropy is None and pred.n_samples == 1


def test_tile_not_a_multiple_of_32_is_rounded_up(image: np.ndarray) -> None:
    model = conv1x1()
    pred = predict_proba(Needs32(model), image, tile=100, overlap=10)
    np.testing.assert_allclose(pred.probabilities, untiled(model, image), atol=1e-5)


@pytest.mark.parametrize("shape", [(20, 37), (1, 1), (130, 7)])
def test_image_smaller_than_the_tile_is_padded(shape: tuple[int, int]) -> None:
    img = np.random.default_rng(2).normal(size=(1, *shape)).astype(np.float32)
    model = conv1x1()
    pred = predict_proba(Needs32(model), img, tile=128, overlap=32)
    assert pred.probabilities.shape == (3, *shape)
    np.testing.assert_allclose(pred.probabilities, untiled(model, img), atol=1e-5)


def test_2d_image_is_one_channel_and_integer_images_are_accepted() -> None:
    img = np.random.default_rng(3).integers(0, 255, (40, 50), dtype=np.uint8)
    model = conv1x1()
    pred = predict_proba(model, img, tile=32, overlap=8)
    expected = untiled(model, img[None].astype(np.float32))
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-5)


def test_seams_are_blended_for_a_model_with_a_receptive_field(image: np.ndarray) -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, 5, padding=2)
    reference = untiled(model, image)
    hard = predict_proba(model, image, tile=128, overlap=0).probabilities
    blended = predict_proba(model, image, tile=128, overlap=32).probabilities
    # Zero padding at tile borders spoils a 2-pixel band; overlap moves those pixels inwards.
    assert np.abs(blended - reference).max() < np.abs(hard - reference).max() / 5


class CountsTiles(nn.Module):
    """A 5x5 convolution (a receptive field across tile seams) that counts its input tiles."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 5, padding=2)
        self.tiles = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tiles += x.shape[0]
        return self.conv(x)


def test_where_runs_only_the_tiles_over_its_pixels_and_matches_there(image: np.ndarray) -> None:
    full_model, part_model = CountsTiles(), CountsTiles()
    full = predict_proba(full_model, image, tile=128, overlap=32).probabilities
    where = np.zeros(image.shape[1:], bool)
    where[:6, :] = True  # a band along the top edge (the border oracle's shape)
    where[150:160, 250:262] = True  # and one object inside, on tile seams
    part = predict_proba(part_model, image, tile=128, overlap=32, where=where).probabilities
    assert part_model.tiles < full_model.tiles
    # The same tiles run over these pixels (seams included): equal up to float rounding.
    np.testing.assert_allclose(part[:, where], full[:, where], atol=1e-6)
    assert (part.sum(axis=0)[200:, :100] == 0).all()  # tiles away from `where` did not run
    everything = predict_proba(CountsTiles(), image, tile=128, overlap=32,
                               where=np.ones(image.shape[1:], bool)).probabilities
    np.testing.assert_allclose(everything, full, atol=1e-6)
    with pytest.raises(InferenceError, match="where must be"):
        predict_proba(conv1x1(), image, tile=128, where=where[:-1])


def test_writes_into_a_given_output_array(image: np.ndarray) -> None:
    out = np.full((3, 300, 517), 7.0, np.float32)
    pred = predict_proba(conv1x1(), image, tile=128, overlap=32, out=out)
    assert pred.probabilities is out
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(InferenceError):
        predict_proba(conv1x1(), image, out=np.zeros((2, 300, 517), np.float32))


def test_bad_inputs_raise() -> None:
    model = conv1x1()
    with pytest.raises(InferenceError):
        predict_proba(model, np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(InferenceError):
        predict_proba(model, np.zeros((1, 0, 4), np.float32))
    with pytest.raises(InferenceError):
        predict_proba(model, np.zeros((1, 64, 64), np.float32), tile=64, overlap=64)
    with pytest.raises(InferenceError):
        predict_proba(nn.Conv2d(1, 2, 3), np.zeros((1, 64, 64), np.float32))  # shrinks output


def test_model_mode_is_restored(image: np.ndarray) -> None:
    model = dropout_model()
    model.train()
    predict_proba(model, image[:, :64, :64], mc_samples=2)
    assert all(m.training for m in model.modules())
    model.eval()
    predict_proba(model, image[:, :64, :64], mc_samples=2)
    assert not any(m.training for m in model.modules())


def test_tta_with_a_flip_equivariant_model_equals_no_tta(image: np.ndarray) -> None:
    model = conv1x1()
    plain = predict_proba(model, image, tile=128, overlap=32)
    tta = predict_proba(model, image, tile=128, overlap=32, tta=True)
    assert tta.n_samples == 4
    np.testing.assert_allclose(tta.probabilities, plain.probabilities, atol=1e-5)
    np.testing.assert_allclose(tta.spread, 0.0, atol=1e-6)


def test_tta_inverts_each_flip() -> None:
    img = np.random.default_rng(4).normal(size=(1, 40, 64)).astype(np.float32)
    model = WithRamp()
    samples = []
    for dims in [(), (-1,), (-2,), (-2, -1)]:
        flipped = np.flip(img, axis=dims).copy() if dims else img
        p = untiled(model, flipped)
        samples.append(np.flip(p, axis=dims) if dims else p)
    samples = np.stack(samples)
    pred = predict_proba(model, img, tile=64, overlap=0, tta=True)
    np.testing.assert_allclose(pred.probabilities, samples.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(pred.spread, samples.std(axis=0), atol=1e-5)
    expected_entropy = np.mean([entropy_np(s) for s in samples], axis=0)
    np.testing.assert_allclose(pred.mean_sample_entropy, expected_entropy, atol=1e-5)
    assert pred.spread.max() > 0.05  # the ramp flips with the image: the samples disagree


def test_mc_dropout_gives_spread_and_entropy_obeys_jensen(image: np.ndarray) -> None:
    torch.manual_seed(0)
    pred = predict_proba(dropout_model(), image, tile=128, overlap=32, mc_samples=8)
    assert pred.n_samples == 8
    assert pred.spread.shape == pred.probabilities.shape and pred.spread.dtype == np.float32
    assert pred.spread.mean() > 0.01
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert pred.mean_sample_entropy.shape == image.shape[1:]
    # Entropy is concave: the entropy of the mean is at least the mean of the entropies
    # (BALD's mutual information is >= 0), and strictly more where the samples disagree.
    mutual_information = entropy_np(pred.probabilities) - pred.mean_sample_entropy
    assert mutual_information.min() > -1e-5
    assert mutual_information.mean() > 1e-3


def test_mc_samples_without_dropout_have_zero_spread(image: np.ndarray) -> None:
    model = conv1x1()
    pred = predict_proba(model, image, tile=128, overlap=32, mc_samples=4)
    assert pred.n_samples == 4
    assert (pred.spread == 0).all()
    np.testing.assert_allclose(pred.probabilities, untiled(model, image), atol=1e-5)
    np.testing.assert_allclose(
        pred.mean_sample_entropy, entropy_np(pred.probabilities), atol=1e-5
    )


def test_dropout_is_off_without_mc_samples(image: np.ndarray) -> None:
    model = dropout_model()
    a = predict_proba(model, image, tile=128, overlap=32).probabilities
    b = predict_proba(model, image, tile=128, overlap=32).probabilities
    np.testing.assert_array_equal(a, b)


def test_mc_and_tta_multiply_the_samples() -> None:
    img = np.zeros((1, 32, 32), np.float32)
    assert predict_proba(dropout_model(), img, mc_samples=3, tta=True).n_samples == 12


def test_no_full_size_copies_beyond_the_output() -> None:
    img = np.random.default_rng(5).normal(size=(1, 2048, 2048)).astype(np.float32)
    model = conv1x1(classes=2)
    out_bytes = 2 * 2048 * 2048 * 4  # 32 MiB
    tracemalloc.start()  # sees numpy's allocations (torch's are tile-sized here)
    try:
        pred = predict_proba(model, img, tile=512, overlap=64, batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pred.probabilities.nbytes == out_bytes
    # The output plus a few tiles; one more full-size (H x W) float32 array would add 16 MiB.
    assert peak < out_bytes + 12 * 2**20, peak / 2**20


@pytest.mark.slow
def test_large_image() -> None:
    img = np.random.default_rng(6).normal(size=(1, 4096, 4096)).astype(np.float32)
    model = conv1x1(classes=2)
    # Speed is measured in benchmarks/bench_inference.py, not asserted here.
    pred = predict_proba(model, img, tile=512, overlap=64, batch_size=4)
    assert pred.probabilities.shape == (2, 4096, 4096)
    window = img[:, 1000:1100, 3000:3100]
    np.testing.assert_allclose(
        pred.probabilities[:, 1000:1100, 3000:3100], untiled(model, window), atol=1e-5
    )


# --- label map, embed, device ------------------------------------------------------------------


def test_probabilities_to_label_map() -> None:
    probs = np.array([[[0.7, 0.2]], [[0.2, 0.3]], [[0.1, 0.5]]], np.float32)
    label_map, confidence = probabilities_to_label_map(probs)
    assert label_map.dtype == np.uint8 and confidence.dtype == np.float32
    np.testing.assert_array_equal(label_map, [[0, 2]])
    np.testing.assert_allclose(confidence, [[0.7, 0.5]])
    with pytest.raises(InferenceError):
        probabilities_to_label_map(np.zeros((2, 2), np.float32))


class TinyEncoderModel(nn.Module):
    """smp-like: ``encoder(x)`` returns a list of feature maps, deepest last."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _TinyEncoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]


class _TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(32)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen.append(tuple(x.shape))
        deep = self.pool(x)
        return [x, torch.cat([deep, 2 * deep], dim=1)]


def test_embed_pools_the_deepest_features() -> None:
    model = TinyEncoderModel()
    vector = embed(model, np.full((1, 100, 300), 0.5, np.float32), size=64)
    assert vector.dtype == np.float32 and vector.shape == (2,)
    np.testing.assert_allclose(vector, [0.5, 1.0], rtol=1e-5)
    # Longer side resized to 64, the other (21 px) padded up to a multiple of 32.
    assert model.encoder.seen[-1] == (1, 1, 32, 64)
    with pytest.raises(InferenceError):
        embed(conv1x1(), np.zeros((1, 8, 8), np.float32))


def test_embed_tells_images_apart() -> None:
    model = TinyEncoderModel()
    a = embed(model, np.zeros((1, 64, 64), np.float32), size=32)
    b = embed(model, np.ones((1, 64, 64), np.float32), size=32)
    assert not np.allclose(a, b)


def test_default_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected


def test_real_smp_unet() -> None:
    from label_assistant.model.compat import import_smp

    smp = import_smp()
    torch.manual_seed(0)
    model = smp.create_model("Unet", "resnet18", encoder_weights=None, in_channels=1, classes=2)
    img = np.random.default_rng(7).normal(size=(1, 70, 100)).astype(np.float32)
    pred = predict_proba(model, img, tile=64, overlap=16)
    assert pred.probabilities.shape == (2, 70, 100)
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-5)
    vector = embed(model, img, size=64)
    assert vector.shape == (512,) and np.isfinite(vector).all()

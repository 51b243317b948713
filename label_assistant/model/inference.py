"""Tiled inference: class probabilities for images of any size, with optional uncertainty.

The image is cut into overlapping tiles (sides a multiple of 32, as smp encoders need), the
tiles go through the model ``batch_size`` at a time, and their softmax outputs are blended
with a separable ramp window so that seams vanish. Only the output accumulators are full
size: the whole-image batch is never built, and the window's normalisation is separable too,
so no full-size weight map is needed either.

With flip test-time augmentation (``tta``) and/or Monte-Carlo dropout (``mc_samples``), every
tile is predicted several times; the mean, the per-pixel spread and the mean per-sample
entropy are computed per tile with running moments and blended like the probabilities.

Probabilities follow the project contract: float32 (K+1) x H x W, channel 0 = background.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: smp encoders downsample 5 times: tile sides must be multiples of this.
TILE_MULTIPLE = 32

_DROPOUT_TYPES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout
)
# Flips as tensor dims of an N x C x H x W batch; each flip is its own inverse.
_TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class InferenceError(ValueError):
    """Inference can't run on this input (shape, settings, model output)."""


@dataclass
class Prediction:
    """Blended prediction of one image.

    ``probabilities``: mean over samples, float32 (K+1) x H x W, sums to 1 over channels.
    ``spread``: per-pixel standard deviation of the probabilities over samples, (K+1) x H x W,
    None with one sample. ``mean_sample_entropy``: mean over samples of each sample's entropy
    (nats), H x W, None with one sample (BALD = entropy(probabilities) - this).
    """

    probabilities: np.ndarray
    spread: np.ndarray | None = None
    n_samples: int = 1
    mean_sample_entropy: np.ndarray | None = None


# --- pure math -------------------------------------------------------------------------------


def round_up(value: int, multiple: int = TILE_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value`` (and >= ``multiple``)."""
    return max(multiple, -(-int(value) // multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``0..length`` with >= ``overlap``.

    The last tile is moved back to end at ``length`` (so no tile leaves the image); a length
    up to one tile gives the single start 0 (that tile is padded).
    """
    if length <= 0 or tile <= 0:
        raise InferenceError(f"length and tile must be positive, got {length} and {tile}")
    if not 0 <= overlap < tile:
        raise InferenceError(f"overlap must be in 0..{tile - 1}, got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: a linear ramp over ``overlap`` pixels at each end, 1 inside.

    Values are ``min(1, (i+1)/(overlap+1), (size-i)/(overlap+1))``: always positive, and two
    tiles that overlap by exactly ``overlap`` pixels have weights summing to 1 there.
    """
    i = np.arange(size, dtype=np.float64)
    ramp = np.minimum((i + 1) / (overlap + 1), (size - i) / (overlap + 1))
    return np.minimum(ramp, 1.0).astype(np.float32)


def axis_weight_sum(length: int, starts: list[int], window: np.ndarray) -> np.ndarray:
    """Sum over tiles of the 1-D window along one axis (cropped at ``length``)."""
    total = np.zeros(length, dtype=np.float32)
    for s in starts:
        end = min(s + len(window), length)
        total[s:end] += window[: end - s]
    return total


class RunningMoments:
    """Welford's running mean and variance over samples, on numpy arrays or torch tensors."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Any = None
        self._m2: Any = None

    def update(self, x: Any) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = x * 1  # a copy, in x's type
            self._m2 = x * 0
            return
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self._m2 = self._m2 + delta * (x - self.mean)

    @property
    def variance(self) -> Any:
        """Population variance (divides by the number of samples); 0 with one sample."""
        if self.mean is None:
            raise InferenceError("no samples yet")
        return self._m2 / self.count


def entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim``; 0 log 0 counts as 0."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=dim)


# --- model handling ----------------------------------------------------------------------------


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _inference_mode(model: nn.Module, mc_dropout: bool) -> Iterator[int]:
    """Eval mode (dropout layers kept active with ``mc_dropout``); the caller's modes restored.

    Yields the number of dropout layers made active.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    active = 0
    if mc_dropout:
        for m in model.modules():
            if isinstance(m, _DROPOUT_TYPES):
                m.train()
                active += 1
    try:
        with torch.inference_mode():
            yield active
    finally:
        for m, mode in modes.items():
            m.training = mode


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):  # smp models with aux_params return (masks, labels)
        out = out[0]
    if out.ndim != 4 or out.shape[-2:] != x.shape[-2:]:
        raise InferenceError(
            f"model output {tuple(out.shape)} does not match its input {tuple(x.shape)}"
        )
    return out


def _as_chw(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or min(image.shape) == 0:
        raise InferenceError(f"image must be C x H x W (or H x W), got shape {image.shape}")
    return image


def _pad_to(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a C x h x w crop at its bottom/right to height x width (mirror, edge for 1 px)."""
    pad_h, pad_w = height - tile.shape[1], width - tile.shape[2]
    if pad_h == 0 and pad_w == 0:
        return tile
    # Mirroring keeps image statistics at the border (zeros would look like a dark object).
    mode = "reflect" if min(tile.shape[1:]) > 1 else "edge"
    return np.pad(tile, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode)


# --- public API --------------------------------------------------------------------------------


def predict_proba(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    tta: bool = False,
    mc_samples: int = 0,
    out: np.ndarray | None = None,
    where: np.ndarray | None = None,
) -> Prediction:
    """Softmax probabilities of ``image`` (float C x H x W), predicted tile by tile.

    ``tile`` is rounded up to a multiple of 32 and shrunk to the image where the image is
    smaller (then padded by mirroring). ``tta`` averages the 4 flips; ``mc_samples`` > 0 keeps
    dropout layers active for that many stochastic passes (times 4 with ``tta``). ``out``, a
    float32 (K+1) x H x W array (e.g. a ``np.memmap``), receives the probabilities in place.
    ``where`` (bool H x W): only the tiles holding one of its pixels run; every tile that
    covers such a pixel runs, so its probabilities are exactly those of the whole image, and
    pixels no tile ran over stay 0 (validation on partial labels: the labeled pixels).
    The model must already be on ``device``; its train/eval modes are restored afterwards.
    """
    image = _as_chw(image)
    if batch_size < 1:
        raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    if mc_samples < 0:
        raise InferenceError(f"mc_samples must be >= 0, got {mc_samples}")
    _, height, width = image.shape
    tile = round_up(tile)
    if not 0 <= overlap < tile:
        raise InferenceError(f"overlap must be in 0..{tile - 1} for tile {tile}, got {overlap}")
    # A side shorter than the tile gets one tile of its own size (rounded up to 32).
    tile_h, tile_w = min(tile, round_up(height)), min(tile, round_up(width))
    over_h, over_w = min(overlap, tile_h - 1), min(overlap, tile_w - 1)
    ys, xs = tile_starts(height, tile_h, over_h), tile_starts(width, tile_w, over_w)
    win_y, win_x = blend_window(tile_h, over_h), blend_window(tile_w, over_w)
    # The weight sum over tiles is separable like the window: two 1-D arrays, not an H x W map.
    sum_y, sum_x = axis_weight_sum(height, ys, win_y), axis_weight_sum(width, xs, win_x)

    device = torch.device(device)
    flips = _TTA_FLIPS if tta else _TTA_FLIPS[:1]
    passes = max(mc_samples, 1)
    n_samples = len(flips) * passes
    probs = spread = sample_entropy = None
    grid = [(y, x) for y in ys for x in xs]
    if where is not None:
        if where.shape != (height, width):
            raise InferenceError(f"where must be {height} x {width}, got {where.shape}")
        grid = [(y, x) for y, x in grid if where[y : y + tile_h, x : x + tile_w].any()]

    with _inference_mode(model, mc_dropout=mc_samples > 0) as active_dropout:
        if mc_samples > 0 and active_dropout == 0:
            log.warning("mc_samples=%d but the model has no dropout layer: the samples agree",
                        mc_samples)
        for first in range(0, len(grid), batch_size):
            chunk = grid[first : first + batch_size]
            batch = np.empty((len(chunk), image.shape[0], tile_h, tile_w), np.float32)
            for i, (y, x) in enumerate(chunk):
                batch[i] = _pad_to(image[:, y : y + tile_h, x : x + tile_w], tile_h, tile_w)
            xb = torch.from_numpy(batch).to(device)
            moments, entropies = RunningMoments(), RunningMoments()
            for _ in range(passes):
                for dims in flips:
                    xin = xb.flip(dims) if dims else xb
                    p = torch.softmax(_logits(model, xin).float(), dim=1)
                    p = p.flip(dims) if dims else p
                    moments.update(p)
                    if n_samples > 1:
                        entropies.update(entropy(p))
            mean = moments.mean.cpu().numpy()
            if probs is None:  # the class count is known from the first output
                shape = (mean.shape[1], height, width)
                probs = _output_array(out, shape)
                if n_samples > 1:
                    spread = np.zeros(shape, np.float32)
                    sample_entropy = np.zeros(shape[1:], np.float32)
            var = moments.variance.cpu().numpy() if n_samples > 1 else None
            ent = entropies.mean.cpu().numpy() if n_samples > 1 else None
            for i, (y, x) in enumerate(chunk):
                h, w = min(tile_h, height - y), min(tile_w, width - x)
                # Pre-normalised weights: each pixel's weights over all tiles sum to 1.
                weight = (win_y[:h, None] / sum_y[y : y + h, None]) * (
                    win_x[None, :w] / sum_x[None, x : x + w]
                )
                probs[:, y : y + h, x : x + w] += mean[i, :, :h, :w] * weight
                if var is not None:
                    spread[:, y : y + h, x : x + w] += var[i, :, :h, :w] * weight
                    sample_entropy[y : y + h, x : x + w] += ent[i, :h, :w] * weight
    if spread is not None:
        np.sqrt(np.maximum(spread, 0, out=spread), out=spread)
    return Prediction(probs, spread, n_samples, sample_entropy)


def _output_array(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.zeros(shape, np.float32)
    if out.shape != shape or out.dtype != np.float32:
        raise InferenceError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    out[...] = 0
    return out


def probabilities_to_label_map(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map (argmax, uint8 H x W) and confidence (max probability, float32 H x W)."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or not 1 <= probs.shape[0] <= 255:
        raise InferenceError(f"probabilities must be (K+1) x H x W, got shape {probs.shape}")
    label_map = np.argmax(probs, axis=0).astype(np.uint8)
    confidence = np.take_along_axis(probs, label_map[None].astype(np.intp), axis=0)[0]
    return label_map, confidence.astype(np.float32, copy=False)


def embed(
    model: nn.Module,
    image: np.ndarray,
    *,
    size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Float32 feature vector of ``image``: the deepest encoder features, average-pooled.

    The image is resized so that its longer side is ``size`` (a multiple of 32), keeping its
    aspect ratio, and the shorter side is padded by mirroring up to a multiple of 32. Needs an
    smp-style model whose ``encoder(x)`` returns a list of feature maps.
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise InferenceError(f"{type(model).__name__} has no encoder to embed with")
    image = _as_chw(image)
    size = round_up(size)
    _, height, width = image.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    device = torch.device(device)
    with _inference_mode(model, mc_dropout=False):
        x = torch.from_numpy(np.asarray(image, np.float32)).to(device)[None]
        if (new_h, new_w) != (height, width):
            x = torch.nn.functional.interpolate(
                x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                antialias=scale < 1,
            )
        pad_h, pad_w = round_up(new_h) - new_h, round_up(new_w) - new_w
        if pad_h or pad_w:
            mode = "reflect" if pad_h < new_h and pad_w < new_w else "replicate"
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        features = encoder(x)
        deepest = features[-1] if isinstance(features, (list, tuple)) else features
        vector = deepest.float().mean(dim=(-2, -1))[0]
    return vector.cpu().numpy().astype(np.float32, copy=False)

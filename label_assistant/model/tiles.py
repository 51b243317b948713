"""Training tiles from partially labeled images, and their augmentation (seeded, numpy).

:class:`TileSampler` draws square tiles from images of any size and channel count. Each tile
is placed around a labeled pixel: by default an image is drawn first, each image alike
(``balance="image"``, as nnU-Net draws a case first), then one of its labeled pixels;
``balance="pixel"`` draws uniformly from all labeled pixels, so that an image weighs by its
labeled pixels (a 1024 x 1024 image 16 times a 256 x 256 one). Sampling stays cheap when
labels cover 1% of a large image. A tile must hold ``min_labeled_pixels`` labeled
pixels, and at most ``max_background_only_share`` of the tiles drawn so far may be
background-only (labeled pixels all background): when that share is reached, the next tile
is placed around a labeled foreground pixel instead. The bound holds for every prefix of the
draws, not only on average. Images smaller than the tile are padded (images with 0 or by
reflection, labels with UNLABELED, pixel weights with 0).

Optional per-image companions travel with the tiles and go through the same flips and
rotations: pixel weights (float) and weak labels (uint8 label maps, e.g. the champion's
pre-label; padded with UNLABELED): :meth:`TileSampler.sample_batch` returns them together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from label_assistant.labelmap import BACKGROUND, UNLABELED
from label_assistant.model.config import TILE_SAMPLINGS


class TileError(ValueError):
    """Inputs that can't give tiles: shapes that differ, no image with enough labeled pixels."""


_PAD_MODES = ("constant", "reflect")
#: How a tile's image is drawn: each image alike, or by its labeled pixels.
BALANCES = TILE_SAMPLINGS


def _pad_to(array: np.ndarray, size: int, mode: str, value: float) -> np.ndarray:
    """Pad the last two axes at their end up to ``size`` (no-op when already large enough)."""
    h, w = array.shape[-2:]
    extra = [(0, 0)] * (array.ndim - 2) + [(0, max(size - h, 0)), (0, max(size - w, 0))]
    if extra[-2][1] == 0 and extra[-1][1] == 0:
        return array
    if mode == "reflect":
        return np.pad(array, extra, mode="reflect")
    return np.pad(array, extra, mode="constant", constant_values=value)


@dataclass
class TileBatch:
    """Tiles ``x`` (N, C, T, T), labels ``y`` (N, T, T) and their optional companions."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None = None
    weak: np.ndarray | None = None

    def shard(self, index: int, count: int) -> TileBatch:
        """Part ``index`` of ``count`` disjoint, equal parts (tiles ``index::count``, as
        ``torch.utils.data.DistributedSampler`` splits indices): what rank ``index`` of
        ``count`` training processes trains on, so that together they train on the whole
        batch. The batch size must divide by ``count``."""
        n = self.x.shape[0]
        if count < 1 or not 0 <= index < count or n % count:
            raise TileError(f"a batch of {n} tiles does not split into {count} equal parts")
        if count == 1:
            return self
        part = slice(index, None, count)
        return TileBatch(self.x[part], self.y[part],
                         None if self.weights is None else self.weights[part],
                         None if self.weak is None else self.weak[part])


class TileSampler:
    """Seeded tiles of ``tile`` x ``tile`` pixels that hold labeled pixels; see the module doc."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        tile: int = 256,
        min_labeled_pixels: int = 1,
        max_background_only_share: float = 0.5,
        seed: int | np.random.Generator = 0,
        pixel_weights: Sequence[np.ndarray] | None = None,
        pad_mode: str = "constant",
        max_tries: int = 200,
        weak_labels: Sequence[np.ndarray] | None = None,
        balance: str = "image",
    ) -> None:
        if len(images) != len(labels) or not images:
            raise TileError(f"need as many label maps as images (>0), got {len(images)} "
                            f"images and {len(labels)} label maps")
        if pixel_weights is not None and len(pixel_weights) != len(images):
            raise TileError("need one pixel-weight map per image")
        if weak_labels is not None and len(weak_labels) != len(images):
            raise TileError("need one weak label map per image")
        if tile < 1 or min_labeled_pixels < 0 or not 0.0 <= max_background_only_share <= 1.0:
            raise TileError("tile >= 1, min_labeled_pixels >= 0 and a share in [0, 1] expected")
        if min_labeled_pixels > tile * tile:
            raise TileError(f"min_labeled_pixels {min_labeled_pixels} exceeds a {tile}^2 tile")
        if balance not in BALANCES:
            raise TileError(f"unknown balance {balance!r}; choose {' or '.join(BALANCES)}")
        self.balance = balance
        if pad_mode not in _PAD_MODES:
            raise TileError(f"unknown pad_mode {pad_mode!r}; choose {' or '.join(_PAD_MODES)}")
        self.tile = int(tile)
        self.min_labeled_pixels = int(min_labeled_pixels)
        self.max_background_only_share = float(max_background_only_share)
        self.max_tries = int(max_tries)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.has_weights = pixel_weights is not None
        self.has_weak = weak_labels is not None

        channels = {np.asarray(im).shape[0] if np.ndim(im) == 3 else None for im in images}
        if None in channels or len(channels) != 1:
            raise TileError(f"images must be (C, H, W) with one C, got C in {channels}")
        self.channels = channels.pop()
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.weak: list[np.ndarray] = []
        any_labeled, fg_labeled = [], []
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            image = np.asarray(image, dtype=np.float32)
            label = np.asarray(label)
            if label.dtype != np.uint8 or label.shape != image.shape[1:]:
                raise TileError(f"label map {i} must be uint8 of shape {image.shape[1:]}")
            if np.count_nonzero(label != UNLABELED) < self.min_labeled_pixels:
                continue  # can't ever give a valid tile
            self.images.append(_pad_to(image, self.tile, pad_mode, 0.0))
            self.labels.append(_pad_to(label, self.tile, "constant", UNLABELED))
            if pixel_weights is not None:
                weight = np.asarray(pixel_weights[i], dtype=np.float32)
                if weight.shape != label.shape:
                    raise TileError(f"pixel-weight map {i} must have shape {label.shape}")
                self.weights.append(_pad_to(weight, self.tile, "constant", 0.0))
            if weak_labels is not None:
                weak = np.asarray(weak_labels[i])
                if weak.dtype != np.uint8 or weak.shape != label.shape:
                    raise TileError(f"weak label map {i} must be uint8 of shape {label.shape}")
                self.weak.append(_pad_to(weak, self.tile, "constant", UNLABELED))
            flat = self.labels[-1].ravel()
            # int32 indices: 4 bytes per labeled pixel, fine up to 46k x 46k images
            index_type = np.int32 if flat.size < 2**31 else np.int64
            any_labeled.append(np.flatnonzero(flat != UNLABELED).astype(index_type))
            fg_labeled.append(
                np.flatnonzero((flat != UNLABELED) & (flat != BACKGROUND)).astype(index_type)
            )
        if not self.images:
            raise TileError(f"no image holds {self.min_labeled_pixels} labeled pixels")
        self._any = any_labeled
        self._fg = fg_labeled
        self._any_cum = np.cumsum([len(a) for a in any_labeled])
        self._fg_cum = np.cumsum([len(a) for a in fg_labeled])
        # The images holding such pixels (balance "image" draws one of them first).
        self._any_images = np.flatnonzero([len(a) for a in any_labeled])
        self._fg_images = np.flatnonzero([len(a) for a in fg_labeled])
        self.drawn = 0
        self.background_only = 0

    @property
    def has_foreground(self) -> bool:
        """Whether any labeled pixel is not background (else every tile is background-only)."""
        return bool(self._fg_cum[-1] > 0)

    def _anchor(self, foreground: bool) -> tuple[int, int, int]:
        """(image, row, col) of a labeled (or labeled foreground) pixel: an image holding
        one, each alike, then one of its pixels (``balance="image"``), or uniform over all
        such pixels (``"pixel"``)."""
        cum, pools = (self._fg_cum, self._fg) if foreground else (self._any_cum, self._any)
        if self.balance == "image":
            holders = self._fg_images if foreground else self._any_images
            i = int(holders[self.rng.integers(len(holders))])
            flat = int(pools[i][self.rng.integers(len(pools[i]))])
        else:
            k = int(self.rng.integers(cum[-1]))
            i = int(np.searchsorted(cum, k, side="right"))
            start = 0 if i == 0 else int(cum[i - 1])
            flat = int(pools[i][k - start])
        return (i, *divmod(flat, self.labels[i].shape[1]))

    def _origin(self, i: int, r: int, c: int) -> tuple[int, int]:
        """A random tile origin whose tile contains (r, c) and fits in image i."""
        h, w = self.labels[i].shape
        t = self.tile
        r0 = int(self.rng.integers(max(r - t + 1, 0), min(r, h - t) + 1))
        c0 = int(self.rng.integers(max(c - t + 1, 0), min(c, w - t) + 1))
        return r0, c0

    def _draw_one(self) -> tuple[int, int, int, bool]:
        allow_bg_only = not self.has_foreground or (
            self.background_only + 1 <= self.max_background_only_share * (self.drawn + 1)
        )
        t = self.tile
        for _ in range(self.max_tries):
            i, r, c = self._anchor(foreground=not allow_bg_only)
            r0, c0 = self._origin(i, r, c)
            crop = self.labels[i][r0:r0 + t, c0:c0 + t]
            labeled = crop != UNLABELED
            if np.count_nonzero(labeled) < self.min_labeled_pixels:
                continue
            bg_only = not np.any(labeled & (crop != BACKGROUND))
            return i, r0, c0, bg_only
        raise TileError(
            f"no tile with {self.min_labeled_pixels} labeled pixels in {self.max_tries} tries; "
            "lower min_labeled_pixels"
        )

    def sample_batch(self, n: int) -> TileBatch:
        """``n`` tiles with their labels, and their pixel weights and weak labels if given."""
        t = self.tile
        x = np.empty((n, self.channels, t, t), np.float32)
        y = np.empty((n, t, t), np.uint8)
        w = np.empty((n, t, t), np.float32) if self.has_weights else None
        weak = np.empty((n, t, t), np.uint8) if self.has_weak else None
        for k in range(n):
            i, r0, c0, bg_only = self._draw_one()
            self.drawn += 1
            self.background_only += bg_only
            x[k] = self.images[i][:, r0:r0 + t, c0:c0 + t]
            y[k] = self.labels[i][r0:r0 + t, c0:c0 + t]
            if w is not None:
                w[k] = self.weights[i][r0:r0 + t, c0:c0 + t]
            if weak is not None:
                weak[k] = self.weak[i][r0:r0 + t, c0:c0 + t]
        return TileBatch(x, y, w, weak)

    def sample(
        self, n: int
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x float32 (n, C, T, T), y uint8 (n, T, T))``, plus pixel weights if given."""
        batch = self.sample_batch(n)
        return (batch.x, batch.y) if batch.weights is None else (batch.x, batch.y, batch.weights)

    def batches(
        self,
        batch_size: int,
        n_batches: int | None = None,
        augment_tiles: bool = True,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """``(x, y, weights or None)`` batches, augmented with this sampler's generator."""
        done = 0
        while n_batches is None or done < n_batches:
            batch = self.sample(batch_size)
            x, y, w = batch[0], batch[1], (batch[2] if len(batch) > 2 else None)
            if augment_tiles:
                x, y, w = augment(x, y, self.rng, weights=w)
            yield x, y, w
            done += 1


def augment(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    weights: np.ndarray | None = None,
    flips: bool = True,
    rot90: bool = True,
    intensity_scale: tuple[float, float] | None = (0.9, 1.1),
    intensity_shift: tuple[float, float] | None = (-0.1, 0.1),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random flips / 90-degree rotations (image, labels and weights alike) and intensity
    scale/shift (image only), drawn per tile. Returns ``(x, y, weights)`` as new arrays.

    ``x`` is (N, C, H, W) with ``y`` (N, H, W), or one tile (C, H, W) with (H, W). Labels are
    never interpolated or intensity-changed. Odd rotations need square tiles (else only 180).
    """
    single = x.ndim == 3
    if single:
        x, y = x[None], y[None]
        weights = None if weights is None else weights[None]
    x_out, (y_out, w_out) = _augment(x, [y, weights], rng, flips=flips, rot90=rot90,
                                     intensity_scale=intensity_scale,
                                     intensity_shift=intensity_shift)
    if single:
        return x_out[0], y_out[0], None if w_out is None else w_out[0]
    return x_out, y_out, w_out


def augment_batch(batch: TileBatch, rng: np.random.Generator) -> TileBatch:
    """:func:`augment` of a batch: labels, pixel weights and weak labels move alike."""
    x, (y, w, weak) = _augment(batch.x, [batch.y, batch.weights, batch.weak], rng)
    return TileBatch(x, y, w, weak)


def _augment(
    x: np.ndarray,
    maps: list[np.ndarray | None],
    rng: np.random.Generator,
    *,
    flips: bool = True,
    rot90: bool = True,
    intensity_scale: tuple[float, float] | None = (0.9, 1.1),
    intensity_shift: tuple[float, float] | None = (-0.1, 0.1),
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The augmentation of ``x`` (N, C, H, W), with every (N, H, W) map of ``maps`` (the
    labels first; None entries stay None) flipped and rotated like its tile."""
    y = maps[0]
    if x.ndim != 4 or y is None or y.shape != (x.shape[0], *x.shape[2:]):
        raise TileError(f"need x (N, C, H, W) and y (N, H, W), got {x.shape} and "
                        f"{None if y is None else y.shape}")
    for m in maps[1:]:
        if m is not None and m.shape != y.shape:
            raise TileError(f"a map of shape {m.shape} differs from labels {y.shape}")
    x_out = np.empty_like(x)
    outs = [None if m is None else np.empty_like(m) for m in maps]
    square = x.shape[-1] == x.shape[-2]
    for k in range(x.shape[0]):
        xi = x[k]
        mi = [None if m is None else m[k] for m in maps]
        if flips:
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    xi = np.flip(xi, axis)
                    mi = [None if m is None else np.flip(m, axis) for m in mi]
        if rot90:
            turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
            xi = np.rot90(xi, turns, axes=(-2, -1))
            mi = [None if m is None else np.rot90(m, turns, axes=(-2, -1)) for m in mi]
        scale = 1.0 if intensity_scale is None else rng.uniform(*intensity_scale)
        shift = 0.0 if intensity_shift is None else rng.uniform(*intensity_shift)
        x_out[k] = xi * scale + shift
        for out, m in zip(outs, mi, strict=True):
            if out is not None:
                out[k] = m
    return x_out, outs

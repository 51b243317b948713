"""One object's mask from a prompt: GrabCut on a bounded crop, optionally guided by a model.

- :func:`working_image`: an image as read -> the ``uint8 (H, W, 3)`` GrabCut works on (each
  channel stretched between its percentiles, as the model sees it; grey repeated). Made once
  per image (the service caches it).
- :func:`box_to_mask`: a first guess inside the box (with ``probabilities``, the model's
  ``(K+1, H, W)`` array or a source read by window (:mod:`.probabilities`; only the box's
  pixels are read): class probability >= 0.5; else :func:`ellipse_guess`: an ellipse
  centred in the box, sized by its contrast with a ring around it) starts GrabCut:
  probable foreground /
  background inside the box, definite background in a margin around it. When GrabCut's
  result overlaps the guess (and the clicks) by less than :data:`KEEP_GUESS` it lost the
  object (grey, packed nuclei: its colour models take the neighbours for the object) and
  the guess stands. The result is the connected part that holds the positive clicks, or else
  the one that fills the box best (IoU with the box).
- clicks (:func:`clicks_to_mask`): positive clicks are definite foreground, negative clicks
  definite background (small disks), and the mask is recomputed from all clicks each time;
  a negative click on a blob that touches the object (same colour: GrabCut alone keeps it)
  also removes that blob. Without a box, the first positive click gives
  :func:`object_under_click`: the model's connected object under the click when
  probabilities are given and it sees the class there (read in the windows of the region's
  growth, 49 pixels first), else :func:`grow_region` (the click's
  side of a local Otsu threshold, grown until it stops at the window's edge, touching blobs
  split as Otsu's pre-labels split them). Alone it is the answer; each further click
  corrects it near itself (:func:`corrected`).
- :func:`extreme_points_to_mask`: the box four extreme points span, the points as definite
  foreground, then as a box.

GrabCut runs on a window around the prompt (the box plus a margin), scaled down so that its
longer side is at most ``max_side`` pixels; the mask is scaled back (bilinear, then 0.5).
Holes in the object are filled. Everything is numpy/OpenCV, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from label_assistant.assist.pre import split_touching
from label_assistant.images import normalize_for_model
from label_assistant.interactive.probabilities import ProbabilitySource, as_source
from label_assistant.interactive.prompts import (
    Box,
    Click,
    Prompt,
    PromptError,
    box_of_extreme_points,
)

#: The longer side of the crop GrabCut runs on (larger crops are scaled down to it).
MAX_SIDE = 256
#: GrabCut's iterations (OpenCV's examples use 5).
ITERATIONS = 5
#: Radius, in image pixels, of the disk a click makes definite.
CLICK_RADIUS = 2
#: The margin around a box: this share of its longer side, at least MIN_MARGIN pixels.
MARGIN = 0.25
MIN_MARGIN = 8
#: GrabCut's result is kept when its IoU with the first guess (and the clicks) is at least
#: this; below, GrabCut lost the object and the guess is the answer.
KEEP_GUESS = 0.5
#: The first guess of a box without a model (:func:`ellipse_guess`): the sizes tried, as
#: shares of the box's inscribed ellipse, and the ring outside each whose contrast picks one.
ELLIPSE_SCALES = tuple(round(float(v), 2) for v in np.linspace(0.5, 1.0, 11))
ELLIPSE_RING = 1.25
#: :func:`grow_region` splits touching blobs at distance-transform maxima this deep (pixels;
#: 0: no split).
GROW_SPLIT_DEPTH = 2.0
#: A corrective click without a box changes the mask within this many times its depth
#: (:func:`corrected`), at least MIN_REACH and at most MAX_REACH pixels.
CORRECTION_REACH = 2.0
MIN_REACH = 3.0
MAX_REACH = 128
#: The first window side of :func:`object_under_click` (doubled while the object reaches
#: its edge, up to MAX_GROW).
GROW_START = 48
MAX_GROW = 512
#: Regions up to this many pixels are split into touching blobs (the watershed's cost grows
#: with the area; larger regions are background, not an object).
MAX_SPLIT = 128 * 128

_EIGHT = np.ones((3, 3), dtype=bool)

#: A model's class probabilities: a ``(K+1, H, W)`` array, a source read window by window
#: (:mod:`.probabilities`: the model runs only where a prompt reads), or None.
Probabilities = np.ndarray | ProbabilitySource | None


@dataclass(frozen=True)
class Segmentation:
    """One object's mask (bool ``(H, W)``), how it was made, and why it is empty if it is."""

    mask: np.ndarray
    method: str  # "grabcut", "grabcut+model", "model-object", "region-grow", "none"
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return not self.mask.any()


@dataclass(frozen=True)
class Window:
    """Rows ``r0:r1`` and columns ``c0:c1`` of the image, worked on at ``scale``."""

    r0: int
    r1: int
    c0: int
    c1: int
    scale: float

    @classmethod
    def around(cls, r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int],
               max_side: int = MAX_SIDE, margin: float = MARGIN) -> Window:
        """Pixel rows ``r0:r1``, columns ``c0:c1`` widened by the margin, clipped."""
        pad = max(MIN_MARGIN, int(round(margin * max(r1 - r0, c1 - c0))))
        r0, r1 = max(0, r0 - pad), min(shape[0], r1 + pad)
        c0, c1 = max(0, c0 - pad), min(shape[1], c1 + pad)
        return cls(r0, r1, c0, c1, min(1.0, max_side / max(r1 - r0, c1 - c0)))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) at the working scale."""
        return (max(1, round((self.r1 - self.r0) * self.scale)),
                max(1, round((self.c1 - self.c0) * self.scale)))

    def crop(self, array: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """``array[..., window]`` ((H, W) or (H, W, C)) at the working scale."""
        part = array[self.r0:self.r1, self.c0:self.c1]
        height, width = self.size
        if part.shape[:2] == (height, width):
            return np.ascontiguousarray(part)
        return cv2.resize(part, (width, height), interpolation=interpolation)

    def point(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) at the working scale of image position (x, y)."""
        height, width = self.size
        row = int((y - self.r0) * self.scale)
        col = int((x - self.c0) * self.scale)
        return min(max(row, 0), height - 1), min(max(col, 0), width - 1)

    def full(self, small: np.ndarray) -> np.ndarray:
        """A bool mask at the working scale at the window's full resolution (bilinear, 0.5)."""
        height, width = self.r1 - self.r0, self.c1 - self.c0
        if small.shape == (height, width):
            return small
        up = cv2.resize(small.astype(np.float32), (width, height),
                        interpolation=cv2.INTER_LINEAR)
        return up >= 0.5

    def paste(self, part: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A full-resolution window mask in a bool mask of the image's ``shape``."""
        out = np.zeros(shape, dtype=bool)
        out[self.r0:self.r1, self.c0:self.c1] = part
        return out


def working_image(image: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)``: each channel stretched between its 1st and 99.8th percentiles
    (:func:`~label_assistant.images.normalize_for_model`, the percentiles of about 512 x 512
    pixels of a larger image), grey repeated, a fourth channel dropped, two channels
    completed by their mean."""
    height, width = image.shape[:2]
    x = normalize_for_model(image, step=max(1, int(np.sqrt(height * width / 2**18))))
    x = np.round(np.multiply(x[:3], 255, out=x[:3])).astype(np.uint8)  # uint8 first: cheap
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    elif x.shape[0] == 2:
        x = np.concatenate([x, x.mean(axis=0, keepdims=True, dtype=np.float32)
                            .round().astype(np.uint8)])
    return np.ascontiguousarray(np.moveaxis(x, 0, -1))


def class_source(probabilities: Probabilities, cls: int) -> ProbabilitySource | None:
    """The probabilities as a source (:func:`~.probabilities.as_source`) after checking that
    class ``cls`` (1..K) is one of them; None without probabilities."""
    source = as_source(probabilities)
    if source is None:
        return None
    if not 1 <= cls < source.classes:
        raise PromptError(f"class {cls} is not among the model's classes "
                          f"1..{source.classes - 1}")
    return source


# --- the prompts ------------------------------------------------------------------------


def segment(work: np.ndarray, prompt: Prompt, probabilities: Probabilities = None,
            cls: int = 1, *, max_side: int = MAX_SIDE,
            iterations: int = ITERATIONS) -> Segmentation:
    """The object a prompt points at: extreme points, else a box, else clicks."""
    if prompt.extreme:
        return extreme_points_to_mask(work, prompt.extreme, probabilities, cls,
                                      clicks=prompt.clicks, max_side=max_side,
                                      iterations=iterations)
    if prompt.box is not None:
        return box_to_mask(work, prompt.box, probabilities, cls, clicks=prompt.clicks,
                           max_side=max_side, iterations=iterations)
    return clicks_to_mask(work, prompt.clicks, probabilities, cls, max_side=max_side,
                          iterations=iterations)


def box_to_mask(work: np.ndarray, box: Box, probabilities: Probabilities = None,
                cls: int = 1, *, clicks: tuple[Click, ...] = (), max_side: int = MAX_SIDE,
                iterations: int = ITERATIONS, guess: np.ndarray | None = None
                ) -> Segmentation:
    """GrabCut from a rectangle (guided by the model's class probability when given, or by
    ``guess``, a bool ``(H, W)`` first guess of the object)."""
    shape = work.shape[:2]
    if box.x1 <= 0 or box.y1 <= 0 or box.x0 >= shape[1] or box.y0 >= shape[0]:
        return _nothing(shape, f"the box {box} is outside the {shape[1]}x{shape[0]} image")
    r0, r1, c0, c1 = box.pixels(shape)
    positives_inside = all(box.contains(c) for c in clicks if c.positive)
    xs, ys = [c.x for c in clicks], [c.y for c in clicks]
    window = Window.around(min([r0, *map(int, ys)]), max([r1, *(int(y) + 1 for y in ys)]),
                           min([c0, *map(int, xs)]), max([c1, *(int(x) + 1 for x in xs)]),
                           shape, max_side)
    height, width = window.size
    seeds = np.full((height, width), cv2.GC_BGD, np.uint8)
    (br0, bc0), (br1, bc1) = window.point(c0, r0), window.point(c1 - 1, r1 - 1)
    inside = (slice(br0, br1 + 1), slice(bc0, bc1 + 1))
    crop = window.crop(work)
    source = class_source(probabilities, cls)
    if guess is not None:
        first, method = window.crop(guess.astype(np.uint8), cv2.INTER_NEAREST)[inside] > 0, \
            "grabcut"
    elif source is not None:  # the model runs on the box's pixels only (a lazy source)
        part = source.read(r0, r1, c0, c1)[cls]
        size = (bc1 + 1 - bc0, br1 + 1 - br0)
        if part.shape[::-1] != size:
            part = cv2.resize(part, size, interpolation=cv2.INTER_LINEAR)
        first, method = part >= 0.5, "grabcut+model"
    else:
        first, method = ellipse_guess(crop[inside]), "grabcut"
    if first.any() and not first.all():
        seeds[inside] = np.where(first, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    else:
        seeds[inside] = cv2.GC_PR_FGD
    _mark_clicks(seeds, window, clicks)
    start = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    cut = _grabcut(crop, seeds, iterations)
    if _iou(cut, start) < KEEP_GUESS:
        # GrabCut's colour models fail where neighbours look like the object (packed nuclei
        # of one brightness in the margin): it drops the object. The first guess stands.
        cut, method = start, method.replace("grabcut", "guess")
    part = window.full(cut)
    if positives_inside:  # the object is inside its box
        in_box = np.zeros_like(part)
        in_box[r0 - window.r0:r1 - window.r0, c0 - window.c0:c1 - window.c0] = True
        part &= in_box
    part = _object(part, window, clicks, (r0, r1, c0, c1))
    return _result(window.paste(part, shape), method, "GrabCut found no object in the box")


def clicks_to_mask(work: np.ndarray, clicks: tuple[Click, ...] | list[Click],
                   probabilities: Probabilities = None, cls: int = 1, *,
                   max_side: int = MAX_SIDE, iterations: int = ITERATIONS) -> Segmentation:
    """The object the clicks point at (no box): the first positive click gives
    :func:`object_under_click`, alone the answer; every other click, in order, corrects that
    answer near itself (:func:`corrected`). ``max_side`` and ``iterations`` are GrabCut's,
    which only a box runs: they are accepted so that every prompt takes the same options."""
    clicks = tuple(clicks)
    shape = work.shape[:2]
    first = next((i for i, c in enumerate(clicks) if c.positive), None)
    if first is None:
        return _nothing(shape, "no positive click: a negative click only removes from an "
                               "object that a box or a positive click gives")
    found = object_under_click(work, clicks[first], probabilities, cls)
    if len(clicks) == 1:
        return _result(found.mask, found.method, "no object under the click")
    # GrabCut from the clicks' box (the earlier way) answered a corrective click with another
    # object or a single pixel: on 197 DSB 2018 nuclei, IoU after 5 clicks 0.678 against
    # 0.764 for these local corrections, NoC@90 12.9 against 11.7
    # (benchmarks/bench_interactive.py quality --per-group 8 --seed 2).
    mask = corrected(work, found.mask, clicks[:first] + clicks[first + 1:],
                     held=(clicks[first],))
    return _result(mask, f"clicks+{found.method}", "the clicks removed the whole object")


def corrected(work: np.ndarray, mask: np.ndarray, clicks: tuple[Click, ...] | list[Click],
              held: tuple[Click, ...] = ()) -> np.ndarray:
    """``mask`` corrected by each click in turn, near the click (MIA's add/remove loop, with
    the click's brightness as the local threshold).

    A positive click adds the connected pixels around it at least as object-like as itself
    (as bright, for an object brighter than its surroundings), or as the local Otsu split
    where that is laxer. A negative click inside the mask removes the touching blob under it
    (:func:`_drop_touching`) or else the connected object pixels around it at most as
    object-like as itself (or the split). Around: within :data:`CORRECTION_REACH` times the
    click's depth (its distance to the mask for a positive click, to the mask's edge for a
    negative one), :data:`MIN_REACH` to :data:`MAX_REACH` pixels. After a negative click, the
    parts holding a positive click (``held`` or any of ``clicks``) stay; without one, the
    largest. Holes are filled; a negative click's own pixel is never in the answer."""
    shape = mask.shape
    out = mask.copy()
    if not out.any():
        return out
    bright = _brighter_than_around(work, out)
    positives = [c.pixel(shape) for c in (*held, *clicks) if c.positive]
    for click in clicks:
        row, col = click.pixel(shape)
        r0, r1 = max(0, row - MAX_REACH), min(shape[0], row + MAX_REACH + 1)
        c0, c1 = max(0, col - MAX_REACH), min(shape[1], col + MAX_REACH + 1)
        at = (row - r0, col - c0)
        part = out[r0:r1, c0:c1]
        if not click.positive and part[at] and _drop_touching(out, (row, col), positives):
            continue
        other = ~part if click.positive else part
        depth = ndi.distance_transform_edt(np.pad(other, 1))[1:-1, 1:-1][at]
        reach = min(float(MAX_REACH), max(MIN_REACH, CORRECTION_REACH * float(depth)))
        rows, cols = np.ogrid[r0 - row:r1 - row, c0 - col:c1 - col]
        near = rows ** 2 + cols ** 2 <= reach ** 2
        g = _grey(work[r0:r1, c0:c1]) * (1.0 if bright else -1.0)
        # the click's own value, or the local split where that is laxer (a click in a noisy
        # object is not its darkest pixel)
        split = _otsu(g[near])
        if click.positive:
            region = near & (g >= min(g[at], split))
        else:
            region = near & (g <= max(g[at], split)) & part
        labels, _ = ndi.label(region, structure=_EIGHT)
        region = labels == labels[at] if labels[at] else np.zeros_like(region)
        region[at] = True
        if click.positive:
            out[r0:r1, c0:c1] |= region
            continue
        out[r0:r1, c0:c1] &= ~region
        box = _bounds(out)
        if box is None:
            break
        labels, n = ndi.label(out[box], structure=_EIGHT)
        if n > 1:
            keep = {int(labels[r - box[0].start, c - box[1].start]) for r, c in positives
                    if box[0].start <= r < box[0].stop and box[1].start <= c < box[1].stop}
            keep -= {0}
            if not keep:
                keep = {int(np.argmax(np.bincount(labels.ravel())[1:])) + 1}
            out[box] = np.isin(labels, list(keep))
    box = _bounds(out)
    if box is not None:  # a hole is inside the object's box (the whole image costs 140 ms)
        out[box] = ndi.binary_fill_holes(out[box])
    for click in clicks:
        if not click.positive:
            out[click.pixel(shape)] = False
    return out


def _bounds(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a bool mask's pixels (None when it has none)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _drop_touching(mask: np.ndarray, at: tuple[int, int],
                   positives: list[tuple[int, int]]) -> bool:
    """Removes (in place) the blob under ``at`` when the mask is touching blobs
    (:func:`~label_assistant.assist.pre.split_touching`) and no positive click holds that
    blob; whether it did."""
    box = _bounds(mask)
    if box is None or mask[box].sum() > MAX_SPLIT:
        return False
    r0, c0 = box[0].start, box[1].start
    instances = split_touching(mask[box])
    blob = int(instances[_nearest(instances, (at[0] - r0, at[1] - c0))])
    held = {int(instances[_nearest(instances, (r - r0, c - c0))]) for r, c in positives
            if box[0].start <= r < box[0].stop and box[1].start <= c < box[1].stop}
    if blob == 0 or blob in held or instances.max() < 2:
        return False
    mask[box] &= instances != blob
    return True


def _grey(work: np.ndarray) -> np.ndarray:
    """The working image's grey values (channel mean), smoothed (Gaussian, sigma 1)."""
    grey = work.astype(np.float32)
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    return cv2.GaussianBlur(grey, (0, 0), 1.0)


def _brighter_than_around(work: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the object ``mask`` is brighter than the 3-pixel ring around it (True
    without a ring)."""
    rows, cols = _bounds(mask)  # type: ignore[misc]
    r0, r1 = max(0, rows.start - 4), rows.stop + 4
    c0, c1 = max(0, cols.start - 4), cols.stop + 4
    part, grey = mask[r0:r1, c0:c1], _grey(work[r0:r1, c0:c1])
    ring = ndi.binary_dilation(part, iterations=3) & ~part
    return not ring.any() or float(grey[part].mean()) >= float(grey[ring].mean())


def extreme_points_to_mask(work: np.ndarray, points: tuple[Click, ...] | list[Click],
                           probabilities: Probabilities = None, cls: int = 1, *,
                           clicks: tuple[Click, ...] = (), max_side: int = MAX_SIDE,
                           iterations: int = ITERATIONS) -> Segmentation:
    """Four extreme points (DEXTR's input): their box, the points as definite foreground."""
    points = tuple(Click(p.x, p.y, True) for p in points)
    box = box_of_extreme_points(points)
    found = box_to_mask(work, box, probabilities, cls, clicks=points + tuple(clicks),
                        max_side=max_side, iterations=iterations)
    return Segmentation(found.mask, f"extreme-points+{found.method}", found.reason)


# --- a single click -----------------------------------------------------------------------


def object_under_click(work: np.ndarray, click: Click,
                       probabilities: Probabilities = None, cls: int = 1) -> Segmentation:
    """The model's connected object of class ``cls`` under the click (probability >= 0.5),
    or, without probabilities or where the model sees no such object, :func:`grow_region`."""
    shape = work.shape[:2]
    source = class_source(probabilities, cls)
    row, col = click.pixel(shape)
    if source is not None and source.read(row, row + 1, col, col + 1)[cls, 0, 0] >= 0.5:
        mask = _grown(shape, (row, col), lambda window: source.read(
            window[0].start, window[0].stop, window[1].start, window[1].stop)[cls] >= 0.5)
        return Segmentation(mask, "model-object")
    return Segmentation(grow_region(work, click), "region-grow")


def grow_region(work: np.ndarray, click: Click) -> np.ndarray:
    """The click's side of an Otsu threshold of the (smoothed) grey image in a window around
    it, as the connected region holding the click, holes filled; the window (first
    :data:`GROW_START` pixels) doubles while the region reaches its edge."""
    shape = work.shape[:2]
    row, col = click.pixel(shape)

    def side(window: tuple[slice, slice]) -> np.ndarray:
        part = _grey(work[window])
        threshold = _otsu(part)
        bright = part[row - window[0].start, col - window[1].start] > threshold
        return part > threshold if bright else part <= threshold

    return _grown(shape, (row, col), side, split=True)


def _grown(shape: tuple[int, int], seed: tuple[int, int], select,
           split: bool = False) -> np.ndarray:
    """The connected region of ``select(window)`` holding ``seed``, in windows that double
    from :data:`GROW_START` while the region touches an edge that is not the image's."""
    row, col = seed
    half = GROW_START // 2
    while True:
        r0, r1 = max(0, row - half), min(shape[0], row + half + 1)
        c0, c1 = max(0, col - half), min(shape[1], col + half + 1)
        window = (slice(r0, r1), slice(c0, c1))
        labels, _ = ndi.label(select(window), structure=_EIGHT)
        region = labels == labels[row - r0, col - c0]
        if labels[row - r0, col - c0] == 0:
            region[:] = False
        touches = ((region[0].any() and r0 > 0) or (region[-1].any() and r1 < shape[0])
                   or (region[:, 0].any() and c0 > 0) or (region[:, -1].any() and c1 < shape[1]))
        if not touches or 2 * half >= MAX_GROW:
            break
        half *= 2
    region = ndi.binary_fill_holes(region)
    if split and GROW_SPLIT_DEPTH and region.sum() <= MAX_SPLIT:
        # touching blobs of one brightness: the one clicked (a larger region is no object:
        # the click was on the background's side, nothing to split)
        region = _instance_at(split_touching(region, GROW_SPLIT_DEPTH), (row - r0, col - c0))
    out = np.zeros(shape, dtype=bool)
    out[window] = region
    return out


def _nearest(instances: np.ndarray, at: tuple[int, int]) -> tuple[int, int]:
    """``at``, or the nearest pixel of an instance when ``at`` is on no instance (a line
    between them)."""
    if instances[at] != 0 or not instances.any():
        return at
    _, (rows, cols) = ndi.distance_transform_edt(instances == 0, return_indices=True)
    return int(rows[at]), int(cols[at])


def _instance_at(instances: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The instance at ``at`` (the nearest one when ``at`` is on a line between them)."""
    at = _nearest(instances, at)
    return (instances == instances[at]) & (instances > 0)


# --- the pieces -----------------------------------------------------------------------------


def _otsu(values: np.ndarray) -> float:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    scaled = np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    threshold, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return lo + float(threshold) * (hi - lo) / 255.0


def ellipse_guess(box: np.ndarray, scales: Sequence[float] = ELLIPSE_SCALES
                  ) -> np.ndarray:
    """A first guess of the object in a box crop (``(h, w)`` or ``(h, w, C)``; bool): an
    ellipse centred in the box, as nuclei and cells sit in the box drawn around them, its
    size the box's inscribed ellipse times the one of ``scales`` whose inside
    differs most in mean grey value from a ring just outside it (:data:`ELLIPSE_RING` times
    its size), so that a loose box gets a smaller ellipse.

    GrabCut keeps close to its first guess. Box IoU over every object of the shared DSB 2018
    images (7,913 nuclei; ``benchmarks/bench_interactive.py guesses``, ``--box-margin
    0.25``), tight boxes / boxes 25% wider on each side: this guess 0.804 / 0.735; the
    inscribed ellipse itself 0.824 / 0.441; an Otsu split of the box (:func:`intensity_guess`,
    the earlier guess, which takes the bright half of an unevenly stained nucleus or the
    halo around a bright-field one) 0.633 / 0.701."""
    gray = _box_grey(box)
    height, width = gray.shape
    rows = (np.arange(height) - (height - 1) / 2) / (height / 2)
    cols = (np.arange(width) - (width - 1) / 2) / (width / 2)
    radius = np.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)  # 1 on the inscribed ellipse
    best, best_score = float(scales[0]), -1.0
    for scale in scales:
        inside = radius <= scale
        ring = (radius > scale) & (radius <= scale * ELLIPSE_RING)
        score = abs(float(gray[inside].mean()) - float(gray[ring].mean())) \
            if inside.any() and ring.any() else 0.0
        if score > best_score:
            best, best_score = float(scale), score
    return radius <= best


def _box_grey(box: np.ndarray) -> np.ndarray:
    """A box crop's grey values, smoothed (sigma 1) when it is 3 pixels or more."""
    gray = box.astype(np.float32)
    gray = gray.mean(axis=2) if gray.ndim == 3 else gray
    return cv2.GaussianBlur(gray, (0, 0), 1.0) if min(gray.shape) >= 3 else gray


def intensity_guess(box: np.ndarray) -> np.ndarray:
    """A first guess of the object in a box crop (``(h, w)`` or ``(h, w, C)``): the side of an
    Otsu threshold (of the smoothed grey values) that touches the box's border less (the
    object is inside its box, the background reaches the border)."""
    gray = _box_grey(box)
    bright = gray > _otsu(gray)
    border = np.ones(gray.shape, dtype=bool)
    border[1:-1, 1:-1] = False
    return bright if bright[border].mean() <= 0.5 else ~bright


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _mark_clicks(seeds: np.ndarray, window: Window, clicks: tuple[Click, ...]) -> None:
    """Positive clicks: definite foreground disks; negative: definite background."""
    radius = max(1, int(round(CLICK_RADIUS * window.scale)))
    for click in clicks:
        row, col = window.point(click.x, click.y)
        value = cv2.GC_FGD if click.positive else cv2.GC_BGD
        cv2.circle(seeds, (col, row), radius, int(value), thickness=-1)


def _grabcut(crop: np.ndarray, seeds: np.ndarray, iterations: int) -> np.ndarray:
    """GrabCut on a crop from seed labels; the bool foreground (seeds alone when GrabCut
    can't run: no probable or definite background, or no foreground)."""
    fg = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if not fg.any():
        return fg
    if fg.all():  # GrabCut needs some background: the crop's border is probably background
        seeds = seeds.copy()
        border = np.ones(seeds.shape, dtype=bool)
        border[1:-1, 1:-1] = False
        seeds[border & (seeds != cv2.GC_FGD)] = cv2.GC_PR_BGD
        if (seeds == cv2.GC_FGD).all():
            return fg
    mask = seeds.copy()
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop, mask, None, background, foreground, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # too few samples for a colour model: keep the seeds
        return fg
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _object(part: np.ndarray, window: Window, clicks: tuple[Click, ...],
            box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Of a window's mask (full resolution), the connected parts holding a positive click;
    without one, the part that fills the box (image pixels ``r0, r1, c0, c1``) best (IoU with
    the box); holes filled. A negative click inside it removes the blob under it (the mask's
    touching blobs split as in :func:`~label_assistant.assist.pre.split_touching`) unless a
    positive click holds that blob (without one, the box holds the blob that fills it best);
    its own pixel is never in it."""
    labels, n = ndi.label(part, structure=_EIGHT)
    if n == 0:
        return part
    height, width = part.shape

    def local(click: Click) -> tuple[int, int] | None:
        row, col = int(click.y) - window.r0, int(click.x) - window.c0
        return (row, col) if 0 <= row < height and 0 <= col < width else None

    in_box = None
    if box is not None:
        in_box = (slice(box[0] - window.r0, box[1] - window.r0),
                  slice(box[2] - window.c0, box[3] - window.c0))
    keep = {int(labels[at]) for c in clicks if c.positive and (at := local(c))} - {0}
    if in_box is not None:
        # the box's object stays: a positive click on a part GrabCut left apart adds that
        # part, it does not replace the object (it did: a click outside the first guess
        # answered with the click's own disk, IoU 0.47 -> 0.04 on a DSB nucleus)
        keep.add(_fills_best(labels, n, in_box))
    if not keep:
        return np.zeros_like(part)
    out = ndi.binary_fill_holes(np.isin(labels, list(keep)))
    negatives = [at for c in clicks if not c.positive and (at := local(c)) and out[at]]
    if negatives:  # a negative click on a blob touching the object takes that blob away
        instances = split_touching(out)
        held = {int(instances[_nearest(instances, at)])
                for c in clicks if c.positive and (at := local(c))}
        if not held and in_box is not None:  # the box holds the blob that fills it best
            held = {_fills_best(instances, int(instances.max()), in_box)}
        drop = {int(instances[at]) for at in negatives} - held - {0}
        if drop:
            out &= ~np.isin(instances, list(drop))
        for at in negatives:
            out[at] = False
    return out


def _fills_best(labels: np.ndarray, n: int, box: tuple[slice, slice]) -> int:
    """The label (1..n) whose region has the highest IoU with the box (a window slice)."""
    inside = np.bincount(labels[box].ravel(), minlength=n + 1)[1:]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    area = labels[box].size
    return int(np.argmax(inside / np.maximum(sizes + area - inside, 1))) + 1


def _nothing(shape: tuple[int, int], reason: str) -> Segmentation:
    return Segmentation(np.zeros(shape, dtype=bool), "none", reason)


def _result(mask: np.ndarray, method: str, reason: str) -> Segmentation:
    return Segmentation(mask, method, None if mask.any() else reason)

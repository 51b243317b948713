"""A model's class probabilities as an interactive prompt reads them: window by window.

:mod:`.segment` reads the probabilities of the pixels a prompt needs (a box, a window
around a click) through :meth:`ProbabilitySource.read`, never the whole image. Two sources:

- :class:`ArrayProbabilities`: a ``(K+1, H, W)`` array computed beforehand (tests, a model's
  pre-label);
- :class:`WindowedProbabilities`: the model runs only on the windows read so far (each
  missing window widened to at least :data:`MIN_SIDE` pixels and by :data:`CONTEXT` pixels
  of image context on each side), and keeps what it computed for the next prompt on the
  same image. ``predict`` is the caller's way to run the model on a crop of the model input
  (the service passes :meth:`~label_assistant.model.predictor.Predictor.predict`, the one
  way to run a version); pure numpy otherwise.

A window's probabilities come from a crop with :data:`CONTEXT` pixels around it, not from
the whole image's tiles, so they are close to, not equal to, the pre-label's
(``benchmarks/bench_interactive.py windows`` measures how close).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

#: Pixels of image context the model sees on each side of the window it predicts.
CONTEXT = 32
#: A window the model runs on is at least this many pixels on each side (clipped to the
#: image), so that the growing windows of one prompt run the model once.
MIN_SIDE = 64


class ModelRunError(RuntimeError):
    """The model failed on a window (it raised, or gave an answer of the wrong shape)."""


class ProbabilitySource(Protocol):
    """Class probabilities of one image, read by window."""

    @property
    def classes(self) -> int:
        """K+1: background and the K classes."""

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """float32 ``(K+1, r1-r0, c1-c0)``: the probabilities of rows ``r0:r1``, columns
        ``c0:c1`` (within the image)."""


class ArrayProbabilities:
    """A ``(K+1, H, W)`` array of probabilities as a :class:`ProbabilitySource`."""

    def __init__(self, array: np.ndarray) -> None:
        if array.ndim != 3:
            raise ValueError(f"probabilities must be (K+1, H, W), got shape {array.shape}")
        self.array = array

    @property
    def classes(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self.array[:, r0:r1, c0:c1]

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


class WindowedProbabilities:
    """Probabilities computed window by window, kept for the next read (thread-safe).

    ``x``: the model input, float32 ``(C, H, W)``; ``predict``: a crop of it (``(C, h, w)``)
    -> its probabilities ``(classes, h, w)``. :attr:`nbytes` counts the input and the full
    ``(classes, H, W)`` array from the start, so a cache bounded in bytes stays bounded as
    windows are filled in. :attr:`runs` and :attr:`pixels_run` count the model's runs and
    the crop pixels they covered.
    """

    def __init__(self, x: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                 classes: int, *, context: int = CONTEXT, min_side: int = MIN_SIDE) -> None:
        if x.ndim != 3:
            raise ValueError(f"the model input must be (C, H, W), got shape {x.shape}")
        self.x = x
        self.predict = predict
        self._classes = int(classes)
        self.context, self.min_side = int(context), int(min_side)
        height, width = x.shape[1:]
        self._array: np.ndarray | None = None  # allocated at the first read
        self.known = np.zeros((height, width), dtype=bool)
        self._lock = threading.Lock()
        self.runs = self.pixels_run = 0

    @property
    def classes(self) -> int:
        return self._classes

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])

    @property
    def nbytes(self) -> int:
        height, width = self.shape
        return int(self.x.nbytes + self.known.nbytes + 4 * self._classes * height * width)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        height, width = self.shape
        r0, r1 = max(0, r0), min(height, r1)
        c0, c1 = max(0, c0), min(width, c1)
        with self._lock:
            if self._array is None:
                self._array = np.zeros((self._classes, height, width), np.float32)
            missing = ~self.known[r0:r1, c0:c1]
            if missing.any():
                rows, cols = np.nonzero(missing.any(axis=1))[0], np.nonzero(missing.any(axis=0))[0]
                self._fill(r0 + int(rows[0]), r0 + int(rows[-1]) + 1,
                           c0 + int(cols[0]), c0 + int(cols[-1]) + 1)
            return self._array[:, r0:r1, c0:c1]

    def _fill(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """Run the model on rows ``r0:r1``, columns ``c0:c1`` (at least ``min_side``) with
        ``context`` around; keep the probabilities of the pixels not known yet."""
        height, width = self.shape
        r0, r1 = _at_least(r0, r1, self.min_side, height)
        c0, c1 = _at_least(c0, c1, self.min_side, width)
        a0, a1 = max(0, r0 - self.context), min(height, r1 + self.context)
        b0, b1 = max(0, c0 - self.context), min(width, c1 + self.context)
        crop = np.ascontiguousarray(self.x[:, a0:a1, b0:b1])
        try:
            probabilities = np.asarray(self.predict(crop), dtype=np.float32)
        except Exception as error:  # whatever the model raises, the caller needs one kind
            raise ModelRunError(f"the model failed on a {a1 - a0}x{b1 - b0} window: "
                                f"{type(error).__name__}: {error}") from error
        expected = (self._classes, a1 - a0, b1 - b0)
        if probabilities.shape != expected:
            raise ModelRunError(f"the model gave probabilities of shape "
                                f"{probabilities.shape} for a crop that needs {expected}")
        self.runs += 1
        self.pixels_run += (a1 - a0) * (b1 - b0)
        inner = probabilities[:, r0 - a0:r1 - a0, c0 - b0:c1 - b0]
        new = ~self.known[r0:r1, c0:c1]
        target = self._array[:, r0:r1, c0:c1]  # type: ignore[index]
        target[:, new] = inner[:, new]
        self.known[r0:r1, c0:c1] = True


def _at_least(lo: int, hi: int, side: int, size: int) -> tuple[int, int]:
    """``lo:hi`` widened about its centre to ``side`` pixels, shifted to fit ``0:size``."""
    if hi - lo >= side or size <= side:
        return (lo, hi) if size > side else (0, size)
    lo = max(0, (lo + hi - side) // 2)
    hi = min(size, lo + side)
    return hi - side, hi


def as_source(probabilities: np.ndarray | ProbabilitySource | None
              ) -> ProbabilitySource | None:
    """An array of probabilities as an :class:`ArrayProbabilities`; a source or None as is."""
    if probabilities is None or not isinstance(probabilities, np.ndarray):
        return probabilities
    return ArrayProbabilities(probabilities)


class Shifted:
    """A window ``r0:r0+H, c0:c0+W`` of a source, as a source of its own (an object's
    crop of a larger image)."""

    def __init__(self, source: ProbabilitySource, r0: int, c0: int, shape: tuple[int, int]
                 ) -> None:
        self.source, self.r0, self.c0 = source, int(r0), int(c0)
        self._shape = (int(shape[0]), int(shape[1]))

    @property
    def classes(self) -> int:
        return self.source.classes

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self.source.read(self.r0 + r0, self.r0 + r1, self.c0 + c0, self.c0 + c1)

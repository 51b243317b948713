"""What an annotator gives to point at one object, in image pixels: a box, clicks, or four
extreme points (:class:`Prompt`). Coordinates are continuous pixel positions with (0, 0) the
image's top-left corner; pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``."""

from __future__ import annotations

from dataclasses import dataclass


class PromptError(ValueError):
    """A prompt that can't be used on this image (the message says why)."""


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: ``x0 <= x1``, ``y0 <= y1`` (left, top, right, bottom edges)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (self.x0 <= self.x1 and self.y0 <= self.y1):
            raise PromptError(f"a box needs x0 <= x1 and y0 <= y1, got {self}")

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def pixels(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(r0, r1, c0, c1)``: the pixel rows ``r0:r1`` and columns ``c0:c1`` whose centres
        are inside the box, clipped to an image of ``shape`` (at least one pixel when the box
        touches the image)."""
        height, width = shape
        r0, r1 = _span(self.y0, self.y1, height)
        c0, c1 = _span(self.x0, self.x1, width)
        return r0, r1, c0, c1

    def contains(self, click: Click) -> bool:
        return self.x0 <= click.x <= self.x1 and self.y0 <= click.y <= self.y1


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    a = min(max(int(round(lo)), 0), size - 1)
    b = min(max(int(round(hi)), a + 1), size)
    return a, b


@dataclass(frozen=True)
class Click:
    """A click at ``(x, y)`` pixels: positive = this is the object, negative = it is not."""

    x: float
    y: float
    positive: bool = True

    def pixel(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(row, col)`` of the pixel under the click, clipped to an image of ``shape``."""
        height, width = shape
        return (min(max(int(self.y), 0), height - 1), min(max(int(self.x), 0), width - 1))


@dataclass(frozen=True)
class Prompt:
    """One object's prompt: an optional box, clicks (all accumulated so far, in order), and
    ``extreme``: four extreme points (left-, right-, top-, bottom-most object pixels) when
    the box was made from them (:func:`box_of_extreme_points`)."""

    box: Box | None = None
    clicks: tuple[Click, ...] = ()
    extreme: tuple[Click, ...] = ()

    @property
    def positives(self) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if c.positive)

    @property
    def negatives(self) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if not c.positive)

    @property
    def empty(self) -> bool:
        return self.box is None and not self.positives and not self.extreme


def box_of_extreme_points(points: tuple[Click, ...] | list[Click], pad: float = 1.0) -> Box:
    """The box four extreme points span (DEXTR's input), ``pad`` pixels wider on each side:
    the points lie on the object, so its pixels reach the points' outer edges."""
    if len(points) != 4:
        raise PromptError(f"extreme points are exactly 4 points, got {len(points)}")
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    return Box(min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)

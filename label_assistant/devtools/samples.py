"""Generated sample data for the demos: fluorescence-like nuclei in time-lapse sequences.

Each frame comes with its true instance map, so a demo can play the annotator (and the
tests can check pre-labels). Nothing is downloaded: the images are drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One generated frame: ``image`` as a camera gives it (uint16) and its true objects."""

    name: str  # "seqA_t03"
    sequence: str  # "seqA": frames of one sequence are alike (the point of sequence-aware ranking)
    frame: int
    image: np.ndarray  # (H, W) uint16
    instances: np.ndarray  # (H, W) int32, 0 = background, 1..N = nuclei


def nuclei_sequence(name: str, frames: int, seed: int, size: int = 256,
                    count: int = 14) -> list[Sample]:
    """``frames`` frames of ``count`` drifting bright nuclei on a dim, unevenly lit background.

    A nucleus is a Gaussian spot; its true extent is the disc of radius ``r`` where the spot
    falls to ~38% of its peak. Later nuclei cover earlier ones where they overlap.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, size - 20, (count, 2))
    radii = rng.uniform(6, 11, count)
    drift = rng.normal(0, 1.5, (count, 2))
    yy, xx = np.mgrid[:size, :size]
    samples = []
    for t in range(frames):
        image = 300 + 200 * (xx / size)  # illumination gradient
        instances = np.zeros((size, size), np.int32)
        for i, ((cy, cx), r, (dy, dx)) in enumerate(zip(centres, radii, drift, strict=True)):
            d2 = (yy - cy - t * dy) ** 2 + (xx - cx - t * dx) ** 2
            image = image + 1800 * np.exp(-d2 / (2 * (r / 1.4) ** 2))
            instances[d2 <= r * r] = i + 1
        image = rng.poisson(image).astype(np.uint16)
        samples.append(Sample(f"{name}_t{t:02d}", name, t, image, instances))
    return samples


def nuclei_image(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One ``size`` x ``size`` uint8 fluorescence-like image of bright ellipses (10-30 pixel
    radii, one per 15,000 pixels, at least 8) on a dark noisy background, and its instance
    map; cheap at any size (the interactive benchmark and capture use 512 and 2048)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), 30.0)
    instances = np.zeros((size, size), np.int32)
    for i in range(1, 1 + max(8, size * size // 15000)):
        cy, cx = rng.uniform(0.05, 0.95, 2) * size
        ry, rx = rng.uniform(10, 30, 2)
        inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) & (instances == 0)
        instances[inside] = i
        image[inside] = rng.uniform(120, 220)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    return image, instances


def to_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Percentile-stretched 8-bit copy, for a browser (Label Studio shows 8-bit images)."""
    lo, hi = np.percentile(image, [low, high])
    scaled = (image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)

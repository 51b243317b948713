"""Splitting touching objects (``label_assistant.assist.pre.split_touching``): its markers,
the h-maxima of the distance transform, found component by component on each component's box
(``deep_maxima``) against ``skimage.morphology.h_maxima`` over the whole image (before the
change: it ran the reconstruction over every pixel, background included, and took 70% of
Otsu's pre-label of a 1024 x 1024 DSB image).

Both ways run on the same masks, in one run: the ground-truth foreground of DSB 2018 images
(``../shared/data/dsb2018_stage1_train_subset``) and Otsu's foreground of the same images;
their maxima must be identical. ``split_s`` is the whole split with the new markers.

    python benchmarks/bench_split_touching.py [--images 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, dsb_folders, print_table, write_results  # noqa: E402

EIGHT = np.ones((3, 3), dtype=bool)
SPLIT_DEPTH = 2.0  # split_touching's default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="DSB images sampled (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")

    from skimage.morphology import h_maxima

    from label_assistant.assist.pre import deep_maxima, otsu_prelabel, split_touching
    from label_assistant.images import read_image

    images, masks = dsb_folders(100_000, RESULTS / "split_touching_data")
    names = sorted(p.name for p in images.iterdir())
    rng = np.random.default_rng(args.seed)
    chosen = [names[i] for i in sorted(rng.choice(len(names), min(args.images, len(names)),
                                                  replace=False))]
    rows = []
    for source in ("ground truth", "otsu"):
        whole, boxes, split, identical, pixels = [], [], [], 0, 0
        for name in chosen:
            if source == "ground truth":
                mask = np.asarray(read_image(masks / name)) > 0
                mask = mask.any(-1) if mask.ndim == 3 else mask
            else:
                mask = np.asarray(otsu_prelabel(read_image(images / name)).label_map) == 1
            pixels += mask.size
            distance = ndi.distance_transform_edt(mask)
            components, count = ndi.label(mask, structure=EIGHT)
            started = time.perf_counter()
            a = h_maxima(distance, SPLIT_DEPTH).astype(bool) & mask
            whole.append(time.perf_counter() - started)
            started = time.perf_counter()
            b = deep_maxima(distance, components, count, SPLIT_DEPTH)
            boxes.append(time.perf_counter() - started)
            started = time.perf_counter()
            split_touching(mask, SPLIT_DEPTH)
            split.append(time.perf_counter() - started)
            identical += int(np.array_equal(a, b))
        rows.append({"masks": source, "images": len(chosen), "identical": identical,
                     "whole_image_s": round(sum(whole), 3), "per_component_s": round(sum(boxes), 3),
                     "ratio": round(sum(whole) / sum(boxes), 2),
                     "median_whole_ms": round(1000 * statistics.median(whole), 1),
                     "median_per_component_ms": round(1000 * statistics.median(boxes), 1),
                     "split_s": round(sum(split), 3),
                     "megapixels": round(pixels / 1e6, 1)})
    path = write_results("bench_split_touching", rows, {"seed": args.seed})
    print_table(rows, list(rows[0]))
    print(f"written to {path}")
    return 0 if all(r["identical"] == r["images"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

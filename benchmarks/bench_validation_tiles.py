"""How much of a validation image runs, now that only the tiles over labeled pixels do?

Validation (``model.train.evaluate``, ``model.round.challenge``) predicts each held-out
annotation with ``where`` = its labeled pixels (``model.inference.predict_proba``): tiles
holding none of them are skipped, with the same predictions on the labeled pixels. A tile
costs the same forward pass whatever it holds, so the share of tiles that run is the share of
validation time left. Counted (no timing: deterministic) on the DSB 2018 images of at least
``--min-side`` pixels, for each oracle annotation of the simulator, at the default inference
tiling (512, overlap 64).

    .venv/bin/python benchmarks/bench_validation_tiles.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, shared_data, write_results  # noqa: E402

sys.path.insert(0, str(ROOT))


def tiles_run(where: np.ndarray, tile: int, overlap: int) -> tuple[int, int]:
    """(tiles that run, all tiles) for a labeled-pixel mask, as predict_proba picks them."""
    from label_assistant.model.inference import round_up, tile_starts

    height, width = where.shape
    tile_h, tile_w = min(tile, round_up(height)), min(tile, round_up(width))
    ys = tile_starts(height, tile_h, min(overlap, tile_h - 1))
    xs = tile_starts(width, tile_w, min(overlap, tile_w - 1))
    run = sum(bool(where[y:y + tile_h, x:x + tile_w].any()) for y in ys for x in xs)
    return run, len(ys) * len(xs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-side", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    args = parser.parse_args()
    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        print("skipped: ../shared/data/dsb2018_stage1_train_subset not found")
        return 0
    from label_assistant.datasets import load_example
    from label_assistant.model.sparsify import sparsify
    from label_assistant.simulate.oracle import RING_WIDTH, border_annotation

    manifest = json.loads((root / "manifest.json").read_text())
    items = [i for i in manifest["images"] if min(i["height"], i["width"]) >= args.min_side]
    counts: dict[str, list[int]] = {k: [0, 0] for k in ("dense", "sparse", "ring", "border")}
    for index, item in enumerate(items):
        example = load_example(root / item["image_file"], root / item["mask_file"], "instance")
        maps = {
            "dense": example.label_map,
            "sparse": sparsify(example.label_map, 0.1, band=3, seed=index),
            "ring": sparsify(example.label_map, 0.1, band=RING_WIDTH, seed=index),
            "border": border_annotation(example),
        }
        for name, label_map in maps.items():
            run, total = tiles_run(label_map != 255, args.tile, args.overlap)
            counts[name][0] += run
            counts[name][1] += total
    rows = [{"oracle": k, "images": len(items), "tiles_run": run, "tiles": total,
             "share_run": run / total if total else None} for k, (run, total) in counts.items()]
    path = write_results("bench_validation_tiles", rows, extra={"tile": args.tile,
                                                                "overlap": args.overlap})
    print_table(rows, ["oracle", "images", "tiles_run", "tiles", "share_run"])
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

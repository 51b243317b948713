"""How long does a model version take over real images at each inference tile side?

Tiles overlap (64 px at 512), so an image a little larger than one tile costs several: a
1024 x 1024 image is 9 tiles of 512 (2.25x its pixels), a 603 x 1272 one is 6. A larger tile
runs such images in one or two passes. Timed here: an untrained Unet-resnet18 (the time does
not depend on the weights) predicting, as ``Predictor.label_map`` does, the first 2 DSB 2018
images of each experiment group (256 to 1272 px; as many as the test split of
``bench_selection_dsb.py`` holds), at each tile side, the sides taking turns in each repeat,
on one torch thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_inference_tile.py [--tiles 512,1024]

Writes ``benchmarks/results/bench_inference_tile.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, shared_data, write_results  # noqa: E402

sys.path.insert(0, str(ROOT))


def group_images(per_group: int) -> list:
    """``per_group`` images of each experiment group of the DSB subset, as read."""
    from label_assistant.images import read_image

    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        raise SystemExit("skipped: ../shared/data/dsb2018_stage1_train_subset not found")
    taken: dict[str, int] = {}
    images = []
    for item in json.loads((root / "manifest.json").read_text())["images"]:
        if taken.get(item["group"], 0) < per_group:
            taken[item["group"]] = taken.get(item["group"], 0) + 1
            images.append(read_image(root / item["image_file"]))
    return images


def main() -> int:
    import torch

    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.model.predictor import Predictor, Tiling

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="512,1024,1280", help="tile sides to compare")
    parser.add_argument("--per-group", type=int, default=2, help="images per group")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tiles = [int(t) for t in args.tiles.split(",")]
    torch.set_num_threads(1)
    images = group_images(args.per_group)
    classes = ["background", "nucleus"]
    model = create_model(ModelSpec(arch="Unet", encoder="resnet18", in_channels=3,
                                   classes=tuple(classes))).eval()
    predictors = {t: Predictor(model, version="timed", class_names=classes, tiling=Tiling(t),
                               device="cpu") for t in tiles}
    inputs = [predictors[tiles[0]].model_input(i) for i in images]
    seconds: dict[int, list[float]] = {t: [] for t in tiles}
    for _ in range(args.repeats):
        for t in tiles:
            started = time.perf_counter()
            for x in inputs:
                predictors[t].label_map(x)
            seconds[t].append(time.perf_counter() - started)
    base = min(seconds[tiles[0]])
    rows = [{"tile": t, "images": len(inputs), "seconds_best": round(min(s), 2),
             "seconds_all": [round(v, 2) for v in s],
             "speed_vs_first": round(base / min(s), 2)} for t, s in seconds.items()]
    print_table(rows, ["tile", "images", "seconds_best", "speed_vs_first"])
    sizes = sorted({x.shape[1:] for x in inputs})
    print(write_results("bench_inference_tile", rows, {"sizes": [list(s) for s in sizes],
                                                        "threads": 1}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One process against ``--nproc 2`` (DistributedDataParallel, gloo on CPU): wall time and
validation Dice with the same seed and the same total batch.

Each run is ``label-assistant train IMAGES LABELS --workdir <fresh> --seed S --nproc N``
(a fresh work directory, so each trains from scratch against Otsu), timed from the start of
the command to its end (torchrun's start-up included); the validation mean Dice (all
classes) and the training seconds come from the registered version's record.

Two cases:

- ``tiny``: the data and schedule of tests/test_distributed.py (8 generated nuclei images
  of 96 pixels, 5 epochs of 5 steps of 4 tiles of 64 pixels): the spread of its Dice over seeds and
  between the two modes is where that test's tolerance comes from;
- ``dsb``: 12 images of the 2018 Data Science Bowl subset (``../shared/data``), the CPU
  default tile (128) and batch (8), 5 epochs of 8 steps.

Every process runs ``--threads`` OpenMP threads (default 1: what torchrun gives each rank;
a single process's default two threads starve when the shared cores are oversubscribed:
348 s against 79 s for the two processes in a first run, load average about 10). On this
2-core CPU shared with other work, two gloo processes are a correctness check, not a
speed-up; every process also draws the whole batch's tiles.

    nice -n 15 .venv/bin/python benchmarks/bench_ddp.py [--cases tiny dsb] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, print_table, shared_data, write_results
from PIL import Image

from label_assistant.devtools.samples import nuclei_image

#: The cases: data maker, number of images, and the training options.
CASES: dict[str, dict[str, Any]] = {
    "tiny": {"images": 8, "options": ["--epochs", "5", "--steps-per-epoch", "5",
                                      "--batch-size", "4", "--tile", "64"]},
    "dsb": {"images": 12, "options": ["--epochs", "5", "--steps-per-epoch", "8",
                                      "--batch-size", "8", "--tile", "128"]},
}


def write_tiny(root: Path, n: int) -> tuple[Path, Path, str]:
    """tests/test_distributed.py's data: generated nuclei, the left quarter unlabeled."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n):
        image, instances = nuclei_image(96, seed=i)
        label = (instances > 0).astype(np.uint8)
        label[:, :24] = 255
        Image.fromarray(image).save(images / f"n{i}.png")
        Image.fromarray(label).save(labels / f"n{i}.png")
    return images, labels, "labelmap"


def write_dsb(root: Path, n: int) -> tuple[Path, Path, str]:
    """The first ``n`` DSB images of at most 256 pixels (sorted ids), with instance masks."""
    data = shared_data("dsb2018_stage1_train_subset")
    if data is None:
        raise SystemExit("../shared/data/dsb2018_stage1_train_subset not found")
    manifest = json.loads((data / "manifest.json").read_text())
    ids = sorted(i["id"] for i in manifest["images"] if max(i["height"], i["width"]) <= 256)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for image_id in ids[:n]:
        (images / f"{image_id}.png").symlink_to(data / "images" / f"{image_id}.png")
        (labels / f"{image_id}.png").symlink_to(data / "masks" / f"{image_id}.png")
    return images, labels, "instance"


def run_once(images: Path, labels: Path, mask_type: str, options: list[str], seed: int,
             nproc: int, work: Path, threads: int) -> dict[str, Any]:
    record = work / "version.json"
    command = [sys.executable, "-m", "label_assistant.cli", "train", str(images), str(labels),
               "--workdir", str(work), "--mask-type", mask_type, "--device", "cpu",
               "--seed", str(seed), "--nproc", str(nproc), *options, "--json", str(record)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    info = json.loads(record.read_text())
    return {"nproc": nproc, "seed": seed, "threads": threads, "wall_s": round(wall, 1),
            "load_avg_1min": round(os.getloadavg()[0], 1),
            "train_s": info["metrics"]["train_seconds"],
            "val_dice": info["metrics"]["val_mean_dice_all"],
            "epochs": info["metrics"]["epochs_run"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["tiny", "dsb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads per process")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    rows, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        for case in args.cases:
            spec = CASES[case]
            maker = write_tiny if case == "tiny" else write_dsb
            images, labels, mask_type = maker(Path(tmp) / case, spec["images"])
            for seed in args.seeds:
                for nproc in (1, args.nproc):
                    work = Path(tmp) / f"{case}-{seed}-{nproc}"
                    row = {"case": case, **run_once(images, labels, mask_type,
                                                    spec["options"], seed, nproc, work,
                                                    args.threads)}
                    rows.append(row)
                    print(row, flush=True)
                    write_results("bench_ddp", rows, {"summary": summary}, out=args.out)
            single = {r["seed"]: r for r in rows if r["case"] == case and r["nproc"] == 1}
            multi = {r["seed"]: r for r in rows if r["case"] == case and r["nproc"] > 1}
            gaps = [abs(multi[s]["val_dice"] - single[s]["val_dice"]) for s in args.seeds]
            summary[case] = {
                "max_gap_same_seed": round(max(gaps), 4),
                "single_dice_range_over_seeds": round(
                    max(r["val_dice"] for r in single.values())
                    - min(r["val_dice"] for r in single.values()), 4),
                "mean_wall_s": {str(n): round(float(np.mean([r["wall_s"] for r in runs])), 1)
                                for n, runs in ((1, single.values()),
                                                (args.nproc, multi.values()))},
            }
    path = write_results("bench_ddp", rows, {"summary": summary, "options": {
        c: CASES[c] for c in args.cases}}, out=args.out)
    print_table(rows, ["case", "seed", "nproc", "wall_s", "train_s", "val_dice", "epochs"])
    for case, s in summary.items():
        print(f"{case}: |Dice(nproc {args.nproc}) - Dice(1)| at the same seed <= "
              f"{s['max_gap_same_seed']}; one process's Dice over seeds spans "
              f"{s['single_dice_range_over_seeds']}; mean wall {s['mean_wall_s']} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

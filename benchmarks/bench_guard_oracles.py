"""Does what serves ever score below Otsu? Champion and challenger per oracle, per round.

Runs the real ``label-assistant simulate`` (the service's round: a candidate trained against
what serves, warm-started from a model champion, promoted only if it beats it on the
validation annotations) once per dataset and oracle annotation, and reports, per round:
what serves and its test Dice (foreground, the reference paper's number, and the mean over
all classes), Otsu's test Dice on the same test images, the candidate's test Dice, the
candidate and champion validation scores and the verdict. The goal (issue 11): the serving
pre-labeler never scores below Otsu on the test split, at any round, for any oracle.

Datasets (``../shared/data``):

- ``dsb``: the 2018 Data Science Bowl subset, its images up to ``--max-side`` pixels (grey
  and colour mixed), instance masks; the last ``--dsb-test`` by file name are the test set;
- ``isbi``: the ISBI 2012 EM membranes (class 1 = membrane, ``--invert``); the last 10
  slices are the test set.

Oracles: ``dense`` (the full mask), ``sparse`` (whole objects and 10% of the pixels),
``ring`` (whole objects with a 2-pixel Background ring), ``border`` (whole objects, Background
only in bands along the image edges: the demo's failure).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_guard_oracles.py \
        [--datasets dsb,isbi --oracles dense,sparse,ring,border --epochs 8]

Resumable (each run folder keeps its finished rounds). Writes
``benchmarks/results/bench_guard_oracles.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    dsb_folders,
    print_table,
    shared_data,
    write_results,
)

sys.path.insert(0, str(ROOT))


def simulate_argv(dataset: str, oracle: str, args: argparse.Namespace, work: Path) -> list[str]:
    if dataset == "dsb":
        images, masks = dsb_folders(args.max_side, work / "dsb")
        data = ["--mask-type", "instance", "--test-split", f"last:{args.dsb_test}"]
    else:
        root = shared_data("isbi2012_em_membrane")
        if root is None:
            raise SystemExit("skipped: ../shared/data/isbi2012_em_membrane not found")
        images, masks = root / "images", root / "masks"
        data = ["--mask-type", "binary", "--invert", "--test-split", "last:10"]
    return [
        "simulate", str(images), str(masks), *data,
        "--strategies", "random", "--seeds", str(args.seeds),
        "--initial", str(args.initial), "--per-round", str(args.per_round),
        "--rounds", str(args.rounds), "--annotation", oracle,
        "--epochs", str(args.epochs),
        "--out", str(args.out / f"{dataset}-{oracle}"),
        *(["--device", args.device] if args.device else []),
    ]


def rows_of(dataset: str, oracle: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    otsu = result["summary"]["guard"]["otsu_test_dice"]
    out = []
    for r in result["rows"]:
        if r["strategy"] == "full-data":
            continue
        out.append({
            "dataset": dataset, "oracle": oracle, "seed": r["seed"], "round": r["round"],
            "images": r["labeled_images"], "serving": r.get("serving_version"),
            "serving_dice": r.get("test_dice"), "otsu_dice": otsu,
            "serving_minus_otsu": None if r.get("test_dice") is None or otsu is None
            else r["test_dice"] - otsu,
            "serving_dice_all": r.get("test_dice_all"),
            "candidate_dice": r.get("candidate_test_dice"),
            "candidate_val": r.get("candidate_val_dice_all"),
            "champion_val": r.get("champion_val_dice_all"),
            "init": r.get("init"), "promoted": r.get("promoted"),
            "train_s": r.get("train_seconds"), "verdict": r.get("verdict"),
        })
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="dsb,isbi")
    parser.add_argument("--oracles", default="dense,sparse,ring,border")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--initial", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8,
                        help="epochs of the CPU default's 10 steps of 8 tiles (default 8)")
    parser.add_argument("--max-side", type=int, default=400, help="DSB images up to this side")
    parser.add_argument("--dsb-test", type=int, default=15, help="DSB test images (the last)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "guard_oracles",
                        help="run folders (resumed), default benchmarks/results/guard_oracles")
    args = parser.parse_args()

    from label_assistant.cli import main as cli

    rows: list[dict[str, Any]] = []
    commands = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            for oracle in args.oracles.split(","):
                argv = simulate_argv(dataset, oracle, args, Path(tmp))
                print("label-assistant " + " ".join(argv), flush=True)
                if cli(argv) != 0:
                    return 1
                result = json.loads((args.out / f"{dataset}-{oracle}" / "results.json")
                                    .read_text())
                rows += rows_of(dataset, oracle, result)
                commands.append("label-assistant " + " ".join(argv))
    below = [r for r in rows if r["serving_minus_otsu"] is not None
             and r["serving_minus_otsu"] < -1e-9]
    candidates = [r for r in rows if r["promoted"] is not None]
    path = write_results("bench_guard_oracles", rows, extra={
        "commands": commands, "seconds": round(time.perf_counter() - started, 1),
        "rounds_serving_below_otsu": len(below), "candidates": len(candidates),
        "promoted": sum(1 for r in candidates if r["promoted"]),
    })
    print()
    print_table(rows, ["dataset", "oracle", "round", "images", "serving", "serving_dice",
                       "otsu_dice", "candidate_dice", "candidate_val", "champion_val",
                       "init", "promoted", "train_s"])
    print(f"\ncandidates {len(candidates)}, promoted "
          f"{sum(1 for r in candidates if r['promoted'])}; rounds where what served scored "
          f"below Otsu on the test images: {len(below)}")
    print(f"benchmark record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

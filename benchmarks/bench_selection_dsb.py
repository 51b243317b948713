"""Does selection beat random where it should? Learning curves on the DSB 2018 subset.

Runs the real ``label-assistant simulate`` (the service's round: Otsu pre-labels before any
model, a candidate warm-started from the champion and promoted only if it beats it on the
validation annotations, the gate on every annotation) on the 122 images of
``../shared/data/dsb2018_stage1_train_subset`` in 9 experiment groups (``manifest.json``:
grey and colour, fluorescence and bright-field, 256 to 1272 px), each image's group given to
the simulator with ``--groups``; the test split holds ``--test-per-group`` images of each
group (``stratified:N``), the rest is the pool.

Each seed runs in its own process (``--jobs`` at once, one torch thread each: two busy
threads per process spin-wait on 2 cores), into ``OUT/seed<k>``; the rows are then merged into
``OUT/all``, where ``simulate`` writes the reports of every seed together: the learning curves
(``dice_vs_images.png``), the paired difference to random per round with its 95% interval
(``gain_vs_random.png``, ``summary.md``). A seed's strategies share its oracle annotations and
its training seed, so strategies are compared seed by seed. The candidates are compared twice:
by the pooled test Dice (an image weighs by its pixels: the 1024 x 1024 and 603 x 1272 groups
hold 61% of the test pixels) and by the mean per-image Dice (each group's 2 test images weigh
alike).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_selection_dsb.py \\
        [--seeds 3 --jobs 3 --strategies random,sequential,sequence,sequence+entropy+diversity]

Resumable (each seed folder keeps its finished rounds). Writes
``benchmarks/results/bench_selection_dsb.json`` and prints the tables.

With the defaults (3 seeds x 4 strategies x 4 rounds, Unet-resnet18, 8 cold / 4 warm epochs
of 10 steps, validation every 2nd epoch, 1024 px prediction tiles) the whole run took 39.4
min on our 2-core CPU (76.5 CPU-min; the v5 run of the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, dsb_folders, print_table, write_results  # noqa: E402

sys.path.insert(0, str(ROOT))  # the final report imports the package: no install needed

STRATEGIES = "random,sequential,sequence,sequence+entropy+diversity"


def simulate_argv(args: argparse.Namespace, images: Path, masks: Path, groups: Path,
                  seeds: str, out: Path) -> list[str]:
    return [
        "simulate", str(images), str(masks), "--mask-type", "instance",
        "--groups", str(groups), "--test-split", f"stratified:{args.test_per_group}",
        "--strategies", args.strategies, "--seeds", seeds,
        "--initial", str(args.initial), "--per-round", str(args.per_round),
        "--rounds", str(args.rounds), "--annotation", args.annotation,
        "--encoder", args.encoder, "--epochs", str(args.epochs),
        "--warm-epochs", str(args.warm_epochs), "--steps-per-epoch", str(args.steps),
        *(["--val-every", str(args.val_every)] if args.val_every != 1 else []),
        *(["--inference-tile", str(args.inference_tile)] if args.inference_tile != 512 else []),
        "--out", str(out),
    ]


def run_seed(argv: list[str], log: Path) -> tuple[int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with open(log, "a") as f:
        code = subprocess.call([sys.executable, "-m", "label_assistant.cli", *argv],
                               stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return code, time.perf_counter() - started


def merge(seed_dirs: list[Path], out: Path) -> None:
    """``OUT/all``: the seeds' settings and every seed's rows (the settings hash excludes the
    seeds, so ``simulate --out OUT/all`` finds every step done and writes the reports)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(seed_dirs[0] / "settings.json", out / "settings.json")
    rows = []
    for d in seed_dirs:
        rows += (d / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text("\n".join(rows) + "\n")


def strategies_seconds(out: Path, started_at: float) -> float | None:
    """Seconds from the start until the last strategy round of this run finished (each seed
    runs its strategies first, the full-pool reference last); None when a round was resumed
    from an earlier run."""
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    times = [r.get("finished_at") for r in rows if r["strategy"] != "full-data"]
    if not times or any(t is None or t < started_at for t in times):
        return None
    return round(max(times) - started_at, 1)


def round_times(out: Path) -> list[dict[str, Any]]:
    """Per strategy, the mean seconds of a round (``round_seconds``: annotations, training,
    the challenge, test scores and the next intake), of its training and of its test scores,
    and the rest; rounds from runs before ``round_seconds`` was recorded are left out."""
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    table = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        timed = [r for r in rows if r["strategy"] == strategy and r.get("round_seconds")]
        if not timed:
            continue
        mean = {k: sum(r.get(k) or 0.0 for r in timed) / len(timed)
                for k in ("round_seconds", "train_seconds", "eval_seconds")}
        table.append({"strategy": strategy, "rounds": len(timed),
                      **{k: round(v, 1) for k, v in mean.items()},
                      "rest_seconds": round(mean["round_seconds"] - mean["train_seconds"]
                                            - mean["eval_seconds"], 1)})
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=STRATEGIES,
                        help=f"comma-separated strategies (default {STRATEGIES}); random is "
                             "the baseline every other one is compared with")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds 0..N-1 (default 3); a seed fixes the first picks' "
                             "randomness, the training and the oracle for every strategy")
    parser.add_argument("--jobs", type=int, default=3, help="seeds run at once (default 3)")
    parser.add_argument("--initial", type=int, default=6,
                        help="images labeled before the first round (default 6)")
    parser.add_argument("--per-round", type=int, default=6,
                        help="images selected per round (default 6)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="selection rounds after the first (default 3: 6 + 3 x 6 images)")
    parser.add_argument("--annotation", default="dense",
                        help="the simulated annotator, as simulate's --annotation (default "
                             "dense)")
    parser.add_argument("--test-per-group", type=int, default=2,
                        help="test images per experiment group (default 2)")
    parser.add_argument("--encoder", default="resnet18", help="Unet encoder (default resnet18)")
    parser.add_argument("--epochs", type=int, default=8, help="cold rounds (default 8)")
    parser.add_argument("--warm-epochs", type=int, default=4, help="warm rounds (default 4)")
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch (default 10)")
    parser.add_argument("--val-every", type=int, default=2,
                        help="validate every N epochs and after the last (default 2, as the "
                             "v4 and v5 runs)")
    parser.add_argument("--inference-tile", type=int, default=1024,
                        help="tile side for validation and test prediction (default 1024: "
                             "the test images in 1.9x less time than at the service's 512, "
                             "benchmarks/bench_inference_tile.py; 512 repeats the v4 run)")
    parser.add_argument("--max-side", type=int, default=100_000,
                        help="only images up to this side (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "selection_dsb",
                        help="run folders (resumed), default benchmarks/results/selection_dsb")
    args = parser.parse_args()

    work = args.out / "data"
    images, masks = dsb_folders(args.max_side, work)
    groups = work / "groups.csv"
    seed_dirs = [args.out / f"seed{k}" for k in range(args.seeds)]
    commands = [simulate_argv(args, images, masks, groups, f"{k},", d)
                for k, d in enumerate(seed_dirs)]
    print("label-assistant " + " ".join(commands[0]) + f"  (and seeds 1..{args.seeds - 1})",
          flush=True)
    started, started_at = time.perf_counter(), time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_seed(c[0], args.out / f"{c[1].name}.log"),
                                zip(commands, seed_dirs, strict=True)))
    wall = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = round(used.ru_utime + used.ru_stime, 1)  # the seeds' processes, whatever else ran
    for k, (code, seconds) in enumerate(results):
        print(f"seed {k}: exit {code}, {seconds / 60:.1f} min (log {args.out}/seed{k}.log)")
        if code != 0:
            return 1
    merge(seed_dirs, args.out / "all")
    strategies_wall = strategies_seconds(args.out / "all", started_at)
    from label_assistant.cli import main as cli

    final = simulate_argv(args, images, masks, groups, ",".join(map(str, range(args.seeds))),
                          args.out / "all")
    if cli(final) != 0:
        return 1
    result = json.loads((args.out / "all" / "results.json").read_text())
    summary = result["summary"]
    versus = ["strategy", "round", "images", "diff", "low", "high", "significant",
              "image_low", "image_high"]
    for title, table, compared in (
            ("what serves (test Dice)", "table", "versus_random"),
            ("the candidate trained on the selected images (test Dice)", "candidate_table",
             "versus_random_candidate"),
            ("the candidate, each test image counted once (mean per-image Dice)",
             "candidate_table_per_image", "versus_random_candidate_per_image")):
        print(f"\n{title}")
        print_table(summary[table], ["strategy", "round", "images", "dice_mean", "dice_sd"])
        print(f"\n{title}: against random, paired by seed")
        print_table(summary[compared], versus)
    timing = round_times(args.out / "all")
    print("\nseconds per round (means; with --jobs processes sharing the cores)")
    print_table(timing, ["strategy", "rounds", "round_seconds", "train_seconds",
                         "eval_seconds", "rest_seconds"])
    path = write_results("bench_selection_dsb", summary["table"], {
        "round_times": timing,
        "command": "label-assistant " + " ".join(final),
        "wall_seconds": round(wall, 1), "strategies_wall_seconds": strategies_wall,
        "cpu_seconds": cpu,
        "jobs": args.jobs, "threads_per_job": 1,
        "seed_seconds": [round(s, 1) for _, s in results],
        "full_data": summary["full_data"], "versus_random": summary["versus_random"],
        "full_data_per_image": summary["full_data_per_image"],
        "candidate_table": summary["candidate_table"],
        "versus_random_candidate": summary["versus_random_candidate"],
        "candidate_table_per_image": summary["candidate_table_per_image"],
        "versus_random_candidate_per_image": summary["versus_random_candidate_per_image"],
        "guard": summary["guard"], "settings": result["settings"],
    })
    print(f"\n{args.seeds} seeds in {wall / 60:.1f} min wall ({args.jobs} at once), "
          f"{cpu / 60:.1f} CPU-min ({cpu / 60 / (os.cpu_count() or 1):.1f} min on "
          f"{os.cpu_count()} idle cores); {path}")
    if strategies_wall is not None:
        print(f"the strategies' rounds were done after {strategies_wall / 60:.1f} min; the "
              "full-pool reference (each seed's last step) took the rest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

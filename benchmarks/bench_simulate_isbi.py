"""Active-learning simulation on the ISBI 2012 EM membranes: which strategy spends labels best?

The settings of the issue's closing note, run through the real ``label-assistant simulate``:
30 slices of one z-stack, 512 x 512, class 1 = membrane (mask == 0, so ``--mask-type binary
--invert``); the last 10 slices are the test set, the first 20 the pool, cut into 5 contiguous
chunks of 4 slices as sequences; dense oracle annotation; 3 seeds; 2 initial images + 4 rounds
of 2 = 2, 4, 6, 8, 10 labeled images, the last one a third of the 30 images; a full-data
baseline (all 20 pool slices) per seed. Goal: the best strategy reaches >= 97% of the
full-data Dice with at most a third of the images, and beats random at equal budget.

    python benchmarks/bench_simulate_isbi.py --device cuda            # the real run (GPU)
    python benchmarks/bench_simulate_isbi.py --quick --device cpu     # a minutes-long check

Resumable: rerunning the same command continues where an interrupted run stopped (finished
rounds are kept in OUT/runs.jsonl). Writes OUT/{results.csv, results.json, summary.md,
dice_vs_images.png, dice_vs_pixels.png} and benchmarks/results/bench_simulate_isbi.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, print_table, shared_data, write_results  # noqa: E402

sys.path.insert(0, str(ROOT))

STRATEGIES = "random,sequential,sequence,sequence+entropy,entropy"


def simulate_argv(args: argparse.Namespace, data: Path) -> list[str]:
    """The ``label-assistant simulate`` command line for these settings."""
    quick = args.quick
    return [
        "simulate", str(data / "images"), str(data / "masks"),
        "--mask-type", "binary", "--invert",
        "--test-split", "last:10", "--sequence-chunks", str(args.chunks),
        "--strategies", args.strategies if not quick else "random,sequence+entropy",
        "--initial", str(args.initial), "--per-round", str(args.per_round),
        "--rounds", str(args.rounds if not quick else 1),
        "--seeds", str(args.seeds if not quick else 1),
        "--annotation", "dense",
        "--epochs", str(args.epochs if not quick else 1),
        "--steps-per-epoch", str(args.steps if not quick else 2),
        "--batch-size", str(args.batch_size if not quick else 2),
        "--tile", str(args.tile if not quick else 128),
        "--inference-tile", "512",
        "--arch", args.arch, "--encoder", args.encoder,
        "--out", str(args.out if not quick else args.out.with_name(args.out.name + "-quick")),
        *(["--device", args.device] if args.device else []),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=STRATEGIES,
                        help=f"comma-separated (default {STRATEGIES})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=2)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=5, help="sequences over the 20 pool slices")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--out", type=Path, default=RESULTS / "simulate_isbi",
                        help="run folder, resumed when it exists (default "
                        "benchmarks/results/simulate_isbi)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (1 seed, 2 strategies, 1 round, 1 epoch) to check "
                        "that everything runs; written to OUT-quick")
    args = parser.parse_args()

    data = shared_data("isbi2012_em_membrane")
    if data is None:
        print("skipped: ../shared/data/isbi2012_em_membrane (or .devdata/) not found")
        return 0
    from label_assistant.cli import main as cli

    argv = simulate_argv(args, data)
    out = Path(argv[argv.index("--out") + 1])
    print("label-assistant " + " ".join(argv), flush=True)
    started = time.perf_counter()
    code = cli(argv)
    if code != 0:
        return code
    import json

    result = json.loads((out / "results.json").read_text())
    summary = result["summary"]
    rows = summary["table"]
    path = write_results(
        "bench_simulate_isbi" + ("_quick" if args.quick else ""), rows,
        extra={"command": "label-assistant " + " ".join(argv), "run_dir": str(out),
               "full_data": summary["full_data"], "best_final": summary["best_final"],
               "seconds_this_call": round(time.perf_counter() - started, 1)},
    )
    print()
    print_table(rows, ["strategy", "images", "dice_mean", "dice_sd", "share_of_full", "seeds"])
    print(f"\nrun folder: {out} (summary.md, results.csv, dice_vs_images.png, ...)")
    print(f"benchmark record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

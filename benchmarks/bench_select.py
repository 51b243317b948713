"""Speed of the selectors: ranking a 10,000-image pool per strategy, and per-pixel scoring.

    .venv/bin/python benchmarks/bench_select.py [--n 10000] [--dim 512] [--sequences 100]

The pool is random arrays (stored scores, embeddings, 1% labeled), as the ML backend holds
them after inference. Writes benchmarks/results/bench_select.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import entr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_assistant.selectors import scores  # noqa: E402
from label_assistant.selectors.strategies import Pool, rank, strategy_names  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_select.json"


def _timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pool(n: int, dim: int, n_sequences: int, labeled_share: float, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    labeled = rng.choice(n, size=int(n * labeled_share), replace=False)
    return Pool(
        names=[f"img_{i:05d}.png" for i in range(n)],
        sequences=[f"seq_{i}" for i in rng.integers(0, n_sequences, size=n)],
        scores={name: rng.random(n) for name in scores.SCORES},
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        labeled=labeled,
    )


def bench_ranking(n: int, dim: int, n_sequences: int, budget: int) -> list[dict]:
    pool = _pool(n, dim, n_sequences, labeled_share=0.01)
    cold = _pool(n, dim, n_sequences, labeled_share=0.0)
    rows = []
    for name in strategy_names():
        row = {"strategy": name, "n": n, "dim": dim, "sequences": n_sequences}
        row[f"budget_{budget}_s"] = _timed(lambda name=name: rank(pool, name, budget))
        row["whole_pool_s"] = _timed(lambda name=name: rank(pool, name, None))
        if "diversity" in name:  # nothing labeled: the cold start is the costly part
            row[f"cold_budget_{budget}_s"] = _timed(lambda name=name: rank(cold, name, budget))
        rows.append(row)
        times = "  ".join(f"{k}={v:.3f}" for k, v in row.items() if k.endswith("_s"))
        print(f"  {name:38s} {times}", flush=True)
    return rows


def _pixel_row(side: int, k1: int) -> dict:
    rng = np.random.default_rng(1)
    logits = rng.random((k1, side, side), dtype=np.float32)
    probs = logits / logits.sum(0)
    spread = 0.1 * rng.random((k1, side, side), dtype=np.float32)
    mse = 0.5 * rng.random((side, side), dtype=np.float32)
    repeat = 5 if side <= 1024 else 3
    row: dict = {"shape": f"({k1},{side},{side})"}
    for name in scores.SCORES:
        row[f"{name}_s"] = _timed(
            lambda name=name: scores.pixel_score(
                name, probs, spread=spread, mean_sample_entropy=mse
            ),
            repeat,
        )
    # the plain formula, to keep the modAL-vs-numpy claim in scores.py honest
    row["entropy_plain_numpy_s"] = _timed(lambda: entr(probs).sum(0), repeat)
    row["entropy_top_quantile_image_score_s"] = _timed(
        lambda: scores.image_score("entropy", probs, how="top_quantile"), repeat
    )
    return row


def bench_pixels(sides: list[int], k1: int = 2) -> list[dict]:
    rows = []
    for side in sides:
        row = _pixel_row(side, k1)
        rows.append(row)
        print(
            "  "
            + "  ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sequences", type=int, default=100)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--sides", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    print(f"ranking a pool of {args.n} (D={args.dim}, {args.sequences} sequences, 1% labeled)")
    ranking = bench_ranking(args.n, args.dim, args.sequences, args.budget)
    print("per-pixel scoring")
    pixels = bench_pixels(args.sides)
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "ranking": ranking,
        "pixels": pixels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    keys = [k for k in ranking[0] if k.endswith("_s")] + [f"cold_budget_{args.budget}_s"]
    print(f"{'strategy':38s}" + "".join(f"{k:>20s}" for k in keys))
    for row in ranking:
        cells = "".join(f"{row[k]:20.3f}" if k in row else f"{'-':>20s}" for k in keys)
        print(f"{row['strategy']:38s}{cells}")
    print()
    for row in pixels:
        print(
            row["shape"]
            + ": "
            + ", ".join(f"{k[:-2]} {v * 1e3:.1f} ms" for k, v in row.items() if k.endswith("_s"))
        )
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()

"""Tiled inference speed and peak memory: Unet-resnet18 on a 512 x 512 and a large image.

Random weights, 1 input channel, 2 classes (background + 1), in both memory layouts: the
default contiguous (NCHW) and channels_last (NHWC), which a model version runs in
(:class:`label_assistant.model.predictor.Predictor`); ``ratio`` is the contiguous layout's
time over this one's, in the same run. Each case runs in a fresh
subprocess so that its peak resident memory (``ru_maxrss``; torch's allocations are invisible
to tracemalloc) belongs to that case alone; the memory after building the model is reported
too, so the cost of inference itself is the difference.

    python benchmarks/bench_inference.py [--device cuda] [--repeats 3] [--large 4096]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402

LAYOUTS = ("contiguous", "channels_last")
COLUMNS = ["case", "layout", "ratio", "tiles", "repeats", "seconds", "s_per_mpx",
           "forward_tile_s", "rss_model_mb", "rss_peak_mb", "cuda_peak_mb"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(size: int, repeats: int, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process (the child side)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from label_assistant.model.compat import import_smp
    from label_assistant.model.inference import predict_proba, tile_starts

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = import_smp().create_model(
        "Unet", "resnet18", encoder_weights=None, in_channels=1, classes=2
    ).to(device)
    if args.child_layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    rss_model = _rss_mb()
    image = np.random.default_rng(0).normal(size=(1, size, size)).astype(np.float32)
    kwargs = dict(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=device)
    # Warm-up on one tile: lazy initialisation (kernels, allocator) is not inference time.
    predict_proba(model, image[:, : args.tile, : args.tile], **kwargs)
    x = torch.from_numpy(image[None, :, : args.tile, : args.tile].copy()).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, forward = [], []
    for _ in range(repeats):
        # The bare model on one tile, next to each run: this shared machine's speed right now.
        with torch.inference_mode():
            start = time.perf_counter()
            model.eval()(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        pred = predict_proba(model, image, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert pred.probabilities.shape == (2, size, size)
    n_tiles = len(tile_starts(size, args.tile, args.overlap)) ** 2
    seconds = statistics.median(times)
    return {
        "case": f"{size}x{size}",
        "layout": args.child_layout,
        "image": f"1x{size}x{size}",
        "tiles": n_tiles,
        "repeats": repeats,
        "seconds": round(seconds, 3),
        "times": [round(t, 3) for t in times],
        "s_per_mpx": round(seconds / (size * size / 1e6), 3),
        "forward_tile_s": round(statistics.median(forward), 3),
        "rss_model_mb": round(rss_model, 1),
        "rss_peak_mb": round(_rss_mb(), 1),
        "output_mb": round(pred.probabilities.nbytes / 2**20, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if device.type == "cuda" else None,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the 512 case")
    parser.add_argument("--large", type=int, default=4096, help="side of the large image")
    parser.add_argument("--large-repeats", type=int, default=1)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-layout", choices=LAYOUTS, default="contiguous",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:  # one case, in a fresh process: print its row as JSON
        repeats = args.repeats if args.child == 512 else args.large_repeats
        print(json.dumps(run_case(args.child, repeats, args)))
        return 0

    rows = []
    for size in (512, args.large):
        for layout in LAYOUTS:
            command = [sys.executable, __file__, "--child", str(size), "--child-layout", layout,
                       *sys.argv[1:]]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            rows[-1]["ratio"] = round(rows[-2 if layout != LAYOUTS[0] else -1]["seconds"]
                                      / rows[-1]["seconds"], 2)
            print(f"{rows[-1]['case']} {layout}: {rows[-1]['seconds']} s", file=sys.stderr)
    settings = {"model": "Unet-resnet18, random weights, 1 channel, 2 classes",
                "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
                "device": args.device}
    path = write_results("bench_inference", rows, {"settings": settings}, out=args.out)
    print_table(rows, COLUMNS)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

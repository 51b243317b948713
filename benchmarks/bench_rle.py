"""Brush RLE codec: ours (label_assistant.labelstudio.rle) vs the Label Studio SDK's.

Masks: "blobs" (30 filled discs, as an annotator or a model draws them) and "noisy" (the same
blobs with 1% of the pixels flipped: salt-and-pepper, the worst realistic case for an RLE), at
1024 x 1024 and 4096 x 4096. For each: median wall time of encode and decode over several
repeats, ours and the SDK's, and whether the outputs are identical (encode: the same list of
ints; decode: the same alpha plane as ``sdk.decode_rle(rle).reshape(H, W, 4)[:, :, 3]``).

Goal: ours at least 10x faster than the SDK for both, with identical output.

    python benchmarks/bench_rle.py [--sizes 1024,4096 --repeats 7 --sdk-repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

from label_assistant.labelstudio.rle import decode_rle, encode_rle  # noqa: E402


def blob_mask(size: int, n_blobs: int = 30, seed: int = 0) -> np.ndarray:
    """Filled discs of radius 1/80 .. 1/16 of the side: 255 inside, 0 outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(n_blobs):
        cy, cx = rng.integers(0, size, 2)
        r = rng.integers(size // 80, size // 16)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 255
    return mask


def noisy_mask(size: int, flip: float = 0.01, seed: int = 0) -> np.ndarray:
    mask = blob_mask(size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    mask[rng.random(mask.shape) < flip] ^= 255
    return mask


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of ours")
    parser.add_argument("--sdk-repeats", type=int, default=3, help="repeats of the SDK's")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from label_studio_sdk.converter import brush as sdk

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for kind, make in (("blobs", blob_mask), ("noisy", noisy_mask)):
            mask = make(size)
            t_sdk_enc, rle_sdk = median_time(lambda m=mask: sdk.mask2rle(m), args.sdk_repeats)
            t_enc, rle = median_time(lambda m=mask: encode_rle(m), args.repeats)
            t_sdk_dec, dec_sdk = median_time(
                lambda r=rle_sdk, s=size: sdk.decode_rle(r).reshape(s, s, 4)[:, :, 3],
                args.sdk_repeats,
            )
            t_dec, dec = median_time(lambda r=rle_sdk, s=size: decode_rle(r, s, s), args.repeats)
            row = {
                "size": f"{size}x{size}",
                "mask": kind,
                "rle_bytes": len(rle_sdk),
                "encode_sdk_ms": 1e3 * t_sdk_enc,
                "encode_ours_ms": 1e3 * t_enc,
                "encode_speedup": t_sdk_enc / t_enc,
                "encode_identical": rle == rle_sdk,
                "decode_sdk_ms": 1e3 * t_sdk_dec,
                "decode_ours_ms": 1e3 * t_dec,
                "decode_speedup": t_sdk_dec / t_dec,
                "decode_identical": bool(np.array_equal(dec, dec_sdk)),
                "round_trip": bool(np.array_equal(dec, mask)),
            }
            rows.append(row)
            print(f"{row['size']} {kind}: encode {row['encode_speedup']:.1f}x, "
                  f"decode {row['decode_speedup']:.1f}x", flush=True)
    ok = all(
        r["encode_identical"] and r["decode_identical"] and r["round_trip"]
        and r["encode_speedup"] >= 10 and r["decode_speedup"] >= 10
        for r in rows
    )
    print()
    print_table(rows, list(rows[0]))
    path = write_results(
        "bench_rle", rows,
        extra={"goal": "encode and decode >= 10x the SDK, identical output", "goal_met": ok,
               "repeats": args.repeats, "sdk_repeats": args.sdk_repeats},
        out=args.out,
    )
    print(f"\ngoal (>= 10x, identical) {'met' if ok else 'NOT met'}; results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

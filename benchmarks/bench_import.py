"""``label-assistant import`` of a generated folder of 16-bit stacks: time and peak memory.

Generates ImageJ time-lapse stacks (``TYX``, uint16, ``--side`` x ``--side`` planes,
``--frames`` per stack, noise plus bright squares, ``--compression zlib`` optional) adding up
to ``--size-mb`` uncompressed, starts a Label
Studio 1.23.2 (or uses ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``), and runs the real
command in a child process twice: the import, then a rerun (which must create nothing).
Measured: wall time, planes and MB per second, and the child's peak resident memory
(``ru_maxrss``, imports included) against the largest stack's size: a stack is read plane
by plane, never whole.

    python benchmarks/bench_import.py [--size-mb 1024 --side 1024 --frames 64 --compression zlib]

Measured (2 cores, Label Studio on the same machine; ``--size-mb 1024 --frames 256``: two
512 MB stacks of 256 planes of 1024 x 1024): import 83 s (6.1 planes/s), peak RSS 233 MB
(136 MB for the rerun, which reads no plane); the rerun 6.6 s, nothing created.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402

#: Runs the command in the child and records its own peak RSS.
_CHILD = """import json, resource, sys
from label_assistant.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, out)
sys.exit(code)
"""


def make_stacks(folder: Path, size_mb: float, side: int, frames: int, seed: int = 0,
                compression: str | None = None) -> tuple[int, int]:
    """(stacks, planes) written; each stack is written frame by frame (no stack in memory)."""
    import tifffile

    plane_bytes = side * side * 2
    planes = max(1, math.ceil(size_mb * 2**20 / plane_bytes))
    stacks = max(1, math.ceil(planes / frames))
    rng = np.random.default_rng(seed)
    base = rng.integers(200, 1200, size=(side, side), dtype=np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(stacks):
        n = min(frames, planes - s * frames)

        def frames_of(n: int = n):
            for t in range(n):
                frame = np.roll(base, t * 7, axis=1).copy()
                for _ in range(20):
                    y, x = rng.integers(0, side - 40, 2)
                    frame[y:y + 32, x:x + 32] += 20000
                yield frame

        tifffile.imwrite(folder / f"stack{s:03d}.tif", frames_of(), shape=(n, side, side),
                         dtype=np.uint16, imagej=True, metadata={"axes": "TYX"},
                         compression=compression)
    return stacks, planes


def run_import(args: list[str], env: dict[str, str], tmp: Path) -> dict:
    rss_file = tmp / "rss.json"
    report_file = tmp / "report.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, str(rss_file), "import", *args,
                           "--json", str(report_file)], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"import exited {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads(report_file.read_text())
    return {"seconds": seconds, "peak_rss_mb": json.loads(rss_file.read_text())["maxrss_kb"]
            / 1024, **{k: report[k] for k in ("created", "already_imported", "planes")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024.0)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--compression", default=None, choices=("zlib",),
                        help="compress the stacks (read page by page instead of memory-mapped)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from label_assistant.devtools.labelstudio_server import (
        DEFAULT_TOKEN,
        LabelStudioServer,
        init_data_dir,
    )

    tmp = Path(tempfile.mkdtemp(prefix="la-bench-import-"))
    server = None
    try:
        started = time.perf_counter()
        stacks, planes = make_stacks(tmp / "stacks", args.size_mb, args.side, args.frames,
                                     compression=args.compression)
        data_mb = sum(f.stat().st_size for f in (tmp / "stacks").iterdir()) / 2**20
        print(f"generated {stacks} stacks, {planes} planes, {data_mb:.0f} MB in "
              f"{time.perf_counter() - started:.1f} s")
        env = {**os.environ, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
        if not (env.get("LABEL_STUDIO_URL") and env.get("LABEL_STUDIO_API_KEY")):
            init_data_dir(tmp / "ls-data")
            server = LabelStudioServer(token=DEFAULT_TOKEN).start(tmp / "ls-data")
            env.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.token)
        command = [str(tmp / "stacks"), "--new-project", "bench import", "--classes",
                   "Nucleus", "--workdir", str(tmp / "work")]
        largest = max(f.stat().st_size for f in (tmp / "stacks").iterdir()) / 2**20
        rows = []
        for run in ("import", "rerun"):
            row = {"run": run, "stacks": stacks, "data_mb": round(data_mb, 1),
                   "largest_stack_mb": round(largest, 1), **run_import(command, env, tmp)}
            row["planes_per_s"] = row["planes"] / row["seconds"]
            row["mb_per_s"] = data_mb / row["seconds"]
            row["seconds_per_gb"] = row["seconds"] * 1024 / data_mb
            rows.append(row)
        assert rows[0]["created"] == planes and rows[1]["created"] == 0, rows
        print_table(rows, ["run", "stacks", "planes", "data_mb", "created", "already_imported",
                           "seconds", "planes_per_s", "mb_per_s", "seconds_per_gb",
                           "peak_rss_mb", "largest_stack_mb"])
        path = write_results("bench_import", rows, {"side": args.side, "frames": args.frames,
                                                    "size_mb": args.size_mb,
                                                    "compression": args.compression}, args.out)
        print(f"results: {path}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

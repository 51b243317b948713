"""kill -9 durability of ``label-assistant serve``: many trials of tests/test_kill9.py's.

One real ``serve`` (LA_SINK=none, LA_TRAIN_AFTER=0) on a free port of 127.0.0.1 and one work
directory for the whole run. Each trial: a thread posts ``ANNOTATION_CREATED`` webhooks
(``data:`` URL images) while, after a random 0.3-1.2 s, one process is killed with SIGKILL,
picked at random: the worker process, a gunicorn worker, the gunicorn master, or ``serve``
itself. The service then comes back (serve restarts its children; a killed serve is started
again on the same port and work directory), the sender goes on for 0.5 s, and every event
answered 200 must be in the store and end ``done``. Also counted: children of the killed
process still alive 5 s later (orphans), and trials where the service did not come back.

Goal: 0 lost, 0 orphans, every trial recovered.

    python benchmarks/bench_kill9.py [--trials 100 --seed 9 --workdir DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import print_table, write_results  # noqa: E402
from test_kill9 import (  # noqa: E402
    TARGETS,
    Serve,
    TrialResult,
    event_counts,
    id_counter,
    trial,
)

COLUMNS = ["target", "trials", "acknowledged", "found", "done", "lost", "refused", "orphans",
           "not_recovered", "mean_s"]


def summarize(target: str, results: list[TrialResult]) -> dict[str, Any]:
    return {
        "target": target,
        "trials": len(results),
        "acknowledged": sum(r.outcome.acked for r in results),
        "found": sum(r.outcome.found for r in results),
        "done": sum(r.outcome.done for r in results),
        "lost": sum(r.outcome.lost for r in results),
        "refused": sum(r.outcome.failed for r in results),
        "orphans": sum(len(r.orphans) for r in results),
        "not_recovered": sum(not r.recovered for r in results),
        "mean_s": sum(r.seconds for r in results) / max(1, len(results)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the run's work directory goes (default: a temp dir)")
    parser.add_argument("--name", default="bench_kill9", help="results file name")
    args = parser.parse_args(argv)

    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-kill9-"))
    serve = Serve(base / "work", log=base / "serve.log")
    rng = random.Random(args.seed)
    ids = id_counter()
    results: list[TrialResult] = []
    errors: list[str] = []
    started = time.monotonic()
    serve.start()
    try:
        for n in range(args.trials):
            target = rng.choice(TARGETS)
            try:
                result = trial(serve, target, rng, ids)
            except Exception as error:  # a trial that can't even start: say so, go on
                errors.append(f"trial {n + 1} ({target}): {type(error).__name__}: {error}"[:400])
                print(errors[-1], flush=True)
                if serve.proc is None or serve.proc.poll() is not None:
                    serve.start()
                continue
            results.append(result)
            o = result.outcome
            print(f"{n + 1:4d} kill -9 {target:15s} {o.acked:4d} acked {o.found:4d} found "
                  f"{o.done:4d} done {o.lost} lost, orphans {len(result.orphans)}, "
                  f"{'recovered' if result.recovered else 'NOT RECOVERED: ' + result.note}, "
                  f"{result.seconds:.1f} s", flush=True)
            if not result.recovered and (serve.proc is None or serve.proc.poll() is not None):
                serve.start()
        code = serve.stop()
    finally:
        if serve.proc is not None and serve.proc.poll() is None:
            serve.kill()
    counts = event_counts(serve.workdir)
    rows = [summarize(t, [r for r in results if r.target == t]) for t in TARGETS]
    rows.append(summarize("all", results))
    print()
    print_table(rows, COLUMNS)
    total = rows[-1]
    print(f"\n{total['trials']} trials, {total['acknowledged']} events acknowledged, "
          f"{total['found']} found, {total['lost']} lost; {total['orphans']} orphans, "
          f"{total['not_recovered']} not recovered, {len(errors)} trial errors; store "
          f"{counts}; serve stopped with {code}; {time.monotonic() - started:.0f} s")
    path = write_results(args.name, rows, extra={
        "trials": args.trials, "seed": args.seed, "errors": errors, "store_events": counts,
        "serve_exit": code, "serve_starts": serve.starts,
        "per_trial": [{"target": r.target, "acked": r.outcome.acked, "found": r.outcome.found,
                       "done": r.outcome.done, "orphans": r.orphans,
                       "recovered": r.recovered, "seconds": round(r.seconds, 2),
                       "missing": r.outcome.missing[:20], "note": r.note} for r in results]})
    print(f"results: {path}")
    ok = total["lost"] == 0 and total["orphans"] == 0 and total["not_recovered"] == 0 \
        and not errors and total["done"] == total["found"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The long fuzz run: malformed requests to every route through the Flask test client.

Draws requests from ``tests/fuzz_strategies.py`` (the CI test ``tests/test_fuzz.py`` runs a
bounded number of the same), sends each to one app, ticks a worker after each acknowledged
event, and counts:

- ``inputs``: requests sent; ``by status``: answers per HTTP status;
- ``5xx``: server errors (the contract: none); ``crash``: the test client raised;
  ``worker_errors``: worker rounds that raised;
- ``acknowledged``: events answered 200; ``unprocessable``: of those, how many the worker
  ended ``failed`` (the contract: none), ``quarantined`` / ``admitted`` / ``pending`` (a
  transient fetch failure waiting for its retry) for the rest;
- ``still works``: a good annotation is admitted after the run.

Nothing is asserted while running (every input is counted, the first few failures are kept
as examples). Results: a table, and ``benchmarks/results/bench_fuzz.json``.

    .venv/bin/python benchmarks/bench_fuzz.py [--inputs 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import print_table, write_results  # noqa: E402
from fuzz_strategies import annotation_body, requests, send  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from label_assistant.ml_backend.app import create_app  # noqa: E402
from label_assistant.ml_backend.settings import Settings  # noqa: E402
from label_assistant.ml_backend.sinks import RecordingSink  # noqa: E402
from label_assistant.ml_backend.worker import Worker  # noqa: E402


class _Ended:
    pid = os.getpid()

    def poll(self) -> int:
        return 0


def run(inputs: int, random_seed: int) -> dict[str, Any]:
    logging.disable(logging.CRITICAL)
    # A tmpfs where there is one: the store's fsyncs are not what is measured here.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    tmp = tempfile.TemporaryDirectory(prefix="la-bench-fuzz-", dir=shm)
    config = Settings(workdir=Path(tmp.name) / "work", train_after=0, fetch_timeout=2,
                      max_webhook_bytes=1024 * 1024)
    app = create_app(config)
    client = app.test_client()
    store = app.extensions["label_assistant"]["store"]
    worker = Worker(config, store=store, sink=RecordingSink(), job_starter=lambda d: _Ended())
    counts: collections.Counter[str] = collections.Counter()
    by_status: collections.Counter[int] = collections.Counter()
    by_route: collections.Counter[str] = collections.Counter()
    examples: list[str] = []

    def one(req: Any) -> None:
        counts["inputs"] += 1
        by_route[req.path if req.path in ("/webhook", "/setup", "/predict", "/train",
                                          "/metrics", "/versions", "/health", "/")
                 else "other"] += 1
        try:
            response = send(client, req)
        except Exception as error:  # the client itself crashed: counted, not raised
            counts["crash"] += 1
            if len(examples) < 10:
                examples.append(f"crash {type(error).__name__}: {error} {req!r}"[:600])
            return
        status = response.status_code
        by_status[status] += 1
        if status >= 500:
            counts["5xx"] += 1
            if len(examples) < 10:
                examples.append(f"{status} {response.get_data(as_text=True)[:200]} {req!r}"[:600])
            return
        data = response.get_json(silent=True) if req.method != "HEAD" else None
        if status == 200 and isinstance(data, dict) and data.get("event") is not None:
            counts["acknowledged"] += 1
            for _ in range(5):
                try:
                    worker.tick()
                except Exception as error:  # a worker round that raised: counted
                    counts["worker errors"] += 1
                    if len(examples) < 10:
                        examples.append(f"worker round raised {type(error).__name__}: "
                                        f"{error} {req!r}"[:600])
                row = store.get_event(data["event"])
                if row["state"] not in ("pending", "processing"):
                    break
            if row["state"] == "failed":
                counts["unprocessable"] += 1
                if len(examples) < 10:
                    examples.append(f"failed event: {row['error']} {req!r}"[:600])
            else:
                counts[f"event {row['state']}"] += 1

    fuzz = settings(max_examples=inputs, deadline=None, database=None,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    started = time.perf_counter()
    seed(random_seed)(fuzz(given(req=requests())(one)))()
    seconds = time.perf_counter() - started

    # After all that, a good annotation is still admitted.
    body = annotation_body(annotation_id=987_654_321, task_id=987_654_321, project=3)
    response = client.post("/webhook", json=body)
    still_works = False
    if response.status_code == 200:
        try:
            worker.tick()
        except Exception:
            counts["worker errors"] += 1
        rows = store.annotations("3", annotation_id=987_654_321)
        still_works = bool(rows) and rows[-1]["state"] == "admitted"
    annotations = collections.Counter(r["state"] for r in store.annotations())
    store.close()
    tmp.cleanup()
    return {"inputs": counts["inputs"], "5xx": counts["5xx"], "crash": counts["crash"],
            "worker_errors": counts["worker errors"],
            "acknowledged": counts["acknowledged"], "unprocessable": counts["unprocessable"],
            "events": {k.split(" ", 1)[1]: v for k, v in counts.items()
                       if k.startswith("event ")},
            "annotations": dict(annotations), "by_status": dict(sorted(by_status.items())),
            "by_route": dict(by_route), "seconds": round(seconds, 1),
            "still_works": still_works, "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    outcome = run(args.inputs, args.seed)
    row = {k: outcome[k] for k in ("inputs", "5xx", "crash", "worker_errors", "acknowledged",
                                   "unprocessable", "seconds", "still_works")}
    print_table([row], list(row))
    print("events after the worker:", outcome["events"])
    print("annotation revisions:", outcome["annotations"])
    print("answers by status:", outcome["by_status"])
    print("requests by route:", outcome["by_route"])
    for example in outcome["examples"]:
        print("  example:", example)
    path = write_results("bench_fuzz", [row], extra={
        "seed": args.seed, **{k: outcome[k] for k in ("events", "annotations", "by_status",
                                                      "by_route", "examples")}}, out=args.out)
    print(f"wrote {path}")
    bad = outcome["5xx"] or outcome["crash"] or outcome["worker_errors"] \
        or outcome["unprocessable"]
    return 0 if not bad and outcome["still_works"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load: 20 concurrent /predict clients for 60 s while a training job runs.

Starts the real service (``label-assistant serve``, 2 gunicorn workers x 4 threads, the
worker process) on a free port of 127.0.0.1 with a published Unet-resnet18 version (random
weights: speed only), starts a training job in its own process (the CPU load a round puts
on the machine), then runs ``--clients`` threads that each post one 256 x 256 task to
``/predict`` after another for ``--seconds``. Reports requests, errors, latency p50/p99, and
the gunicorn processes' resident memory before and after.

Where the time goes, by the service's own knobs: each case is a separate serve.

- ``--cases`` ``default``: as shipped;
- ``unniced``: the training job at normal priority (``LA_JOB_NICE=0``) instead of niced;
- ``parallel-inference``: model runs not serialized per worker process
  (``LA_INFERENCE_SLOTS=4``, one per gunicorn thread).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py [--seconds 60 --clients 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402
from bench_backend import (  # noqa: E402
    CONFIG,
    _free_port,
    _png_data_url,
    _publish_model,
    _start_training_load,
    _wait_and_setup,
)

CASES = {
    "default": {},
    "unniced": {"LA_JOB_NICE": "0"},
    "parallel-inference": {"LA_INFERENCE_SLOTS": "4"},
}


def _rss_mb(root_pid: int) -> float:
    """Resident memory of a process tree, MB (from /proc)."""
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total / 1024


def run_case(name: str, extra_env: dict[str, str], args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"la-bench-load-{name}-"))
    workdir = tmp / "work"
    _publish_model(workdir)
    url = _png_data_url((np.random.default_rng(1).random((256, 256)) * 255).astype(np.uint8))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LA_SINK": "none", "LA_TRAIN_AFTER": "0",
           **extra_env}
    server = subprocess.Popen(
        [sys.executable, "-m", "label_assistant", "serve", "--port", str(port), "--workdir",
         str(workdir), "--workers", "2", "--threads", "4"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    training = None
    try:
        _wait_and_setup(base, seconds=120)
        body = {"tasks": [{"id": 1, "data": {"image": url}}], "project": "1.1",
                "label_config": CONFIG}
        for _ in range(4):  # both workers load the model
            requests.post(f"{base}/predict", json=body, timeout=120)
        rss_before = _rss_mb(server.pid)
        training = _start_training_load(tmp)
        if extra_env.get("LA_JOB_NICE", "") != "0":
            os.setpriority(os.PRIO_PROCESS, training.pid, 10)  # as the worker starts jobs
        time.sleep(10)  # into training
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def client() -> None:
            session = requests.Session()
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    answer = session.post(f"{base}/predict", json=body, timeout=300)
                    ok = answer.status_code == 200 and answer.json()["results"][0]["result"]
                except requests.RequestException:
                    ok = False
                with lock:
                    latencies.append(time.perf_counter() - start)
                    errors[0] += 0 if ok else 1

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p50, p99 = np.percentile(latencies, [50, 99])
        return {"case": name, "requests": len(latencies), "errors": errors[0],
                "p50_s": float(p50), "p99_s": float(p99),
                "requests_per_s": len(latencies) / args.seconds,
                "rss_before_mb": rss_before, "rss_after_mb": _rss_mb(server.pid),
                "training_running": training.poll() is None}
    finally:
        if training is not None and training.poll() is None:
            training.kill()
        server.terminate()
        server.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        rows.append(run_case(name, CASES[name], args))
        print(rows[-1], flush=True)
    path = write_results("bench_load", rows, {"seconds": args.seconds, "clients": args.clients})
    print_table(rows, ["case", "requests", "errors", "p50_s", "p99_s", "requests_per_s",
                       "rss_before_mb", "rss_after_mb", "training_running"])
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training jobs through RQ over Redis (``LA_QUEUE``) against local job processes.

The same training job (a generated data set, one config) is started ``--rounds`` times each
way, one at a time, through the backend's two job starters:

- ``local``: :func:`~label_assistant.ml_backend.jobs.start_process` (a new ``python -m
  label_assistant.ml_backend.jobs`` process per job, as without ``LA_QUEUE``);
- ``rq``: :class:`~label_assistant.ml_backend.rq_queue.QueueStarter` enqueues it on a real
  ``redis-server`` (:mod:`label_assistant.devtools.redis_server`) and one ``label-assistant
  worker`` (started once, before the rounds, and registered) runs it in a forked work horse.

Per job: ``start_s`` = from the starter's call to the job writing ``running`` (for RQ the
enqueue-to-start latency: queue, dequeue, fork; for a local process: interpreter and imports),
``wall_s`` = from the call until the handle reports the end (what the supervisor sees), and
``train_s`` = the job's own training time. Then ``--starts`` ranking jobs each way that
fail at once after starting (their request names no Label Studio): the start latency alone,
many times, cheaply. A JSON file in benchmarks/results and the tables.

    python benchmarks/bench_rq_jobs.py [--rounds 3 --starts 10 --images 4 --size 64 \
        --epochs 1 --steps 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402


def make_data(root: Path, n: int, size: int) -> tuple[list[str], list[str]]:
    """``n`` generated images with their label maps (Background 0, Cell 1) as PNG files."""
    from PIL import Image

    from label_assistant.devtools.samples import nuclei_image

    images, labels = [], []
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        image, mask = nuclei_image(size, seed=i)
        images.append(str(root / "images" / f"i{i}.png"))
        labels.append(str(root / "labels" / f"i{i}.png"))
        Image.fromarray(image).save(images[-1])
        Image.fromarray((mask > 0).astype(np.uint8)).save(labels[-1])
    return images, labels


def request(data: tuple[list[str], list[str]], registry: Path, config: dict) -> dict:
    from label_assistant.model.job import TrainingRequest

    images, labels = data
    return TrainingRequest(images=images, labels=labels, class_names=["Background", "Cell"],
                           registry=str(registry), config=config).to_dict()


def run_job(starter, job_dir: Path, body: dict, expect: str = "done") -> dict:
    from label_assistant.model.job import read_status, write_request

    write_request(job_dir, body)
    t0 = time.time()
    handle = starter(job_dir)
    while handle.poll() is None:
        time.sleep(0.02)
    ended = time.time()
    status = read_status(job_dir)
    if status.state != expect:
        raise RuntimeError(f"{job_dir}: {status.state} {status.error or ''}\n"
                           f"{(job_dir / 'job.log').read_text()[-2000:]}")
    return {"start_s": status.started_at - t0, "wall_s": ended - t0,
            "train_s": status.finished_at - status.started_at}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="training jobs each way")
    parser.add_argument("--starts", type=int, default=10,
                        help="start-only jobs each way (a ranking job without Label Studio)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="steps per epoch")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from label_assistant.devtools.redis_server import RedisServer
    from label_assistant.ml_backend.jobs import start_process
    from label_assistant.ml_backend.rq_queue import QueueStarter

    config = dict(arch="Unet", encoder="resnet18", epochs=args.epochs,
                  steps_per_epoch=args.steps, batch_size=2, tile=min(128, args.size),
                  inference_tile=args.size, min_labeled_pixels=1, device="cpu",
                  val_fraction=0.0)
    rows: list[dict] = []
    starts: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as redis:
        root = Path(tmp)
        data = make_data(root / "data", args.images, args.size)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        log = (root / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "label_assistant.cli", "worker", "--queue", redis.url,
             "--name", "bench"], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        try:
            from rq import Worker

            t0 = time.time()
            while not Worker.all(connection=redis.client):
                if worker.poll() is not None or time.time() - t0 > 180:
                    raise RuntimeError((root / "worker.log").read_text()[-2000:])
                time.sleep(0.1)
            worker_ready_s = time.time() - t0
            starters = {"local": lambda d: start_process(d, env),
                        "rq": QueueStarter(redis.url)}
            for i in range(args.rounds):
                for mode, starter in starters.items():  # interleaved: same machine load
                    row = run_job(starter, root / mode / f"job-{i}",
                                  request(data, root / mode / "models", config))
                    rows.append({"mode": mode, "round": i + 1, **row})
                    print(f"{mode} round {i + 1}: start {row['start_s']:.2f} s, "
                          f"wall {row['wall_s']:.2f} s", flush=True)
            no_origin = {"kind": "rank", "project": "1", "job": 1, "origin": None,
                         "settings": {"LA_WORKDIR": str(root / "work")}}
            for i in range(args.starts):
                for mode, starter in starters.items():
                    row = run_job(starter, root / mode / f"start-{i}", no_origin, "failed")
                    starts.append({"mode": mode, "job": i + 1, **row})
        finally:
            worker.terminate()  # RQ's warm shutdown: it is idle, so it exits
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
    summary = []
    for what, table in (("training", rows), ("start only", starts)):
        for mode in ("local", "rq"):
            mine = [r for r in table if r["mode"] == mode]
            if mine:
                summary.append({"jobs": what, "mode": mode, "n": len(mine),
                                **{f"median_{k}": statistics.median(r[k] for r in mine)
                                   for k in ("start_s", "wall_s", "train_s")},
                                "max_start_s": max(r["start_s"] for r in mine)})
    print_table(rows, ["mode", "round", "start_s", "train_s", "wall_s"])
    print()
    print_table(summary, ["jobs", "mode", "n", "median_start_s", "max_start_s",
                          "median_train_s", "median_wall_s"])
    print(f"\nworker start (imports, registration): {worker_ready_s:.1f} s, once")
    path = write_results("bench_rq_jobs", rows, {"starts": starts,
        "args": vars(args) | {"out": None}, "config": config, "summary": summary,
        "worker_ready_s": worker_ready_s}, out=args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-project pre-labeling against a real Label Studio 1.23.2: speed, and whether Label
Studio stays responsive for an annotator meanwhile.

A generated project of ``--tasks`` (default 1,000) tasks, each a ``--size``² (default 256)
nuclei-like PNG uploaded into Label Studio, is pre-labeled by ``label-assistant prelabel
--project`` (the backend's own job, :mod:`label_assistant.ml_backend.project_prelabels`,
Otsu serving: the work directory holds no model) as a separate process at a lower priority
(``nice +4`` over this one: the service's ``LA_JOB_NICE=10``, capped by nice's 19 when run
under ``nice -n 15``). Meanwhile an "annotator" polls every 0.5 s ``GET /api/tasks/ID`` (a
random task) and ``GET /api/projects/ID/next`` (the next task to label); the same polls run
``--idle`` seconds before the job, for comparison. Reported: tasks per second, the time to
the last prediction, the poll latencies (p50 / p95) idle and during the job, and the check
that every task holds exactly one prediction of the version.

With ``--stale`` every task first gets a prediction of an older version of ours (``v0001``,
imported before the job): the state after a new version, where the job also deletes the
stale predictions (two more calls per task: its predictions, and the delete).

The write path is measured too, on a second project of ``--compare`` tasks (default 100) with
one real pre-label payload: one ``POST /api/predictions`` per task (the SDK's
``predictions.create``) against ``POST /api/projects/ID/import/predictions`` per batch of
``--batch`` (what the job uses).

    nice -n 15 python benchmarks/bench_prelabel_project.py [--tasks 1000] [--size 256]
        [--batch 50] [--idle 15] [--compare 100] [--stale] [--label-studio-url U --api-key K]

Without ``--label-studio-url`` it starts its own Label Studio from ``.ls-venv`` (a data dir
initialised in ``LABEL_STUDIO_TEMPLATE_DIR`` when set and kept there, else in a temporary
folder: +25-65 s). JSON to ``benchmarks/results/bench_prelabel_project.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, print_table, write_results  # noqa: E402

from label_assistant.devtools.samples import nuclei_image  # noqa: E402
from label_assistant.labelstudio.client import LabelStudioClient  # noqa: E402

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Background" background="#444444"/>
    <Label value="Nucleus" background="#e53935"/>
  </BrushLabels>
</View>"""
POLL = 0.5
STALE = "v0001"  # an older version of ours (--stale)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def make_project(client: LabelStudioClient, title: str, n: int, size: int
                 ) -> tuple[int, list[int]]:
    project = client.create_project(title, CONFIG)
    ids: list[int] = []
    for start in range(0, n, 100):  # Label Studio takes at most 100 files per upload
        chunk = [(f"img{i:05d}.png", png(nuclei_image(size, seed=i)[0]))
                 for i in range(start, min(n, start + 100))]
        urls = client.upload_images(project, chunk)
        ids += client.import_tasks(project, [{"image": u} for u in urls])
    return project, ids


class Annotator(threading.Thread):
    """Polls like an annotator's screen: a task, and the next task, every 0.5 s."""

    def __init__(self, url: str, token: str, project: int, ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"},
                                 timeout=60)
        self.project, self.ids = project, ids
        self.samples: dict[str, list[float]] = {"task": [], "next": []}
        self.errors = 0
        self.stop = threading.Event()
        self.rng = random.Random(0)

    def _get(self, kind: str, path: str) -> None:
        t0 = time.perf_counter()
        try:
            ok = self.http.get(path).status_code < 400
        except httpx.HTTPError:
            ok = False
        self.samples[kind].append(time.perf_counter() - t0)
        self.errors += not ok

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self._get("task", f"/api/tasks/{self.rng.choice(self.ids)}")
            self._get("next", f"/api/projects/{self.project}/next")
            self.stop.wait(max(0.0, POLL - (time.perf_counter() - t0)))


def latency_rows(phase: str, annotator: Annotator) -> list[dict[str, Any]]:
    rows = []
    for kind, path in (("task", "GET /api/tasks/ID"), ("next", "GET /api/projects/ID/next")):
        values = sorted(annotator.samples[kind])
        if not values:
            continue
        rows.append({"measure": f"{path}, {phase}", "n": len(values),
                     "p50_ms": 1000 * statistics.median(values),
                     "p95_ms": 1000 * values[min(len(values) - 1, int(0.95 * len(values)))],
                     "max_ms": 1000 * values[-1]})
    return rows


def poll_for(seconds: float, args: Any, project: int, ids: list[int]) -> Annotator:
    annotator = Annotator(args.label_studio_url, args.api_key, project, ids)
    annotator.start()
    time.sleep(seconds)
    annotator.stop.set()
    annotator.join()
    return annotator


def run_job(args: argparse.Namespace, project: int, ids: list[int], workdir: Path
            ) -> tuple[dict[str, Any], Annotator, float, float | None]:
    """The prelabel command as a lower-priority process, polled by an annotator."""
    summary = workdir / "summary.json"
    command = [sys.executable, "-m", "label_assistant", "prelabel", "--project", str(project),
               "--workdir", str(workdir), "--label-studio-url", args.label_studio_url,
               "--api-key", args.api_key, "--batch", str(args.batch), "--device", "cpu",
               "--json", str(summary)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    annotator = Annotator(args.label_studio_url, args.api_key, project, ids)
    checkpoint = workdir / "projects" / str(project) / "jobs" / "prelabel-cli" / \
        "checkpoint.json"
    started = time.perf_counter()
    with open(workdir / "job.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: os.nice(4))
    annotator.start()
    first_batch = None
    while process.poll() is None:
        if first_batch is None and checkpoint.exists():
            try:
                if json.loads(checkpoint.read_text()).get("done"):
                    first_batch = time.perf_counter() - started
            except ValueError:
                pass
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    annotator.stop.set()
    annotator.join()
    if process.returncode != 0:
        raise SystemExit(f"prelabel failed ({process.returncode}): "
                         f"{(workdir / 'job.log').read_text()[-2000:]}")
    return json.loads(summary.read_text()), annotator, seconds, first_batch


def payload(size: int) -> list[dict[str, Any]]:
    """A real pre-label's ``result``: Otsu's brush regions of one generated image."""
    from label_assistant.assist.pre import otsu_prelabel
    from label_assistant.labelstudio.annotations import label_map_to_results
    from label_assistant.labelstudio.config import parse_label_config

    image = nuclei_image(size, seed=0)[0]
    return label_map_to_results(otsu_prelabel(image).label_map, parse_label_config(CONFIG))


def compare_writes(client: LabelStudioClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One POST per task against one import per batch, with one real pre-label payload."""
    results = payload(args.size)
    project = client.create_project("bench-write-path", CONFIG)
    ids = client.import_tasks(project, [{"image": f"/data/none-{i}.png"}
                                        for i in range(args.compare)])
    rows = []
    t0 = time.perf_counter()
    for task in ids:
        client.sdk.predictions.create(task=task, result=results, score=0.5,
                                      model_version="per-task")
    per_task = time.perf_counter() - t0
    rows.append({"measure": "write: POST /api/predictions per task", "n": len(ids),
                 "seconds": per_task, "tasks_per_s": len(ids) / per_task})
    t0 = time.perf_counter()
    for start in range(0, len(ids), args.batch):
        client.create_predictions(project, [
            {"task": t, "result": results, "score": 0.5, "model_version": "import"}
            for t in ids[start: start + args.batch]])
    batched = time.perf_counter() - t0
    rows.append({"measure": f"write: POST .../import/predictions, {args.batch} per call",
                 "n": len(ids), "seconds": batched, "tasks_per_s": len(ids) / batched})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds of annotator polls before the job (the idle baseline)")
    parser.add_argument("--compare", type=int, default=100,
                        help="tasks of the write-path comparison (0: skip it)")
    parser.add_argument("--stale", action="store_true",
                        help="every task holds a prediction of an older version first")
    parser.add_argument("--label-studio-url", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-prelabel-") as tmp:
        server = None
        if args.label_studio_url is None:
            from label_assistant.devtools.labelstudio_server import (
                DEFAULT_TOKEN,
                LabelStudioServer,
                copy_data_dir,
                init_data_dir,
            )

            template = Path(os.environ.get("LABEL_STUDIO_TEMPLATE_DIR") or Path(tmp) / "tpl")
            if not (template / "label_studio.sqlite3").exists():
                print(f"label-studio init: {init_data_dir(template):.0f} s", file=sys.stderr)
            files = Path(tmp) / "files"
            files.mkdir()
            server = LabelStudioServer(token=DEFAULT_TOKEN, document_root=files)
            server.start(copy_data_dir(template, Path(tmp) / "ls-data"))
            args.label_studio_url, args.api_key = server.url, server.token
        try:
            client = LabelStudioClient(args.label_studio_url, args.api_key, timeout=120)
            t0 = time.perf_counter()
            project, ids = make_project(client, f"bench-prelabel-{args.tasks}", args.tasks,
                                        args.size)
            setup = time.perf_counter() - t0
            print(f"project {project}: {len(ids)} tasks of {args.size}² in {setup:.0f} s",
                  file=sys.stderr)
            if args.stale:
                results = payload(args.size)
                for start in range(0, len(ids), args.batch):
                    client.create_predictions(project, [
                        {"task": t, "result": results, "score": 0.5, "model_version": STALE}
                        for t in ids[start: start + args.batch]])
            rows = latency_rows("idle", poll_for(args.idle, args, project, ids))
            workdir = Path(tmp) / "work"
            workdir.mkdir()
            summary, annotator, seconds, first_batch = run_job(args, project, ids, workdir)
            rows += latency_rows("during the job", annotator)
            counts = Counter((p["task"], p["model_version"]) for p in client.predictions(project))
            one_each = sorted(counts) == [(t, summary["model_version"]) for t in sorted(ids)] \
                and set(counts.values()) == {1}
            job = {"measure": "pre-label job", "n": summary["tasks_done"],
                   "seconds": seconds, "tasks_per_s": summary["written"] / seconds,
                   "time_to_last_prediction_s": seconds, "first_batch_s": first_batch}
            rows.insert(0, job)
            if args.compare:
                rows += compare_writes(client, args)
        finally:
            if server is not None:
                server.stop()

    extra = {"tasks": args.tasks, "size": args.size, "batch": args.batch,
             "model_version": summary["model_version"], "written": summary["written"],
             "failed": summary["failed"], "stale": STALE if args.stale else None,
             "stale_deleted": summary["stale_deleted"], "one_prediction_per_task": one_each,
             "annotator_errors": annotator.errors, "setup_seconds": setup,
             "cpu_cores": os.cpu_count(), "load_average_after": os.getloadavg(),
             "nice": {"benchmark_and_label_studio": os.nice(0),
                      "job": min(19, os.nice(0) + 4)}}
    path = write_results("bench_prelabel_project", rows, extra, args.out)
    print_table(rows, ["measure", "n", "seconds", "tasks_per_s", "time_to_last_prediction_s",
                       "first_batch_s", "p50_ms", "p95_ms", "max_ms"])
    print(f"{summary['written']} predictions of {summary['model_version']} written, "
          f"{summary['stale_deleted']} stale deleted; each task holds exactly this one: "
          f"{one_each}; annotator poll errors: {annotator.errors}; {path}")
    return 0 if one_each else 1


if __name__ == "__main__":
    sys.exit(main())

"""Jobs on RQ workers over a real Redis (``LA_QUEUE``): two workers, coalescing across them,
a worker killed mid-job (rerun once, then failed; versions and ``current`` intact), what
``rounds`` and ``/metrics`` show, a training job through RQ whose version then serves, and
the end-to-end path with the real Label Studio (``serve`` with ``LA_QUEUE``: training and
ranking jobs on a worker, the ranking written back to Label Studio).

The intake side (webhook events, the store, the one :class:`~label_assistant.ml_backend.jobs.
Supervisor`) runs in this process or in ``serve``; the jobs run in real ``label-assistant
worker`` processes on the same work directory (here the shared filesystem is the local one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from labelstudio_harness import *  # noqa: F403  (the labelstudio fixture)
from labelstudio_harness import BRUSH_CONFIG
from redis_harness import *  # noqa: F403  (the redis_server and queue_workers fixtures)
from redis_harness import QueueWorker, wait_for
from test_backend_e2e import AUTH, _results, _tasks, serve
from test_backend_support import (
    CONFIG,
    FIXTURES,
    annotation_event,
    blob_image,
    data_url,
    labeled,
    png_bytes,
)

from label_assistant.cli import main
from label_assistant.labelstudio.client import RANK_FIELD
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import RecordingSink
from label_assistant.ml_backend.store import job_state
from label_assistant.ml_backend.worker import Worker
from label_assistant.model.job import read_status
from label_assistant.workspace import Workspace

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not found")

TINY = dict(arch="Unet", encoder="resnet18", epochs=1, steps_per_epoch=2, batch_size=2, tile=64,
            inference_tile=64, min_labeled_pixels=1, device="cpu", val_fraction=0.0)
#: Long enough to be killed mid-training (each epoch writes its status).
LONG = {**TINY, "epochs": 200}


def intake(tmp_path: Path, url: str, **overrides) -> Worker:
    settings = Settings(workdir=tmp_path / "work", train_after=0, device="cpu", queue=url,
                        poll_interval=0.1, **overrides)
    return Worker(settings, sink=RecordingSink())


def annotate(worker: Worker, project: int, n: int = 3) -> None:
    """``n`` admitted-to-be annotations of ``project``, then START_TRAINING."""
    for i in range(n):
        image, mask = blob_image(seed=project * 10 + i)
        body = annotation_event("ANNOTATION_CREATED", annotation_id=project * 100 + i,
                                task_id=project * 100 + i, image=data_url(png_bytes(image)),
                                label_map=labeled(mask, background_rows=40))
        body["project"]["id"] = project
        worker.store.record_event(str(project), body["action"], json.dumps(body))
    request_training(worker, project)


def request_training(worker: Worker, project: int) -> None:
    worker.store.record_event(str(project), "START_TRAINING",
                              json.dumps({"action": "START_TRAINING", "project": {"id": project}}))


def until_jobs_end(worker: Worker, count: int, timeout: float, workers=()) -> list[dict]:
    """Tick the intake until ``count`` jobs are done or failed and none is left to run."""
    def ended():
        worker.tick()
        for w in workers:
            assert w.proc.poll() is None, w.tail()
        jobs = worker.store.jobs()
        finished = [j for j in jobs if j["state"] in ("done", "failed")]
        return jobs if len(finished) >= count and len(finished) == len(jobs) else None

    return wait_for(f"{count} jobs to end", ended, timeout, 0.1)


def test_queue_settings_and_nothing_of_rq_without_it(tmp_path):
    """Without LA_QUEUE the service never imports rq or redis; a bad URL is one line."""
    code = ("import sys; from label_assistant.ml_backend.app import create_app; "
            "from label_assistant.ml_backend.settings import Settings; "
            f"create_app(Settings(workdir={str(tmp_path / 'w')!r}), start_worker=True); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rq', 'redis')))")
    env = {k: v for k, v in os.environ.items() if k != "LA_QUEUE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    bad = subprocess.run([sys.executable, "-m", "label_assistant.cli", "serve", "--workdir",
                          str(tmp_path / "w"), "--port", "9"], capture_output=True, text=True,
                         env={**env, "LA_QUEUE": "redis//nohost"}, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("label-assistant serve: error: LA_QUEUE must be a "
                                         "Redis URL") and "\n" not in bad.stderr.strip()


def test_worker_command_refuses_bad_input_in_one_line(capsys):
    assert main(["worker", "--queue", "http://host:6379"]) == 2
    assert "--queue must be a Redis URL" in capsys.readouterr().err
    assert main(["worker", "--queue", "redis://127.0.0.1:6379/0", "--gpus", "first"]) == 2
    assert "--gpus takes GPU numbers" in capsys.readouterr().err
    assert main(["worker", "--queue", "redis://127.0.0.1:1/0"]) == 2  # nothing listens there
    err = capsys.readouterr().err.strip()
    assert err.startswith("label-assistant worker: error: Redis at redis://127.0.0.1:1/0")
    assert "\n" not in err


def test_a_job_no_worker_has_taken_shows_queued(tmp_path, redis_server):
    from rq import Queue

    from label_assistant.ml_backend.rq_queue import QUEUE_NAME

    worker = intake(tmp_path, redis_server.url, train_overrides=TINY)
    annotate(worker, 1)
    try:
        worker.tick()  # admitted, and the job enqueued: no worker runs yet
        (job,) = worker.store.jobs()
        assert (job["state"], job_state(job)) == ("running", "queued")  # the project's one job
        assert job["queue_job"] and job["pid"] is None and job["worker"] is None
        worker.tick()
        assert job_state(worker.store.jobs()[0]) == "queued"  # waiting is not dying
        assert 'la_training_jobs{kind="train",project="1",state="queued"} 1.0' in \
            worker_metrics(worker)
        assert [(j["state"], j["worker"]) for j in rounds_json(worker.settings.workdir, 1)[
            "jobs"]] == [("queued", None)]
        # A restarted intake finds the run through its RQ job: still waiting, not rerun.
        restarted = intake(tmp_path, redis_server.url, train_overrides=TINY)
        restarted.tick()
        (again,) = restarted.store.jobs()
        assert (again["attempts"], again["queue_job"], job_state(again)) == \
            (1, job["queue_job"], "queued")
        # A run Redis forgot (flushed, restarted without persistence) is run again, once.
        redis_server.client.delete(f"rq:job:{job['queue_job']}")
        restarted.tick()
        (again,) = restarted.store.jobs()
        assert again["attempts"] == 2 and again["queue_job"] != job["queue_job"]
        assert "the queue has no record of it" in again["error"]
    finally:
        Queue(QUEUE_NAME, connection=redis_server.client).empty()


@pytest.mark.slow
def test_two_workers_take_jobs_coalesced_per_project_and_the_version_serves(
        tmp_path, redis_server, queue_workers):
    pool = queue_workers
    worker = intake(tmp_path, redis_server.url, train_overrides=TINY)
    annotate(worker, 1)
    annotate(worker, 2)
    worker.tick()  # both jobs enqueued at once: each idle worker takes one
    # Three more requests for project 1 while its job runs: one follow-up.
    for _ in range(3):
        request_training(worker, 1)
    worker.tick()
    assert [j["followup"] for j in worker.store.jobs("1")] == [1]
    jobs = until_jobs_end(worker, 3, 240, pool)
    logs = "\n".join(w.tail() for w in pool)
    assert [(j["project"], j["state"], j["version"]) for j in jobs] == \
        [("1", "done", "v0001"), ("2", "done", "v0001"), ("1", "done", "v0002")], logs
    # The two first jobs ran at once, one on each worker; project 1's two never overlapped.
    assert {jobs[0]["worker"], jobs[1]["worker"]} == {"w-a", "w-b"}
    first, follow = (read_status(Path(j["job_dir"])) for j in (jobs[0], jobs[2]))
    assert first.finished_at <= follow.started_at
    assert "training on 3 images" in (Path(jobs[0]["job_dir"]) / "job.log").read_text()

    # rounds and /metrics name the worker of each job.
    workdir = worker.settings.workdir
    history = rounds_json(workdir, 1)
    assert [(v["version"], v["job"]["worker"]) for v in history["versions"]] == \
        [("v0001", jobs[0]["worker"]), ("v0002", jobs[2]["worker"])]
    metrics = worker_metrics(worker)
    for name in {j["worker"] for j in jobs}:
        count = sum(1 for j in jobs if j["worker"] == name)
        assert f'la_worker_jobs{{kind="train",state="done",worker="{name}"}} {count}.0' \
            in metrics

    # The version a worker published serves once promoted (kept: nothing to validate on).
    assert main(["rounds", "--workdir", str(workdir), "--project", "2", "--promote",
                 "v0001"]) == 0
    from label_assistant.ml_backend.app import create_app

    image, _ = blob_image(seed=1)
    client = create_app(worker.settings).test_client()
    predict = {"project": "2.1", "label_config": CONFIG,
               "tasks": [{"id": 9, "data": {"image": data_url(png_bytes(image))}}]}
    response = client.post("/predict", json=predict)
    assert response.status_code == 200
    assert response.json["results"][0]["model_version"] == "v0001"


@pytest.mark.slow
@pytest.mark.labelstudio
def test_end_to_end_with_label_studio_jobs_on_a_worker(tmp_path, redis_server, queue_workers,
                                                        labelstudio):
    """``serve`` with LA_QUEUE and the real Label Studio: START_TRAINING trains v0001 on a
    worker; once it serves, the ranking job runs on a worker too (with the Label Studio
    address and token from its request) and writes the order back."""
    from label_assistant.ml_backend.store import Store

    ls = labelstudio
    names = {w.name for w in queue_workers}
    # With a score (the default, sequence, needs no model): the worker ranks with v0001.
    with serve(tmp_path, ls, LA_QUEUE=redis_server.url, LA_STRATEGY="sequence+entropy"
               ) as (url, workdir, log):
        project = ls.client.create_project("rq e2e", BRUSH_CONFIG)
        ids = ls.client.import_tasks(project, _tasks())
        ml = ls.client.connect_backend(project, url, basic_auth=AUTH)
        store = Store.for_workdir(workdir)
        ls.sdk.annotations.create(id=ids[0], result=_results(0, with_background=True))
        wait_for("admitted", lambda: [a for a in store.annotations(str(project))
                                      if a["state"] == "admitted"], 60, 0.2)
        response = requests.post(f"{ls.url}/api/ml/{ml}/train",
                                 headers={"Authorization": f"Token {ls.token}"}, timeout=30)
        assert response.status_code < 300, response.text

        def ended(kind):
            return [j for j in store.jobs(str(project), kind=kind)
                    if j["state"] in ("done", "failed")]

        try:
            (job,) = wait_for("the training job", lambda: ended("train"), 180, 0.5)
            assert (job["state"], job["version"]) == ("done", "v0001"), job
            assert job["queue_job"] and job["worker"] in names and job["pid"] is None
            assert main(["rounds", "--workdir", str(workdir), "--project", str(project),
                         "--promote", "v0001"]) == 0
            # What serves changed: the ranking job goes to a worker, which ranks with v0001.
            (rank,) = wait_for("the ranking job", lambda: ended("rank"), 180, 0.5)
            assert rank["state"] == "done" and rank["worker"] in names, rank
        except BaseException:
            print("---- serve log ----\n" + log.read_text()[-4000:])
            print("\n".join(w.tail() for w in queue_workers))
            raise
        tasks = {t["id"]: t["data"] for t in ls.client.list_tasks(project)}
        assert sorted(tasks[t][RANK_FIELD] for t in ids[1:]) == \
            [f"{i:06d}" for i in range(1, len(ids))]
        assert "entropy" in " ".join(tasks[t]["la_reason"] for t in ids[1:])
        body = {"project": f"{project}.1", "label_config": BRUSH_CONFIG,
                "tasks": [{"id": ids[2], "data": _tasks()[2]}]}
        answer = requests.post(f"{url}/predict", json=body, timeout=30, auth=AUTH)
        assert answer.json()["results"][0]["model_version"] == "v0001"


@pytest.mark.slow
def test_a_worker_killed_mid_job_reruns_it_once_then_fails_it_leaving_versions(
        tmp_path, redis_server, queue_workers):
    worker = intake(tmp_path, redis_server.url, train_overrides=LONG)
    registry = Workspace(worker.settings.workdir).registry("1")
    seed_version(registry.root)
    before = ([v.id for v in registry.list()], registry.current_id())
    assert before == (["v0001"], "v0001")
    annotate(worker, 1)
    job_dir, first = wait_running(worker, queue_workers)
    # The machine goes: the worker and its work horse (the job's process), SIGKILLed.
    horse = read_status(job_dir).pid
    first.kill()
    os.kill(horse, signal.SIGKILL)
    # No heartbeat any more: the intake takes the run for dead, the other worker reruns it.
    rerun, second = wait_running(worker, [w for w in queue_workers if w is not first],
                                 after=job_dir)
    (job,) = worker.store.jobs("1")
    assert job["attempts"] == 2 and f"worker {first.name}" in job["error"] and \
        "sent no heartbeat" in job["error"], job
    # Now only the second run's work horse is killed: its worker notices at once.
    os.kill(read_status(rerun).pid, signal.SIGKILL)
    (job,) = until_jobs_end(worker, 1, 60, [second])
    assert job["state"] == "failed" and job["attempts"] == 2 and job["worker"] == second.name
    assert "ended without finishing" in job["error"] and "signal 9" in job["error"], job
    assert ([v.id for v in registry.list()], registry.current_id()) == before
    assert registry.load_state_dict("v0001")
    listing = rounds_json(worker.settings.workdir, 1)
    (failed,) = listing["jobs"]
    assert (failed["state"], failed["worker"]) == ("failed", second.name)


# --- helpers --------------------------------------------------------------------------------


def wait_running(worker: Worker, runners: list[QueueWorker], after: Path | None = None
                 ) -> tuple[Path, QueueWorker]:
    """Tick until project 1's job runs on one of ``runners`` (in a new run folder when
    ``after`` is given); its folder and that worker."""
    def running():
        worker.tick()
        for runner in runners:
            assert runner.proc.poll() is None, runner.tail()
        (job,) = worker.store.jobs("1")
        assert job["state"] == "running", job
        runner = next((r for r in runners if r.name == job["worker"]), None)
        if not job["job_dir"] or Path(job["job_dir"]) == after or runner is None:
            return None
        status = read_status(Path(job["job_dir"]))
        return (Path(job["job_dir"]), runner) if status.state == "running" else None

    return wait_for("the job running on a worker", running, 120, 0.1)


def seed_version(root: Path) -> None:
    """A published version that serves (its weights are not a model: the training job's
    champion falls back to Otsu, which is all this test needs)."""
    import torch

    from label_assistant.model.registry import ModelRegistry

    ModelRegistry(root).publish({"w": torch.zeros(3)}, spec={},
                                class_names=["Background", "Cell"], label_config_hash=None,
                                manifest={}, metrics={}, curve=[], config={}, parent=None)


def rounds_json(workdir: Path, project: int) -> dict:
    out = workdir.parent / "rounds.json"
    assert main(["rounds", "--workdir", str(workdir), "--project", str(project),
                 "--json", str(out)]) == 0
    return json.loads(out.read_text())


def worker_metrics(worker: Worker) -> str:
    from label_assistant.ml_backend.metrics import RequestMetrics, render

    return render(RequestMetrics(), worker.store, worker.settings.workdir).decode()

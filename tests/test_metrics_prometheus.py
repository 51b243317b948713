"""``/metrics`` through prometheus_client: the store's gauges, and request counts that add up
over gunicorn workers (multiprocess mode) under the real ``label-assistant serve``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from label_assistant.cli import serve
from label_assistant.devtools.labelstudio_server import free_port
from label_assistant.ml_backend import gunicorn_conf
from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.store import Store
from label_assistant.model.job import JobStatus
from label_assistant.workspace import Workspace

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """``{(sample name, sorted labels): value}``; fails unless the page parses."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def health_requests(samples: Samples) -> float:
    """``la_http_requests_total`` of ``route="/health"``, summed over method and status."""
    return sum(value for (name, labels), value in samples.items()
               if name == "la_http_requests_total" and ("route", "/health") in labels)


def test_store_and_registry_gauges(tmp_path):
    settings = Settings(workdir=tmp_path / "work")
    client = create_app(settings).test_client()
    store = Store.for_workdir(settings.workdir)
    store.upsert_project("7")
    first = store.record_event("7", "ANNOTATION_CREATED", "{}")
    for _ in range(2):
        store.record_event("7", "ANNOTATION_CREATED", "{}")
    _, job_id = store.request_job("7", "train", "test")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    JobStatus("running", progress=0.4).write(job_dir)
    store.claim_job(job_id, str(job_dir))  # resets admitted_since_job
    store.record_annotation("7", task_id=1, annotation_id=10, event_id=first, state="admitted",
                            findings=None, image_path=None, label_path=None)  # event 1: done
    assert store.request_job("7", "train", "more data")[0] == "followup"
    store.request_job("7", "rank", "test")
    models = Workspace(settings.workdir).models_dir("7")
    models.mkdir(parents=True)
    (models / "current").write_text("v0003\n")
    for _ in range(3):
        assert client.get("/health").status_code == 200

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    samples = parse(response.get_data(as_text=True))

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("la_http_requests_total", route="/health", method="GET", status="200") == 3
    assert value("la_http_request_seconds_count", route="/health") == 3
    assert value("la_http_request_seconds_bucket", route="/health", le="+Inf") == 3
    assert value("la_http_request_seconds_bucket", route="/health", le="100.0") == 3
    assert [value("la_events", state=s) for s in ("pending", "processing", "done", "failed")] \
        == [2, 0, 1, 0]
    assert value("la_queue_depth") == 2
    assert value("la_annotations", project="7", state="admitted") == 1
    assert value("la_annotations", project="7", state="deleted") == 0
    assert value("la_admitted_since_job", project="7") == 1
    assert value("la_training_jobs", project="7", kind="train", state="running") == 1
    assert value("la_training_jobs", project="7", kind="train", state="queued") == 0
    assert value("la_training_jobs", project="7", kind="rank", state="queued") == 1
    assert value("la_training_running", project="7") == 1
    assert value("la_training_progress", project="7") == pytest.approx(0.4)
    assert value("la_training_followup", project="7") == 1
    assert value("la_model_version", project="7", version="v0003") == 1
    assert value("la_model_version_number", project="7") == 3


def test_serve_runs_gunicorn_with_the_child_exit_hook(tmp_path, monkeypatch):
    args = argparse.Namespace(host="127.0.0.1", port=9090, workers=2, threads=4, timeout=120,
                              no_worker=True, workdir=tmp_path)
    web, _ = serve.commands(args)
    assert web[web.index("--config") + 1] == "python:label_assistant.ml_backend.gunicorn_conf"
    # The hook removes the exited worker's live-gauge files (and nothing else).
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"")
    (tmp_path / "counter_123.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gunicorn_conf.child_exit(None, argparse.Namespace(pid=123))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_123.db"]


def _stale_counter(path: Path, count: float) -> None:
    """A counter file as a worker of an earlier run leaves it: ``count`` GET /health."""
    stale = MmapedDict(str(path))
    stale.write_value(mmap_key("la_http_requests", "la_http_requests_total",
                               ["route", "method", "status"], ["/health", "GET", "200"],
                               "HTTP requests answered."), count, 0.0)
    stale.close()


def _health_counts_by_pid(metrics_dir: Path) -> dict[str, float]:
    """GET /health counted in each worker's own counter file."""
    return {f.stem.split("_")[1]: sum(s.value for m in MultiProcessCollector.merge([str(f)])
                                      for s in m.samples if s.name == "la_http_requests_total"
                                      and s.labels.get("route") == "/health")
            for f in metrics_dir.glob("counter_*.db")}


@pytest.mark.slow
def test_request_counts_add_up_over_gunicorn_workers(tmp_path):
    port = free_port()
    workdir = tmp_path / "work"
    metrics_dir = Workspace(workdir).metrics_dir
    metrics_dir.mkdir(parents=True)
    _stale_counter(metrics_dir / "counter_1.db", 1000)  # serve must start from zero
    proc = subprocess.Popen(
        [sys.executable, "-m", "label_assistant.cli", "serve", "--port", str(port),
         "--workdir", str(workdir), "--workers", "2", "--threads", "4", "--no-worker"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:  # wait on "/" (its own route label), so /health counts only the test's
            try:
                if requests.get(f"{base}/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "serve did not answer within 60 s"
            time.sleep(0.2)

        def health(_: int) -> int:  # requests.get: a new connection each time
            return requests.get(f"{base}/health", timeout=10).status_code

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # 200 at once, more only while one worker got everything: "/" answering proves
            # one worker is up, and on a loaded 2-core machine the second may still be
            # importing its app (CI saw 1000 requests all go to one worker). Bounded by time.
            deadline = time.time() + 90
            while True:
                assert set(pool.map(health, range(200))) == {200}
                sent += 200
                if len([n for n in _health_counts_by_pid(metrics_dir).values() if n]) >= 2:
                    break
                assert time.time() < deadline, "the second worker never answered in 90 s"
                time.sleep(1)
        by_pid = _health_counts_by_pid(metrics_dir)
        assert "1" not in by_pid, "the stale file of an earlier run was not removed"
        assert len([n for n in by_pid.values() if n]) == 2, by_pid  # both workers counted
        assert sum(by_pid.values()) == sent

        for _ in range(10):  # a new connection each: either worker may answer
            response = requests.get(f"{base}/metrics", timeout=10)
            assert response.status_code == 200
            assert health_requests(parse(response.text)) == sent
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, proc.stderr.read().decode()[-2000:]


def test_candidates_by_outcome(tmp_path):
    settings = Settings(workdir=tmp_path / "work")
    client = create_app(settings).test_client()
    store = Store.for_workdir(settings.workdir)
    store.upsert_project("7")
    for version, promoted in (("v0001", True), ("v0002", False), ("v0003", False)):
        _, job_id = store.request_job("7", "train", "test")
        store.claim_job(job_id, str(tmp_path / version))
        store.finish_job(job_id, "done", version=version, promoted=promoted, detail="why")
    samples = parse(client.get("/metrics").get_data(as_text=True))
    assert samples[("la_candidates", (("outcome", "promoted"), ("project", "7")))] == 1
    assert samples[("la_candidates", (("outcome", "kept"), ("project", "7")))] == 2
    assert samples[("la_model_version_number", (("project", "7"),))] == 0  # Otsu serves

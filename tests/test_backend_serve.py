"""``label-assistant serve``: gunicorn and the worker start, answer, and stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest
import requests

from label_assistant.ml_backend.store import Store

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_health_processes_events_and_stops_cleanly(tmp_path, capsys):
    port = _free_port()
    workdir = tmp_path / "work"
    env = {**os.environ, "LA_TRAIN_AFTER": "0", "LA_POLL_INTERVAL": "0.1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "label_assistant.cli", "serve", "--port", str(port),
         "--workdir", str(workdir), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"{base}/health", timeout=1).json()["status"] == "UP":
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "serve did not answer /health within 60 s"
            time.sleep(0.2)

        session = requests.Session()
        body = json.dumps({"action": "ANNOTATIONS_DELETED", "project": {"id": 3},
                           "annotations": [{"id": 1}]})
        times = []
        for _ in range(200):
            started = time.perf_counter()
            try:
                response = session.post(f"{base}/webhook", data=body,
                                        headers={"Content-Type": "application/json"}, timeout=5)
            except requests.ConnectionError as error:
                # Say why serve went away (its exit status and log) rather than only "refused".
                proc.send_signal(signal.SIGTERM)
                raise AssertionError(f"serve stopped answering (exit {proc.wait(timeout=30)}): "
                                     f"{proc.stderr.read().decode()[-3000:]}") from error
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        times.sort()
        with capsys.disabled():
            print(f"\nwebhook ack (gunicorn, 2 workers x 4 threads, 200 requests): "
                  f"p50 {statistics.median(times) * 1000:.1f} ms, "
                  f"p99 {times[197] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
        assert times[197] < 0.25

        store = Store.for_workdir(workdir)
        deadline = time.time() + 30
        while store.event_counts()["done"] < 200 and time.time() < deadline:
            time.sleep(0.1)
        assert store.event_counts()["done"] == 200  # the worker process ran them
        assert "la_queue_depth 0" in requests.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    with pytest.raises(requests.RequestException):
        requests.get(f"{base}/health", timeout=1)
    # No child left behind in serve's process group.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)

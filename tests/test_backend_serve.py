"""``label-assistant serve``: gunicorn and the worker start, answer, and stop on SIGTERM; a
killed ``serve`` takes its children with it; a child that dies is started again, up to
``--max-restarts``; a new work directory's store opens in many processes at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest
import requests
from test_kill9 import Serve, alive, wait_dead

from label_assistant.ml_backend.store import Store

pytestmark = pytest.mark.slow
#: The tests that find serve's children in /proc, and rely on Linux's PR_SET_PDEATHSIG.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


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


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@linux_only
def test_kill9_of_serve_leaves_no_child_alive_and_the_port_serves_again(tmp_path):
    serve = Serve(tmp_path / "work")
    tree = serve.start()
    family = [p for p in (tree.worker, tree.master, *tree.web) if p]
    assert len(family) == 4  # the worker, gunicorn's master and its 2 workers
    serve.kill()  # SIGKILL: serve can do nothing about its children; the kernel does
    assert wait_dead(family, grace=5.0) == []
    assert _port_free(serve.port)
    try:
        serve.start()  # the same port and work directory, at once
        assert serve.healthy()
    finally:
        assert serve.stop() == 0, serve.tail()
    assert not any(alive(p) for p in family)


@linux_only
def test_a_dead_child_is_started_again_until_max_restarts(tmp_path):
    workdir = tmp_path / "work"
    serve = Serve(workdir, args=("--max-restarts", "1"))
    tree = serve.start()
    try:
        os.kill(tree.worker, signal.SIGKILL)
        again = serve.wait_replaced("worker", tree.worker, timeout=60)
        assert again.master == tree.master
        assert f"the worker (pid {tree.worker}) was killed by SIGKILL; starting it again" \
            in serve.tail()
        # The new worker works.
        body = {"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 1}]}
        assert requests.post(f"{serve.base}/webhook", json=body, timeout=10).status_code == 200
        store = Store.for_workdir(workdir)
        deadline = time.time() + 60
        while store.event_counts()["done"] < 1:
            assert time.time() < deadline, serve.tail()
            time.sleep(0.1)
        # A second death within the window is one more than --max-restarts 1: serve stops
        # everything, says why in one line, and exits 1.
        os.kill(again.worker, signal.SIGKILL)
        assert serve.proc.wait(timeout=60) == 1
    finally:
        if serve.proc.poll() is None:
            serve.stop()
    assert (f"\nlabel-assistant serve: the worker (pid {again.worker}) was killed by SIGKILL, "
            "after 1 restart(s) within 60 s; stopping\n") in serve.tail(), serve.tail()
    assert wait_dead([again.master, *again.web], grace=30) == []  # stopped, not orphaned
    assert _port_free(serve.port)


@linux_only
def test_max_restarts_0_stops_serve_when_a_child_dies(tmp_path):
    serve = Serve(tmp_path / "work", args=("--max-restarts", "0"))
    tree = serve.start()
    os.kill(tree.master, signal.SIGKILL)
    try:
        assert serve.proc.wait(timeout=60) == 1
    finally:
        if serve.proc.poll() is None:
            serve.stop()
    assert (f"\nlabel-assistant serve: gunicorn (pid {tree.master}) was killed by SIGKILL; "
            "stopping\n") in serve.tail(), serve.tail()
    assert wait_dead([tree.worker, *tree.web], grace=30) == []


def _open_new_store(workdir: str, barrier: Any) -> None:
    try:
        barrier.wait(timeout=60)
        store = Store.for_workdir(workdir)  # the schema, WAL: all at the same moment
        store.record_event("1", "START_TRAINING", "{}")
    except BaseException as error:  # the exit status says it; stderr says what
        print(f"store open failed: {type(error).__name__}: {error}", file=sys.stderr)
        os._exit(1)
    os._exit(0)


def test_many_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    # serve's first start on an empty work directory: gunicorn's workers and the worker all
    # create the store at once. 3 starts in 19 once ended in "database is locked".
    ctx = multiprocessing.get_context("fork")
    processes, rounds = 12, 20
    for n in range(rounds):
        workdir = tmp_path / f"w{n}"
        barrier = ctx.Barrier(processes)
        procs = [ctx.Process(target=_open_new_store, args=(str(workdir), barrier))
                 for _ in range(processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0] * processes, f"round {n}"
        assert Store.for_workdir(workdir).event_counts()["pending"] == processes


@linux_only
def test_a_child_failing_at_start_up_stops_serve_at_once(tmp_path):
    from label_assistant.workspace import Workspace

    workdir = tmp_path / "work"
    Workspace(workdir).store_file.mkdir(parents=True)  # no database can be opened there
    serve = Serve(workdir, args=("--max-restarts", "5"))
    with pytest.raises(AssertionError, match=r"serve exited \(1\)"):
        serve.start(timeout=120)
    assert re.search(r"^label-assistant serve: (the worker|gunicorn) \(pid \d+\) exited with "
                     r"status \d+ at start-up \(see its messages above\); stopping$",
                     serve.tail(), re.MULTILINE), serve.tail()
    assert "starting it again" not in serve.tail()  # restarting would only repeat it


def test_a_port_in_use_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from label_assistant.cli import main, serve

    monkeypatch.setattr(serve, "PORT_WAIT", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert main(["serve", "--workdir", str(tmp_path / "w"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"label-assistant serve: error: 127.0.0.1:{port} is in use: another server " \
                  "listens there", err
    assert not (tmp_path / "w" / "metrics").exists()  # nothing of a running server touched

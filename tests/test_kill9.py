"""kill -9 against the real ``label-assistant serve``: nothing acknowledged is lost.

A thread posts ``ANNOTATION_CREATED`` webhooks (``data:`` URL images) while one process of
the service is killed with SIGKILL: the worker process, a gunicorn worker, the gunicorn master
or ``serve`` itself. Then:

- no child of the killed process outlives it by more than :data:`ORPHAN_GRACE` seconds
  (gunicorn workers die with their master, every child with ``serve``);
- the service comes back: ``serve`` restarts the worker and gunicorn (its supervision),
  gunicorn replaces its worker, and a killed ``serve`` is started again on the same port and
  work directory, at once;
- every event answered 200 is in the store and ends ``done``.

:class:`Serve`, :class:`Sender` and :func:`trial` are the harness of
``benchmarks/bench_kill9.py`` too (many more trials). Processes are found in ``/proc``
(psutil is not a dependency); Linux only.

Also here: a training job killed mid-training and a publish killed half-way leave the model
registry valid, and the next worker removes the publish's leftovers at its start.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from test_backend_support import annotation_event, blob_image, data_url, labeled, png_bytes

from label_assistant.devtools.labelstudio_server import free_port
from label_assistant.workspace import Workspace

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="kills processes found in /proc (Linux)")

TARGETS = ("worker", "gunicorn worker", "gunicorn master", "serve")
SERVE_ENV = {"LA_SINK": "none", "LA_TRAIN_AFTER": "0", "LA_POLL_INTERVAL": "0.1",
             "HF_HUB_OFFLINE": "1"}
#: Seconds the children of a killed process may take to die with it.
ORPHAN_GRACE = 5.0
#: serve's --max-restarts here: the trials kill its children far more often than real life.
MAX_RESTARTS = 1000
PROJECT = 1


# --- processes, from /proc --------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """``(ppid, state)`` of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2:].split()[:2]
    return int(ppid), state


def alive(pid: int) -> bool:
    """Running: some thread of it is not dead yet. A zombie waiting for its reaper counts
    as dead, but only once all its threads are: the main thread of a killed process turns
    zombie first, while the others may still hold its files (a listening socket)."""
    stat = _stat(pid)
    if stat is None or stat[1] == "X":
        return False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if text[text.rindex(")") + 2:].split()[0] not in ("Z", "X"):
            return True
    return False


def children(pid: int) -> list[int]:
    """Live children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) and stat[0] == pid \
                and stat[1] not in ("Z", "X"):
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def wait_dead(pids: list[int], grace: float = ORPHAN_GRACE) -> list[int]:
    """Wait up to ``grace`` seconds for the processes to end; those still alive."""
    deadline = time.monotonic() + grace
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@dataclass
class Tree:
    serve: int
    worker: int | None
    master: int | None
    web: list[int]  # gunicorn's workers
    jobs: list[int]  # training and ranking jobs (children of the worker; never killed here)


# --- the service ------------------------------------------------------------------------------


class Serve:
    """``label-assistant serve`` on 127.0.0.1 as a subprocess; its stderr goes to a log."""

    def __init__(self, workdir: Path, port: int | None = None, *, env: dict | None = None,
                 args: tuple[str, ...] = (), log: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **SERVE_ENV, **(env or {})}
        self.args = ["--workers", "2", "--max-restarts", str(MAX_RESTARTS), *args]
        self.log = log or self.workdir.parent / f"serve-{self.workdir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120) -> Tree:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "label_assistant.cli", "serve", "--port", str(self.port),
                 "--workdir", str(self.workdir), *self.args],
                env=self.env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
        self.starts += 1
        return self.wait_ready(timeout)

    def tree(self) -> Tree:
        assert self.proc is not None
        kids = children(self.proc.pid)
        worker = next((p for p in kids if "label_assistant.ml_backend.worker" in cmdline(p)),
                      None)
        master = next((p for p in kids if "gunicorn" in cmdline(p)), None)
        return Tree(serve=self.proc.pid, worker=worker, master=master,
                    web=children(master) if master else [],
                    jobs=[p for p in (children(worker) if worker else [])
                          if "label_assistant.ml_backend.jobs" in cmdline(p)])

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.base}/health", timeout=2).json()["status"] == "UP"
        except (requests.RequestException, ValueError, KeyError):
            return False

    def wait_ready(self, timeout: float = 120) -> Tree:
        """Until /health answers UP, the worker runs and gunicorn has all its workers."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}): {self.tail()}")
            tree = self.tree()
            if tree.worker and len(tree.web) >= 2 and self.healthy():
                return tree
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not ready in {timeout:.0f} s ({tree}): "
                                     f"{self.tail()}")
            time.sleep(0.1)

    def wait_replaced(self, role: str, old: int, timeout: float = 120) -> Tree:
        """Until ``old`` (the ``worker`` or the gunicorn ``master``) is dead and another runs
        in its place, and the service is ready. (Right after a SIGKILL the old one can still
        look alive for a moment: a ready service with it is not enough.)"""
        deadline = time.monotonic() + timeout
        assert wait_dead([old], grace=timeout) == [], f"{role} {old} still alive"
        while True:
            tree = self.wait_ready(max(1.0, deadline - time.monotonic()))
            if getattr(tree, role) not in (None, old):
                return tree
            if time.monotonic() > deadline:
                raise AssertionError(f"no new {role} in {timeout:.0f} s ({tree}): "
                                     f"{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Sender(threading.Thread):
    """Posts ``ANNOTATION_CREATED`` webhooks one after another, each with a new annotation
    (and task) id from ``ids``; keeps the answers 200 in :attr:`acked` (annotation id ->
    event id). Refused connections (a dead service) are tried again with the next id."""

    def __init__(self, base: str, ids: Any, *, pause: float = 0.005, size: int = 48) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.url = f"{base}/webhook"
        self.ids = ids
        self.pause = pause
        self.acked: dict[int, int] = {}
        self.failed = 0
        self.halt = threading.Event()
        self.templates = []
        for seed in range(4):
            image, mask = blob_image(size, size, seed=seed)
            self.templates.append(annotation_event(
                "ANNOTATION_CREATED", annotation_id=0, task_id=0,
                image=data_url(png_bytes(image)), label_map=labeled(mask, size // 4)))

    def run(self) -> None:
        session = requests.Session()
        while not self.halt.is_set():
            annotation_id = next(self.ids)
            body = self.templates[annotation_id % len(self.templates)]
            body["annotation"].update(id=annotation_id, task=annotation_id)
            body["task"]["id"] = annotation_id
            body["project"]["id"] = PROJECT
            try:
                response = session.post(self.url, data=json.dumps(body), timeout=10,
                                        headers={"Content-Type": "application/json"})
            except requests.RequestException:
                self.failed += 1
                session = requests.Session()
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                self.acked[annotation_id] = int(response.json()["event"])
            else:
                self.failed += 1
            time.sleep(self.pause)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


# --- checks ----------------------------------------------------------------------------------


def stored_events(workdir: Path, event_ids: list[int]) -> dict[int, tuple[int | None, str]]:
    """Event id -> (its annotation id, its state) for those of ``event_ids`` in the store."""
    if not event_ids:
        return {}
    conn = sqlite3.connect(Workspace(workdir).store_file, timeout=30)
    try:
        rows = conn.execute(
            "SELECT id, json_extract(payload, '$.annotation.id'), state FROM events "
            "WHERE id BETWEEN ? AND ?", (min(event_ids), max(event_ids))).fetchall()
    finally:
        conn.close()
    wanted = set(event_ids)
    return {r[0]: (r[1], r[2]) for r in rows if r[0] in wanted}


def event_counts(workdir: Path) -> dict[str, int]:
    conn = sqlite3.connect(Workspace(workdir).store_file, timeout=30)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall())
    finally:
        conn.close()


@dataclass
class Outcome:
    acked: int = 0  # events answered 200
    found: int = 0  # of those, in the store (with their annotation)
    done: int = 0  # of those, processed
    failed: int = 0  # webhooks not answered 200 (the service was down)
    missing: list[int] = field(default_factory=list)  # annotation ids acked, not stored

    @property
    def lost(self) -> int:
        return self.acked - self.found


def check_acked(workdir: Path, acked: dict[int, int], timeout: float = 180) -> Outcome:
    """Wait (up to ``timeout``) until every acknowledged event is done; what is where."""
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_events(workdir, list(acked.values()))
        found = {a for a, e in acked.items() if stored.get(e, (None,))[0] == a}
        done = {a for a in found if stored[acked[a]][1] == "done"}
        if len(done) == len(found) or time.monotonic() > deadline:
            return Outcome(acked=len(acked), found=len(found), done=len(done),
                           missing=sorted(set(acked) - found))
        time.sleep(0.2)


# --- one trial --------------------------------------------------------------------------------


@dataclass
class TrialResult:
    target: str
    pid: int
    outcome: Outcome
    orphans: list[int]  # children of the killed process alive ORPHAN_GRACE s later
    recovered: bool  # the service came back (a new worker / master / serve)
    seconds: float
    note: str = ""


def trial(serve: Serve, target: str, rng: random.Random, ids: Any, *,
          before: tuple[float, float] = (0.3, 1.2), after: float = 0.5,
          drain_timeout: float = 180) -> TrialResult:
    """Post webhooks, SIGKILL ``target`` after a random time, let the service come back (a
    killed serve: started again on the same port), post a little more, then check every
    acknowledged event. ``serve`` must be running."""
    started = time.monotonic()
    tree = serve.wait_ready()
    sender = Sender(serve.base, ids)
    sender.start()
    time.sleep(rng.uniform(*before))
    tree = serve.tree()
    pid = {"worker": tree.worker, "gunicorn master": tree.master, "serve": tree.serve,
           "gunicorn worker": rng.choice(tree.web) if tree.web else None}[target]
    assert pid, f"no {target} to kill in {tree}"
    os.kill(pid, signal.SIGKILL)
    orphans: list[int] = []
    note = ""
    try:
        if target == "serve":
            assert serve.proc is not None
            serve.proc.wait(timeout=30)
            orphans = wait_dead([p for p in (tree.worker, tree.master, *tree.web) if p])
            serve.start()  # the same port, at once: the children took it with them
            recovered = True
        elif target == "gunicorn worker":  # gunicorn's master replaces it
            assert wait_dead([pid]) == [], f"gunicorn worker {pid} still alive"
            recovered = pid not in serve.wait_ready().web
        else:  # serve starts its child again
            if target == "gunicorn master":
                orphans = wait_dead(tree.web)
            serve.wait_replaced("worker" if target == "worker" else "master", pid)
            recovered = True
    except AssertionError as error:
        recovered, note = False, str(error)[:500]
    time.sleep(after)
    sender.stop()
    outcome = check_acked(serve.workdir, sender.acked, timeout=drain_timeout) if recovered \
        else check_acked(serve.workdir, sender.acked, timeout=0)
    outcome.failed = sender.failed
    return TrialResult(target=target, pid=pid, outcome=outcome, orphans=orphans,
                       recovered=recovered, seconds=time.monotonic() - started, note=note)


def id_counter(start: int = 1) -> Any:
    """Annotation ids for the senders: one counter for a whole run (thread-safe enough:
    one sender at a time)."""
    n = start
    while True:
        yield n
        n += 1


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_of_any_process_loses_no_acknowledged_event(tmp_path, capsys):
    rng = random.Random(os.environ.get("KILL9_SEED", "9"))
    targets = list(TARGETS)
    rng.shuffle(targets)  # each once, in a random order, at random moments
    workdir = tmp_path / "work"
    serve = Serve(workdir)
    serve.start()
    ids = id_counter()  # one for the run: no annotation gets two events
    results = []
    try:
        for target in targets:
            result = trial(serve, target, rng, ids, drain_timeout=120)
            results.append(result)
            with capsys.disabled():
                o = result.outcome
                print(f"\nkill -9 {target} (pid {result.pid}): {o.acked} acknowledged, "
                      f"{o.found} found, {o.done} done, {o.lost} lost, {o.failed} refused, "
                      f"orphans {result.orphans}, {result.seconds:.1f} s")
            assert result.recovered, (target, result.note, serve.tail())
            assert result.orphans == [], (target, result.orphans)
            assert result.outcome.lost == 0, (target, result.outcome.missing[:20])
            assert result.outcome.done == result.outcome.found, target
        # Everything is done (each trial waited for it), nothing failed, nothing is left
        # processing, and serve still stops cleanly after all that.
        assert serve.stop() == 0, serve.tail()
        counts = event_counts(workdir)
        assert counts.get("pending", 0) == counts.get("processing", 0) == 0, counts
        assert counts.get("failed", 0) == 0, counts
        assert counts.get("done", 0) >= sum(r.outcome.acked for r in results)
    finally:
        if serve.proc and serve.proc.poll() is None:
            serve.stop()


# --- training jobs and the registry -----------------------------------------------------------

TINY = dict(arch="Unet", encoder="resnet18", epochs=2, steps_per_epoch=2, batch_size=2,
            tile=64, inference_tile=64, min_labeled_pixels=1, device="cpu")

_PUBLISH_AND_HANG = """
import sys, time
import safetensors.torch
import torch
from label_assistant.model.registry import ModelRegistry

def hang(tensors, path, metadata=None):
    with open(path, "wb") as f:
        f.write(b"half a weights file")
    print("publishing", flush=True)
    time.sleep(600)

safetensors.torch.save_file = hang
ModelRegistry(sys.argv[1]).publish(
    {"w": torch.zeros(3)}, spec={}, class_names=["Background", "Cell"], label_config_hash=None,
    manifest={}, metrics={}, curve=[], config={}, parent=None)
"""


def kill_mid_publish(root: Path) -> list[Path]:
    """Start a publish into the registry at ``root``, SIGKILL it while the weights are being
    written (inside the registry's lock, in its ``.tmp-*`` folder); the leftovers."""
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISH_AND_HANG, str(root)],
                            stdout=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"publishing"
    finally:
        proc.kill()
        proc.wait()
    return sorted(p for p in root.iterdir() if p.name.startswith(".tmp-"))


def assert_registry_valid(root: Path) -> list[str]:
    """Every version folder complete and readable, ``current`` one of them (or Otsu), no
    leftovers of killed publishes; the version ids."""
    from label_assistant.model.registry import OTSU, ModelRegistry

    registry = ModelRegistry(root)
    ids = [v.id for v in registry.list()]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v"))
    assert folders == ids, (folders, ids)  # no half version under a version's name
    for version in ids:
        assert registry.load_state_dict(version)
    assert registry.serving() == OTSU or registry.serving() in ids, registry.serving()
    return ids


@pytest.mark.slow
def test_killed_training_job_and_killed_publish_leave_a_valid_registry(tmp_path):
    from label_assistant.ml_backend.store import Store
    from label_assistant.model.job import read_status
    from label_assistant.model.registry import ModelRegistry

    workdir = tmp_path / "work"
    config = tmp_path / "train.json"
    config.write_text(json.dumps(TINY))
    serve = Serve(workdir, env={"LA_TRAIN_CONFIG": str(config)})
    serve.start()
    try:
        ids = id_counter()
        sender = Sender(serve.base, ids, pause=0.05, size=64)
        sender.start()
        while len(sender.acked) < 8:
            time.sleep(0.05)
        sender.stop()
        assert check_acked(workdir, sender.acked, timeout=120).done == len(sender.acked)
        response = requests.post(f"{serve.base}/webhook", timeout=10, json={
            "action": "START_TRAINING", "project": {"id": PROJECT}})
        assert response.status_code == 200
        # The job runs in its own process (a child of the worker, in its own session).
        deadline = time.monotonic() + 180
        while not (jobs := serve.tree().jobs):
            assert time.monotonic() < deadline, serve.tail()
            time.sleep(0.1)
        job, job_dir = jobs[0], Path(cmdline(jobs[0])[-1])
        while (read_status(job_dir).epoch or 0) < 1:
            assert time.monotonic() < deadline and alive(job), (job_dir / "job.log").read_text()
            time.sleep(0.1)
        # kill -9 of serve takes serve's children with it, not the job: jobs survive serve.
        tree = serve.tree()
        serve.kill()
        assert wait_dead([p for p in (tree.worker, tree.master, *tree.web) if p]) == []
        assert alive(job) and read_status(job_dir).state == "running"
        os.kill(job, signal.SIGKILL)  # and now the job, mid-training
        assert wait_dead([job]) == []
        root = Workspace(workdir).models_dir(str(PROJECT))
        before = assert_registry_valid(root) if root.is_dir() else []
        # A publish killed half-way (hard to hit in the job itself: publishing is quick).
        leftovers = kill_mid_publish(root)
        assert leftovers and all(p.name.startswith(".tmp-v") for p in leftovers)
        assert [v.id for v in ModelRegistry(root).list()] == before  # the half isn't one

        serve.start()  # the same work directory and port
        deadline = time.monotonic() + 60
        while any(p.exists() for p in leftovers):
            assert time.monotonic() < deadline, f"leftovers not removed: {serve.tail()}"
            time.sleep(0.1)
        # The worker reruns the killed job (once), which publishes a complete version.
        store = Store.for_workdir(workdir)
        deadline = time.monotonic() + 300
        while (row := store.jobs(str(PROJECT), kind="train")[0])["state"] not in ("done",
                                                                                  "failed"):
            assert time.monotonic() < deadline, serve.tail()
            time.sleep(0.2)
        assert row["state"] == "done" and row["attempts"] == 2, row
        after = assert_registry_valid(root)
        assert row["version"] in after and set(before) <= set(after)
        assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
        assert serve.stop() == 0, serve.tail()
    finally:
        if serve.proc and serve.proc.poll() is None:
            serve.kill()


def test_worker_start_cleans_registries_and_waits_for_a_publish_in_progress(tmp_path):
    from label_assistant.ml_backend.worker import clean_registries
    from label_assistant.model.registry import ModelRegistry

    workspace = Workspace(tmp_path / "work")
    first, second = workspace.registry("1"), workspace.registry("2")
    for registry, name in ((first, ".tmp-v0003-abc"), (second, ".tmp-v0001-deleted")):
        (registry.root / name).mkdir(parents=True)
        (registry.root / name / "model.safetensors").write_bytes(b"half")
    # A publish in progress in project 1 (it holds the lock): cleaning waits for it and
    # leaves its version alone.
    publishing = threading.Event()

    def publish() -> None:
        with first._locked():
            tmp = first.root / ".tmp-v0004-inprogress"
            tmp.mkdir()
            publishing.set()
            time.sleep(0.5)
            os.rename(tmp, first.root / "v0004")

    thread = threading.Thread(target=publish)
    thread.start()
    publishing.wait(10)
    started = time.monotonic()
    assert clean_registries(workspace) == 2
    assert time.monotonic() - started >= 0.3  # it waited for the lock
    thread.join()
    assert sorted(p.name for p in first.root.iterdir() if p.name != ".lock") == ["v0004"]
    assert [p.name for p in second.root.iterdir() if p.name != ".lock"] == []
    assert clean_registries(Workspace(tmp_path / "nothing")) == 0
    assert ModelRegistry(first.root).list() == []  # v0004 is no version (no weights)

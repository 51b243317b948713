"""Starting a local Label Studio 1.23.2 for the tests and ``make demo``.

Label Studio lives in its own virtual environment (``<repo>/.ls-venv``, or the executable
named by ``LABEL_STUDIO_BIN``): its Django pins must not reach the project's environment.

- :func:`init_data_dir` runs ``label-studio init`` once (migrations, admin user, a fixed
  legacy API token): about 25 s on 2 cores. Copy the result for every server you start
  (:func:`copy_data_dir`): a copy reaches ``/health`` in about 4 s instead of 26 s.
- :class:`LabelStudioServer` starts ``label-studio start`` on a free port of 127.0.0.1 in a
  clean environment, waits for ``/health`` and stops the whole process group.

Behaviour that shaped this module (measured, see ``../shared/docs/label-studio.md``):

- Label Studio reads a setting ``X`` from ``LABEL_STUDIO_X``, ``HEARTEX_X`` *and* plain
  ``X``: a shell's ``USER``-style variables (``USERNAME``, ``HOST``, ``PORT``...) leak into
  it. The server therefore gets an allow-listed environment, not a copy of ours.
- The fixed token only works when legacy tokens are enabled at the organization's creation,
  that is at ``init``; a copied data dir keeps it.
- A port already in use makes it silently move to the next one, so :attr:`url` is only
  trusted after ``/health`` answered on it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import requests

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "LabelStudioNotFound",
    "LabelStudioServer",
    "LabelStudioServerError",
    "copy_data_dir",
    "find_label_studio",
    "free_port",
    "init_data_dir",
    "server_env",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VENV_BIN = REPO_ROOT / ".ls-venv" / "bin" / "label-studio"

DEFAULT_USERNAME = "admin@label-assistant.local"
DEFAULT_PASSWORD = "label-assistant"
DEFAULT_TOKEN = "label-assistant-token-0123456789"

HOST = "127.0.0.1"
# Variables a child process needs from ours; everything else is left out on purpose.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")
_LOG_NAME = "label-studio.log"


class LabelStudioServerError(RuntimeError):
    """Label Studio could not be initialised, started or stopped (one-line reason)."""


class LabelStudioNotFound(LabelStudioServerError):
    """No Label Studio executable: the tests that need one are skipped with this message."""


def find_label_studio() -> Path:
    """The ``label-studio`` executable: ``$LABEL_STUDIO_BIN``, else ``<repo>/.ls-venv``."""
    configured = os.environ.get("LABEL_STUDIO_BIN")
    path = Path(configured) if configured else LS_VENV_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = "LABEL_STUDIO_BIN" if configured else "the default location"
        raise LabelStudioNotFound(
            f"Label Studio not found at {path} ({source}); create it with "
            "`make ls-venv` (label-studio==1.23.2) or set LABEL_STUDIO_BIN"
        )
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_env(
    data_dir: Path,
    *,
    port: int,
    token: str,
    document_root: Path,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a headless, offline Label Studio (see the module doc)."""
    base = os.environ if base is None else base
    env = {key: base[key] for key in _PASSED_THROUGH if key in base}
    data_dir = Path(data_dir).resolve()
    env.update(
        {
            # Anything that still writes into "home" writes into the data dir instead.
            "HOME": str(data_dir),
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            # Both, or connecting a backend on 127.0.0.1 answers 403.
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_HOST": f"http://{HOST}:{port}",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(Path(document_root).resolve()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def init_data_dir(
    data_dir: str | Path,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    token: str = DEFAULT_TOKEN,
    *,
    executable: Path | None = None,
    timeout: float = 300.0,
) -> float:
    """Create a Label Studio data dir (database, admin user, fixed token) and return the
    seconds it took. Refuses a dir that already holds a database."""
    data_dir = Path(data_dir)
    if (data_dir / "label_studio.sqlite3").exists():
        raise LabelStudioServerError(f"{data_dir} is already initialised")
    data_dir.mkdir(parents=True, exist_ok=True)
    executable = executable or find_label_studio()
    env = server_env(
        data_dir, port=8080, token=token, document_root=data_dir,
        username=username, password=password,
    )
    command = [
        str(executable), "init", "--no-browser", "--quiet",
        "--username", username, "--password", password,
        "--user-token", token, "--enable-legacy-api-token",
    ]
    log = data_dir / "label-studio-init.log"
    started = time.monotonic()
    with log.open("wb") as out:
        try:
            done = subprocess.run(
                command, cwd=data_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabelStudioServerError(
                f"label-studio init timed out after {timeout:.0f} s: {_log_tail(log)}"
            ) from None
    if done.returncode != 0 or not (data_dir / "label_studio.sqlite3").exists():
        raise LabelStudioServerError(
            f"label-studio init failed (exit {done.returncode}): {_log_tail(log)}"
        )
    return time.monotonic() - started


def copy_data_dir(source: str | Path, target: str | Path) -> Path:
    """Copy an initialised data dir (the template stays untouched); returns ``target``."""
    source, target = Path(source), Path(target)
    if not (source / "label_studio.sqlite3").exists():
        raise LabelStudioServerError(f"{source} is not an initialised Label Studio data dir")
    # Logs of the template's own run say nothing about the copy.
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.log"))
    return target


class LabelStudioServer:
    """One ``label-studio start`` process on 127.0.0.1; a context manager that stops it.

    >>> with LabelStudioServer(token=DEFAULT_TOKEN).start(data_dir) as server:
    ...     requests.get(server.url + "/health")
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        port: int | None = None,
        document_root: str | Path | None = None,
        executable: Path | None = None,
    ) -> None:
        self.token = token
        self.username = username
        self.password = password
        self.port = port
        self.document_root = Path(document_root) if document_root is not None else None
        self.executable = executable
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise LabelStudioServerError("the server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, data_dir: str | Path, timeout: float = 90.0) -> LabelStudioServer:
        """Start on ``data_dir`` (initialised, see :func:`init_data_dir`) and wait for
        ``/health`` = 200; on failure the process is stopped and the log tail is raised."""
        if self.running:
            raise LabelStudioServerError(f"already running at {self.url}")
        executable = self.executable or find_label_studio()
        self.data_dir = Path(data_dir).resolve()
        if not (self.data_dir / "label_studio.sqlite3").exists():
            raise LabelStudioServerError(
                f"{self.data_dir} is not initialised: run init_data_dir first"
            )
        self.port = self.port or free_port()
        env = server_env(
            self.data_dir, port=self.port, token=self.token,
            document_root=self.document_root or self.data_dir,
            username=self.username, password=self.password,
        )
        command = [
            str(executable), "start", "--no-browser",
            "--internal-host", HOST, "--port", str(self.port),
        ]
        self.log_path = self.data_dir / _LOG_NAME
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            # Own process group: stop() ends the server and anything it spawned, nothing else.
            self._process = subprocess.Popen(
                command, cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with {self._process.returncode} before answering "
                    f"/health: {_log_tail(self.log_path)}"
                )
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.25)
        raise LabelStudioServerError(
            f"Label Studio did not answer /health at {self.url} within {timeout:.0f} s: "
            f"{_log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL after ``timeout``)."""
        process, self._process = self._process, None
        stop_process_group(process, timeout)

    def __enter__(self) -> LabelStudioServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process_group(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Terminate a process started with ``start_new_session=True`` and its children: SIGTERM
    to its group, then SIGKILL after ``timeout`` seconds. Nothing if it has ended."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass  # it ended on its own in between

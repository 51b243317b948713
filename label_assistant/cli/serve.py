"""``label-assistant serve``: the ML backend under gunicorn, plus its background worker.

Two child processes: gunicorn (``--workers`` processes of ``--threads`` threads each, serving
``label_assistant.ml_backend.app:create_app()``, with the hooks of
:mod:`label_assistant.ml_backend.gunicorn_conf`) and one worker process
(``python -m label_assistant.ml_backend.worker``). Settings reach both through the
environment (see :mod:`label_assistant.ml_backend.settings`); gunicorn also gets
``PROMETHEUS_MULTIPROC_DIR`` = ``W/metrics``, emptied at each start, so that ``/metrics``
counts the requests of all its workers (see :mod:`label_assistant.ml_backend.metrics`).
Ctrl-C or SIGTERM stops both (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT` seconds).
Training jobs run in their own sessions and are not stopped: the next worker picks their
result up (or reruns a job that died).

Children never outlive ``serve`` (Linux): each is started with ``PR_SET_PDEATHSIG`` =
SIGKILL (:func:`~label_assistant.ml_backend.gunicorn_conf.die_with_parent`), and gunicorn's
workers set the same towards their master (its ``post_fork`` hook). So a ``serve`` killed with
SIGKILL (or the OOM killer) takes gunicorn and the worker with it at once, crash-only: nothing
acknowledged is lost (events are committed before the answer, the worker redoes what it had
claimed), and the port is free for the next ``serve`` at once. Elsewhere the children may
outlive a killed ``serve``.

Supervision: a child that ends without being asked to (killed, crashed, exited) is started
again after a pause (:data:`RESTART_DELAY` seconds, doubling up to :data:`MAX_RESTART_DELAY`
while it keeps ending), each time with a one-line message on stderr. More than
``--max-restarts`` (default :data:`MAX_RESTARTS`) restarts of one child within
:data:`RESTART_WINDOW` seconds means restarting doesn't help: ``serve`` stops the other child
and exits 1 with a one-line reason; so does a child that fails at its first start (a non-zero
exit within :data:`STARTUP_GRACE` seconds: a bad app, a bad setting), and
``--max-restarts 0`` makes any child ending stop ``serve``. Under compose,
``restart: unless-stopped`` then starts the container again.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from label_assistant.cli.common import CliError

#: Seconds the children get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 15.0
#: Restarts of one child allowed within :data:`RESTART_WINDOW` seconds (``--max-restarts``).
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds before a child that ended is started again; doubled for each recent restart.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 8.0
#: A child exiting with a non-zero status this soon after serve started it for the first
#: time failed to start: restarting it would only repeat that.
STARTUP_GRACE = 60.0
#: Seconds serve waits for its port to be free (a killed predecessor's children closing).
PORT_WAIT = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the Label Studio ML backend (gunicorn + background worker)",
        description="Serve the Label Studio ML backend (health, setup, predict, webhook, "
        "train, metrics) with gunicorn, and run the background worker that inspects "
        "annotations and trains models. Other settings come from environment variables "
        "(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, LA_TRAIN_AFTER, ...).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    p.add_argument("--workdir", default=os.environ.get("LA_WORKDIR", "./work"),
                   help="work directory: store, images, models (default LA_WORKDIR or ./work)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4,
                   help="threads per gunicorn worker, so webhooks never wait behind a long "
                   "/predict (default 4)")
    p.add_argument("--timeout", type=int, default=120,
                   help="gunicorn request timeout in seconds (Label Studio waits 100 s for "
                   "/predict; default 120)")
    p.add_argument("--no-worker", action="store_true",
                   help="serve only; run the worker elsewhere")
    p.add_argument("--max-restarts", type=int, default=MAX_RESTARTS,
                   help="restarts of a child (gunicorn, the worker) that ended by itself, "
                   f"within {RESTART_WINDOW:.0f} s, before serve gives up and exits 1; 0: any "
                   f"child ending stops serve (default {MAX_RESTARTS})")
    p.set_defaults(run=run)


def commands(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The gunicorn command line and the worker's (None with ``--no-worker``)."""
    web = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{args.host}:{args.port}",
        "--workers", str(args.workers),
        "--worker-class", "gthread", "--threads", str(args.threads),
        "--timeout", str(args.timeout), "--graceful-timeout", "10",
        "--config", "python:label_assistant.ml_backend.gunicorn_conf",
        "label_assistant.ml_backend.app:create_app()",
    ]
    if _gunicorn_version() >= (27,):
        # gunicorn 27 opens a control socket at one fixed path in the home directory, which
        # every other gunicorn of the user shares: this server doesn't need one.
        web.insert(-1, "--no-control-socket")
    worker = None if args.no_worker else [
        sys.executable, "-m", "label_assistant.ml_backend.worker", "--workdir", str(args.workdir),
    ]
    return web, worker


def _gunicorn_version() -> tuple[int, ...]:
    try:
        import gunicorn
    except ImportError:
        raise CliError("gunicorn is not installed (pip install gunicorn)") from None
    return tuple(gunicorn.version_info)


def fresh_metrics_dir(workdir: Path) -> Path:
    """``W/metrics``, emptied: gunicorn's prometheus_client multiprocess folder for this run
    (files left by an earlier run would add its counts)."""
    from label_assistant.workspace import Workspace

    path = Workspace(workdir).metrics_dir
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run(args: argparse.Namespace) -> int:
    from label_assistant.ml_backend.auth import check_settings
    from label_assistant.ml_backend.settings import Settings, SettingsError

    if not 0 < args.port < 65536:
        raise CliError(f"--port must be in 1..65535, got {args.port}")
    if args.workers < 1 or args.threads < 1:
        raise CliError("--workers and --threads must be >= 1")
    if args.max_restarts < 0:
        raise CliError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    try:
        settings = Settings.from_env(workdir=Path(args.workdir).resolve())
        check_settings(settings)  # half a basic-auth setting would leave the backend open
        settings.load_inspection_config()  # a bad file fails here, not in every child
        settings.training_config()
        settings.workdir.mkdir(parents=True, exist_ok=True)
    except (SettingsError, ValueError, OSError) as error:
        raise CliError(str(error)) from None
    _wait_port_free(args.host, args.port)  # before touching what a running server uses
    try:
        metrics_dir = fresh_metrics_dir(settings.workdir)
    except OSError as error:
        raise CliError(str(error)) from None
    args.workdir = settings.workdir
    env = {**os.environ, **settings.to_env()}
    web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    web_cmd, worker_cmd = commands(args)

    stopping = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    reason = None
    try:
        if worker_cmd:
            children.append(Child("the worker", worker_cmd, env))
        children.append(Child("gunicorn", web_cmd, web_env))
        for child in children:
            child.start()
        print(f"label-assistant serve: http://{args.host}:{args.port} (work dir "
              f"{settings.workdir}); Ctrl-C stops", file=sys.stderr, flush=True)
        while stopping["signal"] is None and reason is None:
            reason = _supervise(children, args.max_restarts)
            time.sleep(0.1)
        if reason is not None:
            print(f"label-assistant serve: {reason}; stopping", file=sys.stderr, flush=True)
    finally:
        _stop([c.proc for c in children if c.proc is not None])
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0 if reason is None else 1


class Child:
    """A child process of serve, started again after it ended (see :func:`_supervise`)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.proc: subprocess.Popen | None = None
        self.first_start: float | None = None
        self.restarts: deque[float] = deque()  # when, within RESTART_WINDOW
        self.restart_at: float | None = None

    def start(self) -> None:
        # The kernel kills the child when serve dies, however it dies (Linux; no-op else).
        from label_assistant.ml_backend.gunicorn_conf import _prctl, die_with_parent

        _prctl()  # looked up here, not between fork and exec
        self.proc = subprocess.Popen(
            self.cmd, env=self.env,
            preexec_fn=functools.partial(die_with_parent, signal.SIGKILL, os.getpid()))
        self.restart_at = None
        if self.first_start is None:
            self.first_start = time.monotonic()


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _supervise(children: list[Child], max_restarts: int) -> str | None:
    """One look at the children: schedule restarts of those that ended, start those due.
    The reason to stop serve, or None."""
    now = time.monotonic()
    for child in children:
        if child.proc is not None and (code := child.proc.poll()) is not None:
            pid, child.proc = child.proc.pid, None
            what = f"{child.name} (pid {pid}) {_ended(code)}"
            if code > 0 and len(child.restarts) == 0 and child.first_start is not None \
                    and now - child.first_start < STARTUP_GRACE:
                return f"{what} at start-up (see its messages above)"
            while child.restarts and now - child.restarts[0] > RESTART_WINDOW:
                child.restarts.popleft()
            if len(child.restarts) >= max_restarts:
                return (f"{what}, after {len(child.restarts)} restart(s) within "
                        f"{RESTART_WINDOW:.0f} s" if max_restarts else what)
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** len(child.restarts))
            child.restarts.append(now)
            child.restart_at = now + delay
            print(f"label-assistant serve: {what}; starting it again in {delay:.1f} s "
                  f"(restart {len(child.restarts)} of at most {max_restarts} within "
                  f"{RESTART_WINDOW:.0f} s)", file=sys.stderr, flush=True)
        if child.proc is None and child.restart_at is not None and now >= child.restart_at:
            try:
                child.start()
            except OSError as error:  # no memory for a fork, say
                return f"{child.name} can't be started again: {error}"
    return None


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (as gunicorn binds: with SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, IndexError):
        return True  # gunicorn says what is wrong with the address
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            return error.errno != errno.EADDRINUSE
    return True


def _wait_port_free(host: str, port: int) -> None:
    """Wait up to :data:`PORT_WAIT` seconds for the port (the children of a killed serve may
    still be closing it); a :class:`CliError` if it stays in use."""
    deadline = time.monotonic() + PORT_WAIT
    while not _port_free(host, port):
        if time.monotonic() > deadline:
            raise CliError(f"{host}:{port} is in use: another server listens there")
        time.sleep(0.1)


def _stop(children: list[subprocess.Popen]) -> int:
    """SIGTERM every child still running, wait, kill what is left; the first exit code."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return next((c.returncode for c in children if c.returncode), 0)

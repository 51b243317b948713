"""``label-assistant serve``: the ML backend under gunicorn, plus its background worker.

Two child processes: gunicorn (``--workers`` processes of ``--threads`` threads each, serving
``label_assistant.ml_backend.app:create_app()``, with the hooks of
:mod:`label_assistant.ml_backend.gunicorn_conf`) and one worker process
(``python -m label_assistant.ml_backend.worker``). Settings reach both through the
environment (see :mod:`label_assistant.ml_backend.settings`); gunicorn also gets
``PROMETHEUS_MULTIPROC_DIR`` = ``W/metrics``, emptied at each start, so that ``/metrics``
counts the requests of all its workers (see :mod:`label_assistant.ml_backend.metrics`).
Ctrl-C or SIGTERM stops both; so does either one exiting. Training jobs run in their own
sessions and are not stopped: the next worker picks their result up (or reruns a job that
died).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from label_assistant.cli.common import CliError

#: Seconds the children get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 15.0


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
    try:
        settings = Settings.from_env(workdir=Path(args.workdir).resolve())
        check_settings(settings)  # half a basic-auth setting would leave the backend open
        settings.load_inspection_config()  # a bad file fails here, not in every child
        settings.training_config()
        settings.workdir.mkdir(parents=True, exist_ok=True)
        metrics_dir = fresh_metrics_dir(settings.workdir)
    except (SettingsError, ValueError, OSError) as error:
        raise CliError(str(error)) from None
    args.workdir = settings.workdir
    env = {**os.environ, **settings.to_env()}
    web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    web_cmd, worker_cmd = commands(args)

    stopping = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen] = []
    try:
        if worker_cmd:
            children.append(subprocess.Popen(worker_cmd, env=env))
        children.append(subprocess.Popen(web_cmd, env=web_env))
        print(f"label-assistant serve: http://{args.host}:{args.port} (work dir "
              f"{settings.workdir}); Ctrl-C stops", file=sys.stderr, flush=True)
        while stopping["signal"] is None and all(c.poll() is None for c in children):
            time.sleep(0.2)
    finally:
        code = _stop(children)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping["signal"] is not None:
        return 0
    return code or 1  # a child ended by itself: that is an error


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

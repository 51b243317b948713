"""Gunicorn settings of ``label-assistant serve`` (``--config python:`` this module).

Server hooks only:

- ``post_fork`` (in each new worker): the worker dies with its master
  (:func:`die_with_parent`): a master killed with SIGKILL can't stop its workers, and
  workers left behind would keep the port, so that no new master could bind it;
- ``child_exit`` (in the master): prometheus_client's multiprocess mode is told that a
  worker exited (``mark_process_dead``), so that the live-gauge files of that pid are
  removed; its counter and histogram files stay, and their counts stay in the sums (see
  :mod:`.metrics`).

:func:`die_with_parent` is also what ``serve`` runs in its children before they start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

#: ``prctl`` option: the signal this process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1

_libc: Any = None


def _prctl() -> Any:
    """libc's ``prctl`` on Linux, else None (looked up once: call it before ``fork``)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.prctl  # noqa: B018 (raises AttributeError where libc has none)
        except (OSError, AttributeError):
            _libc = False
    return _libc.prctl if _libc else None


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``); False where that is not available (then nothing is done).

    ``parent``: the pid the parent had before the fork. If the parent already died before
    the setting took hold (it then is someone else, the reaper), this process sends itself
    ``sig`` at once. The setting survives ``exec``, not ``fork``: each child sets its own.
    Linux sends the signal when the parent *thread* that forked ends, so fork from the main
    thread.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def post_fork(server: Any, worker: Any) -> None:
    """Gunicorn's ``post_fork`` hook (in the new worker): die with the master."""
    die_with_parent(signal.SIGKILL, server.pid)


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook (in the master process, after a worker exited)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

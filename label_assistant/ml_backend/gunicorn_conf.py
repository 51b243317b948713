"""Gunicorn settings of ``label-assistant serve`` (``--config python:`` this module).

Only a server hook: when a worker exits, prometheus_client's multiprocess mode is told
(``mark_process_dead``), so that the live-gauge files of that pid are removed; its counter
and histogram files stay, and their counts stay in the sums (see :mod:`.metrics`).
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook (in the master process, after a worker exited)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

"""Jobs on RQ workers over Redis (``LA_QUEUE``): the starter, the handle, and the worker.

With ``LA_QUEUE=redis://host:6379/0`` the intake worker's :class:`~.jobs.Supervisor` starts a
job by enqueueing its folder's path on the RQ queue :data:`QUEUE_NAME` (:class:`QueueStarter`)
instead of starting a local process; ``label-assistant worker --queue URL`` (:func:`work`)
runs such jobs on any machine that sees the work directory at the same path. The function
an RQ worker runs is :func:`label_assistant.ml_backend.jobs.run_queued`: the same
:func:`~label_assistant.ml_backend.jobs.run` a local job process runs, with its log lines in
the job's log file. Everything else stays where it is: the store's coalescing (one running
job per project and kind, one follow-up) decides what is enqueued, the job reads all it needs
from its ``request.json`` and writes ``status.json``, and the supervisor reads that status and
records the outcome in the store. Remote workers never open the store.

A job's liveness comes from RQ (:class:`QueuedJob`): finished, failed (a job that raised, or
a work horse killed: RQ notices at once), or started on a worker whose heartbeats stopped
(the whole worker, its machine, gone): a worker of this module beats every
``--heartbeat`` seconds (its ``job_monitoring_interval``, recorded in the job's meta when
it starts the job), and a started job not heard of for :data:`STALE_BEATS` beats is taken
for dead; its worker, should it still run, is told to stop it. A dead job is then rerun
once and failed with its reason by the supervisor, as a local one is.

Nothing here imports rq or redis at module level: without ``LA_QUEUE`` neither is imported.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from label_assistant.ml_backend.settings import parse_redis_url

log = logging.getLogger(__name__)

#: The RQ queue the backend's jobs go to.
QUEUE_NAME = "label-assistant"
#: Seconds between a worker's heartbeats while it runs a job (``worker --heartbeat``).
HEARTBEAT = 5.0
#: A started job whose worker missed this many heartbeats is taken for dead.
STALE_BEATS = 6
#: How long RQ keeps a finished or failed job's record (the store keeps the outcome).
RESULT_TTL = 7 * 24 * 3600
#: The function a worker runs (by name: the intake machine need not import it).
JOB_FUNCTION = "label_assistant.ml_backend.jobs.run_queued"




def connect(url: str) -> Any:
    """A redis-py client for ``url`` (checked with :func:`parse_redis_url`)."""
    from redis import Redis

    return Redis.from_url(parse_redis_url(url), socket_connect_timeout=5,
                          health_check_interval=30)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class QueuedJob:
    """A job handed to RQ (a :class:`~.jobs.JobHandle`): its liveness from RQ, not a pid.

    After :meth:`poll`, ``worker`` names the worker that took it (None while it waits) and
    ``error`` says why it ended, when it ended without finishing."""

    pid: int | None = None

    def __init__(self, connection: Any, ref: str) -> None:
        self.connection = connection
        self.ref = ref
        self.worker: str | None = None
        self.started: bool = False
        self.error: str | None = None
        self._redis_warned = 0.0

    def poll(self) -> int | None:
        """None while it waits or runs; 0 when RQ finished it; 1 when it failed, was
        stopped, is unknown to RQ, or its worker stopped beating."""
        from redis.exceptions import RedisError
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus

        try:
            job = Job.fetch(self.ref, connection=self.connection)
        except NoSuchJobError:
            self.error = "the queue has no record of it (Redis emptied or restarted?)"
            return 1
        except RedisError as error:  # Redis away: nothing is known, nothing is decided
            if time.time() - self._redis_warned > 60:
                log.warning("RQ job %s: can't ask Redis about it (%s)", self.ref, error)
                self._redis_warned = time.time()
            return None
        status = job.get_status(refresh=False)
        self.worker = job.worker_name or self.worker
        if status == JobStatus.FINISHED:
            return 0
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            result = job.latest_result()
            detail = _last_line(result.exc_string if result is not None else None)
            self.error = f"RQ: {status.value}" + (f" ({detail})" if detail else "")
            return 1
        if status != JobStatus.STARTED:  # queued, deferred, scheduled
            return None
        self.started = True
        beat = job.last_heartbeat or job.started_at
        interval = float((job.meta or {}).get("heartbeat") or _rq_default_interval())
        age = time.time() - beat.timestamp() if beat is not None else 0.0
        if age <= STALE_BEATS * interval:
            return None
        self.error = (f"its worker {self.worker or '?'} sent no heartbeat for {age:.0f} s "
                      f"(one every {interval:g} s expected)")
        try:  # should the worker still run after all, it stops this run
            from rq.command import send_stop_job_command

            send_stop_job_command(self.connection, self.ref)
        except Exception:  # a worker that is gone can't be told
            pass
        return 1

    def describe(self) -> str:
        """How log lines and reasons name where it runs."""
        return f"RQ job {self.ref}" + (f" on worker {self.worker}" if self.worker else "")


def _rq_default_interval() -> float:
    from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL

    return float(DEFAULT_JOB_MONITORING_INTERVAL)


class QueueStarter:
    """The :data:`~.jobs.JobStarter` of ``LA_QUEUE``: enqueues a job folder's path."""

    def __init__(self, url: str, queue_name: str = QUEUE_NAME) -> None:
        self.url = parse_redis_url(url)
        self.queue_name = queue_name
        self._connection: Any = None

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = connect(self.url)
        return self._connection

    def __call__(self, job_dir: Path) -> QueuedJob:
        from rq import Queue

        job_dir = Path(job_dir).resolve()  # the path every worker sees (a shared filesystem)
        queue = Queue(self.queue_name, connection=self.connection)
        job = queue.enqueue_call(JOB_FUNCTION, args=(str(job_dir),), timeout=-1,
                                 result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
                                 description=f"label-assistant {job_dir.name} "
                                             f"({job_dir.parent.parent.name})")
        return QueuedJob(self.connection, job.id)

    def attach(self, ref: str) -> QueuedJob:
        """The handle of a job enqueued before (by an intake worker since restarted)."""
        return QueuedJob(self.connection, ref)


# --- the worker (label-assistant worker) ---------------------------------------------------


def worker_class() -> type:
    """An RQ ``Worker`` that records its heartbeat interval and host in each job's meta."""
    from rq import Worker

    class JobWorker(Worker):
        def prepare_execution(self, job: Any) -> Any:
            job.meta["heartbeat"] = self.job_monitoring_interval
            job.meta["host"] = socket.gethostname()
            job.save_meta()
            return super().prepare_execution(job)

    return JobWorker


def parse_gpus(raw: str) -> str:
    """``0,1`` -> ``"0,1"`` (CUDA_VISIBLE_DEVICES); ``none`` or empty -> ``""`` (CPU only)."""
    text = raw.strip()
    if text.lower() in ("", "none", "cpu"):
        return ""
    ids = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus takes GPU numbers like 0,1 (or none), got {raw!r}")
    return ",".join(ids)


def work(url: str, *, gpus: str | None = None, name: str | None = None,
         heartbeat: float = HEARTBEAT, burst: bool = False,
         queue_name: str = QUEUE_NAME) -> bool:
    """Run an RQ worker for the backend's jobs until stopped (``burst``: until the queue is
    empty); raises ``redis.exceptions.ConnectionError`` when Redis can't be reached.

    ``gpus`` (``CUDA_VISIBLE_DEVICES``) is what its jobs may use; torch, the training and
    the ranking code are imported once here, so each job's forked work horse starts warm."""
    from rq import Queue

    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    connection = connect(url)
    connection.ping()
    import label_assistant.labelstudio.client  # noqa: F401  (preloaded for the work horses)
    import label_assistant.ml_backend.jobs  # noqa: F401
    import label_assistant.ml_backend.ranking  # noqa: F401
    import label_assistant.model.job  # noqa: F401
    import label_assistant.model.round  # noqa: F401

    worker = worker_class()([Queue(queue_name, connection=connection)], connection=connection,
                            name=name or f"{socket.gethostname()}.{os.getpid()}",
                            job_monitoring_interval=max(1, round(heartbeat)))
    return worker.work(burst=burst, logging_level="INFO", with_scheduler=False)

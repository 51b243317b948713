"""Background jobs of the backend: how they run, and how the worker supervises them.

Two kinds, each in a process of its own so that the worker's loop (annotation intake) never
waits for them:

- ``train``: :func:`label_assistant.model.job.run` trains on the admitted annotations and
  publishes a version;
- ``rank``: :func:`run_rank` re-ranks the project's unlabeled tasks with its serving version
  and writes the order back (:func:`label_assistant.ml_backend.ranking.rank_project`).
- ``prelabel``: :func:`run_prelabel` writes the serving version's pre-labels for all the
  project's unlabeled tasks into Label Studio, in batches, resumably
  (:func:`label_assistant.ml_backend.project_prelabels.prelabel_project`); the Supervisor
  queues one when a ranking job is done, for the tasks beyond the ``LA_PRELABEL_AHEAD`` that
  the ranking refreshed.

A job is a folder (:meth:`~label_assistant.workspace.Workspace.job_dir`) with
``request.json``, ``status.json`` (:class:`~label_assistant.model.job.JobStatus`) and a log;
:func:`run` runs it, and the request holds all it needs (a training manifest with image and
label-map paths and the config; a ranking or pre-labeling job's Label Studio address and
token and the settings it works with): a job never opens the store. ``python -m
label_assistant.ml_backend.jobs JOB_DIR`` runs it in a local process (:func:`start_process`,
the default starter); with ``LA_QUEUE`` an RQ worker runs it (:func:`run_queued`, enqueued by
:class:`~label_assistant.ml_backend.rq_queue.QueueStarter`), on any machine that shares the
work directory.

:class:`Supervisor` (used by the intake worker, the only one that starts jobs) starts queued
jobs (one running per project and kind; the store coalesces requests), notices ends, reruns
a job whose process (or RQ worker) died without a final status once, then fails it with the
reason; a ranking or pre-labeling job that failed (Label Studio down) is retried after
:data:`RANK_RETRY` seconds, up to :data:`MAX_RANK_ATTEMPTS` runs (a pre-labeling job resumes
from its earlier runs' checkpoints). A job that can't be started (its folder can't be named
or made, its request can't be built, the queue can't be reached) fails alone, with the
reason: nothing one job raises stops the supervision of the others. It records where a job
runs (its pid, or its RQ job and the worker that took it) in the store.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from label_assistant.model.job import (
    JobStatus,
    NamesJob,
    read_request,
    read_status,
    write_request,
)

log = logging.getLogger(__name__)

#: Runs of a job whose process died without a final status (the first run included).
MAX_JOB_ATTEMPTS = 2
#: Runs of a ranking job that failed (Label Studio down, say) before it stays failed.
MAX_RANK_ATTEMPTS = 5
#: Seconds before a failed ranking job runs again.
RANK_RETRY = 30.0
#: Job kinds that talk to Label Studio: a failed run is retried (Label Studio may be back).
RETRIED_KINDS = ("rank", "prelabel")
LOG_FILE = "job.log"


class JobHandle(Protocol):
    """A started job: a local process (``subprocess.Popen``) or an RQ job
    (:class:`~label_assistant.ml_backend.rq_queue.QueuedJob`, whose ``pid`` is None and which
    also has ``ref``, ``worker``, ``started``, ``error`` and ``describe()``)."""

    pid: int | None

    def poll(self) -> int | None: ...


#: Starts a job folder's process (or a test's fake); returns a handle. A starter may also
#: have ``attach(ref)``: the handle of a job it started before, from its stored reference.
JobStarter = Callable[[Path], JobHandle]


def where(handle: JobHandle | None, job: Mapping[str, Any]) -> str:
    """How log lines and reasons name where a job runs: its RQ job and worker, or its pid."""
    describe = getattr(handle, "describe", None)
    if describe is not None:
        return describe()
    if job.get("queue_job"):
        worker = f" on worker {job['worker']}" if job.get("worker") else ""
        return f"RQ job {job['queue_job']}{worker}"
    pid = handle.pid if handle is not None else job.get("pid")
    return f"pid {pid}"


def start_process(job_dir: Path, env: Mapping[str, str] | None = None,
                  nice: int = 0) -> subprocess.Popen:
    """Start ``python -m label_assistant.ml_backend.jobs JOB_DIR``; output to its log.

    ``nice`` lowers its priority (``LA_JOB_NICE``): a training job then takes the cores
    ``/predict`` leaves idle instead of sharing them (bench_load)."""
    job_dir = Path(job_dir)
    with open(job_dir / LOG_FILE, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "label_assistant.ml_backend.jobs", str(job_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=None if env is None else dict(env),
            start_new_session=True,  # a Ctrl-C in the parent's terminal doesn't kill it
            preexec_fn=(lambda: os.nice(nice)) if nice > 0 else None,
        )


def pid_runs_job(pid: int | None, job_dir: str) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) is the process of ``job_dir``."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            # Empty for a zombie; another program if the pid was reused.
            return job_dir.encode() in cmdline.read_bytes()
        except OSError:
            return False
    return True


# --- supervision (in the worker) --------------------------------------------------------------


class Supervisor:
    """Starts, watches and ends the jobs in the store (the worker calls :meth:`manage`).

    ``request_of(project, job)`` builds a job's request (the worker knows what a training
    job trains on); ``starter`` starts its process.
    """

    def __init__(self, settings: Any, store: Any, starter: JobStarter,
                 request_of: Callable[[str, Mapping[str, Any]], dict[str, Any]]) -> None:
        self.settings = settings
        self.store = store
        self.starter = starter
        self.request_of = request_of
        self._handles: dict[int, JobHandle] = {}

    def manage(self) -> None:
        """Finish jobs that ended, rerun or fail dead ones, start queued ones."""
        for job in self.store.jobs(state="running"):
            try:
                self._watch(job)
            except Exception:  # one job's trouble must not stop the others
                log.exception("project %s job %d: supervision failed", job["project"],
                              job["id"])
        for job in self.store.startable_jobs():
            try:
                self.start(job)
            except Exception:  # start() fails a job it can't start; this is the last guard
                log.exception("project %s job %d: starting it failed", job["project"],
                              job["id"])

    def _watch(self, job: Mapping[str, Any]) -> None:
        status = self._status(job)
        if status.state not in ("done", "failed") and not self._alive(job):
            status = self._status(job)  # it may have finished between the two reads
            if status.state not in ("done", "failed"):
                self._dead(job, status)
                return
        if status.state not in ("done", "failed"):
            self._note_worker(job)
        if status.state == "done":
            self._finished(job, "done", version=status.version, promoted=status.promoted,
                           detail=status.reason)
        elif status.state == "failed":
            if job["kind"] in RETRIED_KINDS and job["attempts"] < MAX_RANK_ATTEMPTS:
                log.warning("project %s %s job %d failed (%s); again in %.0f s",
                            job["project"], job["kind"], job["id"], status.error, RANK_RETRY)
                self._handles.pop(job["id"], None)
                self.store.requeue_job(job["id"], status.error or "failed", RANK_RETRY)
                return
            self._finished(job, "failed", error=status.error or "failed")

    @staticmethod
    def _status(job: Mapping[str, Any]) -> JobStatus:
        if not job["job_dir"]:
            return JobStatus("missing")
        try:
            return read_status(Path(job["job_dir"]))
        except OSError:  # a folder that can't be read (or named): no status
            return JobStatus("missing")

    def _alive(self, job: Mapping[str, Any]) -> bool:
        handle = self._handle(job)
        if handle is not None:
            return handle.poll() is None
        if job.get("queue_job"):  # enqueued while LA_QUEUE was set, which it no longer is
            return False
        if job["pid"] is None:
            # Claimed but not started yet, by a worker that may still be starting it.
            return time.time() - (job["updated"] or 0) < 60
        return pid_runs_job(job["pid"], job["job_dir"] or "")

    def _note_worker(self, job: Mapping[str, Any]) -> None:
        """Record the worker that took an RQ job, once it is known."""
        if not job.get("queue_job") or job.get("worker"):
            return
        handle = self._handle(job)
        if handle is None:
            return
        if getattr(handle, "worker", None) is None:
            handle.poll()  # a job that finished within one round was never asked
        if getattr(handle, "worker", None):
            self.store.set_job_runner(job["id"], worker=handle.worker)
            log.info("project %s job %d: taken by worker %s", job["project"], job["id"],
                     handle.worker)

    def _handle(self, job: Mapping[str, Any]) -> JobHandle | None:
        """The job's handle: the one it was started with, else (an RQ job enqueued before a
        restart) one attached to its RQ job; None for a local process started by another."""
        handle = self._handles.get(job["id"])
        if handle is None and job.get("queue_job"):
            attach = getattr(self.starter, "attach", None)
            if attach is not None:
                handle = self._handles[job["id"]] = attach(job["queue_job"])
        return handle

    def _dead(self, job: Mapping[str, Any], status: JobStatus) -> None:
        self._note_worker(job)
        handle = self._handles.pop(job["id"], None)
        at = f"at epoch {status.epoch}" if status.epoch else f"in state {status.state}"
        if getattr(handle, "ref", None) is not None or job.get("queue_job"):
            why = getattr(handle, "error", None)
            reason = (f"the {job['kind']} job ({where(handle, job)}) ended without finishing, "
                      f"{at}" + (f": {why}" if why else ""))
        else:
            reason = f"the {job['kind']} process (pid {job['pid']}) ended without finishing, {at}"
        if job["attempts"] < MAX_JOB_ATTEMPTS:
            log.warning("project %s job %d: %s; running it again (current version %s)",
                        job["project"], job["id"], reason, self.current(job["project"]))
            self.store.requeue_job(job["id"], reason)
        else:  # _finished logs it, with the reason
            self._finished(job, "failed", error=reason)

    def _finished(self, job: Mapping[str, Any], state: str, *, version: str | None = None,
                  error: str | None = None, promoted: bool | None = None,
                  detail: str | None = None) -> None:
        self._note_worker(job)
        self._handles.pop(job["id"], None)
        followup = self.store.finish_job(job["id"], state, version=version, error=error,
                                         promoted=promoted, detail=detail)
        what = {"rank": "ranking job", "prelabel": "pre-labeling job"}.get(job["kind"], "job")
        if state == "done" and job["kind"] == "train":
            log.info("project %s job %d done: %s %s (%s)", job["project"], job["id"],
                     "published" if promoted is not False else "kept, not promoted:",
                     version, detail or "no verdict recorded")
        elif state == "done":
            log.info("project %s %s %d done", job["project"], what, job["id"])
        else:
            log.error("project %s %s %d failed, current version stays %s: %s", job["project"],
                      what, job["id"], self.current(job["project"]), error)
        if followup:
            log.info("project %s: follow-up %s %d queued", job["project"], what, followup)
        if state == "done" and job["kind"] == "rank":
            # The rest of the project's pre-labels, beyond the head the ranking refreshed.
            outcome, prelabel = self.store.request_job(
                job["project"], "prelabel", f"after ranking with {version or 'Otsu'}")
            log.info("project %s: pre-labeling job %d %s", job["project"], prelabel, outcome)

    def start(self, job: Mapping[str, Any]) -> None:
        """Claim a queued job and start its process; a job that can't be started ends
        ``failed`` with the reason (never left ``running``)."""
        project = job["project"]
        try:
            job_dir: Path | None = self.settings.workspace.job_dir(
                project, job["id"], job["attempts"] + 1, job["kind"])
            problem = None
        except Exception as error:  # its folder can't even be named: it fails, claimed
            job_dir, problem = None, error
        claimed = self.store.claim_job(job["id"], str(job_dir) if job_dir else "")
        if claimed is None:
            return
        try:
            if problem is not None:
                raise problem
            request = self.request_of(project, claimed)
            write_request(job_dir, request)
            handle = self.starter(job_dir)
        except Exception as error:
            reason = _reason(error)
            self.store.finish_job(job["id"], "failed", error=reason)  # first: never left running
            log.error("project %s job %d can't start, current version stays %s: %s", project,
                      job["id"], self.current(project), reason)
            return
        self._handles[job["id"]] = handle
        if handle.pid is not None:
            self.store.set_job_pid(job["id"], handle.pid)
        if getattr(handle, "ref", None) is not None:
            self.store.set_job_runner(job["id"], queue_job=handle.ref)
        what = f"{len(request['images'])} annotations" if request.get("images") is not None \
            else job["kind"]
        log.info("project %s job %d %s (%s, %s, after %s, %s)", project, job["id"],
                 "started" if handle.pid is not None else "enqueued", where(handle, job), what,
                 self.current(project), job_dir)

    def current(self, project: str) -> str:
        """The project's current model version id (what predictions use now), for logs;
        never raises (it is called while handling errors)."""
        try:
            return self.settings.workspace.registry(project).current_id() or "no version"
        except Exception as error:
            return f"unknown ({type(error).__name__})"


def _reason(error: BaseException) -> str:
    """An exception as the one-line reason a failed job records."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, OSError) or not first:
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return first[:500]


# --- the ranking job (in its own process) -----------------------------------------------------


#: Settings a job never needs (the ranking job's token travels as its origin's).
_NOT_FOR_JOBS = ("LABEL_STUDIO_API_KEY", "LA_BASIC_AUTH_USER", "LA_BASIC_AUTH_PASS",
                 "LA_METRICS_TOKEN", "LA_QUEUE", "LA_SINK")


def _origin_json(origin: Any) -> dict[str, Any] | None:
    """A Label Studio origin as a job's request carries it (None: none known)."""
    if origin is None:
        return None
    return {"url": origin.url, "token": origin.token, "source": origin.source}


def _request_origin(request: Mapping[str, Any]) -> Any:
    """The origin a job's request carries; ValueError when it has none with a token."""
    from label_assistant.ml_backend.origin import Origin

    origin = Origin(**request["origin"]) if request.get("origin") else None
    if origin is None or not origin.token:
        raise ValueError(f"no Label Studio address with its token known for project "
                         f"{request['project']}")
    return origin


def _failed(status: JobStatus, error: BaseException, what: str, job_dir: Path) -> None:
    """Record in ``status`` why a ranking or pre-labeling job failed, and log it."""
    status.state, status.error = "failed", f"{type(error).__name__}: {error}"
    status.traceback, status.finished_at = traceback.format_exc(limit=5), time.time()
    log.error("%s failed: %s (%s)", what, error, job_dir)


def rank_request(project: str, job: Mapping[str, Any], settings: Any = None,
                 origin: Any = None) -> dict[str, Any]:
    """A ranking job's request: the project, the Label Studio ``origin`` it talks to (address
    and token; None when none is known, which fails the job when it runs) and the
    ``settings`` it ranks with (as environment variables): a worker on another machine
    needs nothing else. Tasks and the serving version are read when it runs."""
    env = {} if settings is None else {
        k: v for k, v in settings.to_env().items() if k not in _NOT_FOR_JOBS}
    if settings is not None:
        env["LA_WORKDIR"] = str(Path(settings.workdir).resolve())
    return {"kind": "rank", "project": str(project), "job": job["id"],
            "manifest_extra": {"project": str(project), "job": job["id"]},
            "settings": env,
            "origin": _origin_json(origin)}


def run_rank(job_dir: Path) -> JobStatus:
    """Run a ranking job in this process (settings from its request over the environment);
    its final status."""
    from label_assistant.labelstudio.client import LabelStudioClient
    from label_assistant.ml_backend.ranking import rank_project
    from label_assistant.ml_backend.settings import Settings
    from label_assistant.model.job import job_label

    job_dir = Path(job_dir)
    request = read_request(job_dir)
    project = str(request["project"])
    label = job_label(request, job_dir)
    status = JobStatus("running", started_at=time.time(), pid=os.getpid())
    status.write(job_dir)
    try:
        settings = Settings.from_env({**os.environ, **(request.get("settings") or {})})
        origin = _request_origin(request)
        client = LabelStudioClient(origin.url, origin.token)
        outcome = rank_project(settings, int(project), client, origin,
                               prelabel_ahead=settings.prelabel_ahead)
        status.state, status.version, status.finished_at = "done", outcome.version, time.time()
        status.progress = 1.0
        status.extra = {"ranked": len(outcome.ranking), "strategy": outcome.strategy,
                        "prelabels_refreshed": outcome.refreshed}
        log.info("%s: ranked %d tasks by %s (%s); pre-labels asked for %d", label,
                 len(outcome.ranking),
                 outcome.strategy, outcome.version or "no model", outcome.refreshed)
    except Exception as error:  # a failed job must say why, in its status
        _failed(status, error, f"{label}: ranking", job_dir)
    status.write(job_dir)
    return status


# --- the pre-labeling job (in its own process) ------------------------------------------------


def prelabel_request(workspace: Any, project: str, job: Mapping[str, Any],
                     origin: Any = None) -> dict[str, Any]:
    """A pre-labeling job's request: the project, the Label Studio ``origin`` it writes to
    (address and token, resolved by the worker: the job never opens the store; None fails
    the job when it runs), and the folders of the job's earlier runs (their checkpoints are
    continued)."""
    earlier = [str(workspace.job_dir(project, job["id"], attempt, "prelabel"))
               for attempt in range(1, int(job["attempts"]))]
    return {"kind": "prelabel", "project": str(project), "job": job["id"],
            "resume_from": earlier,
            "origin": _origin_json(origin),
            "manifest_extra": {"project": str(project), "job": job["id"]}}


def run_prelabel(job_dir: Path) -> JobStatus:
    """Run a pre-labeling job in this process (settings from the environment); its final
    status. ``status.json`` follows it batch by batch (``progress``, tasks done / total)."""
    from label_assistant.labelstudio.client import LabelStudioClient
    from label_assistant.ml_backend.project_prelabels import (
        DEFAULT_BATCH,
        LABEL_STUDIO_TIMEOUT,
        prelabel_project,
        progress_fields,
    )
    from label_assistant.ml_backend.settings import Settings
    from label_assistant.model.job import job_label

    job_dir = Path(job_dir)
    request = read_request(job_dir)
    project = str(request["project"])
    label = job_label(request, job_dir)
    status = JobStatus("running", started_at=time.time(), pid=os.getpid(), progress=0.0)
    status.write(job_dir)

    def on_progress(state: Any) -> None:
        status.version = state.version
        status.progress = round(state.done / state.total, 4) if state.total else 1.0
        status.extra = progress_fields(state)
        status.write(job_dir)

    try:
        settings = Settings.from_env()
        origin = _request_origin(request)
        client = LabelStudioClient(origin.url, origin.token, timeout=LABEL_STUDIO_TIMEOUT)
        outcome = prelabel_project(
            settings, int(project), client, origin, job_dir,
            batch=int(request.get("batch") or DEFAULT_BATCH),
            resume_from=[Path(p) for p in request.get("resume_from") or []],
            on_progress=on_progress)
        on_progress(outcome.checkpoint)
        status.state, status.finished_at = "done", time.time()
        status.reason = (f"superseded by {outcome.checkpoint.superseded_by}"
                         if outcome.superseded else None)
        log.info("%s: pre-labels with %s: %d/%d tasks done (%d written, %d had it, %d failed, "
                 "%d stale deleted)%s", label, outcome.version, outcome.checkpoint.done,
                 outcome.checkpoint.total, outcome.checkpoint.written,
                 outcome.checkpoint.skipped, outcome.checkpoint.failed,
                 outcome.checkpoint.deleted, f"; {status.reason}" if status.reason else "")
    except Exception as error:  # a failed job must say why, in its status
        _failed(status, error, f"{label}: pre-labeling", job_dir)
    status.write(job_dir)
    return status


def run(job_dir: Path) -> JobStatus:
    """Run the job in ``job_dir`` (its request says which kind) in this process."""
    kind = read_request(job_dir).get("kind", "train")
    if kind == "rank":
        return run_rank(job_dir)
    if kind == "prelabel":
        return run_prelabel(job_dir)
    from label_assistant.model.job import run as run_training

    return run_training(job_dir)


LOG_FORMAT = "%(asctime)s %(levelname)s %(job_label)s%(message)s"


def run_queued(job_dir: str) -> dict[str, Any]:
    """What an RQ worker runs (``LA_QUEUE``): :func:`run`, with the job's log lines appended
    to its log file as a local job's are; the final status (RQ keeps it as the result)."""
    from label_assistant.model.job import job_label

    job_dir = Path(job_dir)
    try:
        request = read_request(job_dir)
    except (OSError, ValueError):
        request = {}  # run() raises it, and RQ records the job failed with the reason
    handler = logging.FileHandler(job_dir / LOG_FILE)
    handler.addFilter(NamesJob(job_label(request, job_dir),
                               own=("label_assistant.model.job", __name__)))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        return run(job_dir).to_dict()
    finally:
        root.removeHandler(handler)
        handler.close()


def main(argv: list[str] | None = None) -> int:
    from label_assistant.model.job import job_label

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m label_assistant.ml_backend.jobs JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    try:
        request = read_request(job_dir)
    except (OSError, ValueError):
        request = {}  # run() reports the unreadable request
    handler = logging.StreamHandler()
    handler.addFilter(NamesJob(job_label(request, job_dir),
                               own=("label_assistant.model.job", __name__)))
    logging.basicConfig(level=logging.INFO, handlers=[handler], format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
    try:
        final = run(job_dir)
    except (OSError, ValueError) as error:
        print(f"job {job_dir}: {error}", file=sys.stderr)
        return 1
    return 0 if final.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())

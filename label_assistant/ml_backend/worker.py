"""The background worker: annotation intake, the inspection gate, and training jobs.

Runs as a thread (tests, development: ``create_app(start_worker=True)``) or as its own
process (``python -m label_assistant.ml_backend.worker --workdir W``; ``label-assistant serve``
starts one). One worker per work directory: :meth:`Worker.recover` puts events a killed
worker left ``processing`` back to pending, which is only right when no other worker runs.

Per event (claimed from the store, oldest first):

- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``: fetch the task image, decode the
  annotation with the project's label config at the image's size, inspect the **raw** map
  (what the annotator drew: warnings such as fragments, touching objects, overlaps), clean it
  (:func:`~label_assistant.assist.post.cleanup`), inspect the **cleaned** map; the annotation is
  admitted when neither has an error. An annotation that can't be decoded (a label not in the
  config, another image size) or whose image can't be fetched is quarantined with that reason.
  The image and the cleaned label map are stored under ``W/projects/<id>/intake/``; the new
  revision supersedes the annotation's earlier ones. A cancelled (skipped) annotation counts
  as deleted.
- ``ANNOTATIONS_DELETED``: every revision of those annotations is marked deleted.
- ``START_TRAINING`` (and legacy ``/train``): a training request.

Training policy: a request is made after ``train_after`` newly admitted annotations since the
last job started, and on ``START_TRAINING``. One job per project at a time; requests while a
job runs set its follow-up flag, which makes exactly one follow-up job when it ends. Jobs run
in their own process through :mod:`label_assistant.model.job` (the web workers never train;
``/predict`` answers from the current version until the new one is published). A job whose
process died without a final status is rerun once, then marked failed with the reason.

Label Studio hears about results through a :class:`LabelStudioSink` (inspection reports,
published versions). Notifications are stored as pending and retried, so a Label Studio that
is down, or a worker killed between the store and the call, loses nothing.

Nothing acknowledged is lost if the process is killed at any moment: an event becomes
``done`` in the same transaction that records its outcome; until then it is redone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from label_assistant.labelstudio.config import LabelConfig, LabelConfigError
from label_assistant.ml_backend.fetch import FetchError, ImageFetcher
from label_assistant.ml_backend.predict import load_label_config
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.store import Event, Store, intake_dir
from label_assistant.workdir import jobs_dir, models_dir

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
HANDLED_ACTIONS = (*ANNOTATION_ACTIONS, "ANNOTATIONS_DELETED", "START_TRAINING")
#: Tries for an event whose image fetch failed transiently (network, 5xx) before giving up.
MAX_EVENT_ATTEMPTS = 5
#: Runs of a job whose process died without a final status (the first run included).
MAX_JOB_ATTEMPTS = 2
#: Seconds the worker pauses between events so that webhook writes get the lock.
WRITER_PAUSE = 0.003
#: Seconds before a failed Label Studio notification is tried again.
NOTIFY_RETRY = 30.0


# --- Label Studio side -------------------------------------------------------------------------


class LabelStudioSink(Protocol):
    """Where results go back to Label Studio (implemented by ``labelstudio.client``).

    Project ids are Label Studio's project numbers. A call that raises is tried again later.
    """

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: dict[str, Any]) -> None:
        """An annotation revision was inspected; ``report`` as in :func:`assess`."""

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        """The task's inspected annotation is gone and the task has no other one."""

    def version_published(self, project_id: int, version_id: str) -> None:
        """A training job published a new current version."""


class NullSink:
    """Tells nobody (no Label Studio client configured); logs at debug level."""

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: dict[str, Any]) -> None:
        log.debug("project %s annotation %s: %s", project_id, annotation_id,
                  "admitted" if report.get("admitted") else "quarantined")

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        log.debug("project %s task %s: annotation deleted", project_id, task_id)

    def version_published(self, project_id: int, version_id: str) -> None:
        log.debug("project %s: version %s published", project_id, version_id)


@dataclass
class RecordingSink:
    """Remembers every call (tests); ``fail`` makes calls raise, as a Label Studio that is down."""

    calls: list[tuple[str, tuple]] = field(default_factory=list)
    fail: bool = False

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("Label Studio is down")
        self.calls.append(("annotation_inspected", (project_id, task_id, annotation_id, report)))

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        if self.fail:
            raise ConnectionError("Label Studio is down")
        self.calls.append(("annotation_deleted", (project_id, task_id)))

    def version_published(self, project_id: int, version_id: str) -> None:
        if self.fail:
            raise ConnectionError("Label Studio is down")
        self.calls.append(("version_published", (project_id, version_id)))


def load_sink(settings: Settings, store: Store) -> LabelStudioSink:
    """The sink named by ``settings.sink`` (``module:callable(settings, store)``); unset: each
    project's Label Studio (:func:`label_assistant.ml_backend.sink.make_sink`); ``none``:
    :class:`NullSink`."""
    if settings.sink and settings.sink.strip().lower() in ("none", "null"):
        return NullSink()
    if not settings.sink:
        from label_assistant.ml_backend.sink import make_sink

        return make_sink(settings, store)
    module_name, _, name = settings.sink.partition(":")
    factory = getattr(importlib.import_module(module_name), name or "make_sink")
    return factory(settings, store)


# --- training processes ------------------------------------------------------------------------


class JobHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...


#: Starts ``python -m label_assistant.model.job JOB_DIR`` (or a test's fake); returns a handle.
JobStarter = Callable[[Path], JobHandle]


def _default_starter(job_dir: Path) -> JobHandle:
    from label_assistant.model import job

    return job.start(job_dir)


def _pid_runs_job(pid: int | None, job_dir: str) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) is the training of ``job_dir``."""
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


# --- the gate (pure) ---------------------------------------------------------------------------


@dataclass
class Assessment:
    """What the gate decided about one annotation."""

    admitted: bool
    report: dict[str, Any]
    label_map: np.ndarray | None  # the cleaned map; None when the annotation can't be decoded


def _error_report(code: str, message: str, **extra: Any) -> dict[str, Any]:
    finding = {"code": code, "severity": "error", "message": message, "bbox": None,
               "pixels": None}
    return {"admitted": False, "reasons": [message], "findings": [finding], "omitted": {},
            **extra}


def assess(results: Any, config: LabelConfig, height: int, width: int,
           inspection: Any = None) -> Assessment:
    """Decode, inspect the raw map, clean, inspect the cleaned map; admit if neither errs.

    The report (JSON-able) holds ``admitted``, ``reasons`` (the errors), ``findings`` (the raw
    map's findings, then errors only the cleaned map has), ``omitted``, ``cleanup`` (pixels
    changed per operation), ``ignored`` (results skipped by the decoder) and ``config_hash``.
    """
    from label_assistant.assist.inspect import InspectionConfig, InspectionContext, inspect
    from label_assistant.assist.post import CleanupParams, cleanup
    from label_assistant.labelstudio.annotations import AnnotationError, annotation_to_label_map

    inspection = inspection or InspectionConfig()
    try:
        decoded = annotation_to_label_map(results, config, height, width)
    except AnnotationError as error:
        return Assessment(False, _error_report("unreadable", f"The annotation can't be read: "
                                               f"{error}", config_hash=config.config_hash), None)

    def context(label_map: np.ndarray, instances: Any, conflicts: Any) -> Any:
        return InspectionContext(label_map=label_map, n_classes=config.n_classes,
                                 class_names=list(config.class_names), image_shape=(height, width),
                                 instances=instances, conflicts=conflicts)

    raw = inspect(context(decoded.label_map, decoded.instances, decoded.conflicts), inspection)
    cleaned = cleanup(decoded.label_map, instances=decoded.instances,
                      params=CleanupParams(min_fragment_size=inspection.min_fragment_size))
    gate = inspect(context(cleaned.label_map, cleaned.instances, None), inspection)
    findings = [f.to_dict() for f in raw.findings]
    seen = {(f["code"], f["message"]) for f in findings}
    # Errors the cleanup caused (e.g. everything was a stray fragment) block too.
    findings += [f.to_dict() for f in gate.errors if (f.code, f.message) not in seen]
    reasons = [f["message"] for f in findings if f["severity"] == "error"]
    admitted = raw.admitted and gate.admitted
    report = {
        "admitted": admitted,
        "reasons": reasons,
        "findings": findings,
        "omitted": raw.omitted,
        "cleanup": dict(cleaned.changes),
        "ignored": [list(i) for i in decoded.ignored],
        "config_hash": config.config_hash,
    }
    return Assessment(admitted, report, cleaned.label_map)


# --- files -------------------------------------------------------------------------------------


def _write_durable(path: Path, data: bytes) -> None:
    """Write, fsync and rename into place: the file is whole before the store points at it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _png(label_map: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(label_map, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# --- the worker --------------------------------------------------------------------------------


class _Retry(Exception):
    """Try the event again later (a transient fetch failure)."""


class Worker:
    """Processes events, runs the training policy and notifies Label Studio."""

    def __init__(self, settings: Settings, *, store: Store | None = None,
                 sink: LabelStudioSink | None = None, job_starter: JobStarter | None = None
                 ) -> None:
        self.settings = settings
        self.store = store or Store.for_workdir(settings.workdir)
        self.sink = sink if sink is not None else load_sink(settings, self.store)
        self.start_job = job_starter or _default_starter
        self.inspection = settings.load_inspection_config()
        self.wake = threading.Event()  # set by an in-process app when an event arrives
        self._handles: dict[int, JobHandle] = {}
        self._version_retry: dict[int, float] = {}

    # --- running -------------------------------------------------------------------------------

    def recover(self) -> int:
        """After a crash: events left processing go back to pending; how many."""
        n = self.store.requeue_processing()
        if n:
            log.warning("%d event(s) left processing by a stopped worker are pending again", n)
        return n

    def tick(self, max_events: int = 50) -> int:
        """Process up to ``max_events`` events, then jobs and notifications; events processed."""
        n = 0
        while n < max_events and self.process_next():
            n += 1
            # SQLite's write lock is not fair: a worker going straight on to its next event
            # can starve the webhook's insert (p99 of 130-300 ms measured). A pause longer
            # than the store's retry interval (2 ms) lets waiting writers in.
            time.sleep(WRITER_PAUSE)
        self.manage_jobs()
        self.notify()
        return n

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set."""
        self.recover()
        while not stop.is_set():
            try:
                busy = self.tick()
            except Exception:  # the loop must survive anything one round throws
                log.exception("worker round failed")
                busy = 0
            if not busy:
                self.wake.wait(self.settings.poll_interval)
                self.wake.clear()

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="la-worker", daemon=True)
        thread.start()
        return thread, stop

    # --- events --------------------------------------------------------------------------------

    def process_next(self) -> bool:
        """Claim and handle one event; False when none is pending."""
        event = self.store.claim_event()
        if event is None:
            return False
        try:
            self.handle(event)
        except _Retry as retry:
            if event.attempts >= MAX_EVENT_ATTEMPTS:
                self.store.finish_event(event.id, "failed", str(retry))
            else:
                delay = min(60.0, 2.0 ** event.attempts)
                log.info("project %s event %d: %s; trying again in %.0f s", event.project,
                         event.id, retry, delay)
                self.store.retry_event(event.id, str(retry), delay)
        except Exception as error:
            log.exception("project %s event %d (%s) failed", event.project, event.id,
                          event.action)
            self.store.finish_event(event.id, "failed", f"{type(error).__name__}: {error}")
        return True

    def handle(self, event: Event) -> None:
        payload = event.payload
        if event.action in ANNOTATION_ACTIONS:
            self._annotation(event, payload)
        elif event.action == "ANNOTATIONS_DELETED":
            for item in payload.get("annotations") or []:
                if isinstance(item, dict) and item.get("id") is not None:
                    self.store.delete_annotation(event.project, int(item["id"]), event.id,
                                                 finish_event=False)
            self.store.finish_event(event.id, "done")
        elif event.action == "START_TRAINING":
            self.request_training(event.project, "requested")
            self.store.finish_event(event.id, "done")
        else:
            self.store.finish_event(event.id, "done", f"action {event.action} is ignored")

    def _label_config(self, project: str, payload: dict[str, Any]) -> LabelConfig:
        xml = None
        row = self.store.get_project(project)
        if isinstance(payload.get("project"), dict):
            xml = payload["project"].get("label_config")
            if isinstance(xml, str) and xml and (row is None or row["label_config"] != xml):
                # Webhooks carry the current config: keep the store's copy (used by training).
                self.store.upsert_project(project, label_config=xml)
        if not xml and row:
            xml = row["label_config"]
        if not isinstance(xml, str) or not xml:
            raise LabelConfigError(f"no label config known for project {project}")
        return load_label_config(xml, self.settings.background_label)

    def fetcher(self, project: str) -> ImageFetcher:
        row = self.store.get_project(project) or {}
        return ImageFetcher.from_settings(self.settings, row.get("hostname"), row.get("token"))

    def _annotation(self, event: Event, payload: dict[str, Any]) -> None:
        annotation, task = payload.get("annotation"), payload.get("task")
        if not isinstance(annotation, dict) or annotation.get("id") is None:
            raise ValueError("the event has no annotation.id")
        annotation_id = int(annotation["id"])
        if not isinstance(task, dict):
            task = {"id": annotation.get("task")}
        task_id = task.get("id") if task.get("id") is not None else annotation.get("task")
        project = event.project
        if annotation.get("was_cancelled"):
            self.store.delete_annotation(project, annotation_id, event.id)
            return
        config = self._label_config(project, payload)
        from label_assistant.ml_backend.predict import task_image_url

        image_path = None
        try:
            fetched = self.fetcher(project).fetch_image(task_image_url(task, config))
        except FetchError as error:
            if error.transient and event.attempts < MAX_EVENT_ATTEMPTS:
                raise _Retry(str(error)) from None
            assessment = Assessment(False, _error_report(
                "image_unavailable", f"The task image can't be used: {error}",
                config_hash=config.config_hash), None)
        except ValueError as error:  # no image field in the task
            assessment = Assessment(False, _error_report("image_unavailable", str(error),
                                                         config_hash=config.config_hash), None)
        else:
            height, width = fetched.image.shape[:2]
            assessment = assess(annotation.get("result") or [], config, height, width,
                                self.inspection)
            folder = intake_dir(self.settings.workdir, project)
            digest = hashlib.sha256(fetched.data).hexdigest()[:20]
            image_file = folder / "images" / f"{digest}{fetched.suffix}"
            if not image_file.exists():
                _write_durable(image_file, fetched.data)
            image_path = str(image_file)
        label_path = None
        if assessment.label_map is not None:
            label_file = intake_dir(self.settings.workdir, project) / "labels" / \
                f"a{annotation_id}-e{event.id}.png"
            _write_durable(label_file, _png(assessment.label_map))
            label_path = str(label_file)
        state = "admitted" if assessment.admitted else "quarantined"
        report = {**assessment.report, "state": state, "event": event.id}
        _, stored = self.store.record_annotation(
            project, task_id=task_id, annotation_id=annotation_id, event_id=event.id,
            state=state, findings=report, image_path=image_path, label_path=label_path)
        log.info("project %s task %s annotation %s: %s%s", project, task_id, annotation_id,
                 stored, "" if assessment.admitted else f" ({'; '.join(report['reasons'])})")
        if stored == "admitted" and self.settings.train_after > 0 \
                and self.store.admitted_since_job(project) >= self.settings.train_after:
            self.request_training(project, "admitted")

    # --- training ------------------------------------------------------------------------------

    def request_training(self, project: str, reason: str) -> str:
        outcome, job_id = self.store.request_training(project, reason)
        log.info("project %s: training %s (%s) -> job %d %s", project, "requested", reason,
                 job_id, outcome)
        return outcome

    def manage_jobs(self) -> None:
        """Finish jobs that ended, rerun or fail dead ones, start queued ones."""
        from label_assistant.model.job import read_status

        for job in self.store.jobs(state="running"):
            status = read_status(Path(job["job_dir"])) if job["job_dir"] else {"state": "missing"}
            if status.get("state") not in ("done", "failed") and not self._alive(job):
                # It may have finished between the two reads: look once more.
                status = read_status(Path(job["job_dir"])) if job["job_dir"] else status
                if status.get("state") not in ("done", "failed"):
                    self._dead(job, status)
                    continue
            if status.get("state") == "done":
                self._finished(job, "done", version=status.get("version"))
            elif status.get("state") == "failed":
                self._finished(job, "failed", error=status.get("error") or "failed")
        for job in self.store.startable_jobs():
            self._start(job)

    def _alive(self, job: dict[str, Any]) -> bool:
        handle = self._handles.get(job["id"])
        if handle is not None:
            return handle.poll() is None
        if job["pid"] is None:
            # Claimed but not started yet, by a worker that may still be starting it.
            return time.time() - (job["updated"] or 0) < 60
        return _pid_runs_job(job["pid"], job["job_dir"] or "")

    def _dead(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        self._handles.pop(job["id"], None)
        where = f"at epoch {status['epoch']}" if status.get("epoch") else \
            f"in state {status.get('state')}"
        reason = f"the training process (pid {job['pid']}) ended without finishing, {where}"
        if job["attempts"] < MAX_JOB_ATTEMPTS:
            log.warning("project %s job %d: %s; running it again (current version %s)",
                        job["project"], job["id"], reason,
                        self._current_version(job["project"]) or "none")
            self.store.requeue_job(job["id"], reason)
        else:  # _finished logs it, with the reason
            self._finished(job, "failed", error=reason)

    def _finished(self, job: dict[str, Any], state: str, *, version: str | None = None,
                  error: str | None = None) -> None:
        self._handles.pop(job["id"], None)
        followup = self.store.finish_job(job["id"], state, version=version, error=error)
        if state == "done":
            log.info("project %s job %d done: published %s", job["project"], job["id"],
                     version or "no version")
        else:
            log.error("project %s job %d failed, current version stays %s: %s", job["project"],
                      job["id"], self._current_version(job["project"]) or "none", error)
        if followup:
            log.info("project %s: follow-up job %d queued", job["project"], followup)

    def _start(self, job: dict[str, Any]) -> None:
        project = job["project"]
        job_dir = jobs_dir(self.settings.workdir, project) / \
            f"job-{job['id']:05d}-{job['attempts'] + 1}"
        rows = self.store.claim_job(job["id"], str(job_dir))
        if rows is None:
            return
        try:
            request = self.training_request(project, rows, job["id"])
            from label_assistant.model import job as jobs

            jobs.write_request(job_dir, request)
            handle = self.start_job(job_dir)
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.error("project %s job %d can't start, current version stays %s: %s", project,
                      job["id"], self._current_version(project) or "none", reason)
            self.store.finish_job(job["id"], "failed", error=reason)
            return
        self._handles[job["id"]] = handle
        self.store.set_job_pid(job["id"], handle.pid)
        log.info("project %s job %d started (pid %d, %d annotations, after %s, %s)", project,
                 job["id"], handle.pid, len(request["images"]),
                 self._current_version(project) or "no version", job_dir)

    def _current_version(self, project: str) -> str | None:
        """The project's current model version id (what predictions use now), for logs."""
        from label_assistant.model.registry import ModelRegistry

        return ModelRegistry(models_dir(self.settings.workdir, project)).current_id()

    def training_request(self, project: str, rows: list[dict[str, Any]], job_id: int
                         ) -> dict[str, Any]:
        """The request of :mod:`label_assistant.model.job` for the admitted annotations."""
        row = self.store.get_project(project)
        if not row or not row["label_config"]:
            raise LabelConfigError(f"no label config known for project {project}")
        config = load_label_config(row["label_config"], self.settings.background_label)
        # Label maps follow the class order of the config they were decoded with.
        usable = [r for r in rows if (r["findings"] or {}).get("config_hash") == config.config_hash
                  and r["image_path"] and r["label_path"]]
        if not usable:
            raise ValueError(f"project {project} has no admitted annotations to train on")
        return {
            "images": [r["image_path"] for r in usable],
            "labels": [r["label_path"] for r in usable],
            "class_names": list(config.labels),
            "registry": str(models_dir(self.settings.workdir, project)),
            "config": self.settings.training_config(),
            "label_config_hash": config.config_hash,
            "manifest_extra": {"project": project, "job": job_id, "annotations": [
                {"task": r["task_id"], "annotation": r["annotation_id"], "revision": r["id"]}
                for r in usable]},
        }

    # --- notifications -------------------------------------------------------------------------

    def _notify_annotation(self, row: dict[str, Any]) -> None:
        project = int(row["project"])
        if row["state"] != "deleted":
            self.sink.annotation_inspected(project, row["task_id"], row["annotation_id"],
                                           row["findings"] or {})
            return
        # A deletion: the task shows its other live annotation, if it has one, else nothing.
        others = self.store.live_annotations_of_task(row["project"], row["task_id"])
        if others:
            newest = others[-1]
            self.sink.annotation_inspected(project, newest["task_id"], newest["annotation_id"],
                                           newest["findings"] or {})
        else:
            self.sink.annotation_deleted(project, row["task_id"])

    def notify(self) -> None:
        """Send pending inspection reports and published versions to the sink."""
        for row in self.store.unnotified_annotations():
            try:
                self._notify_annotation(row)
            except Exception as error:
                log.warning("project %s annotation %s: can't tell Label Studio (%s); trying "
                            "again in %.0f s", row["project"], row["annotation_id"], error,
                            NOTIFY_RETRY)
                self.store.mark_annotation_notified(row["id"], ok=False, retry_after=NOTIFY_RETRY)
                break  # Label Studio is likely down: the rest waits for the next round
            self.store.mark_annotation_notified(row["id"])
        now = time.time()
        for job in self.store.unnotified_versions():
            if self._version_retry.get(job["id"], 0) > now:
                continue
            try:
                self.sink.version_published(int(job["project"]), job["version"])
            except Exception as error:
                log.warning("project %s: can't tell Label Studio about %s (%s)", job["project"],
                            job["version"], error)
                self._version_retry[job["id"]] = now + NOTIFY_RETRY
                continue
            self.store.mark_job_notified(job["id"])


# --- process entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m label_assistant.ml_backend.worker",
        description="The backend's background worker: annotation intake and training jobs.")
    parser.add_argument("--workdir", default=None, help="work directory (default: LA_WORKDIR)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s worker: %(message)s")
    overrides = {"workdir": Path(args.workdir)} if args.workdir else {}
    try:
        settings = Settings.from_env(**overrides)
        worker = Worker(settings)
    except (ValueError, OSError) as error:
        print(f"worker: error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("stopping (signal %d)", signum)
        stop.set()
        worker.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker started on %s", settings.workdir)
    worker.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

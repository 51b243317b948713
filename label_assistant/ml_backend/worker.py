"""The background worker: annotation intake, the inspection gate, and training jobs.

Runs as a thread (tests, development: ``create_app(start_worker=True)``) or as its own
process (``python -m label_assistant.ml_backend.worker --workdir W``; ``label-assistant serve``
starts one). One worker per work directory: :meth:`Worker.recover` puts events a killed
worker left ``processing`` back to pending, which is only right when no other worker runs.

Per event (claimed from the store, oldest first):

- ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``: fetch the task image, decode the
  annotation with the project's label config at the image's size, and let the gate decide
  (:func:`label_assistant.assist.gate.gate`: inspect the raw map, clean it, inspect the
  cleaned map) with the serving model version's probabilities for the image, so that
  ``background_over_object`` and ``class_over_background`` fire here too (Otsu serving: no
  probabilities, those rules don't run). An annotation that can't be decoded (a label not in
  the config, another image size) or whose image can't be fetched is quarantined with that
  reason. The image and the cleaned label map are stored in the project's intake folders
  (:class:`~label_assistant.workspace.Workspace`); the new revision supersedes the
  annotation's earlier ones. A cancelled (skipped) annotation counts as deleted. The label
  config an event carries becomes the project's only if it parses; an event whose config
  can't be used (or a project with none) is quarantined with that reason.
- ``ANNOTATIONS_DELETED``: every revision of those annotations is marked deleted.
- ``START_TRAINING`` (and legacy ``/train``): a training request.

Training policy (which trigger wins: :func:`count_trigger`, README "When training starts"):

- ``START_TRAINING`` is always a request: Label Studio sends it for the Model card's
  "Start Training" (``POST /api/ml/{id}/train``), and, when the card's toggle "Start model
  training on annotation submission" is on (the project's ``min_annotations_to_start_training``
  = N > 0, carried by every event), after every N-th annotation saved
  (``tasks/models.py::update_ml_backend``, a ``post_save`` signal: it comes *before* that
  annotation's own ``ANNOTATION_CREATED``, which is sent after the save). With the toggle on
  it waits :data:`START_TRAINING_SETTLE` s, so that the annotation is inspected first and in
  the training set.
- With the toggle off, ``LA_TRAIN_AFTER`` (``train_after``; default 0 = never) newly admitted
  annotations since the last job started make a request; with the toggle on, that count is
  not used (Label Studio counts).

One job per project at a time; requests while a
job runs set its follow-up flag, which makes exactly one follow-up job when it ends. Jobs run
in their own processes, or with ``LA_QUEUE`` on RQ workers (:mod:`.rq_queue`), supervised by
:class:`~.jobs.Supervisor` (the web workers never train; ``/predict`` answers from the
current version until the new one is published).

Label Studio hears about results through a sink (:mod:`.sinks`: inspection reports, new
versions, after which the default sink queues a ranking job). Notifications are stored as
pending and retried, so a Label Studio that is down, or a worker killed between the store and
the call, loses nothing.

Nothing acknowledged is lost if the process is killed at any moment: an event becomes
``done`` in the same transaction that records its outcome; until then it is redone.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.assist.gate import Decision, gate, refused
from label_assistant.files import write_atomic
from label_assistant.labelstudio.config import LabelConfig, LabelConfigError
from label_assistant.ml_backend.fetch import FetchError, ImageFetcher
from label_assistant.ml_backend.jobs import (
    JobStarter,
    Supervisor,
    prelabel_request,
    rank_request,
    start_process,
)
from label_assistant.ml_backend.origin import project_origin
from label_assistant.ml_backend.prelabels import Prelabels
from label_assistant.ml_backend.protocol import (
    TaskError,
    load_label_config,
    object_id,
)
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import Sink, load_sink
from label_assistant.ml_backend.store import Event, Store
from label_assistant.model.registry import OTSU

log = logging.getLogger(__name__)

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
HANDLED_ACTIONS = (*ANNOTATION_ACTIONS, "ANNOTATIONS_DELETED", "START_TRAINING")
#: Tries for an event whose image fetch failed transiently (network, 5xx) before giving up.
MAX_EVENT_ATTEMPTS = 5
#: Seconds the worker pauses between events so that webhook writes get the lock.
WRITER_PAUSE = 0.003
#: Seconds before a failed Label Studio notification is tried again.
NOTIFY_RETRY = 30.0
#: Seconds before the Model card is tried again when our backend isn't connected there yet.
SHOW_RETRY = 5.0
#: Seconds a START_TRAINING waits while Label Studio's training toggle is on, so that the
#: annotation whose save sent it (its webhook comes just after) is inspected first.
START_TRAINING_SETTLE = 2.0


def decide(results: Any, config: LabelConfig, height: int, width: int, *,
           probabilities: np.ndarray | None = None, inspection: Any = None) -> Decision:
    """Decode an annotation's results at the image's size and let the gate decide."""
    from label_assistant.labelstudio.annotations import AnnotationError, annotation_to_label_map

    try:
        decoded = annotation_to_label_map(results, config, height, width)
    except AnnotationError as error:
        return refused("unreadable", f"The annotation can't be read: {error}",
                       config_hash=config.config_hash)
    except (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError) as error:
        # Results are whatever Label Studio (or anyone) sent: a decoder that trips over them
        # quarantines the annotation with the reason instead of failing the event.
        log.warning("an annotation the decoder can't handle", exc_info=True)
        return refused("unreadable", f"The annotation can't be read ({type(error).__name__}: "
                       f"{error})", config_hash=config.config_hash)
    return gate(decoded.label_map, class_names=list(config.class_names),
                instances=decoded.instances, conflicts=decoded.conflicts,
                probabilities=probabilities, inspection=inspection,
                image_shape=(height, width), ignored=decoded.ignored,
                config_hash=config.config_hash)


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
                 sink: Sink | None = None, job_starter: JobStarter | None = None,
                 prelabels: Prelabels | None = None) -> None:
        if settings.queue:  # requests name absolute paths: the shared work directory's
            settings = replace(settings, workdir=Path(settings.workdir).resolve())
        self.settings = settings
        self.store = store or Store.for_workdir(settings.workdir)
        self.sink = sink if sink is not None else load_sink(settings, self.store)
        self.inspection = settings.load_inspection_config()
        self.prelabels = prelabels or Prelabels(settings.workspace, device=settings.device,
                                                default_tile=settings.predict_tile)
        self.jobs = Supervisor(settings, self.store, job_starter or self._starter(),
                               self.job_request)
        self.wake = threading.Event()  # set by an in-process app when an event arrives
        self._serving_retry: dict[str, float] = {}
        self._shown: dict[str, str] = {}  # project -> the version its Model card shows
        self._show_retry: dict[str, float] = {}
        self._configs: dict[str, LabelConfig] = {}  # label config XML -> parsed

    def _starter(self) -> JobStarter:
        """How jobs start: enqueued for RQ workers with ``LA_QUEUE`` (rq and redis are
        imported only then), else a local process each."""
        settings = self.settings
        if settings.queue:
            from label_assistant.ml_backend.rq_queue import QueueStarter

            return QueueStarter(settings.queue)
        env = {**os.environ, **settings.to_env()}

        def start(job_dir: Path) -> Any:
            return start_process(job_dir, env, settings.job_nice)

        return start

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
        self.jobs.manage()
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
            ids = [object_id(item["id"], "annotations[].id")
                   for item in payload.get("annotations") or []
                   if isinstance(item, dict) and item.get("id") is not None]
            for annotation_id in ids:
                self.store.delete_annotation(event.project, annotation_id, event.id,
                                             finish_event=False)
            self.store.finish_event(event.id, "done")
        elif event.action == "START_TRAINING":
            if event.attempts == 1 and training_every(payload) > 0:
                # Label Studio's toggle is on: this may come from an annotation's save, which
                # sends it before that annotation's own webhook (module doc). Let it in first.
                self.store.retry_event(event.id, "waiting for the annotation saved with it",
                                       START_TRAINING_SETTLE)
                return
            self.request_training(event.project, "requested")
            self.store.finish_event(event.id, "done")
        else:
            self.store.finish_event(event.id, "done", f"action {event.action} is ignored")

    def _label_config(self, project: str, payload: dict[str, Any]) -> LabelConfig:
        """The event's label config (webhooks carry the project's current one), else the
        project's stored one; :class:`LabelConfigError` when neither can be used. A config
        that parses becomes the store's copy (training uses it); one that doesn't never
        replaces it."""
        row = self.store.get_project(project)
        sent = payload["project"].get("label_config") \
            if isinstance(payload.get("project"), dict) else None
        if isinstance(sent, str) and sent.strip():
            try:
                config = load_label_config(sent, self.settings.background_label)
            except LabelConfigError as error:
                raise LabelConfigError(f"the label config sent with the event can't be used: "
                                       f"{error}") from None
            if row is None or row["label_config"] != sent:
                self.store.upsert_project(project, label_config=sent)
            return config
        return self.stored_config(project)

    def stored_config(self, project: str) -> LabelConfig:
        """The project's stored label config, parsed once per text; :class:`LabelConfigError`
        when there is none or it can't be used."""
        row = self.store.get_project(project)
        xml = row["label_config"] if row else None
        if not isinstance(xml, str) or not xml.strip():
            raise LabelConfigError(f"no label config known for project {project}")
        if xml not in self._configs:
            try:
                self._configs[xml] = load_label_config(xml, self.settings.background_label)
            except LabelConfigError as error:
                raise LabelConfigError(f"the project's label config can't be used: "
                                       f"{error}") from None
        return self._configs[xml]

    def fetcher(self, project: str) -> ImageFetcher:
        origin = project_origin(self.settings, self.store.get_project(project))
        return ImageFetcher.for_origin(self.settings, origin)

    def _annotation(self, event: Event, payload: dict[str, Any]) -> None:
        annotation, task = payload.get("annotation"), payload.get("task")
        if not isinstance(annotation, dict) or annotation.get("id") is None:
            raise ValueError("the event has no annotation.id")
        # The app checked the ids (events stored before it did may still fail here, clearly).
        annotation_id = object_id(annotation["id"], "annotation.id")
        if not isinstance(task, dict):
            task = {"id": annotation.get("task")}
        task_id = task.get("id") if task.get("id") is not None else annotation.get("task")
        if task_id is not None:
            task_id = object_id(task_id, "task.id")
        project = event.project
        if annotation.get("was_cancelled"):
            self.store.delete_annotation(project, annotation_id, event.id)
            return
        workspace = self.settings.workspace
        image_path = None
        try:
            config = self._label_config(project, payload)
        except LabelConfigError as error:  # nothing to decode it with: quarantined, and why
            self._record(event, project, task_id, annotation_id, None,
                         refused("label_config", f"The annotation can't be read: {error}"))
            return
        try:
            fetched = self.fetcher(project).task_image(task, config)
        except FetchError as error:
            if error.transient and event.attempts < MAX_EVENT_ATTEMPTS:
                raise _Retry(str(error)) from None
            decision = refused("image_unavailable", f"The task image can't be used: {error}",
                               config_hash=config.config_hash)
        except ValueError as error:  # no image field in the task, a URL that isn't one
            message = str(error) if isinstance(error, TaskError) else \
                f"The task image can't be used: {error}"
            decision = refused("image_unavailable", message, config_hash=config.config_hash)
        else:
            height, width = fetched.image.shape[:2]
            decision = decide(annotation.get("result") or [], config, height, width,
                              probabilities=self.serving_probabilities(project, config,
                                                                       fetched.image),
                              inspection=self.inspection)
            digest = hashlib.sha256(fetched.data).hexdigest()[:20]
            image_file = workspace.intake_images(project) / f"{digest}{fetched.suffix}"
            if not image_file.exists():
                write_atomic(image_file, fetched.data, durable=True)
            image_path = str(image_file)
        stored = self._record(event, project, task_id, annotation_id, config, decision,
                              image_path)
        after = count_trigger(self.settings.train_after, training_every(payload))
        if stored == "admitted" and after > 0 and self.store.admitted_since_job(project) >= after:
            self.request_training(project, "admitted")

    def _record(self, event: Event, project: str, task_id: int | None, annotation_id: int,
                config: LabelConfig | None, decision: Decision, image_path: str | None = None
                ) -> str:
        """Store the decision as the annotation's new revision (the event is done with it);
        the state stored."""
        label_path = None
        if decision.label_map is not None:
            label_file = self.settings.workspace.intake_labels(project) / \
                f"a{annotation_id}-e{event.id}.png"
            write_atomic(label_file, _png(decision.label_map), durable=True)
            label_path = str(label_file)
        report = {**decision.report, "state": decision.state, "event": event.id}
        _, stored = self.store.record_annotation(
            project, task_id=task_id, annotation_id=annotation_id, event_id=event.id,
            state=decision.state, findings=report, image_path=image_path, label_path=label_path,
            config_hash=config.config_hash if config is not None else None)
        log.info("project %s task %s annotation %s: %s%s", project, task_id, annotation_id,
                 stored, "" if decision.admitted else f" ({'; '.join(report['reasons'])})")
        return stored

    def serving_probabilities(self, project: str, config: LabelConfig, image: np.ndarray
                              ) -> np.ndarray | None:
        """The serving model version's class probabilities for the image (for the gate's
        model-aware rules); None while Otsu serves or when the model can't run."""
        serving = self.prelabels.serving(project, config)
        if not hasattr(serving, "model"):
            return None
        try:
            return serving.prelabel(image).probabilities
        except Exception as error:  # the gate still decides, without the model's view
            log.warning("project %s: model %s can't predict this image (%s): the model "
                        "rules are skipped", project, serving.version, error)
            return None

    # --- training ------------------------------------------------------------------------------

    def request_training(self, project: str, reason: str) -> str:
        outcome, job_id = self.store.request_training(project, reason)
        log.info("project %s: training %s (%s) -> job %d %s", project, "requested", reason,
                 job_id, outcome)
        return outcome

    def job_request(self, project: str, job: Any) -> dict[str, Any]:
        """The request of a claimed job (:mod:`.jobs`)."""
        if job["kind"] == "rank":
            return rank_request(project, job, self.settings,
                                project_origin(self.settings, self.store.get_project(project)))
        if job["kind"] == "prelabel":
            return prelabel_request(self.settings.workspace, project, job,
                                    project_origin(self.settings, self.store.get_project(project)))
        return self.training_request(project, job["id"])

    def training_request(self, project: str, job_id: int) -> dict[str, Any]:
        """A :class:`~label_assistant.model.job.TrainingRequest` for the project's admitted
        annotations (those decoded with its current label config)."""
        from label_assistant.model.job import TrainingRequest

        config = self.stored_config(project)
        usable = self.store.training_set(project, config.config_hash)
        if not usable:
            raise ValueError(f"project {project} has no admitted annotations to train on")
        return TrainingRequest(
            images=[r["image_path"] for r in usable],
            labels=[r["label_path"] for r in usable],
            keys=[f"task-{r['task_id']}" if r["task_id"] is not None else
                  f"annotation-{r['annotation_id']}" for r in usable],
            class_names=list(config.labels),
            registry=str(self.settings.workspace.models_dir(project)),
            config=self.settings.training_config(),
            label_config_hash=config.config_hash,
            manifest_extra={"project": project, "job": job_id, "annotations": [
                {"task": r["task_id"], "annotation": r["annotation_id"], "revision": r["id"]}
                for r in usable]},
        ).to_dict()

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
        """Send pending inspection reports, and what serves each project, to the sink."""
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
        self.announce_serving()
        self.show_versions()

    def announce_serving(self) -> None:
        """Tell the sink when what serves a project changed: a promoted candidate, a forced
        promotion (``rounds --promote``) or a rollback, down to Otsu. The default sink then
        queues a ranking job, which re-ranks with the new version and refreshes the
        pre-labels at the head of the order."""
        now = time.time()
        for project in self.store.project_ids():
            try:
                serving = self.settings.workspace.registry(project).serving()
            except OSError as error:  # one project's registry can't be read: the others go on
                log.warning("project %s: can't read which version serves (%s)", project, error)
                continue
            row = self.store.get_project(project)
            if row is None or serving == (row["announced"] or OTSU):
                continue
            if self._serving_retry.get(project, 0) > now:
                continue
            try:
                self.sink.version_published(int(project), serving)
            except Exception as error:
                log.warning("project %s: can't tell Label Studio that %s serves (%s)", project,
                            serving, error)
                self._serving_retry[project] = now + NOTIFY_RETRY
                continue
            self.store.set_announced(project, serving)

    def show_versions(self) -> None:
        """Keep each project's Model card on the version its predictions carry now
        (:meth:`Prelabels.version_hint`: Otsu's ``otsu-<hash>`` before any model, the
        serving model's id after a promotion, the older one after a rollback), through
        :meth:`Sink.show_version`. Shown once per version and worker process (a restarted
        worker shows it again: the call changes nothing then); a project whose Label
        Studio or backend isn't known yet is tried again every :data:`SHOW_RETRY` s."""
        now = time.time()
        for project in self.store.project_ids():
            if self._show_retry.get(project, 0) > now:
                continue
            try:
                config = self.stored_config(project)
            except LabelConfigError:
                continue
            try:
                version = self.prelabels.version_hint(project, config)
            except Exception as error:  # one project's registry can't be read: others go on
                log.warning("project %s: can't read which version serves (%s)", project, error)
                continue
            if self._shown.get(project) == version:
                continue
            try:
                shown = self.sink.show_version(int(project), version)
            except Exception as error:
                log.warning("project %s: can't show %s on Label Studio's Model card (%s)",
                            project, version, error)
                self._show_retry[project] = now + NOTIFY_RETRY
                continue
            if shown:
                log.info("project %s: Label Studio's Model card shows %s", project, version)
                self._shown[project] = version
            else:
                self._show_retry[project] = now + SHOW_RETRY


def training_every(payload: dict[str, Any]) -> int:
    """Label Studio's "Start model training on annotation submission" as the event's project
    carries it (``min_annotations_to_start_training``; the UI's toggle stores 1, the API any
    N): Label Studio sends ``START_TRAINING`` after every N-th annotation; 0 = off."""
    project = payload.get("project") if isinstance(payload, dict) else None
    value = project.get("min_annotations_to_start_training") if isinstance(project, dict) \
        else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def count_trigger(train_after: int, every: int) -> int:
    """Newly admitted annotations after which the worker itself asks for training: none
    (0) while Label Studio's toggle is on (``every`` > 0: it asks, with ``START_TRAINING``),
    else ``LA_TRAIN_AFTER`` (0, its default: only Start Training)."""
    return 0 if every > 0 else max(0, int(train_after))


# --- process entry point -----------------------------------------------------------------------


def clean_registries(workspace: Any) -> int:
    """Remove what killed publishes left in the model registry of every project (``.tmp-*``
    entries); how many. Safe while jobs run: :meth:`~label_assistant.model.registry.
    ModelRegistry.cleanup_incomplete` takes the registry's lock, which a job holds while it
    publishes, so a publish in progress is waited for, never removed."""
    removed = 0
    for project in workspace.project_ids_with_models():
        try:
            removed += len(workspace.registry(project).cleanup_incomplete())
        except OSError as error:
            log.warning("project %s: can't clean its model registry (%s)", project, error)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m label_assistant.ml_backend.worker",
        description="The backend's background worker: annotation intake and training jobs.")
    parser.add_argument("--workdir", default=None, help="work directory (default: LA_WORKDIR)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s worker: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
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
    if removed := clean_registries(settings.workspace):  # before any job of this worker
        log.warning("removed %d incomplete model version(s) left by killed publishes", removed)
    worker.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-project pre-labeling: every unlabeled task of a Label Studio project gets a
prediction of the serving version, written through Label Studio's predictions API.

Label Studio's own "Retrieve Predictions" sends the selected tasks to ``/predict`` in one
request and waits 100 s for it; on a project of thousands of tasks it fails, silently. Here
the backend computes the pre-labels itself, in the background, and writes them in batches:

- **which version**: the project's serving version (:meth:`.prelabels.Prelabels.serving`,
  i.e. :func:`label_assistant.model.predictor.serving`: the current model, or Otsu), pinned
  when the job starts; each task's prediction is made exactly as ``/predict`` makes it
  (:meth:`.prelabels.Prelabels.predict_task`). Should another version start serving while
  the job runs, it stops after the batch at hand (``superseded``): the new version's ranking
  job queues the next pre-labeling job.
- **which tasks**: the project's unlabeled tasks, by id. After a new version the ranking job
  has already asked ``/predict`` for the first ``LA_PRELABEL_AHEAD`` tasks of the ranking
  (:func:`.ranking.refresh_prelabels`) and then queues this job, which finds those tasks done
  and writes the rest.
- **batches**: ``batch`` tasks per round: one Data Manager query for the ones that already
  hold a prediction of the version (skipped), the images fetched and pre-labeled, one
  ``POST /api/projects/{id}/import/predictions`` for the batch (measured faster than one
  ``POST /api/predictions`` per task, ``benchmarks/bench_prelabel_project.py``).
- **resumable**: after each batch the job folder's ``checkpoint.json`` records the last task
  id done and the counts; a rerun of an unfinished run (the Supervisor's rerun of a killed
  or failed job reads the earlier attempts' folders, the command line reuses its folder)
  continues after it. The check of
  Label Studio's own predictions before each write is what makes it safe: a batch written
  just before a kill, whose checkpoint was never written, is found done and not written
  again. **Never two predictions for one task and version** (unless someone else writes one
  between that check and the write, e.g. Label Studio asking ``/predict`` when an annotator
  opens that very task).
- **stale versions**: once a task holds the new version's prediction, its predictions of
  this backend's other versions (``vNNNN`` ids of the registry, Otsu's ``otsu-...``) are
  deleted; predictions of any other ``model_version`` (imported, another backend) are kept.
  So a task shows one pre-label of ours, the serving version's, and a rollback rewrites the
  older version's.
- **order**: each prediction's ``score`` places its task in the labeling order (the
  task's ``la_rank``, :func:`label_assistant.labelstudio.order.order_score`); a run that
  finishes on a ranked project sets its sampling to ``Uncertainty sampling``, which makes
  "Label All Tasks" serve that order.
- **progress**: ``status.json`` (``progress`` = tasks done / total, counts in its extras) and
  one log line per batch.

A task whose image can't be fetched or read gets no prediction (counted ``failed``, its
reason logged); the job goes on. Label Studio failing (down, 4xx) fails the job with the
one-line reason; the Supervisor runs it again later, and it resumes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from label_assistant.files import write_json_atomic
from label_assistant.labelstudio.order import task_rank

log = logging.getLogger(__name__)

#: Tasks per batch (one query, one write to Label Studio per batch).
DEFAULT_BATCH = 50
#: Seconds the job waits for one Label Studio call: a background job can wait, and a Label
#: Studio busy on a shared machine answered a task query in over 30 s (the client's default).
LABEL_STUDIO_TIMEOUT = 120.0
CHECKPOINT_FILE = "checkpoint.json"
_OWN_VERSION = re.compile(r"^(v\d{4,}|otsu-.+|otsu)$")


class PrelabelError(ValueError):
    """The project can't be pre-labeled (no label config, Label Studio unknown)."""


def is_own_version(model_version: str | None) -> bool:
    """Whether a prediction's ``model_version`` is one this backend writes: a registry
    version id (``v0003``) or Otsu's (``otsu-<hash>``)."""
    return bool(model_version) and bool(_OWN_VERSION.match(str(model_version)))


@dataclass
class Checkpoint:
    """Where a pre-labeling run is: the version, the last task id done, and the counts."""

    version: str
    total: int = 0
    last_task: int = 0
    done: int = 0  # tasks handled: written + skipped + failed
    written: int = 0
    skipped: int = 0  # already held a prediction of the version
    failed: int = 0
    deleted: int = 0  # stale predictions removed
    finished: bool = False
    superseded_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, job_dir: Path) -> None:
        write_json_atomic(Path(job_dir) / CHECKPOINT_FILE, self.to_dict())

    @classmethod
    def read(cls, job_dir: Path) -> Checkpoint | None:
        """The checkpoint in ``job_dir``, or None (none, or unreadable)."""
        try:
            data = json.loads((Path(job_dir) / CHECKPOINT_FILE).read_text())
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            return None


def resume_point(version: str, folders: Sequence[Path]) -> Checkpoint | None:
    """The furthest unfinished checkpoint of ``version`` among ``folders`` (earlier runs), or
    None: a run that finished, or one of another version, is not continued (running again
    after a finished run is a new pass, which retries the tasks that failed)."""
    found = [c for c in (Checkpoint.read(f) for f in folders)
             if c and c.version == version and not c.finished]
    return max(found, key=lambda c: c.last_task, default=None)


@dataclass
class PrelabelOutcome:
    """What :func:`prelabel_project` did."""

    version: str
    checkpoint: Checkpoint
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def superseded(self) -> bool:
        return self.checkpoint.superseded_by is not None


def prelabel_project(
    settings: Any,
    project_id: int,
    client: Any,
    origin: Any,
    job_dir: Path,
    *,
    batch: int = DEFAULT_BATCH,
    resume_from: Sequence[Path] = (),
    prelabels: Any = None,
    on_progress: Callable[[Checkpoint], None] | None = None,
) -> PrelabelOutcome:
    """Pre-label the project's unlabeled tasks with its serving version (module doc).

    ``client`` talks to ``origin`` (:func:`~.origin.project_origin`); ``job_dir`` holds the
    checkpoint; ``resume_from``: folders of earlier runs whose checkpoint may be continued
    (``job_dir``'s own is always read). ``on_progress(checkpoint)`` hears each batch.
    Raises :class:`~label_assistant.labelstudio.client.LabelStudioError` when Label Studio
    fails, :class:`PrelabelError` when the project has no usable label config.
    """
    from label_assistant.labelstudio.config import LabelConfigError
    from label_assistant.ml_backend.fetch import ImageFetcher
    from label_assistant.ml_backend.prelabels import Prelabels
    from label_assistant.ml_backend.protocol import load_label_config

    if batch < 1:
        raise PrelabelError(f"batch must be >= 1, got {batch}")
    project = str(project_id)
    try:
        config = load_label_config(client.get_project(project_id)["label_config"],
                                   settings.background_label)
    except LabelConfigError as error:
        raise PrelabelError(f"project {project_id}: {error}") from None
    prelabels = prelabels or Prelabels(settings.workspace, device=settings.device,
                                       default_tile=settings.predict_tile,
                                       include_background=settings.predict_background)
    registry = settings.workspace.registry(project)
    pointer = registry.serving()  # what the registry says serves: a version id, or Otsu
    serving = prelabels.serving(project, config)
    version = str(serving.version)
    fetcher = ImageFetcher.for_origin(settings, origin)

    tasks = sorted(client.list_unlabeled_tasks(project_id), key=lambda t: int(t["id"]))
    point = resume_point(version, [Path(job_dir), *map(Path, resume_from)])
    state = point or Checkpoint(version)
    state.total, state.finished, state.superseded_by = len(tasks), False, None
    todo = [t for t in tasks if int(t["id"]) > state.last_task]
    if point is not None:
        state.done = len(tasks) - len(todo)  # the task list may have changed since
        log.info("project %s: resuming pre-labels with %s after task %d (%d of %d done)",
                 project, version, state.last_task, state.done, state.total)
    else:
        log.info("project %s: pre-labeling %d unlabeled tasks with %s, %d per batch",
                 project, len(tasks), version, batch)
    state.write(job_dir)
    outcome = PrelabelOutcome(version, state)

    for start in range(0, len(todo), batch):
        chunk = todo[start: start + batch]
        _one_batch(client, project_id, chunk, version, config, fetcher, prelabels, serving,
                   state, outcome.errors)
        state.last_task = int(chunk[-1]["id"])
        state.done += len(chunk)
        state.write(job_dir)
        log.info("project %s: pre-labels %d/%d tasks (%s: %d written, %d had it, %d failed, "
                 "%d stale deleted)", project, state.done, state.total, version,
                 state.written, state.skipped, state.failed, state.deleted)
        if on_progress is not None:
            on_progress(state)
        now_serving = registry.serving()
        if now_serving != pointer and start + batch < len(todo):
            state.superseded_by = now_serving
            log.info("project %s: %s serves now; pre-labeling with %s stops at task %d",
                     project, now_serving, version, state.last_task)
            state.write(job_dir)
            return outcome
    state.finished = True
    state.write(job_dir)
    if any(task_rank(t) is not None for t in tasks):
        # Ranked tasks now hold predictions scored by rank: "Label All Tasks" follows them
        # under Uncertainty sampling (label_assistant.labelstudio.order).
        from label_assistant.labelstudio.client import UNCERTAINTY_SAMPLING

        client.set_sampling(project_id, UNCERTAINTY_SAMPLING)
    return outcome


def _one_batch(client: Any, project_id: int, chunk: Sequence[Mapping[str, Any]], version: str,
               config: Any, fetcher: Any, prelabels: Any, serving: Any, state: Checkpoint,
               errors: list[dict[str, Any]]) -> None:
    """Write the version's prediction for the batch's tasks that lack one, then delete
    their stale predictions."""
    ids = [int(t["id"]) for t in chunk]
    have = client.tasks_with_model_version(project_id, version, ids)
    state.skipped += len(have)
    made: list[dict[str, Any]] = []
    for task in chunk:
        task_id = int(task["id"])
        if task_id in have:
            continue
        try:
            prediction = prelabels.predict_task(dict(task), config, fetcher, serving)
        except Exception as error:  # one task never fails the batch (like /predict)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("project %s task %s: no pre-label: %s", project_id, task_id, reason)
            errors.append({"task": task_id, "error": reason})
            state.failed += 1
            continue
        made.append({"task": task_id, **prediction})
    if made:
        client.create_predictions(project_id, made)
        state.written += len(made)
    state.deleted += delete_stale(client, project_id, ids, version)


def delete_stale(client: Any, project_id: int, task_ids: Sequence[int], version: str) -> int:
    """Delete the tasks' predictions of this backend's other versions, for the tasks that
    hold one of ``version`` (the stale-version rule, module doc); how many were deleted."""
    if not task_ids:
        return 0
    query = {"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}}
    crowded = [int(t["id"]) for t in client.list_tasks(project_id, query=query)
               if int(t.get("total_predictions") or 0) > 1]
    if not crowded:
        return 0
    deleted = 0
    for task_id in sorted(client.tasks_with_model_version(project_id, version, crowded)):
        for prediction in client.task_predictions(task_id):
            other = prediction.get("model_version")
            if other != version and is_own_version(other):
                client.delete_prediction(int(prediction["id"]))
                deleted += 1
    return deleted


def progress_fields(state: Checkpoint) -> dict[str, Any]:
    """A checkpoint as a job status's extras."""
    return {"tasks_total": state.total, "tasks_done": state.done, "written": state.written,
            "skipped": state.skipped, "failed": state.failed, "stale_deleted": state.deleted,
            "last_task": state.last_task, "superseded_by": state.superseded_by}

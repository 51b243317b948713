"""Training as a job in its own process, with progress readable from a status file.

A job is a folder holding ``request.json`` (a :class:`TrainingRequest`: what to train on,
how, where to publish). :func:`run` trains and publishes a version, writing ``status.json``
(a :class:`JobStatus`) atomically after every epoch. A crash or kill leaves the registry's
published versions untouched: publishing is the last, atomic step. The backend starts jobs
through :mod:`label_assistant.ml_backend.jobs`, which supervises them.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from label_assistant.files import write_json_atomic

REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"
LOG_FILE = "train.log"

log = logging.getLogger(__name__)


@dataclass
class TrainingRequest:
    """What a training job trains on and where it publishes (``request.json``)."""

    images: list[str]
    labels: list[str]
    class_names: list[str]  # background first
    registry: str
    config: dict[str, Any] = field(default_factory=dict)
    label_config_hash: str | None = None
    mask_type: str = "labelmap"
    invert: bool = False
    #: Goes into the version's manifest: the backend's project, job and annotations.
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "train"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class JobStatus:
    """A job's last written status (``status.json``); ``state`` ``missing`` when none."""

    state: str  # queued | running | done | failed | missing
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    progress: float | None = None
    version: str | None = None
    error: str | None = None
    traceback: str | None = None
    last: dict[str, Any] | None = None
    #: What a job reports beyond these (a ranking job: tasks ranked, pre-labels refreshed).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        status = cls(**{k: v for k, v in data.items() if k in known})
        status.extra.update(extra)
        return status

    def write(self, job_dir: Path) -> None:
        write_json_atomic(Path(job_dir) / STATUS_FILE, self.to_dict())


def write_request(job_dir: Path, request: dict[str, Any]) -> Path:
    """Create the job folder with its request; returns the folder."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job_dir / REQUEST_FILE, request)
    JobStatus("queued", created_at=time.time()).write(job_dir)
    return job_dir


def read_request(job_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((Path(job_dir) / REQUEST_FILE).read_text())


def read_status(job_dir: Path) -> JobStatus:
    """The job's last written status (``state == "missing"`` when there is none)."""
    import json

    try:
        data = json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return JobStatus("missing")
    return JobStatus.from_dict(data) if isinstance(data, dict) else JobStatus("missing")


def job_label(request: dict[str, Any], job_dir: Path) -> str:
    """How log lines name the job: ``project 7 job 3`` for the backend's jobs (the manifest
    extra the worker writes says which), else the job folder's name."""
    extra = request.get("manifest_extra") or {}
    name = Path(job_dir).name
    job = f"job {extra['job']}" if extra.get("job") is not None else \
        (name if name.startswith("job") else f"job {name}")
    return f"project {extra['project']} {job}" if extra.get("project") is not None else job


class NamesJob(logging.Filter):
    """Puts the job's label on the lines of the job process's other loggers (epochs, the
    registry's publish), whose messages don't know the project; the runner's own lines say
    it themselves (``own``)."""

    def __init__(self, label: str, own: tuple[str, ...] = (__name__,)) -> None:
        super().__init__()
        self.label = label
        self.own = own

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_label = "" if record.name in self.own else f"{self.label}: "
        return True


def run(job_dir: Path) -> JobStatus:
    """Run the training job in this process; returns the final status."""
    from label_assistant.datasets import load_example
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.model.train import TrainConfig, train

    job_dir = Path(job_dir)
    data = read_request(job_dir)
    label = job_label(data, job_dir)
    status = JobStatus("running", started_at=time.time(), pid=os.getpid())
    status.write(job_dir)
    registry: ModelRegistry | None = None
    try:
        request = TrainingRequest.from_dict(data)
        registry = ModelRegistry(Path(request.registry))
        log.info("%s: training on %d images after %s", label, len(request.images),
                 registry.current_id() or "no version")
        config = TrainConfig.from_dict(request.config)
        examples = [load_example(Path(i), Path(lb), request.mask_type, request.invert)
                    for i, lb in zip(request.images, request.labels, strict=True)]

        def on_epoch(entry: dict[str, Any]) -> None:
            status.epoch, status.epochs = entry["epoch"], config.epochs
            status.progress, status.last = entry["epoch"] / config.epochs, entry
            status.write(job_dir)

        result = train(examples, request.class_names, config, on_epoch=on_epoch)
        current = registry.current()
        info = registry.publish(
            result.state_dict,
            spec=result.spec,
            class_names=list(request.class_names),
            label_config_hash=request.label_config_hash,
            manifest={**result.manifest, **request.manifest_extra},
            metrics={**result.metrics, "train_seconds": round(result.seconds, 2)},
            curve=result.curve,
            config=result.config,
            parent=current.id if current else None,
        )
        status.state, status.version = "done", info.id
        status.finished_at, status.progress = time.time(), 1.0
        dice = result.metrics.get("val_mean_dice")
        log.info("%s: published %s (parent %s, %d epochs, %.0f s%s)", label, info.id,
                 info.parent or "none", result.metrics["epochs_run"], result.seconds,
                 f", val Dice {dice:.3f}" if dice is not None else "")
    except Exception as error:  # a failed job must say why, in its status
        status.state, status.error = "failed", f"{type(error).__name__}: {error}"
        status.traceback, status.finished_at = traceback.format_exc(limit=5), time.time()
        kept = registry.current_id() if registry is not None else None
        log.error("%s: training failed, current version stays %s: %s (%s)", label,
                  kept or "none", error, job_dir)
    status.write(job_dir)
    return status

"""Training as a job in its own process, with progress readable from a status file.

A job is a folder holding ``request.json`` (a :class:`TrainingRequest`: what to train on,
how, where to publish). :func:`run` trains a candidate against the serving version
(:func:`label_assistant.model.round.train_round`) and publishes it, serving only when it won
(:func:`publish_round`), writing ``status.json`` (a :class:`JobStatus`) atomically after
every epoch. A crash or kill leaves the registry's
published versions untouched: publishing is the last, atomic step. The backend starts jobs
through :mod:`label_assistant.ml_backend.jobs`, which supervises them.

A request whose config says ``nproc`` > 1 runs on that many processes
(:mod:`label_assistant.model.distributed`): :func:`run` launches them through torchrun and
waits; their rank 0 runs this same :func:`run` (it alone writes the status and publishes),
the other ranks :func:`follow` it.
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
    #: One stable name per image (``task-7``; default: the label file's stem): the names
    #: decide which annotations validate (:func:`label_assistant.model.promotion.validation_keys`).
    keys: list[str] | None = None
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
    promoted: bool | None = None
    reason: str | None = None  # why the version serves, or why it was kept
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


def publish_round(registry: Any, trained: Any, class_names: list[str], *,
                  label_config_hash: str | None = None,
                  manifest_extra: dict[str, Any] | None = None) -> Any:
    """Publish a round's candidate (:class:`label_assistant.model.round.Round`): it serves
    when the verdict promoted it, else it is kept; its record."""
    result = trained.result
    return registry.publish(
        result.state_dict,
        spec=result.spec,
        class_names=list(class_names),
        label_config_hash=label_config_hash,
        manifest={**result.manifest, **(manifest_extra or {})},
        metrics={**result.metrics, "train_seconds": round(result.seconds, 2)},
        curve=result.curve,
        config=result.config,
        parent=registry.current_id(),
        make_current=trained.verdict.promoted,
        promotion=trained.verdict.to_dict(),
        domain=result.domain,
    )


def _inputs(request: TrainingRequest, config: Any) -> tuple[Any, list[Any]]:
    """The champion (what serves now) and the examples a request trains on."""
    from dataclasses import replace

    from label_assistant.datasets import load_example
    from label_assistant.model.predictor import serving
    from label_assistant.model.registry import ModelRegistry

    champion = serving(ModelRegistry(Path(request.registry)), request.class_names,
                       device=config.device)
    keys = request.keys or [Path(lb).stem for lb in request.labels]
    examples = [replace(load_example(Path(i), Path(lb), request.mask_type, request.invert),
                        name=key)
                for i, lb, key in zip(request.images, request.labels, keys, strict=True)]
    return champion, examples


def follow(job_dir: Path) -> None:
    """A rank other than 0 of a distributed job: trains beside rank 0 on the same inputs and
    writes nothing (no status, no version); raises when it can't."""
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.round import train_candidate

    request = TrainingRequest.from_dict(read_request(job_dir))
    config = TrainConfig.from_dict(request.config)
    champion, examples = _inputs(request, config)
    train_candidate(examples, request.class_names, config, champion)


def run(job_dir: Path) -> JobStatus:
    """Run the training job in this process (on ``nproc`` processes when its config says
    so); returns the final status."""
    from label_assistant.model import distributed
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.model.round import train_round
    from label_assistant.model.train import TrainConfig

    job_dir = Path(job_dir)
    data = read_request(job_dir)
    label = job_label(data, job_dir)
    status = JobStatus("running", started_at=time.time(), pid=os.getpid())
    status.write(job_dir)
    registry: ModelRegistry | None = None
    try:
        request = TrainingRequest.from_dict(data)
        registry = ModelRegistry(Path(request.registry))
        config = TrainConfig.from_dict(request.config)
        if config.nproc > 1 and distributed.place().world == 1:
            distributed.check_split(config)
            distributed.launch(job_dir, config.nproc)  # rank 0 runs this job, writes status
            status = read_status(job_dir)
            status.pid = os.getpid()
            status.write(job_dir)
            return status
        champion, examples = _inputs(request, config)
        log.info("%s: training on %d images against %s", label, len(request.images),
                 champion.version)

        def on_epoch(entry: dict[str, Any]) -> None:
            status.epoch, status.epochs = entry["epoch"], entry["epochs"]
            status.progress, status.last = entry["epoch"] / entry["epochs"], entry
            status.write(job_dir)

        trained = train_round(examples, request.class_names, config, champion,
                              on_epoch=on_epoch)
        info = publish_round(registry, trained, request.class_names,
                             label_config_hash=request.label_config_hash,
                             manifest_extra=request.manifest_extra)
        status.state, status.version = "done", info.id
        status.promoted, status.reason = trained.verdict.promoted, trained.verdict.reason
        status.finished_at, status.progress = time.time(), 1.0
        result = trained.result
        log.info("%s: %s %s (%s; %d epochs, %.0f s, from %s; %s)", label,
                 "published" if status.promoted else "kept, not promoted:", info.id,
                 status.reason, result.metrics["epochs_run"], result.seconds,
                 result.metrics["init"], result.metrics["kept"])
    except Exception as error:  # a failed job must say why, in its status
        if isinstance(error, distributed.DistributedError):  # keep rank 0's progress
            status = read_status(job_dir)
            status.pid, status.traceback = os.getpid(), None  # the reason names the rank
        else:
            status.traceback = traceback.format_exc(limit=5)
        status.state, status.error = "failed", f"{type(error).__name__}: {error}"
        status.finished_at = time.time()
        kept = registry.current_id() if registry is not None else None
        log.error("%s: training failed, current version stays %s: %s (%s)", label,
                  kept or "Otsu", error, job_dir)
    status.write(job_dir)
    return status


# --- one rank of a distributed job (what torchrun starts: model.distributed.launch) -----------


def rank(job_dir: Path) -> None:
    """One rank of a distributed training job (torchrun sets ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``): join the process group, run the
    job (rank 0) or follow it (the others), leave. Raises when the job failed, so that
    torchrun stops the other ranks and reports this one's reason."""
    import torch
    import torch.distributed as dist

    from label_assistant.model import distributed
    from label_assistant.model.config import TrainConfig, TrainingError

    number, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    logging.basicConfig(
        level=logging.INFO if number == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s rank {number}: %(message)s", force=True)
    config = TrainConfig.from_dict(read_request(job_dir).get("config") or {})
    backend = distributed.backend_for(world, config.device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        if number == 0:
            log.info("process group: %d ranks, %s", world, backend)
            status = run(job_dir)
            if status.state != "done":
                raise TrainingError(status.error or f"the job ended {status.state}")
        else:
            follow(job_dir)
    finally:
        dist.destroy_process_group()


def rank_main(argv: list[str] | None = None) -> int:
    """``python -m label_assistant.model.job JOB_DIR``: one rank (what torchrun starts)."""
    import sys

    from torch.distributed.elastic.multiprocessing.errors import record

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: torchrun ... -m label_assistant.model.job JOB_DIR "
              "(label_assistant.model.distributed.launch starts it)", file=sys.stderr)
        return 2
    record(rank)(Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(rank_main())

"""Training as a job in its own process, with progress readable from a status file.

A job is a folder holding ``request.json`` (what to train on, how, where to publish). Running
``python -m label_assistant.model.job JOB_DIR`` trains and publishes a version, writing
``status.json`` (state, epoch, progress, message) atomically after every epoch. A crash or
kill leaves the registry's published versions untouched: publishing is the last, atomic step.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"
LOG_FILE = "train.log"

log = logging.getLogger(__name__)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_request(job_dir: Path, request: dict[str, Any]) -> Path:
    """Create the job folder with its request; returns the folder."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(job_dir / REQUEST_FILE, request)
    _write_json_atomic(job_dir / STATUS_FILE, {"state": "queued", "created_at": time.time()})
    return job_dir


def read_status(job_dir: Path) -> dict[str, Any]:
    """The job's last written status (``{"state": "missing"}`` when there is none)."""
    try:
        return json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except FileNotFoundError:
        return {"state": "missing"}


def job_label(request: dict[str, Any], job_dir: Path) -> str:
    """How log lines name the job: ``project 7 job 3`` for the backend's jobs (the manifest
    extra the worker writes says which), else the job folder's name."""
    extra = request.get("manifest_extra") or {}
    name = Path(job_dir).name
    job = f"job {extra['job']}" if extra.get("job") is not None else \
        (name if name.startswith("job") else f"job {name}")
    return f"project {extra['project']} {job}" if extra.get("project") is not None else job


class _NamesJob(logging.Filter):
    """Puts the job's label on the lines of the training process's other loggers (epochs,
    the registry's publish), whose messages don't know the project; this module's name it."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_label = "" if record.name == __name__ else f"{self.label}: "
        return True


def start(job_dir: Path) -> subprocess.Popen:
    """Start the job in a new process; its output goes to ``train.log`` in the job folder."""
    job_dir = Path(job_dir)
    with open(job_dir / LOG_FILE, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "label_assistant.model.job", str(job_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the parent's terminal doesn't kill training
        )


def run(job_dir: Path) -> dict[str, Any]:
    """Run the job in this process; returns the final status."""
    from label_assistant.datasets import load_example
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.model.train import TrainConfig, train

    job_dir = Path(job_dir)
    request = json.loads((job_dir / REQUEST_FILE).read_text())
    label = job_label(request, job_dir)
    status: dict[str, Any] = {"state": "running", "started_at": time.time(), "pid": os.getpid()}
    _write_json_atomic(job_dir / STATUS_FILE, status)
    registry: ModelRegistry | None = None
    try:
        registry = ModelRegistry(Path(request["registry"]))
        log.info("%s: training on %d images after %s", label, len(request["images"]),
                 registry.current_id() or "no version")
        config = TrainConfig.from_dict(request.get("config", {}))
        examples = [
            load_example(Path(i), Path(lb), request.get("mask_type", "labelmap"),
                         request.get("invert", False))
            for i, lb in zip(request["images"], request["labels"], strict=True)
        ]

        def on_epoch(entry: dict[str, Any]) -> None:
            status.update(epoch=entry["epoch"], epochs=config.epochs,
                          progress=entry["epoch"] / config.epochs, last=entry)
            _write_json_atomic(job_dir / STATUS_FILE, status)

        result = train(examples, request["class_names"], config, on_epoch=on_epoch)
        current = registry.current()
        info = registry.publish(
            result.state_dict,
            spec=result.spec,
            class_names=list(request["class_names"]),
            label_config_hash=request.get("label_config_hash"),
            manifest={**result.manifest, **request.get("manifest_extra", {})},
            metrics={**result.metrics, "train_seconds": round(result.seconds, 2)},
            curve=result.curve,
            config=result.config,
            parent=current.id if current else None,
        )
        status.update(state="done", version=info.id, finished_at=time.time(), progress=1.0)
        dice = result.metrics.get("val_mean_dice")
        log.info("%s: published %s (parent %s, %d epochs, %.0f s%s)", label, info.id,
                 info.parent or "none", result.metrics["epochs_run"], result.seconds,
                 f", val Dice {dice:.3f}" if dice is not None else "")
    except Exception as error:  # a failed job must say why, in its status
        status.update(state="failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=5), finished_at=time.time())
        kept = registry.current_id() if registry is not None else None
        log.error("%s: training failed, current version stays %s: %s (%s)", label,
                  kept or "none", error, job_dir)
    _write_json_atomic(job_dir / STATUS_FILE, status)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m label_assistant.model.job JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    try:
        request = json.loads((job_dir / REQUEST_FILE).read_text())
    except (OSError, ValueError):
        request = {}  # run() reports the unreadable request
    handler = logging.StreamHandler()
    handler.addFilter(_NamesJob(job_label(request, job_dir)))
    logging.basicConfig(level=logging.INFO, handlers=[handler],
                        format="%(asctime)s %(levelname)s %(job_label)s%(message)s")
    return 0 if run(job_dir)["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())

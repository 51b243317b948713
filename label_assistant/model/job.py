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
    status: dict[str, Any] = {"state": "running", "started_at": time.time(), "pid": os.getpid()}
    _write_json_atomic(job_dir / STATUS_FILE, status)
    try:
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
        registry = ModelRegistry(Path(request["registry"]))
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
    except Exception as error:  # a failed job must say why, in its status
        status.update(state="failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=5), finished_at=time.time())
        log.error("training job %s failed: %s", job_dir, error)
    _write_json_atomic(job_dir / STATUS_FILE, status)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m label_assistant.model.job JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return 0 if run(Path(argv[0]))["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())

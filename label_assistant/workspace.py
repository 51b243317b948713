"""The layout of a work directory, in one place: every other module asks :class:`Workspace`.

```
W/backend.sqlite3                  the backend's durable store (events, annotations, jobs)
W/cache/images/                    task images fetched from Label Studio (shared cache)
W/metrics/                         prometheus_client's multiprocess files (one per process)
W/models/                          versions trained from the command line (label-assistant train)
W/jobs/                            their jobs (train --nproc N: one folder per run)
W/projects/<id>/models/            versions of one Label Studio project (the backend)
W/projects/<id>/jobs/              that project's jobs (training, ranking, pre-labeling), one
                                   folder each (prelabel-cli/: the command line's)
W/projects/<id>/intake/images/     images of received annotations (by content hash)
W/projects/<id>/intake/labels/     their cleaned label maps (one PNG per revision)
W/originals/<hash>.tif             original planes of imported microscopy (label-assistant
                                   import), by content hash: what the backend trains and
                                   predicts on for a task whose data names that hash
```

``project`` None means the command-line layout (``W/models``, ``W/jobs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry is imported where it is opened
    from label_assistant.model.registry import ModelRegistry

STORE_FILE = "backend.sqlite3"


@dataclass(frozen=True)
class Workspace:
    """The work directory ``root`` (nothing is created until something is written)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- where things are ---------------------------------------------------------------

    @property
    def store_file(self) -> Path:
        return self.root / STORE_FILE

    @property
    def image_cache(self) -> Path:
        return self.root / "cache" / "images"

    @property
    def originals_dir(self) -> Path:
        return self.root / "originals"

    def original_file(self, content_hash: str) -> Path:
        """The original plane with this content hash (the caller checks the hash's form)."""
        return self.originals_dir / f"{content_hash}.tif"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def project_dir(self, project: str | int) -> Path:
        return self.root / "projects" / str(project)

    def models_dir(self, project: str | int | None = None) -> Path:
        """Where the model versions live: per project for the backend, else ``W/models``."""
        return self.root / "models" if project is None else self.project_dir(project) / "models"

    def jobs_dir(self, project: str | int | None = None) -> Path:
        return self.root / "jobs" if project is None else self.project_dir(project) / "jobs"

    def job_dir(self, project: str | int, job_id: int, attempt: int, kind: str = "train") -> Path:
        """One run of a job: ``job-00012-1`` (training) or ``rank-00013-1``."""
        prefix = "job" if kind == "train" else kind
        return self.jobs_dir(project) / f"{prefix}-{job_id:05d}-{attempt}"

    def command_job_dir(self, project: str | int | None = None, kind: str = "train", *,
                        resumable: bool = False) -> Path:
        """A job the command line runs itself, under :meth:`jobs_dir`: ``train --nproc N``
        hands its processes a new one (``train-20261202-140512-4242``: time and process id);
        ``prelabel --project`` (``resumable``) always the same, ``prelabel-cli``, so that
        running the command again resumes it."""
        import os
        import time

        if resumable:
            return self.jobs_dir(project) / f"{kind}-cli"
        return self.jobs_dir(project) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def intake_images(self, project: str | int) -> Path:
        return self.project_dir(project) / "intake" / "images"

    def intake_labels(self, project: str | int) -> Path:
        return self.project_dir(project) / "intake" / "labels"

    # --- what is there ------------------------------------------------------------------

    def registry(self, project: str | int | None = None) -> ModelRegistry:
        from label_assistant.model.registry import ModelRegistry

        return ModelRegistry(self.models_dir(project))

    def project_ids_with_models(self) -> list[str]:
        """Projects that have a models folder, in numeric order."""
        base = self.root / "projects"
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if (p / "models").is_dir()]
        return sorted(found, key=lambda p: (len(p), p))

"""The layout of a work directory, in one place.

```
W/models/                 versions trained from the command line (label-assistant train)
W/projects/<id>/models/   versions of one Label Studio project (the backend)
W/projects/<id>/jobs/     training jobs of that project
W/backend.sqlite3         the backend's durable store
```
"""

from __future__ import annotations

from pathlib import Path


def models_dir(workdir: str | Path, project: str | int | None = None) -> Path:
    """Where the model versions live: per project for the backend, else ``W/models``."""
    root = Path(workdir)
    return root / "models" if project is None else root / "projects" / str(project) / "models"


def jobs_dir(workdir: str | Path, project: str | int | None = None) -> Path:
    root = Path(workdir)
    return root / "jobs" if project is None else root / "projects" / str(project) / "jobs"

"""Microscopy files -> Label Studio tasks: one task per plane (``label-assistant import``).

Per plane (:mod:`.stacks`): its chosen channels (:func:`.originals.choose_channels`) are kept
as the original in the work directory (:func:`.originals.keep_original`), and a display PNG
(:func:`.originals.display_png`) is stored in Label Studio through its import API (works
with a remote Label Studio: nothing on its disk is assumed); then a batch of tasks is
imported with the data

================ ==================================================================
``<image field>`` the display PNG (``/data/upload/...``), the label config's ``$field``
``sequence``     the stack (and the other plane axes' indices): one sequence per stack
``frame``        the index along the frame axis (single images have neither field)
``la_original``  the original plane's content hash (what the backend reads)
``la_source``    ``<file> T=3,Z=0``: where the plane comes from; the import's key
================ ==================================================================

Where the display PNGs go: by default into Label Studio itself (:class:`UploadedDisplays`:
the import API's file upload, so a remote Label Studio works). For a Label Studio on this
machine serving local files (``LOCAL_FILES_SERVING_ENABLED``, ``LOCAL_FILES_DOCUMENT_ROOT``),
:class:`LocalDisplays` writes them into a folder under its document root instead, named by
the original's hash, and points the tasks at ``/data/local-files/?d=...``; the project gets
a local-files storage of that folder (never synced: its filter matches no file), which is
what lets Label Studio serve them.

Resumable and idempotent: before importing, the project's tasks are read and every plane
whose ``la_source`` is already there is skipped, so a rerun adds nothing twice and an
interrupted run continues where it stopped (tasks are created batch by batch; a batch cut
short between storing its PNGs and creating its tasks leaves unused files in Label Studio's
upload folder, and its planes are imported on the next run). A file or plane that can't be
read is reported and skipped; the run goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from label_assistant.microscopy.originals import (
    ORIGINAL_FIELD,
    SOURCE_FIELD,
    choose_channels,
    display_png,
    keep_original,
)
from label_assistant.microscopy.stacks import StackError, open_stack
from label_assistant.workspace import Workspace

log = logging.getLogger(__name__)

SEQUENCE_FIELD = "sequence"
FRAME_FIELD = "frame"
#: Planes per upload and task import (Label Studio takes at most 100 files per request).
BATCH = 20


@dataclass
class ImportReport:
    """What an import did: counts, and the files or planes it could not read."""

    project: int
    files: int = 0
    planes: int = 0
    created: int = 0
    already: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "files": self.files, "planes": self.planes,
                "created": self.created, "already_imported": self.already,
                "failed": self.failed, "seconds": round(self.seconds, 2)}


@dataclass
class _Pending:
    name: str
    png: bytes
    data: dict[str, Any]


class UploadedDisplays:
    """Display PNGs stored in Label Studio through its import API."""

    def __init__(self, client: Any, project: int) -> None:
        self.client, self.project = client, project

    def store(self, pending: Sequence[_Pending]) -> list[str]:
        return self.client.upload_images(self.project, [(p.name, p.png) for p in pending])


class LocalDisplays:
    """Display PNGs written under Label Studio's local-files document root."""

    def __init__(self, client: Any, project: int, folder: Path, document_root: Path) -> None:
        folder, root = Path(folder).resolve(), Path(document_root).resolve()
        if not folder.is_relative_to(root):
            raise ValueError(f"{folder} is not under Label Studio's document root {root}")
        self.folder, self.prefix = folder, folder.relative_to(root).as_posix()
        folder.mkdir(parents=True, exist_ok=True)
        client.ensure_local_storage(project, folder)

    def store(self, pending: Sequence[_Pending]) -> list[str]:
        from label_assistant.files import write_atomic

        urls = []
        for p in pending:
            name = f"{p.data[ORIGINAL_FIELD]}.png"
            target = self.folder / name
            if not target.exists():
                write_atomic(target, p.png)
            urls.append(f"/data/local-files/?d={quote(f'{self.prefix}/{name}')}")
        return urls


def source_key(path: Path, label: str) -> str:
    """A plane's ``la_source``: the file's absolute path and the plane's indices."""
    text = str(path.resolve())
    return f"{text} {label}" if label else text


def _upload_name(index: int, path: Path, label: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{path.stem}_{label}".strip("_"))[:80]
    return f"p{index:03d}_{stem}.png"


def import_files(
    client: Any,
    project: int,
    files: Sequence[Path],
    workspace: Workspace,
    *,
    image_field: str = "image",
    split_axis: str | None = None,
    channel: int | None = None,
    channels: tuple[int, ...] | None = None,
    batch: int = BATCH,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    displays: Any = None,
) -> ImportReport:
    """Import ``files`` into ``project`` (see the module doc); the report. ``displays``:
    where the PNGs go (default :class:`UploadedDisplays`)."""
    started = time.perf_counter()
    report = ImportReport(project=int(project))
    existing = {str((t.get("data") or {}).get(SOURCE_FIELD)) for t in client.list_tasks(project)
                if (t.get("data") or {}).get(SOURCE_FIELD)}
    pending: list[_Pending] = []
    displays = displays if displays is not None else UploadedDisplays(client, project)

    def flush() -> None:
        if not pending:
            return
        urls = displays.store(pending)
        tasks = [{**p.data, image_field: url} for p, url in zip(pending, urls, strict=True)]
        ids = client.import_tasks(project, tasks)
        report.created += len(tasks)
        report.task_ids.extend(ids)
        existing.update(p.data[SOURCE_FIELD] for p in pending)
        pending.clear()

    items: Iterable[Path] = files if progress is None else progress(files, len(files))
    for path in items:
        report.files += 1
        try:
            stack = open_stack(path, split_axis)
        except StackError as error:
            _fail(report, path, str(error))
            continue
        with stack:
            for ref in stack.planes:
                report.planes += 1
                source = source_key(path, ref.label)
                if source in existing:
                    report.already += 1
                    continue
                try:
                    plane = choose_channels(stack.read(ref), channel, channels)
                except (StackError, ValueError) as error:
                    _fail(report, path, str(error), ref.label)
                    continue
                digest = keep_original(workspace, plane, stack.pixel_size)
                data: dict[str, Any] = {SOURCE_FIELD: source, ORIGINAL_FIELD: digest}
                if ref.sequence is not None:
                    data[SEQUENCE_FIELD] = ref.sequence
                    data[FRAME_FIELD] = ref.frame
                pending.append(_Pending(_upload_name(len(pending), path, ref.label),
                                        display_png(plane), data))
                if len(pending) >= batch:
                    flush()
    flush()
    report.seconds = time.perf_counter() - started
    return report


def _fail(report: ImportReport, path: Path, reason: str, plane: str = "") -> None:
    log.warning("skipped %s%s: %s", path, f" {plane}" if plane else "", reason)
    report.failed.append({"file": str(path), "plane": plane, "error": reason})

"""The history of training rounds: one row per model version, plus jobs that made none.

``label-assistant rounds`` (table, JSON) and ``label-assistant report`` (plots, HTML) both
build their rows here, so that they show the same numbers. Nothing here writes: the registry
is only listed, and the backend's store is only queried (and only when it already exists).

Where the numbers come from, per version:

- ``admitted``: the annotations the version was trained and validated on, which were all
  admitted by the gate when its job took its snapshot: the ``annotations`` list the backend's
  job writes into the manifest; for a version without one (``label-assistant train``), the
  images in its manifest.
- ``quarantined``: annotations of the project whose newest revision received up to the
  version's creation had been quarantined by the gate, i.e. held out of the data available
  to that round (ones that arrived while the job trained count too). The verdict is the one
  the worker recorded at intake (the store's ``verdict`` column), so a later fix or deletion
  does not rewrite history; a revision with no recorded verdict counts by its state now. Without a
  store (or for a project it doesn't know) this is None: unknown, not zero.
- ``labeled_pixels_by_class``: labeled pixels per class over all images of the round
  (training and validation split, from the manifest's per-image counts); the older
  ``labeled_pixels`` key stays the training split only, as ``train`` reports it.
- ``val_dice_by_class`` / ``val_iou_by_class``: the best epoch's validation scores, by name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from label_assistant.workspace import Workspace

#: Job states shown as rows of their own while (or because) they produced no version.
JOB_ROW_STATES = ("queued", "running", "failed")
_VERDICTS = ("admitted", "quarantined")


@dataclass
class StoreFacts:
    """What the backend's store knows about one project: its jobs and annotation revisions."""

    path: Path
    jobs: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)


# --- time --------------------------------------------------------------------------------------


def utc(value: Any) -> datetime | None:
    """A registry/store timestamp (seconds since the epoch) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


def utc_iso(value: Any) -> str | None:
    """``2024-05-01T10:22:33Z`` (JSON), or None for a missing time."""
    moment = utc(value)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_short(value: Any) -> str:
    """``2024-05-01 10:22`` (tables); text kept as it is, first 16 characters."""
    moment = utc(value)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else str(value or "")[:16]


# --- the store ---------------------------------------------------------------------------------


def load_store_facts(workdir: str | Path, project: str | int | None) -> StoreFacts | None:
    """The store's jobs and revisions of ``project``; None without a project or a store.

    A store that has never heard of the project is None too: its versions were not made by
    the backend, and "0 quarantined" would claim a knowledge the store doesn't have.
    """
    from label_assistant.ml_backend.store import Store

    store = Store.existing(workdir)  # reading must not create a store
    if project is None or store is None:
        return None
    path = store.path
    try:
        if str(project) not in store.project_ids():
            return None
        return StoreFacts(path, store.jobs(str(project)),
                          store.annotation_revisions(str(project)))
    finally:
        store.close()


def verdict(revision: dict[str, Any]) -> str:
    """What the gate decided about a revision: the ``verdict`` the store recorded at intake;
    without one, a live revision's state says the same, and other states are returned."""
    recorded = revision.get("verdict")
    return recorded if recorded in _VERDICTS else revision["state"]


def quarantined_by(revisions: list[dict[str, Any]], until: float) -> int:
    """Annotations whose newest revision received by ``until`` was quarantined.

    "Newest" is by event id, the order the store itself supersedes revisions in.
    """
    newest: dict[int, dict[str, Any]] = {}
    for r in revisions:
        if r.get("received_at") is None or r["received_at"] > until:
            continue
        known = newest.get(r["annotation_id"])
        if known is None or r["event_id"] >= known["event_id"]:
            newest[r["annotation_id"]] = r
    return sum(1 for r in newest.values() if verdict(r) == "quarantined")


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a store job row (no pid or folder: those say nothing about the round):
    its state as :func:`~label_assistant.ml_backend.store.job_state` reads it (``queued``
    while no RQ worker has taken it) and the RQ worker that ran it (None for a local
    process, or a run no worker has taken)."""
    from label_assistant.ml_backend.store import job_state

    return {
        "id": job["id"],
        "kind": job.get("kind", "train"),
        "state": job_state(job),
        "worker": job.get("worker"),
        "reason": job.get("reason"),
        "attempts": job.get("attempts"),
        "created": job.get("created"),
        "created_utc": utc_iso(job.get("created")),
        "updated": job.get("updated"),
        "updated_utc": utc_iso(job.get("updated")),
        "version": job.get("version"),
        "error": job.get("error"),
    }


def _job_of(info: Any, facts: StoreFacts | None) -> dict[str, Any] | None:
    """The job that made the version: the one that recorded it, else the manifest's job id."""
    if facts is None:
        return None
    for job in facts.jobs:
        if job.get("version") == info.id:
            return job
    job_id = (info.manifest or {}).get("job")
    return next((j for j in facts.jobs if j["id"] == job_id), None)


# --- rows --------------------------------------------------------------------------------------


def by_class(names: list[str], values: Any) -> dict[str, Any] | None:
    """``{class name: value}``; None when the values are missing or don't match the classes."""
    if not isinstance(values, (list, tuple)) or len(values) != len(names):
        return None
    return dict(zip(names, values, strict=True))


def class_pixel_counts(images: list[dict[str, Any]], metrics: dict[str, Any]) -> list[int] | None:
    """Labeled pixels per class value over all the manifest's images (training + validation);
    the training split's counts from the metrics when the manifest has no per-image counts."""
    counts = [i.get("labeled_pixels") for i in images if isinstance(i, dict)]
    if counts and len(counts) == len(images) and all(isinstance(c, list) for c in counts) \
            and len({len(c) for c in counts}) == 1:
        return [int(sum(column)) for column in zip(*counts, strict=True)]
    return metrics.get("labeled_pixels")


def admitted_count(manifest: dict[str, Any]) -> int:
    """Annotations the version learned from (backend jobs), else the images of its manifest."""
    annotations = manifest.get("annotations")
    if isinstance(annotations, list):
        return len(annotations)
    return len(manifest.get("images") or [])


def version_row(info: Any, current_id: str | None, facts: StoreFacts | None = None
                ) -> dict[str, Any]:
    """One version's row (a :class:`~label_assistant.model.registry.VersionInfo`).

    The keys before ``created_utc`` are the original ``rounds --json`` keys; keep them.
    """
    metrics = info.metrics or {}
    manifest = info.manifest or {}
    images = manifest.get("images") or []
    names = list(info.class_names)
    job = _job_of(info, facts)
    promotion = info.promotion or {}
    candidate = promotion.get("candidate_scores") or {}
    champion = promotion.get("champion_scores") or {}
    return {
        "version": info.id,
        "current": info.id == current_id,
        "created_at": info.created_at,
        "parent": info.parent,
        "classes": names,
        "train_images": metrics.get("train_images"),
        "val_images": metrics.get("val_images"),
        "images": len(images),
        "labeled_pixels": metrics.get("labeled_pixels"),
        "val_dice": metrics.get("val_dice"),
        "val_mean_dice": metrics.get("val_mean_dice"),
        "epochs_run": metrics.get("epochs_run"),
        "train_seconds": metrics.get("train_seconds"),
        "created_utc": utc_iso(info.created_at),
        "admitted": admitted_count(manifest),
        "quarantined": None if facts is None else quarantined_by(facts.revisions,
                                                                 info.created_at),
        "labeled_pixels_by_class": by_class(names, class_pixel_counts(images, metrics)),
        "val_dice_by_class": by_class(names, metrics.get("val_dice")),
        "val_iou_by_class": by_class(names, metrics.get("val_iou")),
        "status": info.status,
        "job": None if job is None else job_summary(job),
        "promoted": promotion.get("promoted"),  # None: published before the rule existed
        "verdict": promotion.get("reason"),
        "champion": promotion.get("champion"),
        "val_mean_dice_all": candidate.get("mean_dice", metrics.get("val_mean_dice_all")),
        "champion_mean_dice_all": champion.get("mean_dice"),
        "val_pixel_accuracy": candidate.get("pixel_accuracy"),
        "init": metrics.get("init"),
        "kept_epoch": metrics.get("kept"),
    }


def version_status(row: dict[str, Any]) -> str:
    """``serving``, ``promoted`` (served, since replaced), ``kept`` (not promoted), or
    ``published`` for a version older than the champion/challenger rule; then ``job 4`` when
    the store knows the job that made it, with its state when that is not ``done`` (yet)."""
    if row["current"]:
        text = "serving"
    elif row.get("promoted") is False:
        text = "kept"
    elif row.get("promoted"):
        text = "promoted"
    else:
        text = row["status"]
    job = row.get("job")
    if not job:
        return text
    worker = f" on {job['worker']}" if job.get("worker") else ""
    return f"{text}, job {job['id']}" + ("" if job["state"] == "done" else f" {job['state']}") \
        + worker


def serving_line(history: dict[str, Any]) -> str:
    """What serves the pre-labels, and why: the first line of ``rounds``."""
    serving = history.get("serving") or "otsu"
    why = history.get("serving_reason")
    if serving == "otsu":
        text = "serving: Otsu (the version before any model)"
        return text + (f": {why}" if why else ": no candidate has beaten it yet")
    return f"serving: {serving}" + (f" ({why})" if why else "")


def gather(workdir: str | Path, project: str | int | None = None, *,
           include_curves: bool = False) -> dict[str, Any]:
    """The whole history: ``models``, ``project``, ``store``, ``current``, ``versions`` (oldest
    first) and ``jobs`` (the store's queued, running and failed jobs that made no version).

    ``include_curves`` adds each version's per-epoch log as ``curve`` (plots want it; the
    ``rounds`` listing would only grow by it).
    """
    registry = Workspace(Path(workdir)).registry(project)
    root = registry.root
    facts = load_store_facts(workdir, project)
    current = registry.current_id() if registry.root.is_dir() else None
    changes = registry.history()
    last = changes[-1] if changes else {}
    versions = registry.list()
    known = {v.id for v in versions}
    if current not in known:
        current = None
    jobs = [] if facts is None else [
        job_summary(j) for j in facts.jobs
        if j["state"] in JOB_ROW_STATES and not (j.get("version") and j["version"] in known)
    ]
    rows = []
    for info in versions:
        row = version_row(info, current, facts)
        if include_curves:
            row["curve"] = list(info.curve or [])
        rows.append(row)
    return {
        "models": str(root),
        "project": None if project is None else str(project),
        "store": None if facts is None else str(facts.path),
        "current": current,
        "serving": current or "otsu",
        "serving_reason": _serving_reason(last, current),
        "versions": rows,
        "jobs": jobs,
    }


def _serving_reason(change: dict[str, Any], current: str | None) -> str | None:
    """Why what serves serves, from the registry's last change (its event and reason)."""
    if not change or change.get("version") != (current or "otsu"):
        return None
    event, reason = change.get("event"), change.get("reason")
    if event == "publish":
        return f"promoted: {reason}" if reason else "published"
    if event == "rollback":
        return f"rolled back from {change.get('previous')}"
    return f"{event}" + (f": {reason}" if reason else "")


def projects_with_versions(workdir: str | Path) -> list[str]:
    """Project ids under ``W/projects`` that hold a version folder (for a helpful message)."""
    root = Path(workdir) / "projects"
    found = []
    with contextlib.suppress(OSError):
        for p in root.iterdir():
            if (p / "models").is_dir() and any(q.name.startswith("v")
                                               for q in (p / "models").iterdir()):
                found.append(p.name)
    return sorted(found, key=lambda p: (len(p), p))


def empty_message(history: dict[str, Any], workdir: str | Path) -> str:
    """The one line said when there is no version to show."""
    if history["project"] is not None:
        return f"project {history['project']} has no model versions yet ({history['models']})"
    text = f"no model versions in {history['models']} yet"
    others = projects_with_versions(workdir)
    if others:
        text += f"; projects with versions: {', '.join(others)} (use --project)"
    return text


# --- the table (text and HTML share the cells) -------------------------------------------------

#: (title, width, align) of the table columns; the last one takes the rest of the line.
COLUMNS = [
    ("", 1, "<"), ("version", 8, "<"), ("created (UTC)", 16, "<"), ("parent", 6, "<"),
    ("admitted", 8, ">"), ("quarantined", 11, ">"), ("labeled px", 11, ">"),
    ("Dice all", 8, ">"), ("champion", 8, ">"), ("epochs", 6, ">"),
    ("train s", 7, ">"), ("status", 0, "<"),
]
#: The columns of a job's line: the first three, then its state and error.
JOB_COLUMNS = [*COLUMNS[:3], ("status", 0, "<")]
#: (title, width, align) of the per-class lines under each version.
CLASS_COLUMNS = [("class", 20, "<"), ("labeled px", 11, ">"), ("Dice", 6, ">"),
                 ("IoU", 6, ">")]
CLASS_INDENT = 4
LINE_WIDTH = 120


def _num(value: Any, spec: str = "") -> str:
    if value is None or isinstance(value, bool):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _total(values: dict[str, Any] | None) -> int | None:
    if not values:
        return None
    numbers = [v for v in values.values() if isinstance(v, (int, float))]
    return int(sum(numbers)) if numbers else None


def version_cells(row: dict[str, Any]) -> list[str]:
    """The version's cells, in :data:`COLUMNS` order."""
    return [
        "*" if row["current"] else "",
        row["version"],
        utc_short(row["created_at"]),
        row["parent"] or "-",
        _num(row["admitted"]),
        _num(row["quarantined"]),
        _num(_total(row["labeled_pixels_by_class"]), ","),
        _num(row["val_mean_dice_all"], ".3f"),
        _num(row["champion_mean_dice_all"], ".3f"),
        _num(row["epochs_run"]),
        _num(row["train_seconds"], ".1f"),
        version_status(row),
    ]


def job_cells(job: dict[str, Any]) -> list[str]:
    """A job that made no version, in :data:`JOB_COLUMNS` order: its state and error take the
    place of the numbers it has none of; its time is when it was asked for."""
    status = job["state"] + (f" on {job['worker']}" if job.get("worker") else "") \
        + (f": {job['error']}" if job.get("error") else "")
    return ["", f"job {job['id']}", utc_short(job["created"]), " ".join(status.split())]


def class_cells(row: dict[str, Any]) -> list[list[str]]:
    """Per class: name, labeled pixels, validation Dice and IoU (:data:`CLASS_COLUMNS`)."""
    pixels = row["labeled_pixels_by_class"] or {}
    dice = row["val_dice_by_class"] or {}
    iou = row["val_iou_by_class"] or {}
    return [[name, _num(pixels.get(name), ","), _num(dice.get(name), ".3f"),
             _num(iou.get(name), ".3f")] for name in row["classes"]]


def _clip(text: str) -> str:
    return text if len(text) <= LINE_WIDTH else text[: LINE_WIDTH - 3] + "..."


def _wrap(text: str, indent: int = 0) -> list[str]:
    """A sentence (the serving reason, a verdict) over as many lines as it needs: it is the
    why of a round, so none of it is cut."""
    import textwrap

    return textwrap.wrap(text, LINE_WIDTH, initial_indent=" " * indent,
                         subsequent_indent=" " * (indent + 2), break_on_hyphens=False)


def _line(cells: list[str], columns: list[tuple[str, int, str]], indent: int = 0) -> str:
    parts = []
    for cell, (_, width, align) in zip(cells, columns, strict=True):
        parts.append(cell if width == 0 else format(cell[:width] if align == "<" else cell,
                                                    f"{align}{width}"))
    return _clip(" " * indent + " ".join(parts).rstrip())


def timeline(history: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Versions and version-less jobs in one list by time: ``("version" | "job", row)``."""
    items = [(r["created_at"] or 0, 0, "version", r) for r in history["versions"]]
    items += [(j["created"] or 0, 1, "job", j) for j in history["jobs"]]
    return [(kind, row) for *_, kind, row in sorted(items, key=lambda t: (t[0], t[1]))]


def text_table(history: dict[str, Any]) -> list[str]:
    """The table as lines: a version per line, its classes indented below; jobs in between,
    placed by time."""
    lines = [*_wrap(serving_line(history)),
             "Dice all: mean validation Dice, all classes with Background; champion: what "
             "served, same pixels",
             _line([c[0] for c in COLUMNS], COLUMNS),
             _line([c[0] for c in CLASS_COLUMNS], CLASS_COLUMNS, CLASS_INDENT)]
    for kind, item in timeline(history):
        if kind == "job":
            lines.append(_line(job_cells(item), JOB_COLUMNS))
            continue
        lines.append(_line(version_cells(item), COLUMNS))
        if item.get("verdict"):
            lines += _wrap("verdict: " + item["verdict"], CLASS_INDENT)
        lines += [_line(cells, CLASS_COLUMNS, CLASS_INDENT) for cells in class_cells(item)]
    return lines

"""The backend's durable state: an embedded SQLite database in the work directory.

``W/backend.sqlite3`` in WAL mode with ``synchronous=FULL``: a committed write survives a
power cut, so an event is acknowledged to Label Studio only after :meth:`Store.record_event`
has committed it. Every thread and every process opens its own connection (SQLite
connections must not cross threads or ``fork``); writers serialise on SQLite's lock, and
multi-statement writes run in ``BEGIN IMMEDIATE`` transactions, so several processes may
claim events and start jobs safely.

Tables:

- ``projects``: one row per Label Studio project: label config, the Label Studio origin
  and token from ``/setup`` (always stored and replaced together: a token belongs to the
  origin it came with), ``admitted_since_job`` (the training policy's counter) and
  ``announced`` (the serving version Label Studio last heard of);
- ``events``: webhook events, ``pending`` -> ``processing`` -> ``done`` | ``failed``;
- ``annotations``: one row per *revision* of an annotation (a created or updated event):
  ``admitted`` | ``quarantined``, then ``superseded`` by a later revision or ``deleted``.
  The facts that decide behaviour are columns: ``verdict`` (the gate's decision at intake,
  never rewritten) and ``config_hash`` (the label config the map was decoded with: only
  maps of the project's current config train); ``findings`` is the report for people;
- ``jobs``: background jobs of a ``kind`` (``train``, ``rank``, ``prelabel``), ``queued`` ->
  ``running`` -> ``done`` | ``failed``, one running per project and kind, with a
  ``followup`` flag set by requests that arrive while the job runs, and ``not_before`` for
  a delayed retry. A training job's ``version`` serves only if ``promoted``; ``detail``
  says why. Where its current run is: ``pid`` (a local process), or ``queue_job`` (its RQ
  job, with ``LA_QUEUE``) and ``worker`` (the RQ worker that took it); :func:`job_state`
  tells a job handed to the queue that no worker has taken yet (``queued``) from one that
  runs.

Rows come back as the ``TypedDict`` records below. Project ids are Label Studio's project
numbers as strings (``"7"``). Where the file lives is :class:`~label_assistant.workspace.
Workspace`'s business (``Store.for_workdir``). An older database gains the new columns
when it is opened (:func:`_migrate`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from label_assistant.workspace import Workspace

EVENT_STATES = ("pending", "processing", "done", "failed")
ANNOTATION_STATES = ("admitted", "quarantined", "superseded", "deleted")
JOB_STATES = ("queued", "running", "done", "failed")
JOB_KINDS = ("train", "rank", "prelabel")
_LIVE = ("admitted", "quarantined")


class ProjectRow(TypedDict):
    id: str
    label_config: str | None
    hostname: str | None
    token: str | None
    admitted_since_job: int
    announced: str | None  # what serves, as last told to Label Studio (None: Otsu, never told)
    updated: float | None


class AnnotationRow(TypedDict):
    id: int
    project: str
    task_id: int | None
    annotation_id: int
    event_id: int
    state: str  # admitted | quarantined | superseded | deleted
    verdict: str | None  # the gate's decision at intake: admitted | quarantined
    config_hash: str | None
    findings: dict[str, Any] | None
    image_path: str | None
    label_path: str | None
    notified: int
    notify_after: float
    updated: float | None


class JobRow(TypedDict):
    id: int
    project: str
    kind: str
    state: str
    reason: str | None
    pid: int | None
    job_dir: str | None
    version: str | None
    promoted: int | None  # a training job's version serves (1) or was kept (0)
    detail: str | None  # why: the champion/challenger verdict, or a ranking job's summary
    error: str | None
    queue_job: str | None  # its RQ job (LA_QUEUE), for the current run
    worker: str | None  # the RQ worker that took that run
    followup: int
    attempts: int
    not_before: float
    created: float | None
    updated: float | None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    label_config TEXT,
    hostname TEXT,
    token TEXT,
    admitted_since_job INTEGER NOT NULL DEFAULT 0,
    announced TEXT,
    updated REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    updated REAL
);
CREATE INDEX IF NOT EXISTS events_by_state ON events (state, id);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    task_id INTEGER,
    annotation_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    verdict TEXT,
    config_hash TEXT,
    findings TEXT,
    image_path TEXT,
    label_path TEXT,
    notified INTEGER NOT NULL DEFAULT 0,
    notify_after REAL NOT NULL DEFAULT 0,
    updated REAL
);
CREATE INDEX IF NOT EXISTS annotations_by_id ON annotations (project, annotation_id);
CREATE INDEX IF NOT EXISTS annotations_by_state ON annotations (project, state);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',
    state TEXT NOT NULL DEFAULT 'queued',
    reason TEXT,
    pid INTEGER,
    job_dir TEXT,
    version TEXT,
    promoted INTEGER,
    detail TEXT,
    error TEXT,
    queue_job TEXT,
    worker TEXT,
    followup INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    created REAL,
    updated REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (project, state);
"""

#: Columns added after the first release: (table, column, declaration).
_ADDED_COLUMNS = (
    ("projects", "announced", "TEXT"),
    ("annotations", "verdict", "TEXT"),
    ("annotations", "config_hash", "TEXT"),
    ("jobs", "kind", "TEXT NOT NULL DEFAULT 'train'"),
    ("jobs", "not_before", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "promoted", "INTEGER"),
    ("jobs", "detail", "TEXT"),
    ("jobs", "queue_job", "TEXT"),
    ("jobs", "worker", "TEXT"),
)


def job_state(job: Any) -> str:
    """Where a job is, as people read it: its state, except that a run handed to the queue
    (``LA_QUEUE``) that no worker has taken yet is ``queued`` (the store holds it
    ``running``: it is the project's one job of its kind)."""
    if job["state"] == "running" and job.get("queue_job") and not job.get("worker"):
        return "queued"
    return job["state"]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older release up to :data:`_SCHEMA`: add the missing
    columns and fill the annotation facts from the reports that used to hold them."""
    added = False
    for table, column, declaration in _ADDED_COLUMNS:
        have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            added = True
    if not added:
        return
    rows = conn.execute("SELECT id, findings FROM annotations WHERE findings IS NOT NULL AND "
                        "(verdict IS NULL OR config_hash IS NULL)").fetchall()
    for r in rows:
        try:
            findings = json.loads(r["findings"])
        except ValueError:
            continue
        if isinstance(findings, dict):
            verdict = findings.get("state") if findings.get("state") in _LIVE else None
            conn.execute("UPDATE annotations SET verdict = COALESCE(verdict, ?), "
                         "config_hash = COALESCE(config_hash, ?) WHERE id = ?",
                         (verdict, findings.get("config_hash"), r["id"]))


@dataclass(frozen=True)
class Event:
    """A claimed webhook event; ``payload`` is the JSON body as Label Studio sent it."""

    id: int
    project: str
    action: str
    payload_text: str
    attempts: int

    @property
    def payload(self) -> dict[str, Any]:
        data = json.loads(self.payload_text)
        return data if isinstance(data, dict) else {}


def _event_text(payload: str | bytes) -> str:
    """An event's payload as text to store: UTF-8 (an optional BOM dropped), nothing else."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"an event payload must be UTF-8 ({error.reason} at byte "
                             f"{error.start})") from None
    if not isinstance(payload, str):
        raise ValueError(f"an event payload is JSON text, not {type(payload).__name__}")
    payload = payload.removeprefix("\ufeff")
    try:
        if not payload.isascii():  # an ASCII text is UTF-8 already (the common case: fast)
            payload.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"an event payload must be valid Unicode ({error.reason} at "
                         f"character {error.start})") from None
    return payload


#: Seconds a statement keeps trying while another connection holds the write lock.
BUSY_DEADLINE = 30.0


def _retry_busy(operation: Any) -> Any:
    """Run ``operation``, retrying quickly while SQLite answers "database is locked"."""
    deadline = time.monotonic() + BUSY_DEADLINE
    delay = 0.0005
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as error:
            message = str(error)
            if "locked" not in message and "busy" not in message:
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.002)


def _row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class Store:
    """The SQLite store of one work directory (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self.transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            _migrate(conn)

    @classmethod
    def for_workdir(cls, workdir: str | Path) -> Store:
        """The store of a work directory (created on first use)."""
        return cls(Workspace(Path(workdir)).store_file)

    @classmethod
    def existing(cls, workdir: str | Path) -> Store | None:
        """The work directory's store if it exists: reading must not create one."""
        path = Workspace(Path(workdir)).store_file
        return cls(path) if path.is_file() else None

    # --- connections and transactions ----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread and per process: a forked child must not reuse its
        # parent's connection, so the pid is part of the key.
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=0.0, isolation_level=None,
                                   check_same_thread=True)
            conn.row_factory = _row
            # No busy handler: SQLite's own sleeps 1, 2, 5, ... 100 ms between tries and is not
            # woken when the lock frees, which put 300 ms into webhook answers while the
            # worker wrote. _retry_busy polls every 0.5-2 ms instead; switching to WAL needs
            # the lock too (several processes open a new store at once), so it retries too.
            conn.execute("PRAGMA busy_timeout=0")
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged event survives a crash
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """One statement (its own transaction in autocommit), retried while the db is busy."""
        conn = self._conn()
        return _retry_busy(lambda: conn.execute(sql, params))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: the write lock is taken at once)."""
        conn = self._conn()
        _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def _query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        return self._execute(sql, params).fetchall()

    # --- projects ------------------------------------------------------------------------------

    def upsert_project(self, project: str, *, label_config: str | None = None) -> None:
        """Create a project, or replace its label config (None leaves it as it was)."""
        self._execute(
            "INSERT INTO projects (id, label_config, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET "
            "label_config = COALESCE(excluded.label_config, label_config), "
            "updated = excluded.updated",
            (str(project), label_config, time.time()),
        )

    def set_origin(self, project: str, hostname: str | None, token: str | None) -> None:
        """Replace the project's Label Studio origin and token together: a ``/setup`` that
        names a new origin without a token leaves the project without one."""
        self._execute(
            "INSERT INTO projects (id, hostname, token, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, "
            "token = excluded.token, updated = excluded.updated",
            (str(project), hostname, token, time.time()),
        )

    def get_project(self, project: str) -> ProjectRow | None:
        rows = self._query("SELECT * FROM projects WHERE id = ?", (str(project),))
        return rows[0] if rows else None

    def project_ids(self) -> list[str]:
        ids = {r["id"] for r in self._query("SELECT id FROM projects")}
        ids |= {r["project"] for r in self._query("SELECT DISTINCT project FROM jobs")}
        ids |= {r["project"] for r in self._query("SELECT DISTINCT project FROM annotations")}
        return sorted(ids, key=lambda p: (len(p), p))

    # --- events --------------------------------------------------------------------------------

    def record_event(self, project: str, action: str, payload: str | bytes) -> int:
        """Store an event durably (committed and fsynced when this returns); its id.

        ``payload`` is the JSON text, or its UTF-8 bytes; a leading byte order mark is
        dropped (the worker's ``json.loads`` refuses one). :class:`ValueError` for bytes that
        are not UTF-8 or text that can't be stored as UTF-8 (a lone surrogate).
        """
        payload = _event_text(payload)
        now = time.time()
        cursor = self._execute(
            "INSERT INTO events (project, action, payload, received_at, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            (str(project), action, payload, now, now),
        )
        return int(cursor.lastrowid)

    def claim_event(self) -> Event | None:
        """Take the oldest pending event (due now) and mark it processing; None if none.

        One UPDATE statement: two processes can never claim the same event.
        """
        now = time.time()
        rows = self._execute(
            "UPDATE events SET state = 'processing', attempts = attempts + 1, updated = ? "
            "WHERE id = (SELECT id FROM events WHERE state = 'pending' AND not_before <= ? "
            "ORDER BY id LIMIT 1) AND state = 'pending' "
            "RETURNING id, project, action, payload, attempts",
            (now, now),
        ).fetchall()
        if not rows:
            return None
        r = rows[0]
        return Event(r["id"], r["project"], r["action"], r["payload"], r["attempts"])

    def finish_event(self, event_id: int, state: str = "done", error: str | None = None,
                     conn: sqlite3.Connection | None = None) -> None:
        if state not in ("done", "failed"):
            raise ValueError(f"an event finishes as done or failed, not {state!r}")
        sql = "UPDATE events SET state = ?, error = ?, updated = ? WHERE id = ?"
        params = (state, error, time.time(), event_id)
        if conn is not None:  # inside the caller's transaction: the lock is held
            conn.execute(sql, params)
        else:
            self._execute(sql, params)

    def retry_event(self, event_id: int, error: str, delay: float) -> None:
        """Put an event back to pending, not to be claimed again for ``delay`` seconds."""
        now = time.time()
        self._execute(
            "UPDATE events SET state = 'pending', error = ?, not_before = ?, updated = ? "
            "WHERE id = ?",
            (error, now + delay, now, event_id),
        )

    def requeue_processing(self) -> int:
        """Events left ``processing`` by a killed worker go back to pending; how many."""
        cursor = self._execute(
            "UPDATE events SET state = 'pending', not_before = 0, updated = ? "
            "WHERE state = 'processing'", (time.time(),))
        return cursor.rowcount

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM events WHERE id = ?", (event_id,))
        return rows[0] if rows else None

    def event_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(EVENT_STATES, 0)
        for r in self._query("SELECT state, COUNT(*) AS n FROM events GROUP BY state"):
            counts[r["state"]] = r["n"]
        return counts

    # --- annotations ---------------------------------------------------------------------------

    def record_annotation(
        self,
        project: str,
        *,
        task_id: int | None,
        annotation_id: int,
        event_id: int,
        state: str,
        findings: dict[str, Any] | None,
        image_path: str | None,
        label_path: str | None,
        config_hash: str | None = None,
        finish_event: bool = True,
    ) -> tuple[int, str]:
        """Store a new revision of an annotation; ``(row id, state stored)``.

        Earlier live revisions become ``superseded``. A revision from an *older* event than
        the annotation's newest row (events processed out of order) is stored as
        ``superseded`` at once. An admitted revision adds one to the project's
        ``admitted_since_job``. With ``finish_event`` the event is marked done in the same
        transaction, so a crash leaves either both or neither.
        """
        if state not in _LIVE:
            raise ValueError(f"a new revision is admitted or quarantined, not {state!r}")
        verdict = state
        project = str(project)
        now = time.time()
        with self.transaction() as conn:
            newest = conn.execute(
                "SELECT MAX(event_id) AS e FROM annotations "
                "WHERE project = ? AND annotation_id = ?",
                (project, annotation_id)).fetchone()["e"]
            if newest is not None and newest > event_id:
                state = "superseded"
            else:
                conn.execute(
                    "UPDATE annotations SET state = 'superseded', updated = ? WHERE project = ? "
                    "AND annotation_id = ? AND state IN ('admitted', 'quarantined')",
                    (now, project, annotation_id))
            cursor = conn.execute(
                "INSERT INTO annotations (project, task_id, annotation_id, event_id, state, "
                "verdict, config_hash, findings, image_path, label_path, notified, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (project, task_id, annotation_id, event_id, state, verdict, config_hash,
                 json.dumps(findings) if findings is not None else None, image_path, label_path,
                 int(state == "superseded"), now))
            if state == "admitted":
                conn.execute("INSERT INTO projects (id, updated) VALUES (?, ?) "
                             "ON CONFLICT (id) DO NOTHING", (project, now))
                conn.execute("UPDATE projects SET admitted_since_job = admitted_since_job + 1 "
                             "WHERE id = ?", (project,))
            if finish_event:
                self.finish_event(event_id, "done", conn=conn)
        return int(cursor.lastrowid), state

    def delete_annotation(self, project: str, annotation_id: int, event_id: int,
                          finish_event: bool = True) -> int:
        """Mark the live revision of an annotation deleted; a tombstone row keeps the event order.

        Superseded revisions stay superseded (history); returns the revisions changed.
        """
        project = str(project)
        now = time.time()
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT task_id FROM annotations WHERE project = ? AND annotation_id = ? "
                "ORDER BY id DESC LIMIT 1", (project, annotation_id)).fetchall()
            cursor = conn.execute(
                "UPDATE annotations SET state = 'deleted', notified = 1, updated = ? "
                "WHERE project = ? AND annotation_id = ? AND state IN ('admitted', 'quarantined')",
                (now, project, annotation_id))
            changed = cursor.rowcount
            task_id = rows[0]["task_id"] if rows else None
            # The tombstone carries the deletion's notification (when the task is known).
            conn.execute(
                "INSERT INTO annotations (project, task_id, annotation_id, event_id, state, "
                "notified, updated) VALUES (?, ?, ?, ?, 'deleted', ?, ?)",
                (project, task_id, annotation_id, event_id, int(task_id is None or not changed),
                 now))
            if finish_event:
                self.finish_event(event_id, "done", conn=conn)
        return changed

    def annotations(self, project: str | None = None, state: str | None = None,
                    annotation_id: int | None = None) -> list[AnnotationRow]:
        """Annotation revisions, oldest first, filtered by project/state/annotation id."""
        sql, params = "SELECT * FROM annotations WHERE 1 = 1", []
        for column, value in (("project", project), ("state", state),
                              ("annotation_id", annotation_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(str(value) if column == "project" else value)
        return self._decoded(self._query(sql + " ORDER BY id", tuple(params)))

    def live_annotations_of_task(self, project: str, task_id: int | None
                                 ) -> list[dict[str, Any]]:
        """Admitted or quarantined revisions of a task's annotations, oldest first."""
        return self._decoded(self._query(
            "SELECT * FROM annotations WHERE project = ? AND task_id IS ? "
            "AND state IN ('admitted', 'quarantined') ORDER BY id", (str(project), task_id)))

    def training_set(self, project: str, config_hash: str) -> list[AnnotationRow]:
        """The admitted revisions to train on: per task, the newest admitted annotation that
        was decoded with the label config ``config_hash`` and whose files were stored."""
        rows = self._decoded(self._query(
            "SELECT * FROM annotations WHERE project = ? AND state = 'admitted' AND "
            "config_hash = ? AND image_path IS NOT NULL AND label_path IS NOT NULL ORDER BY id",
            (str(project), config_hash)))
        latest: dict[Any, AnnotationRow] = {}
        for r in rows:  # oldest first, so the newest of each task wins
            latest[r["task_id"] if r["task_id"] is not None else f"a{r['annotation_id']}"] = r
        return sorted(latest.values(), key=lambda r: r["id"])

    @staticmethod
    def _decoded(rows: list[dict[str, Any]]) -> list[Any]:
        for r in rows:
            r["findings"] = json.loads(r["findings"]) if r["findings"] else None
        return rows

    def annotation_revisions(self, project: str) -> list[dict[str, Any]]:
        """A project's annotation revisions with ``received_at``, oldest first.

        ``received_at`` is when the revision's event reached the backend (the row's last change
        if that event is gone): reports use it to tell what the gate had seen by a given time,
        which ``state`` (the revision's state now) can't.
        """
        return self._decoded(self._query(
            "SELECT a.*, COALESCE(e.received_at, a.updated) AS received_at FROM annotations a "
            "LEFT JOIN events e ON e.id = a.event_id WHERE a.project = ? ORDER BY a.id",
            (str(project),)))

    def annotation_counts(self) -> dict[tuple[str, str], int]:
        """``(project, state) -> revisions``."""
        return {(r["project"], r["state"]): r["n"] for r in self._query(
            "SELECT project, state, COUNT(*) AS n FROM annotations GROUP BY project, state")}

    def unnotified_annotations(self, limit: int = 50) -> list[dict[str, Any]]:
        """Revisions (live ones, deletion tombstones) not yet told to Label Studio, due now."""
        return self._decoded(self._query(
            "SELECT * FROM annotations WHERE notified = 0 AND notify_after <= ? "
            "AND state IN ('admitted', 'quarantined', 'deleted') ORDER BY id LIMIT ?",
            (time.time(), limit)))

    def mark_annotation_notified(self, row_id: int, ok: bool = True, retry_after: float = 0.0
                                 ) -> None:
        if ok:
            self._execute("UPDATE annotations SET notified = 1 WHERE id = ?", (row_id,))
        else:
            self._execute("UPDATE annotations SET notify_after = ? WHERE id = ?",
                                 (time.time() + retry_after, row_id))

    # --- jobs ----------------------------------------------------------------------------------

    def admitted_since_job(self, project: str) -> int:
        rows = self._query("SELECT admitted_since_job AS n FROM projects WHERE id = ?",
                           (str(project),))
        return rows[0]["n"] if rows else 0

    def request_job(self, project: str, kind: str, reason: str) -> tuple[str, int]:
        """Ask for a job of ``kind`` (:data:`JOB_KINDS`); ``(what happened, job id)``.

        ``"queued"``: a new job; ``"pending"``: a queued job of that kind that has not started
        yet will see the same data; ``"followup"``: one is running, so it gets a follow-up
        flag (many requests during one job make exactly one follow-up job).
        """
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; one of {JOB_KINDS}")
        project = str(project)
        now = time.time()
        with self.transaction() as conn:
            active = conn.execute(
                "SELECT id, state FROM jobs WHERE project = ? AND kind = ? AND "
                "state IN ('queued', 'running') ORDER BY id", (project, kind)).fetchall()
            queued = [j for j in active if j["state"] == "queued"]
            if queued:
                return "pending", queued[0]["id"]
            if active:
                conn.execute("UPDATE jobs SET followup = 1, updated = ? WHERE id = ?",
                             (now, active[0]["id"]))
                return "followup", active[0]["id"]
            cursor = conn.execute(
                "INSERT INTO jobs (project, kind, state, reason, created, updated) "
                "VALUES (?, ?, 'queued', ?, ?, ?)", (project, kind, reason, now, now))
            return "queued", int(cursor.lastrowid)

    def request_training(self, project: str, reason: str) -> tuple[str, int]:
        """:meth:`request_job` of a training job."""
        return self.request_job(project, "train", reason)

    def startable_jobs(self) -> list[JobRow]:
        """Queued jobs, due now, of a project and kind with no running job, oldest first."""
        return self._query(
            "SELECT * FROM jobs j WHERE state = 'queued' AND not_before <= ? AND NOT EXISTS "
            "(SELECT 1 FROM jobs r WHERE r.project = j.project AND r.kind = j.kind AND "
            "r.state = 'running') ORDER BY id", (time.time(),))

    def claim_job(self, job_id: int, job_dir: str) -> JobRow | None:
        """Move a queued job to running; None if another worker took it first.

        A training job resets the project's ``admitted_since_job``: what is admitted from
        now on is new.
        """
        now = time.time()
        with self.transaction() as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None or job["state"] != "queued":
                return None
            running = conn.execute(
                "SELECT 1 FROM jobs WHERE project = ? AND kind = ? AND state = 'running'",
                (job["project"], job["kind"])).fetchall()
            if running:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', job_dir = ?, pid = NULL, queue_job = NULL, "
                "worker = NULL, attempts = attempts + 1, updated = ? WHERE id = ?",
                (job_dir, now, job_id))
            if job["kind"] == "train":
                conn.execute("UPDATE projects SET admitted_since_job = 0 WHERE id = ?",
                             (job["project"],))
            return conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def set_job_pid(self, job_id: int, pid: int) -> None:
        self._execute("UPDATE jobs SET pid = ?, updated = ? WHERE id = ?",
                             (pid, time.time(), job_id))

    def set_job_runner(self, job_id: int, *, queue_job: str | None = None,
                       worker: str | None = None) -> None:
        """Record a run's RQ job, or the worker that took it (what is None stays)."""
        self._execute("UPDATE jobs SET queue_job = COALESCE(?, queue_job), "
                      "worker = COALESCE(?, worker), updated = ? WHERE id = ?",
                      (queue_job, worker, time.time(), job_id))

    def finish_job(self, job_id: int, state: str, *, version: str | None = None,
                   error: str | None = None, promoted: bool | None = None,
                   detail: str | None = None) -> int | None:
        """End a running job; returns the id of its follow-up job, if one was asked for."""
        if state not in ("done", "failed"):
            raise ValueError(f"a job finishes as done or failed, not {state!r}")
        now = time.time()
        with self.transaction() as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None or job["state"] != "running":
                return None
            conn.execute(
                "UPDATE jobs SET state = ?, version = ?, error = ?, promoted = ?, detail = ?, "
                "updated = ? WHERE id = ?",
                (state, version, error, None if promoted is None else int(promoted), detail,
                 now, job_id))
            if not job["followup"]:
                return None
            cursor = conn.execute(
                "INSERT INTO jobs (project, kind, state, reason, created, updated) "
                "VALUES (?, ?, 'queued', 'followup', ?, ?)",
                (job["project"], job["kind"], now, now))
            return int(cursor.lastrowid)

    def requeue_job(self, job_id: int, error: str, delay: float = 0.0) -> None:
        """A running job goes back to queued (it will be rerun, not before ``delay`` s)."""
        now = time.time()
        self._execute(
            "UPDATE jobs SET state = 'queued', pid = NULL, error = ?, not_before = ?, "
            "updated = ? WHERE id = ? AND state = 'running'", (error, now + delay, now, job_id))

    def jobs(self, project: str | None = None, state: str | None = None,
             kind: str | None = None) -> list[JobRow]:
        sql, params = "SELECT * FROM jobs WHERE 1 = 1", []
        for column, value in (("project", project), ("state", state), ("kind", kind)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(str(value))
        return self._query(sql + " ORDER BY id", tuple(params))

    def set_announced(self, project: str, serving: str) -> None:
        """Record that Label Studio heard that ``serving`` serves the project."""
        self._execute("UPDATE projects SET announced = ?, updated = ? WHERE id = ?",
                      (serving, time.time(), str(project)))

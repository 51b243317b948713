"""The SQLite store: durable events, safe claiming across processes, revisions, job policy."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from label_assistant.ml_backend.store import Store
from label_assistant.workspace import Workspace


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.for_workdir(tmp_path)


def test_recorded_event_is_committed_and_visible_to_another_connection(store, tmp_path):
    event_id = store.record_event("1", "ANNOTATION_CREATED", '{"a": 1}')
    other = sqlite3.connect(Workspace(tmp_path).store_file)
    row = other.execute("SELECT action, state, payload FROM events WHERE id = ?",
                        (event_id,)).fetchone()
    assert row == ("ANNOTATION_CREATED", "pending", '{"a": 1}')
    mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store._conn().execute("PRAGMA synchronous").fetchone()["synchronous"] == 2  # FULL


def test_claim_takes_events_in_order_once(store):
    ids = [store.record_event("1", "START_TRAINING", "{}") for _ in range(3)]
    claimed = [store.claim_event().id for _ in range(3)]
    assert claimed == ids
    assert store.claim_event() is None
    store.finish_event(ids[0])
    assert store.event_counts()["done"] == 1 and store.event_counts()["processing"] == 2


def _claim_all(path: str, out: multiprocessing.Queue) -> None:
    store = Store(path)
    got = []
    while (event := store.claim_event()) is not None:
        got.append(event.id)
    out.put(got)


def test_several_processes_never_claim_the_same_event(tmp_path):
    store = Store.for_workdir(tmp_path)
    ids = {store.record_event("1", "START_TRAINING", "{}") for _ in range(300)}
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    path = str(Workspace(tmp_path).store_file)
    procs = [ctx.Process(target=_claim_all, args=(path, out)) for _ in range(3)]
    for p in procs:
        p.start()
    claimed = [i for _ in procs for i in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
    assert sorted(claimed) == sorted(ids)  # each exactly once


def test_processing_events_go_back_to_pending_on_recovery(store):
    event_id = store.record_event("1", "START_TRAINING", "{}")
    assert store.claim_event().id == event_id  # a worker took it, then died
    assert store.requeue_processing() == 1
    again = store.claim_event()
    assert again.id == event_id and again.attempts == 2


def test_retry_waits_before_the_event_is_claimed_again(store):
    event_id = store.record_event("1", "START_TRAINING", "{}")
    store.claim_event()
    store.retry_event(event_id, "HTTP 503", delay=60)
    assert store.claim_event() is None
    assert store.get_event(event_id)["error"] == "HTTP 503"


def _revision(store: Store, event_id: int, state: str = "admitted", annotation_id: int = 7):
    return store.record_annotation("1", task_id=3, annotation_id=annotation_id,
                                   event_id=event_id, state=state, findings={"state": state},
                                   image_path="i.png", label_path="l.png", config_hash="h",
                                   finish_event=False)


def test_update_supersedes_and_delete_marks_every_revision(store):
    _revision(store, 1)
    _revision(store, 2, "quarantined")
    states = [r["state"] for r in store.annotations("1")]
    assert states == ["superseded", "quarantined"]
    assert store.admitted_since_job("1") == 1
    store.delete_annotation("1", 7, event_id=3, finish_event=False)
    assert {r["state"] for r in store.annotations("1")} == {"superseded", "deleted"}
    assert store.training_set("1", "h") == []


def test_an_older_event_processed_late_does_not_win(store):
    _revision(store, 5)
    _, state = _revision(store, 4, "quarantined")
    assert state == "superseded"
    assert [r["state"] for r in store.annotations("1", annotation_id=7)] == \
        ["admitted", "superseded"]


def test_training_set_is_the_newest_admitted_annotation_per_task(store):
    _revision(store, 1, annotation_id=1)
    _revision(store, 2, annotation_id=2)  # a second annotation of task 3
    assert [r["annotation_id"] for r in store.training_set("1", "h")] == [2]
    assert store.training_set("1", "another config") == []  # decoded with another config
    assert [r["verdict"] for r in store.annotations("1")] == ["admitted", "admitted"]


def test_an_older_store_gains_the_decision_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE annotations (id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL,"
        " task_id INTEGER, annotation_id INTEGER NOT NULL, event_id INTEGER NOT NULL, state TEXT"
        " NOT NULL, findings TEXT, image_path TEXT, label_path TEXT, notified INTEGER NOT NULL "
        "DEFAULT 0, notify_after REAL NOT NULL DEFAULT 0, updated REAL);"
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, state "
        "TEXT NOT NULL DEFAULT 'queued', reason TEXT, pid INTEGER, job_dir TEXT, version TEXT, "
        "error TEXT, followup INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, "
        "notified INTEGER NOT NULL DEFAULT 0, created REAL, updated REAL);"
        "INSERT INTO annotations (project, task_id, annotation_id, event_id, state, findings, "
        "image_path, label_path) VALUES ('1', 3, 7, 1, 'superseded', "
        "'{\"state\": \"admitted\", \"config_hash\": \"h\"}', 'i.png', 'l.png');"
        "INSERT INTO jobs (project, state) VALUES ('1', 'done');")
    old.commit()
    old.close()
    store = Store(path)
    (row,) = store.annotations("1")
    assert (row["verdict"], row["config_hash"], row["state"]) == ("admitted", "h", "superseded")
    assert store.jobs()[0]["kind"] == "train"


def test_training_requests_coalesce_into_one_followup(store):
    assert store.request_training("1", "admitted")[0] == "queued"
    assert store.request_training("1", "requested")[0] == "pending"  # not started yet
    job = store.startable_jobs()[0]
    _revision(store, 1)
    assert store.admitted_since_job("1") == 1
    assert store.claim_job(job["id"], "/tmp/j1") is not None
    assert store.admitted_since_job("1") == 0  # counted from the job's start
    assert store.claim_job(job["id"], "/tmp/j1") is None  # only once
    for _ in range(3):
        assert store.request_training("1", "requested") == ("followup", job["id"])
    assert store.startable_jobs() == []  # one job per project at a time
    followup = store.finish_job(job["id"], "done", version="v0001")
    assert followup is not None
    assert [j["state"] for j in store.jobs("1")] == ["done", "queued"]
    assert store.finish_job(followup, "done") is None  # not running: nothing happens
    assert [(j["version"], j["promoted"]) for j in store.jobs("1")] == [("v0001", None),
                                                                        (None, None)]


def test_projects_keep_fields_not_given_again(store):
    store.upsert_project("2", label_config="<View/>")
    store.set_origin("2", "http://h", "t")
    store.upsert_project("2", label_config="<View></View>")
    row = store.get_project("2")
    assert (row["label_config"], row["hostname"], row["token"]) == \
        ("<View></View>", "http://h", "t")

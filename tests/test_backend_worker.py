"""The worker: intake and the gate, supersede/delete, crash recovery, the training policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_backend_support import (
    FIXTURES,
    ImageServer,
    annotation_event,
    blob_image,
    data_url,
    fixture,
    labeled,
    png_bytes,
)

from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import RecordingSink
from label_assistant.ml_backend.store import Store
from label_assistant.ml_backend.worker import Worker

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="Label Studio fixtures not found")


class FakeJob:
    def __init__(self, job_dir: Path) -> None:
        self.job_dir, self.pid, self.code = Path(job_dir), os.getpid(), None

    def poll(self) -> int | None:
        return self.code

    def write(self, **status) -> None:
        (self.job_dir / "status.json").write_text(json.dumps(status))


class FakeStarter:
    """Starts nothing: the test says when a job finishes or dies."""

    def __init__(self) -> None:
        self.jobs: list[FakeJob] = []

    def __call__(self, job_dir: Path) -> FakeJob:
        job = FakeJob(job_dir)
        job.write(state="running", progress=0.5)
        self.jobs.append(job)
        return job

    def finish(self, i: int, version: str, promoted: bool = True) -> None:
        """The job published ``version``; a promoted one serves (the registry's pointer)."""
        job = self.jobs[i]
        request = json.loads((job.job_dir / "request.json").read_text())
        if promoted:
            Path(request["registry"]).mkdir(parents=True, exist_ok=True)
            (Path(request["registry"]) / "current").write_text(version + "\n")
        job.write(state="done", version=version, progress=1.0, promoted=promoted,
                  reason="beats" if promoted else "does not beat")
        job.code = 0

    def die(self, i: int) -> None:
        self.jobs[i].code = -9  # killed: no final status


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def starter() -> FakeStarter:
    return FakeStarter()


def make_worker(tmp_path, sink, starter, **settings) -> Worker:
    settings.setdefault("train_after", 0)
    return Worker(Settings(workdir=tmp_path / "work", fetch_timeout=5, **settings), sink=sink,
                  job_starter=starter)


def post(worker: Worker, body: dict) -> int:
    from label_assistant.ml_backend.protocol import project_key

    return worker.store.record_event(project_key(body["project"]), body["action"],
                                     json.dumps(body))


def image_url(seed: int = 0) -> tuple[str, np.ndarray]:
    image, mask = blob_image(seed=seed)
    return data_url(png_bytes(image)), mask


def created(annotation_id: int, task_id: int, seed: int = 0, action: str = "ANNOTATION_CREATED",
            **kwargs) -> dict:
    url, mask = image_url(seed)
    return annotation_event(action, annotation_id=annotation_id, task_id=task_id, image=url,
                            label_map=labeled(mask), **kwargs)


def reports(sink: RecordingSink) -> list[tuple]:
    return [args for name, args in sink.calls if name == "annotation_inspected"]


def test_a_good_annotation_is_admitted_and_stored(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    event_id = post(worker, created(11, 3))
    assert worker.tick() == 1
    (row,) = worker.store.annotations("1")
    assert row["state"] == "admitted" and row["task_id"] == 3
    stored = np.asarray(Image.open(row["label_path"]))
    _, mask = blob_image(seed=0)
    assert stored.shape == (64, 80) and set(np.unique(stored)) == {0, 1, 255}
    assert np.array_equal(stored == 1, mask == 1)
    assert Path(row["image_path"]).read_bytes() == png_bytes(blob_image(seed=0)[0])
    assert worker.store.get_event(event_id)["state"] == "done"
    ((project, task, annotation, report),) = reports(sink)
    assert (project, task, annotation) == (1, 3, 11)
    assert report["admitted"] and report["state"] == "admitted" and report["reasons"] == []


def test_the_captured_annotation_without_background_is_quarantined(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    body = fixture("015_POST_webhook_ANNOTATION_CREATED.json")  # "Cell" only, 80 x 64
    body["task"]["data"]["image"] = image_url()[0]
    post(worker, body)
    worker.tick()
    (row,) = worker.store.annotations("1")
    assert row["state"] == "quarantined"
    assert [f["code"] for f in row["findings"]["findings"] if f["severity"] == "error"] == \
        ["no_background"]
    assert row["label_path"] and Path(row["label_path"]).is_file()  # kept for people to see
    report = reports(sink)[0][3]
    assert not report["admitted"] and "background" in report["reasons"][0].lower()


def test_an_unknown_label_quarantines_with_the_reason(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    body = fixture("failure_modes/022_POST_webhook_ANNOTATION_CREATED.json")  # "NotALabel"
    body["task"]["data"]["image"] = image_url()[0]
    post(worker, body)
    worker.tick()
    (row,) = worker.store.annotations("1")
    assert row["state"] == "quarantined" and row["label_path"] is None
    assert row["findings"]["findings"][0]["code"] == "unreadable"
    assert "NotALabel" in row["findings"]["reasons"][0]


def test_warnings_on_the_raw_drawing_reach_the_annotator(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    url, mask = image_url()
    label_map = labeled(mask)
    label_map[60:62, 2:4] = 1  # a 4-pixel stray stroke: cleanup removes it, the warning stays
    post(worker, annotation_event("ANNOTATION_CREATED", annotation_id=1, task_id=1, image=url,
                                  label_map=label_map))
    worker.tick()
    report = reports(sink)[0][3]
    assert report["admitted"]
    assert "small_fragments" in [f["code"] for f in report["findings"]]
    assert report["cleanup"]["remove_fragments"] == 4


def test_update_supersedes_and_delete_marks_deleted(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    post(worker, created(2, 2, seed=1))
    body = fixture("015_POST_webhook_ANNOTATION_CREATED.json")  # no background
    body.update(action="ANNOTATION_UPDATED")
    body["task"]["data"]["image"] = image_url()[0]
    post(worker, body)  # annotation 1 again, now breaking a rule
    post(worker, fixture("018_POST_webhook_ANNOTATIONS_DELETED.json"))  # deletes annotation 2
    assert worker.tick() == 4
    states = {(r["annotation_id"], r["event_id"]): r["state"] for r in worker.store.annotations()}
    assert states == {(1, 1): "superseded", (1, 3): "quarantined", (2, 2): "deleted",
                      (2, 4): "deleted"}
    assert worker.store.training_set("1", "h") == []


def test_deleting_tells_label_studio_what_the_task_shows_now(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    post(worker, created(5, 1, seed=1))  # a second annotation of task 1
    post(worker, created(2, 2, seed=2))
    worker.tick()
    sink.calls.clear()
    for annotation_id in (5, 2, 99):  # 99 was never seen: nothing to tell
        post(worker, {"action": "ANNOTATIONS_DELETED", "project": {"id": 1},
                      "annotations": [{"id": annotation_id}]})
    worker.tick()
    assert [(name, args[:3]) for name, args in sink.calls] == [
        ("annotation_inspected", (1, 1, 1)),  # task 1 still has annotation 1
        ("annotation_deleted", (1, 2)),
    ]


def test_a_cancelled_annotation_counts_as_deleted(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    body = created(1, 1, action="ANNOTATION_UPDATED")
    body["annotation"]["was_cancelled"] = True
    post(worker, body)
    worker.tick()
    assert {r["state"] for r in worker.store.annotations()} == {"deleted"}


def test_events_left_processing_by_a_killed_worker_are_processed_after_restart(
        tmp_path, sink, starter):
    first = make_worker(tmp_path, sink, starter)
    ids = [post(first, created(i, i, seed=i)) for i in (1, 2)]
    assert first.store.claim_event().id == ids[0]  # claimed, then the process "died"
    restarted = make_worker(tmp_path, sink, starter)
    assert restarted.recover() == 1
    assert restarted.tick() == 2
    assert [restarted.store.get_event(i)["state"] for i in ids] == ["done", "done"]
    assert [r["state"] for r in restarted.store.annotations()] == ["admitted", "admitted"]


def test_image_fetch_failures_retry_then_quarantine(tmp_path, sink, starter):
    server = ImageServer()
    try:
        server.routes["/data/upload/1/busy.png"] = (503, {}, b"busy")
        worker = make_worker(tmp_path, sink, starter)
        worker.store.set_origin("1", server.origin, None)
        busy = created(1, 1)
        busy["task"]["data"]["image"] = "/data/upload/1/busy.png"
        missing = created(2, 2)
        missing["task"]["data"]["image"] = "/data/upload/1/missing.png"
        busy_id, _ = post(worker, busy), post(worker, missing)
        worker.tick()
        event = worker.store.get_event(busy_id)
        assert event["state"] == "pending" and "HTTP 503" in event["error"]
        assert event["not_before"] > time.time()  # backed off
        (row,) = worker.store.annotations("1")  # the 404 is final: quarantined with the reason
        assert row["annotation_id"] == 2 and row["state"] == "quarantined"
        assert row["findings"]["findings"][0]["code"] == "image_unavailable"
        assert "HTTP 404" in row["findings"]["reasons"][0]
    finally:
        server.close()


def test_notifications_wait_for_label_studio_to_come_back(tmp_path, starter):
    sink = RecordingSink(fail=True)
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    worker.tick()
    (row,) = worker.store.annotations()
    assert row["notified"] == 0 and row["notify_after"] > time.time()
    sink.fail = False
    worker.store._conn().execute("UPDATE annotations SET notify_after = 0")
    worker.tick()
    assert len(reports(sink)) == 1 and worker.store.annotations()[0]["notified"] == 1


def test_training_starts_after_n_admitted_and_requests_coalesce(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter, train_after=2)
    post(worker, created(1, 1))
    worker.tick()
    assert starter.jobs == []  # 1 < 2
    post(worker, created(2, 2, seed=1))
    worker.tick()
    assert len(starter.jobs) == 1
    request = json.loads((starter.jobs[0].job_dir / "request.json").read_text())
    assert request["class_names"] == ["Background", "Cell"]
    assert len(request["images"]) == len(request["labels"]) == 2
    assert request["registry"].endswith("projects/1/models")
    # During the job: more admissions and two explicit requests -> one follow-up.
    for i in (3, 4, 5):
        post(worker, created(i, i, seed=i))
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    worker.tick()
    assert len(starter.jobs) == 1
    assert worker.store.jobs("1")[0]["followup"] == 1
    starter.finish(0, "v0001")
    worker.tick()
    assert ("version_published", (1, "v0001")) in sink.calls
    assert len(starter.jobs) == 2  # exactly one follow-up
    request = json.loads((starter.jobs[1].job_dir / "request.json").read_text())
    assert len(request["images"]) == 5
    starter.finish(1, "v0002", promoted=False)  # kept: v0001 still serves, nothing to tell
    worker.tick()
    worker.tick()
    assert len(starter.jobs) == 2
    assert [(j["state"], j["version"], j["promoted"]) for j in worker.store.jobs("1")] == \
        [("done", "v0001", 1), ("done", "v0002", 0)]
    assert [c for c in sink.calls if c[0] == "version_published"] == \
        [("version_published", (1, "v0001"))]


def test_a_rollback_is_announced_like_a_promotion(tmp_path, sink, starter):
    from label_assistant.model.registry import OTSU

    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    worker.tick()
    registry = worker.settings.workspace.registry("1")
    registry.root.mkdir(parents=True)
    (registry.root / "current").write_text("v0003\n")  # rounds --promote v0003
    worker.tick()
    (registry.root / "current").write_text(OTSU + "\n")  # rounds --rollback, down to Otsu
    worker.tick()
    worker.tick()
    assert [c[1] for c in sink.calls if c[0] == "version_published"] == [(1, "v0003"),
                                                                         (1, OTSU)]


def test_start_training_without_annotations_fails_with_the_reason(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    worker.store.upsert_project("1", label_config=created(1, 1)["project"]["label_config"])
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    worker.tick()
    (job,) = worker.store.jobs("1")
    assert job["state"] == "failed" and "no admitted annotations" in job["error"]
    assert starter.jobs == []


def test_a_job_whose_process_dies_is_rerun_once_then_failed(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    worker.tick()
    starter.die(0)
    worker.tick()  # noticed dead -> queued again -> started again
    assert len(starter.jobs) == 2
    starter.die(1)
    worker.tick()
    (job,) = worker.store.jobs("1")
    assert job["state"] == "failed" and "ended without finishing" in job["error"]
    assert len(starter.jobs) == 2


def test_after_a_restart_a_running_job_with_a_dead_pid_is_rerun(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    worker.tick()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    worker.store.set_job_pid(worker.store.jobs("1")[0]["id"], gone.pid)
    restarted = make_worker(tmp_path, sink, starter)  # no handles: only the pid is known
    restarted.tick()
    assert len(starter.jobs) == 2
    assert restarted.store.jobs("1")[0]["state"] == "running"
    assert restarted.store.jobs("1")[0]["attempts"] == 2


def test_a_job_that_finished_while_the_worker_was_down_is_picked_up(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    post(worker, created(1, 1))
    post(worker, fixture("019_POST_webhook_START_TRAINING.json"))
    worker.tick()
    starter.finish(0, "v0001")
    restarted = make_worker(tmp_path, sink, starter)
    restarted.tick()
    assert restarted.store.jobs("1")[0]["state"] == "done"
    assert ("version_published", (1, "v0001")) in sink.calls



# --- what a fuzz run of 10,716 malformed requests found ------------------------------------


def test_a_job_that_cannot_start_fails_alone(tmp_path, sink, starter):
    """A job whose folder name was too long for the disk (a 300-digit project): its error
    handler raised again, it stayed running, and every round raised: no job of any project
    started again, no Label Studio notification was sent."""
    worker = make_worker(tmp_path, sink, starter)
    (tmp_path / "work" / "projects" / "2").mkdir(parents=True)  # other projects exist
    huge = "9" * 300
    _, odd = worker.store.request_job(huge, "rank", "test")
    _, fine = worker.store.request_job("2", "rank", "test")
    worker.tick()  # raised before
    assert worker.store.jobs(huge)[0]["state"] == "failed"
    assert "too long" in worker.store.jobs(huge)[0]["error"]
    assert worker.store.jobs("2")[0]["state"] == "running" and len(starter.jobs) == 1
    worker.tick()  # and again: nothing left running, nothing raised
    assert [j["state"] for j in worker.store.jobs()] == ["failed", "running"]


def test_a_job_whose_folder_cannot_be_named_fails_with_the_reason(tmp_path, sink, starter,
                                                                  monkeypatch):
    from label_assistant.workspace import Workspace

    def no_folder(self, project, job_id, attempt, kind="train"):
        raise OSError(f"no folder for project {project}")

    worker = make_worker(tmp_path, sink, starter)
    _, job_id = worker.store.request_job("1", "rank", "test")
    monkeypatch.setattr(Workspace, "job_dir", no_folder)
    worker.jobs.manage()
    (job,) = worker.store.jobs("1")
    assert job["state"] == "failed" and "no folder for project 1" in job["error"]
    assert starter.jobs == []


def test_a_failed_prelabel_job_runs_again_later_and_resumes_its_first_run(
        tmp_path, sink, starter, monkeypatch):
    from label_assistant.ml_backend import jobs

    worker = make_worker(tmp_path, sink, starter)
    worker.store.request_job("1", "prelabel", "after ranking with v0001")
    worker.jobs.manage()
    (first,) = starter.jobs
    request = json.loads((first.job_dir / "request.json").read_text())
    assert (request["kind"], request["project"], request["resume_from"]) == ("prelabel", "1", [])
    first.write(state="failed", error="LabelStudioError: GET /api/projects/1: ConnectError")
    first.code = 1
    monkeypatch.setattr(jobs, "RANK_RETRY", 0.0)
    worker.jobs.manage()  # failed: queued again (Label Studio may be back), not failed
    worker.jobs.manage()
    assert [j["state"] for j in worker.store.jobs("1")] == ["running"]
    second = starter.jobs[1]
    request = json.loads((second.job_dir / "request.json").read_text())
    assert request["resume_from"] == [str(first.job_dir)]


def test_a_ranking_job_done_queues_the_pre_labeling_of_the_rest(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    worker.store.upsert_project("1")
    worker.store.set_origin("1", "http://ls:8080", "tok1")
    worker.store.request_job("1", "rank", "after v0002")
    worker.jobs.manage()
    (ranking,) = starter.jobs
    ranking.write(state="done", version="v0002", progress=1.0)
    ranking.code = 0
    worker.jobs.manage()  # the ranking ends; the pre-labeling starts
    assert [(j["kind"], j["state"], j["reason"]) for j in worker.store.jobs("1")] == [
        ("rank", "done", "after v0002"), ("prelabel", "running", "after ranking with v0002")]
    request = json.loads((starter.jobs[1].job_dir / "request.json").read_text())
    assert request["kind"] == "prelabel"
    assert (request["origin"]["url"], request["origin"]["token"]) == ("http://ls:8080", "tok1")


def test_a_config_that_does_not_parse_is_never_stored(tmp_path, sink, starter):
    """A webhook's broken label_config replaced the project's config before it was checked;
    the event failed, and so did every later /predict of the project."""
    worker = make_worker(tmp_path, sink, starter)
    good = created(1, 1)
    worker.store.upsert_project("1", label_config=good["project"]["label_config"])
    broken = created(2, 2)
    broken["project"]["label_config"] = "<View"
    event_id = post(worker, broken)  # stored before the app checked configs
    worker.tick()
    assert worker.store.get_event(event_id)["state"] == "done"
    assert worker.store.get_project("1")["label_config"] == good["project"]["label_config"]
    (row,) = worker.store.annotations("1")
    assert row["state"] == "quarantined" and row["config_hash"] is None
    assert "label config sent with the event can't be used" in row["findings"]["reasons"][0]
    post(worker, good)  # the project still works
    worker.tick()
    assert worker.store.annotations("1", annotation_id=1)[0]["state"] == "admitted"


def test_an_annotation_of_a_project_without_a_config_is_quarantined(tmp_path, sink, starter):
    worker = make_worker(tmp_path, sink, starter)
    body = created(1, 1)
    body["project"] = {"id": 4}
    event_id = post(worker, body)
    worker.tick()
    assert worker.store.get_event(event_id)["state"] == "done"
    (row,) = worker.store.annotations("4")
    assert row["state"] == "quarantined"
    assert "no label config known for project 4" in row["findings"]["reasons"][0]


def test_a_body_with_a_byte_order_mark_is_processed(tmp_path, sink, starter):
    """The app accepted a UTF-8 BOM, the store kept it, the worker's json.loads refused it."""
    worker = make_worker(tmp_path, sink, starter)
    event_id = worker.store.record_event(
        "1", "ANNOTATION_CREATED", b"\xef\xbb\xbf" + json.dumps(created(1, 1)).encode())
    worker.tick()
    assert worker.store.get_event(event_id)["state"] == "done"
    assert worker.store.annotations("1")[0]["state"] == "admitted"

@pytest.mark.slow
def test_killing_the_worker_process_loses_nothing(tmp_path):
    workdir = tmp_path / "work"
    store = Store.for_workdir(workdir)
    n = 24
    for i in range(1, n + 1):
        body = created(i, i, seed=i % 5)
        store.record_event("1", body["action"], json.dumps(body))
    env = {**os.environ, "LA_WORKDIR": str(workdir), "LA_TRAIN_AFTER": "0",
           "LA_POLL_INTERVAL": "0.05"}
    command = [sys.executable, "-m", "label_assistant.ml_backend.worker"]

    def done() -> int:
        return store.event_counts()["done"]

    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while done() < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert 3 <= done() < n, "the kill should land mid-way"
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while done() < n and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert store.event_counts() == {"pending": 0, "processing": 0, "done": n, "failed": 0}
    live = [r for r in store.annotations("1") if r["state"] in ("admitted", "quarantined")]
    assert sorted(r["annotation_id"] for r in live) == list(range(1, n + 1))  # one each


def test_an_imported_task_is_judged_on_its_original_and_refused_without_it(tmp_path, sink,
                                                                           starter):
    from label_assistant.microscopy.originals import ORIGINAL_FIELD, keep_original

    worker = make_worker(tmp_path, sink, starter)
    image, _ = blob_image(seed=0)
    original = (image.astype(np.uint16) * 200)[..., None]  # a 16-bit plane shown as 8 bits
    digest = keep_original(worker.settings.workspace, original)
    body = created(11, 3)
    body["task"]["data"][ORIGINAL_FIELD] = digest
    gone = created(12, 4)
    gone["task"]["data"][ORIGINAL_FIELD] = "f" * 16  # never imported here
    post(worker, body), post(worker, gone)
    worker.tick()
    admitted, refused = worker.store.annotations("1")
    assert admitted["state"] == "admitted"
    assert Path(admitted["image_path"]).suffix == ".tif"  # the original is what trains
    assert Path(admitted["image_path"]).read_bytes() == \
        worker.settings.workspace.original_file(digest).read_bytes()
    assert refused["state"] == "quarantined"
    assert refused["findings"]["findings"][0]["code"] == "image_unavailable"
    assert "the original plane ffffffffffffffff" in refused["findings"]["reasons"][0]


# --- Label Studio's training toggle, and the Model card ------------------------------------


def toggled(body: dict, every: int) -> dict:
    """The event as Label Studio sends it with "Start model training on annotation
    submission" on (``min_annotations_to_start_training`` = every)."""
    body["project"]["min_annotations_to_start_training"] = every
    return body


def test_label_studios_training_toggle_wins_over_the_count(tmp_path, sink, starter, monkeypatch):
    import label_assistant.ml_backend.worker as worker_module

    monkeypatch.setattr(worker_module, "START_TRAINING_SETTLE", 0.2)
    worker = make_worker(tmp_path, sink, starter, train_after=2)
    for i in (1, 2):
        post(worker, toggled(created(i, i, seed=i), 3))
    worker.tick()
    assert starter.jobs == []  # LA_TRAIN_AFTER=2 is not used: Label Studio counts
    # Label Studio's START_TRAINING for the 3rd annotation arrives before that annotation's
    # own event: it waits, so that the annotation is in the training set.
    start = post(worker, toggled(fixture("019_POST_webhook_START_TRAINING.json"), 3))
    worker.tick()
    assert starter.jobs == [] and worker.store.get_event(start)["state"] == "pending"
    post(worker, toggled(created(3, 3, seed=3), 3))
    time.sleep(0.25)
    worker.tick()
    (job,) = starter.jobs
    request = json.loads((job.job_dir / "request.json").read_text())
    assert len(request["images"]) == 3


def test_with_the_toggle_off_the_count_trains_only_when_set(tmp_path, sink, starter):
    assert Settings.from_env({}).train_after == 0  # unset: only Start Training
    worker = make_worker(tmp_path, sink, starter, train_after=2)
    for i in (1, 2):
        post(worker, toggled(created(i, i, seed=i), 0))
    worker.tick()
    assert len(starter.jobs) == 1  # LA_TRAIN_AFTER set explicitly, toggle off: the count
    quiet = make_worker(tmp_path / "quiet", sink, starter)
    for i in (1, 2, 3):
        post(quiet, created(i, i, seed=i))
    quiet.tick()
    assert len(starter.jobs) == 1  # neither set: no training without Start Training
    post(quiet, fixture("019_POST_webhook_START_TRAINING.json"))  # toggle off: at once
    quiet.tick()
    assert len(starter.jobs) == 2


class FakeServing:
    """Prelabels' answer to "which version do predictions carry now"."""

    def __init__(self, version: str) -> None:
        self.version = version

    def version_hint(self, project, config) -> str:
        return self.version


def test_the_model_card_shows_what_predictions_carry(tmp_path, sink, starter):
    serving = FakeServing("otsu-abc")
    worker = Worker(Settings(workdir=tmp_path / "work", train_after=0), sink=sink,
                    job_starter=starter, prelabels=serving)
    post(worker, created(1, 1))
    worker.tick()
    worker.tick()
    serving.version = "v0002"  # promoted
    worker.tick()
    serving.version = "otsu-abc"  # rolled back to Otsu
    worker.tick()
    assert [args for name, args in sink.calls if name == "show_version"] == \
        [(1, "otsu-abc"), (1, "v0002"), (1, "otsu-abc")]


def test_the_model_card_is_tried_again_until_the_backend_is_connected(tmp_path, starter,
                                                                       monkeypatch):
    import label_assistant.ml_backend.worker as worker_module

    class NotYet(RecordingSink):
        def show_version(self, project_id, version):
            self._record("show_version", project_id, version)
            return len(self.calls) > 1  # the backend is connected on the second try

    monkeypatch.setattr(worker_module, "SHOW_RETRY", 0.0)
    sink = NotYet()
    worker = Worker(Settings(workdir=tmp_path / "work", train_after=0), sink=sink,
                    job_starter=starter, prelabels=FakeServing("otsu-abc"))
    worker.store.upsert_project("1", label_config=created(1, 1)["project"]["label_config"])
    for _ in range(4):
        worker.tick()
    assert sink.calls == [("show_version", (1, "otsu-abc"))] * 2

"""Whole-project pre-labeling (ml_backend.project_prelabels, the ``prelabel`` job kind and
``label-assistant prelabel --project``) against a real Label Studio 1.23.2: every unlabeled
task gets exactly one prediction of the serving version, a job killed midway and run again
finishes without a duplicate, stale versions of ours are deleted and other predictions kept,
and a bad project or a Label Studio that is down is a one-line error."""

from __future__ import annotations

import base64
import collections
import io
import os
import signal
import sys
import time

import numpy as np
import pytest
from labelstudio_harness import *  # noqa: F403
from labelstudio_harness import BRUSH_CONFIG
from PIL import Image

from label_assistant.cli import main
from label_assistant.devtools.labelstudio_server import free_port
from label_assistant.ml_backend import jobs
from label_assistant.ml_backend.origin import Origin
from label_assistant.ml_backend.prelabels import Prelabels
from label_assistant.ml_backend.project_prelabels import (
    Checkpoint,
    is_own_version,
    prelabel_project,
    resume_point,
)
from label_assistant.ml_backend.settings import Settings
from label_assistant.model.job import read_status, write_request
from label_assistant.workspace import Workspace

N_TASKS = 30
OTSU = Prelabels(Workspace("/nonexistent")).otsu_version  # what serves without a model


def _image_url(seed: int) -> str:
    """A 64 x 64 PNG with one bright square, as a data: URL (no files needed)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, (64, 64)).astype(np.uint8)
    image[16:40, 20:44] += 180
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _project(ls, title: str, n: int = N_TASKS) -> tuple[int, list[int]]:
    project = ls.client.create_project(title, BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": _image_url(i)} for i in range(n)])
    return project, ids


def _versions(ls, project: int) -> dict[int, list[str]]:
    """Each task's predictions' model versions."""
    found = collections.defaultdict(list)
    for prediction in ls.client.predictions(project):
        found[int(prediction["task"])].append(prediction["model_version"])
    return found


def _settings(tmp_path) -> Settings:
    return Settings(workdir=tmp_path / "work", device="cpu")


def _origin(ls) -> Origin:
    return Origin(ls.url, ls.token, "argument")


# --- pure parts ----------------------------------------------------------------------------------

def test_own_versions_are_registry_ids_and_otsu():
    assert is_own_version("v0003") and is_own_version("v12345") and is_own_version(OTSU)
    assert not any(is_own_version(v) for v in ("", None, "v3", "yolo-1", "my-v0003"))


def test_resume_point_is_the_furthest_unfinished_run_of_the_version(tmp_path):
    runs = [tmp_path / name for name in "abcd"]
    for folder, (version, last, finished) in zip(runs, [
            ("v0002", 10, False), ("v0002", 20, False), ("v0002", 30, True),
            ("v0001", 40, False)], strict=True):
        Checkpoint(version, total=50, last_task=last, finished=finished).write(folder)
    assert resume_point("v0002", runs).last_task == 20
    assert resume_point("v0003", runs) is None
    assert resume_point("v0002", [tmp_path / "none"]) is None


def test_a_rerun_of_a_job_resumes_from_its_earlier_attempts(tmp_path):
    workspace = Workspace(tmp_path)
    request = jobs.prelabel_request(workspace, "4", {"id": 9, "attempts": 3},
                                    Origin("http://ls:8080", "tok", "setup"))
    assert request["kind"] == "prelabel" and request["project"] == "4"
    assert request["origin"] == {"url": "http://ls:8080", "token": "tok", "source": "setup"}
    assert request["resume_from"] == [str(workspace.job_dir("4", 9, a, "prelabel"))
                                      for a in (1, 2)]


def test_a_job_without_a_label_studio_fails_with_the_reason(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path)
    job_dir = workspace.job_dir("4", 1, 1, "prelabel")
    write_request(job_dir, jobs.prelabel_request(workspace, "4", {"id": 1, "attempts": 1}))
    monkeypatch.setenv("LA_WORKDIR", str(tmp_path))
    status = jobs.run(job_dir)
    assert status.state == "failed"
    assert status.error == "ValueError: no Label Studio address with its token known for " \
        "project 4"


class FakeLabelStudio:
    """The calls prelabel_project makes, over a dict of tasks and their predictions."""

    def __init__(self, n: int) -> None:
        self.tasks = {t: {"id": t, "data": {"image": _image_url(t)}} for t in range(1, n + 1)}
        self.predictions: list[dict] = []

    def get_project(self, project_id):
        return {"label_config": BRUSH_CONFIG}

    def list_unlabeled_tasks(self, project_id):
        return list(self.tasks.values())

    def tasks_with_model_version(self, project_id, version, task_ids):
        return {p["task"] for p in self.predictions
                if p["model_version"] == version and p["task"] in task_ids}

    def create_predictions(self, project_id, predictions):
        self.predictions += [dict(p) for p in predictions]

    def list_tasks(self, project_id, query):
        ids = query["selectedItems"]["included"]
        return [{"id": t, "total_predictions": sum(p["task"] == t for p in self.predictions)}
                for t in ids]


def test_a_job_stops_after_its_batch_when_another_version_serves(tmp_path):
    settings = _settings(tmp_path)
    fake = FakeLabelStudio(10)
    fake.tasks[4]["data"]["image"] = "data:image/png;base64,AAAA"  # unreadable

    def new_version_serves(state):
        current = settings.workspace.models_dir("1") / "current"
        current.parent.mkdir(parents=True, exist_ok=True)
        current.write_text("v0002\n")

    outcome = prelabel_project(settings, 1, fake, None, tmp_path / "job", batch=4,
                               on_progress=new_version_serves)
    state = outcome.checkpoint
    assert outcome.superseded and state.superseded_by == "v0002" and not state.finished
    assert (state.done, state.written, state.failed, state.last_task) == (4, 3, 1, 4)
    assert [p["task"] for p in fake.predictions] == [1, 2, 3]
    assert {p["model_version"] for p in fake.predictions} == {OTSU}
    assert outcome.errors[0]["task"] == 4
    assert Checkpoint.read(tmp_path / "job").superseded_by == "v0002"


def test_ranked_tasks_get_their_rank_as_score_and_the_main_button_follows(tmp_path):
    from label_assistant.labelstudio.order import order_score

    fake = FakeLabelStudio(3)
    fake.tasks[2]["data"]["la_rank"] = "000001"
    fake.tasks[3]["data"]["la_rank"] = "000002"
    samplings = []
    fake.set_sampling = lambda project, sampling: samplings.append((project, sampling))
    prelabel_project(_settings(tmp_path), 1, fake, None, tmp_path / "job")
    scores = {p["task"]: p["score"] for p in fake.predictions}
    assert (scores[2], scores[3]) == (order_score(1), order_score(2))
    assert scores[1] >= 0.5  # not ranked: after the ranked ones
    assert samplings == [(1, "Uncertainty sampling")]


# --- against Label Studio -------------------------------------------------------------------------

@pytest.mark.labelstudio
@pytest.mark.slow
def test_every_task_gets_one_prediction_and_stale_versions_of_ours_go(labelstudio_module,
                                                                         tmp_path):
    ls = labelstudio_module
    project, ids = _project(ls, "prelabel-all")
    # An older version of ours on the first ten tasks, someone else's on the first five.
    ls.client.create_predictions(project, [
        {"task": t, "result": [], "model_version": "v0001"} for t in ids[:10]]
        + [{"task": t, "result": [], "model_version": "imported-1"} for t in ids[:5]])
    settings = _settings(tmp_path)
    outcome = prelabel_project(settings, project, ls.client, _origin(ls), tmp_path / "job",
                               batch=8)

    assert outcome.version == OTSU and not outcome.superseded
    state = outcome.checkpoint
    assert (state.total, state.done, state.written, state.skipped, state.failed,
            state.deleted, state.finished) == (N_TASKS, N_TASKS, N_TASKS, 0, 0, 10, True)
    versions = _versions(ls, project)
    assert {t: sorted(v) for t, v in versions.items()} == {
        t: sorted([OTSU] + (["imported-1"] if t in ids[:5] else [])) for t in ids}
    written = [p for p in ls.client.predictions(project) if p["model_version"] == OTSU]
    assert all(p["result"] for p in written)  # the square is found on every image
    assert all(r["type"] == "brushlabels" for p in written for r in p["result"])

    # Run again from scratch (no checkpoint): Label Studio's own predictions are checked,
    # nothing is written twice.
    again = prelabel_project(settings, project, ls.client, _origin(ls), tmp_path / "job2",
                             batch=8)
    assert (again.checkpoint.written, again.checkpoint.skipped) == (0, N_TASKS)
    assert _versions(ls, project) == versions


@pytest.mark.labelstudio
@pytest.mark.slow
def test_a_job_killed_midway_and_run_again_completes_without_duplicates(labelstudio_module,
                                                                         tmp_path, caplog,
                                                                         monkeypatch):
    ls = labelstudio_module
    project, ids = _project(ls, "prelabel-kill")
    workspace = Workspace(tmp_path / "work")
    env = {**os.environ, "LA_WORKDIR": str(workspace.root), "LA_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    first = workspace.job_dir(project, 1, 1, "prelabel")
    write_request(first, {**jobs.prelabel_request(workspace, str(project),
                                                  {"id": 1, "attempts": 1}, _origin(ls)),
                          "batch": 3})
    process = jobs.start_process(first, env)
    try:
        deadline = time.monotonic() + 120
        while (Checkpoint.read(first) is None or Checkpoint.read(first).done == 0) \
                and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)  # frozen mid-job, then killed
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = Checkpoint.read(first)
    assert killed_at is not None and 0 < killed_at.done < N_TASKS, \
        (killed_at, (first / jobs.LOG_FILE).read_text()[-2000:])
    assert read_status(first).state == "running"  # it never finished

    second = workspace.job_dir(project, 1, 2, "prelabel")
    write_request(second, {**jobs.prelabel_request(workspace, str(project),
                                                   {"id": 1, "attempts": 2}, _origin(ls)),
                           "batch": 3})
    caplog.set_level("INFO", "label_assistant")
    for key in ("LA_WORKDIR", "LA_DEVICE"):
        monkeypatch.setenv(key, env[key])
    status = jobs.run(second)  # in this process, as the Supervisor's rerun would
    assert status.state == "done", status.error
    assert status.progress == 1.0 and status.version == OTSU
    assert status.extra["tasks_done"] == N_TASKS == status.extra["tasks_total"]
    resumed = Checkpoint.read(second)  # its counts go on from the first run's
    assert resumed.finished and resumed.written >= killed_at.written
    assert resumed.written + resumed.skipped == N_TASKS
    assert f"after task {killed_at.last_task} ({killed_at.done} of {N_TASKS} done)" \
        in caplog.text
    assert _versions(ls, project) == {t: [OTSU] for t in ids}


@pytest.mark.labelstudio
@pytest.mark.slow
def test_cli_project_form_and_its_one_line_errors(labelstudio_module, tmp_path, capsys):
    ls = labelstudio_module
    project, ids = _project(ls, "prelabel-cli")
    work = str(tmp_path / "work")
    where = ["--label-studio-url", ls.url, "--api-key", ls.token]
    assert main(["prelabel", "--project", str(project), "--workdir", work, *where,
                 "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert f'"written": {N_TASKS}' in out and f'"model_version": "{OTSU}"' in out
    assert _versions(ls, project) == {t: [OTSU] for t in ids}

    assert main(["prelabel", "--project", "99999", "--workdir", work, *where]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "99999" in err[0] and "404" in err[0], err
    down = f"http://127.0.0.1:{free_port()}"
    assert main(["prelabel", "--project", str(project), "--workdir", work,
                 "--label-studio-url", down, "--api-key", ls.token]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ConnectError" in err[0], err
    assert main(["prelabel", "--project", str(project)]) == 2  # no --workdir
    assert main(["prelabel", "--workdir", work]) == 2  # neither IMAGES nor --project
    assert "Traceback" not in capsys.readouterr().err


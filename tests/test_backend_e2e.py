"""End to end with a real Label Studio 1.23.2 and ``label-assistant serve`` (gunicorn and the
worker process, default sink: no ``LA_SINK``):

connect the backend -> retrieve predictions (stamped with Otsu's version) -> an annotation
with Background + Cell is admitted, one with only Cell quarantined, both visible in Label
Studio (``la_status`` / ``la_warnings``) -> ``POST /api/ml/{id}/train`` (``START_TRAINING``)
trains v0001 in the background while ``/predict`` keeps answering; it is kept (nothing to
validate it on) until ``rounds --promote v0001`` -> predictions stamped v0001 -> the worker
notices what serves changed and its ranking job re-ranks the unlabeled tasks
(``sequence+entropy``; the labeled tasks' sequences come last) and writes ``la_rank`` and the
predictions' scores -> two annotators (their own users and tokens) pressing "Label All Tasks"
(``GET /api/projects/{id}/next``) receive the tasks in that order, never the same one at
once. The Model card (the ML backend's title, and the project's model version) shows Otsu's
version after connecting, v0001 after the promotion, Otsu's again after a rollback. With
the Model card's toggle "Start model training on annotation submission" on, Label Studio's
own START_TRAINING trains, the annotation whose save sent it included. Also:
``select --project`` (project form).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from labelstudio_harness import *  # noqa: F403
from labelstudio_harness import BRUSH_CONFIG, signup
from test_backend_support import blob_image, data_url, labeled, png_bytes

from label_assistant.cli import main
from label_assistant.devtools.labelstudio_server import free_port
from label_assistant.labelstudio import label_map_to_results, parse_label_config
from label_assistant.labelstudio.client import (
    NEXT_VIEW_TITLE,
    RANK_FIELD,
    STATUS_FIELD,
    WARNINGS_FIELD,
)
from label_assistant.ml_backend.store import Store

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

#: The backend runs with basic auth on, as docker compose and the demo do.
AUTH = ("label-studio", "e2e-secret")
TINY = dict(arch="Unet", encoder="resnet18", epochs=1, steps_per_epoch=1, batch_size=2, tile=64,
            inference_tile=64, min_labeled_pixels=1, device="cpu", val_fraction=0.0)
#: Task i's sequence: tasks 0 (A) and 1 (B) get annotated, so C and the task without a
#: sequence must come before the rest of A and B.
SEQUENCES = ["A", "B", "A", "B", "C", None]


def _wait(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _tasks() -> list[dict]:
    tasks = []
    for i, seq in enumerate(SEQUENCES):
        image, _ = blob_image(64, 64, seed=i)
        task = {"image": data_url(png_bytes(image)), "n": i}
        if seq is not None:
            task["sequence"] = seq
        tasks.append(task)
    return tasks


def _results(i: int, with_background: bool) -> list[dict]:
    _, mask = blob_image(64, 64, seed=i)
    label_map = labeled(mask, background_rows=40)
    if not with_background:
        label_map[label_map == 0] = 255
    return label_map_to_results(label_map, parse_label_config(BRUSH_CONFIG),
                                include_background=True)


@contextlib.contextmanager
def serve(tmp_path: Path, ls, **extra_env: str):
    """``label-assistant serve`` on a free port; yields (url, workdir, log path)."""
    port = free_port()
    workdir = tmp_path / "work"
    config = tmp_path / "train.json"
    config.write_text(json.dumps(TINY))
    env = {**os.environ, "LA_TRAIN_AFTER": "100", "LA_POLL_INTERVAL": "0.2",
           "LA_TRAIN_CONFIG": str(config), "LA_DEVICE": "cpu", "LA_PREDICT_TILE": "64",
           "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
           "LA_BASIC_AUTH_USER": AUTH[0], "LA_BASIC_AUTH_PASS": AUTH[1],
           "HF_HUB_OFFLINE": "1", **extra_env}
    env.pop("LA_SINK", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "label_assistant.cli", "serve", "--port", str(port),
             "--workdir", str(workdir), "--workers", "1", "--threads", "4"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return requests.get(f"{url}/health", timeout=1).ok
            except requests.RequestException:
                return False

        _wait("the backend's /health", up, 90, 0.3)
        yield url, workdir, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def backend(tmp_path, labelstudio_module):
    # A strategy with a score (the default, sequence, needs no model): the model's entropy
    # must reach the reasons.
    with serve(tmp_path, labelstudio_module, LA_STRATEGY="sequence+entropy") as running:
        yield running


def _predictions(ls, task_id: int) -> list:
    return ls.sdk.predictions.list(task=task_id)


def test_backend_end_to_end(labelstudio_module, backend, capsys):
    ls = labelstudio_module
    url, workdir, log = backend
    timings = {}
    started = time.perf_counter()
    try:
        _end_to_end(ls, url, workdir, timings)
    except BaseException:
        print("---- serve log (tail) ----\n" + log.read_text()[-6000:])
        raise
    timings["total"] = time.perf_counter() - started
    with capsys.disabled():
        print("\ne2e timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


def _end_to_end(ls, url: str, workdir: Path, timings: dict) -> None:
    t0 = time.perf_counter()
    project = ls.client.create_project("e2e backend", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, _tasks())
    ml = ls.client.connect_backend(project, url, basic_auth=AUTH)
    store = Store.for_workdir(workdir)
    assert store.get_project(str(project))["hostname"]  # /setup reached us

    # -- pre-labels from Otsu, read back from Label Studio ---------------------------------
    ls.sdk.actions.create(id="retrieve_tasks_predictions", project=project,
                          selected_items={"all": True, "excluded": []})
    for task_id in ids:
        (prediction,) = _predictions(ls, task_id)
        assert prediction.model_version.startswith("otsu-")
        assert prediction.result and prediction.result[0]["type"] == "brushlabels"
    otsu_version = prediction.model_version
    _wait_for_card(ls, project, otsu_version)
    timings["connect+predict"] = time.perf_counter() - t0

    # -- the gate, and its result in Label Studio ------------------------------------------
    t0 = time.perf_counter()
    good = ls.sdk.annotations.create(id=ids[0], result=_results(0, with_background=True))
    bad = ls.sdk.annotations.create(id=ids[1], result=_results(1, with_background=False))

    def status(task_id):
        return ls.client.get_task(project, task_id)["data"].get(STATUS_FIELD)

    assert _wait("admitted", lambda: status(ids[0]), 60) == "admitted"
    assert _wait("quarantined", lambda: status(ids[1]), 60) == "quarantined"
    data = ls.client.get_task(project, ids[1])["data"]
    assert "No Background is painted" in data[WARNINGS_FIELD]
    assert data["la_annotation"] == bad.id
    assert [(r["annotation_id"], r["state"]) for r in store.annotations(str(project))] == \
        [(good.id, "admitted"), (bad.id, "quarantined")]
    quarantine = [v for v in ls.client.list_views(project)
                  if v["data"].get("title") == "Quarantined"]
    assert [t["id"] for t in ls.client.list_tasks(project, view_id=quarantine[0]["id"])] == \
        [ids[1]]
    timings["annotations"] = time.perf_counter() - t0

    # -- START_TRAINING: a new version in the background, /predict keeps answering ---------
    t0 = time.perf_counter()
    response = requests.post(f"{ls.url}/api/ml/{ml}/train",
                             headers={"Authorization": f"Token {ls.token}"}, timeout=30)
    assert response.status_code < 300, response.text
    _wait("a running training job",
          lambda: any(j["state"] in ("running", "done") for j in store.jobs(str(project))), 60)
    body = {"project": f"{project}.1", "label_config": BRUSH_CONFIG,
            "tasks": [{"id": ids[2], "data": _tasks()[2]}]}
    assert requests.post(f"{url}/predict", json=body, timeout=30).status_code == 401
    during = requests.post(f"{url}/predict", json=body, timeout=30, auth=AUTH)
    assert during.status_code == 200 and during.json()["results"][0]["result"]
    job = _wait("the training job to end", lambda: [
        j for j in store.jobs(str(project)) if j["state"] in ("done", "failed")], 240, 1.0)[0]
    assert job["state"] == "done", job
    assert job["version"] == "v0001"
    # A one-step model can't be validated on one annotation: kept; Otsu keeps serving until
    # the project manager forces it, as `rounds --promote` does.
    assert job["promoted"] == 0 and job["detail"], job
    assert main(["rounds", "--workdir", str(workdir), "--project", str(project),
                 "--promote", "v0001"]) == 0
    _wait_for_card(ls, project, "v0001")
    timings["training"] = time.perf_counter() - t0

    # -- predictions from the new version --------------------------------------------------
    t0 = time.perf_counter()
    ls.sdk.actions.create(id="retrieve_tasks_predictions", project=project,
                          selected_items={"all": True, "excluded": []})
    for task_id in ids:
        versions = {p.model_version for p in _predictions(ls, task_id)}
        assert "v0001" in versions, (task_id, versions)
        assert otsu_version in versions
    timings["predict v0001"] = time.perf_counter() - t0

    # -- the ranking, written back by the worker, and followed -----------------------------
    t0 = time.perf_counter()
    unlabeled = ids[2:]

    def ranked():
        tasks = {t["id"]: t["data"] for t in ls.client.list_tasks(project)}
        if all(RANK_FIELD in tasks[t] for t in unlabeled):
            return tasks
        return None

    tasks = _wait("la_rank on every unlabeled task", ranked, 120, 1.0)
    order = sorted(unlabeled, key=lambda t: tasks[t][RANK_FIELD])
    assert [tasks[t][RANK_FIELD] for t in order] == ["000001", "000002", "000003", "000004"]
    assert set(order[:2]) == {ids[4], ids[5]}, order  # sequences with nothing labeled first
    assert "entropy" in tasks[order[0]]["la_reason"]
    assert all(RANK_FIELD not in tasks[t] for t in ids[:2])
    timings["ranking"] = time.perf_counter() - t0

    def next_view():  # written after the ranks: the ranking job may still be at it
        return next((v["id"] for v in ls.client.list_views(project)
                     if v["data"].get("title") == NEXT_VIEW_TITLE), None)

    view = _wait("the 'Next to label' tab", next_view, 60)
    assert [t["id"] for t in ls.client.list_tasks(project, view_id=view)] == order

    # -- "Label All Tasks" for two annotators: the same order, never the same task --------
    def scored():  # the ranking job rescores the predictions after writing the ranks
        return ls.client.get_project(project)["sampling"] == "Uncertainty sampling"

    _wait("Uncertainty sampling", scored, 60)
    annotators = {"alice": signup(ls, "alice@e2e.example"), "bob": signup(ls, "bob@e2e.example")}
    received = []
    while True:
        asked = [(name, who.next_task(project)) for name, who in annotators.items()]
        asked = [(name, task["id"]) for name, task in asked if task is not None]
        if not asked:
            break
        assert len({task for _, task in asked}) == len(asked), asked  # never the same task
        received += asked
        for name, task in asked:
            annotators[name].sdk.annotations.create(
                id=task, result=_results(0, with_background=True))
    assert [task for _, task in received] == order, received
    assert [name for name, _ in received] == ["alice", "bob"] * (len(order) // 2)

    # -- a rollback: the card goes back to the version predictions carry again -----------
    assert main(["rounds", "--workdir", str(workdir), "--project", str(project),
                 "--rollback"]) == 0
    _wait_for_card(ls, project, otsu_version)

    # -- Label Studio's training toggle: its START_TRAINING, sent from the annotation's save
    # before that annotation's own event, trains with that annotation in the set (here both
    # events usually arrive within one worker poll, so this passes without the worker's
    # START_TRAINING_SETTLE too; test_backend_worker shows the case it is for) -------------
    trained = {j["id"] for j in store.jobs(str(project)) if j["kind"] == "train"}
    every = ls.client.get_project(project)["total_annotations_number"] + 1
    ls.client.update_project(project, min_annotations_to_start_training=every)
    assert ls.client.get_project(project)["start_training_on_annotation_update"] is True
    extra = ls.sdk.annotations.create(id=ids[2], result=_results(2, with_background=True))

    def toggled_job():
        return [j for j in store.jobs(str(project)) if j["kind"] == "train"
                and j["id"] not in trained and j["job_dir"]
                and (Path(j["job_dir"]) / "request.json").is_file()]

    (job,) = _wait("a training job from Label Studio's toggle", toggled_job, 60)
    request = json.loads((Path(job["job_dir"]) / "request.json").read_text())
    assert extra.id in [a["annotation"] for a in request["manifest_extra"]["annotations"]]


def _wait_for_card(ls, project: int, version: str) -> None:
    """The project's Model card (our backend's title) and model version show ``version``."""
    def shown():
        titles = [b["title"] for b in ls.client.ml_backends(project)]
        return titles == [version] and ls.client.get_project(project)["model_version"] == version

    _wait(f"the Model card to show {version}", shown, 60)


def test_select_project_form_writes_a_model_free_ranking(labelstudio_module, tmp_path, capsys,
                                                         monkeypatch):
    ls = labelstudio_module
    project = ls.client.create_project("e2e select", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, _tasks())
    ls.sdk.annotations.create(id=ids[0], result=_results(0, with_background=True))
    common = ["select", "--project", str(project), "--workdir", str(tmp_path / "w"),
              "--label-studio-url", ls.url, "--api-key", ls.token, "--json", "-"]

    assert main([*common, "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["strategy"], out["model_version"], out["written"]) == ("sequence", None, False)
    assert sorted(r["task"] for r in out["items"]) == ids[1:]
    assert all(RANK_FIELD not in t["data"] for t in ls.client.list_tasks(project))

    assert main(common) == 0
    out = json.loads(capsys.readouterr().out)
    tasks = {t["id"]: t["data"] for t in ls.client.list_tasks(project)}
    order = sorted(ids[1:], key=lambda t: tasks[t][RANK_FIELD])
    assert order == [r["task"] for r in out["items"]]
    # One of B, C and the sequence-less task (nothing labeled) before the second A and B.
    assert set(order[:3]) in ({ids[1], ids[4], ids[5]}, {ids[3], ids[4], ids[5]}), order
    assert RANK_FIELD not in tasks[ids[0]]

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main(["select", "--project", str(project), "--workdir", str(tmp_path / "w2"),
                 "--label-studio-url", ls.url]) == 2
    assert "no Label Studio address and token" in capsys.readouterr().err


def _confident_version(registry_root: Path) -> str:
    """Publish a model that is sure about the blob images' objects (about 30 s on 2 cores)."""
    from label_assistant.datasets import Example, content_hash
    from label_assistant.images import normalize_for_model
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.model.train import train

    examples = []
    for seed in range(6):
        image, mask = blob_image(64, 64, seed=100 + seed)
        examples.append(Example(f"b{seed}", normalize_for_model(image), mask,
                                content_hash(image, mask)))
    config = TrainConfig(arch="Unet", encoder="resnet18", epochs=3, steps_per_epoch=10,
                         batch_size=4, tile=64, inference_tile=64, min_labeled_pixels=1,
                         device="cpu", val_fraction=0.0, lr=3e-3)
    result = train(examples, ["Background", "Cell"], config)
    return ModelRegistry(registry_root).publish(
        result.state_dict, spec=result.spec, class_names=["Background", "Cell"],
        label_config_hash=None, manifest=result.manifest, metrics=result.metrics,
        curve=result.curve, config=result.config, parent=None).id


def test_background_over_an_object_the_serving_model_sees_is_reported_in_label_studio(
        labelstudio_module, tmp_path):
    """The gate in the real service takes the serving version's probabilities: painting
    Background over an object the model is sure of comes back as background_over_object."""
    from label_assistant.workspace import Workspace

    ls = labelstudio_module
    inspection = tmp_path / "inspection.json"
    inspection.write_text(json.dumps({"model_min_area": 16,
                                      "severity": {"background_over_object": "error"}}))
    project = ls.client.create_project("e2e model rules", BRUSH_CONFIG)
    image, mask = blob_image(64, 64, seed=7)
    (task_id,) = ls.client.import_tasks(project, [{"image": data_url(png_bytes(image))}])
    with serve(tmp_path, ls, LA_INSPECTION_CONFIG=str(inspection)) as (url, workdir, log):
        assert _confident_version(Workspace(workdir).models_dir(str(project))) == "v0001"
        ls.client.connect_backend(project, url, basic_auth=AUTH)
        # One object labeled, Background painted over everything else, the others included.
        objects, n = __import__("scipy").ndimage.label(mask)
        label_map = np.zeros(mask.shape, np.uint8)
        label_map[objects == 1] = 1
        results = label_map_to_results(label_map, parse_label_config(BRUSH_CONFIG),
                                       include_background=True)
        ls.sdk.annotations.create(id=task_id, result=results)

        def status():
            data = ls.client.get_task(project, task_id)["data"]
            return data if data.get(STATUS_FIELD) else None

        try:
            data = _wait("the verdict in Label Studio", status, 90)
        except AssertionError:
            print(log.read_text()[-4000:])
            raise
    assert n >= 2
    assert data[STATUS_FIELD] == "quarantined", data
    assert "Background may cover an unlabeled Cell" in data[WARNINGS_FIELD], data


def test_what_label_studio_sends_to_a_backend_with_basic_auth(labelstudio_module, tmp_path):
    """Measured on Label Studio 1.23.2, connecting as "Connect Model" with "Use Basic
    Authentication" does: /setup, /predict and interactive calls carry the credentials; the
    webhook Label Studio creates for the annotation events does not, so the backend gives it
    the header after an authenticated /setup, and the events come through."""
    from label_studio_sdk.core.api_error import ApiError

    ls = labelstudio_module
    project = ls.client.create_project("e2e basic auth", BRUSH_CONFIG)
    image, mask = blob_image(64, 64, seed=3)
    (task_id,) = ls.client.import_tasks(project, [{"image": data_url(png_bytes(image))}])
    with serve(tmp_path, ls, LA_SINK="none") as (url, workdir, log):
        hooks_before = ls.client.webhooks(project)
        ml = ls.sdk.ml.create(url=url, project=project, title="auth", is_interactive=True,
                              auth_method="BASIC_AUTH", basic_auth_user=AUTH[0],
                              basic_auth_pass=AUTH[1])
        store = Store.for_workdir(workdir)
        assert store.get_project(str(project))["hostname"]  # /setup came with the credentials
        (hook,) = [h for h in ls.client.webhooks(project) if h not in hooks_before]
        assert hook["url"] == url + "/webhook"
        ls.sdk.actions.create(id="retrieve_tasks_predictions", project=project,
                              selected_items={"all": True, "excluded": []})
        assert _predictions(ls, task_id)  # so did /predict

        def interactive() -> dict:
            answer = requests.post(f"{ls.url}/api/ml/{ml.id}/interactive-annotating",
                                   json={"task": task_id, "context": {"result": []}},
                                   headers={"Authorization": f"Token {ls.token}"}, timeout=60)
            assert answer.status_code == 200, answer.text
            return answer.json()

        # An interactive call carries them too: /predict asks for them, and it answered.
        assert "errors" not in interactive()
        # Wrong credentials can't even be saved: Label Studio's /setup gets our 401.
        # (1.23.2 answers a PATCH without the url with a 500: send the whole connection.)
        with pytest.raises(ApiError, match="401"):
            ls.sdk.ml.update(id=ml.id, url=url, project=project, auth_method="BASIC_AUTH",
                             basic_auth_user=AUTH[0], basic_auth_pass="wrong")
        # The webhook came without the credentials; after /setup the backend gave them to it.
        headers = _wait("the webhook's Authorization header", lambda: {
            h["id"]: h.get("headers") for h in ls.client.webhooks(project)}[hook["id"]], 30)
        assert not hook.get("headers")
        assert headers["Authorization"].startswith("Basic ")
        annotation = ls.sdk.annotations.create(id=task_id, result=_results(3, True))
        rows = _wait("the annotation through the webhook", lambda: store.annotations(
            str(project)), 60)
        assert rows[0]["annotation_id"] == annotation.id

"""A real (tiny) training job through the worker, then predictions from the new version."""

from __future__ import annotations

import json
import time

import pytest
from test_backend_support import (
    CONFIG,
    FIXTURES,
    annotation_event,
    blob_image,
    data_url,
    labeled,
    png_bytes,
)

from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import RecordingSink
from label_assistant.ml_backend.worker import Worker
from label_assistant.workspace import Workspace

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not found")]

TINY = dict(arch="Unet", encoder="resnet18", epochs=1, steps_per_epoch=2, batch_size=2, tile=64,
            inference_tile=64, min_labeled_pixels=1, device="cpu", val_fraction=0.0)


def test_start_training_publishes_a_version_that_predict_then_uses(tmp_path):
    settings = Settings(workdir=tmp_path / "work", train_after=0, train_overrides=TINY,
                        device="cpu")
    sink = RecordingSink()
    worker = Worker(settings, sink=sink)
    client = create_app(settings).test_client()
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG,
                                       "hostname": "http://127.0.0.1:1"}).status_code == 200
    images = []
    for i in range(3):
        image, mask = blob_image(seed=i)
        url = data_url(png_bytes(image))
        images.append(url)
        body = annotation_event("ANNOTATION_CREATED", annotation_id=i + 1, task_id=i + 1,
                                image=url, label_map=labeled(mask, background_rows=40))
        assert client.post("/webhook", json=body).status_code == 200
    assert client.post("/webhook", json={"action": "START_TRAINING",
                                         "project": {"id": 1}}).status_code == 200
    worker.tick()
    assert [r["state"] for r in worker.store.annotations("1")] == ["admitted"] * 3
    (job,) = worker.store.jobs("1")
    assert job["state"] == "running" and job["pid"]

    predict = {"project": "1.1", "label_config": CONFIG,
               "tasks": [{"id": 9, "data": {"image": images[0]}}]}
    response = client.post("/predict", json=predict)  # answers while the job trains
    assert response.status_code == 200 and response.json["results"][0]["result"]

    deadline = time.time() + 300
    while time.time() < deadline:
        worker.tick()
        job = worker.store.jobs("1")[0]
        if job["state"] != "running":
            break
        time.sleep(0.5)
    assert job["state"] == "done", (job, (tmp_path / "work").glob("**/job.log"))
    assert job["version"] == "v0001"
    # Nothing held out (val_fraction 0): nothing to compare on, so the candidate is kept.
    assert job["promoted"] == 0 and "no validation annotations" in job["detail"]
    registry = Workspace(settings.workdir).registry("1")
    assert registry.current() is None and registry.get("v0001").promotion["promoted"] is False
    assert client.post("/predict", json=predict).json["results"][0]["model_version"] \
        .startswith("otsu-")
    worker.tick()
    assert not [c for c in sink.calls if c[0] == "version_published"]

    # Forced (rounds --promote): it serves, and Label Studio hears of it.
    from label_assistant.cli import main

    assert main(["rounds", "--workdir", str(settings.workdir), "--project", "1",
                 "--promote", "v0001"]) == 0
    worker.tick()
    assert ("version_published", (1, "v0001")) in sink.calls
    info = registry.current()
    assert info.id == "v0001" and info.class_names == ["Background", "Cell"]
    assert len(info.manifest["annotations"]) == 3

    response = client.post("/predict", json=predict)
    result = response.json["results"][0]
    assert result["model_version"] == "v0001"
    assert 0.0 <= result["score"] <= 1.0
    assert client.post("/setup", json={"project": "1.1", "schema": CONFIG}).json == \
        {"model_version": "v0001"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'la_model_version{project="1",version="v0001"} 1' in metrics
    assert json.loads((tmp_path / "work" / "projects" / "1" / "jobs").joinpath(
        sorted(p.name for p in (tmp_path / "work/projects/1/jobs").iterdir())[0],
        "status.json").read_text())["state"] == "done"

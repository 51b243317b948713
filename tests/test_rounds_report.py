"""``rounds`` and ``report``: per-version rows from the registry and the backend's store."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from test_registry import tiny_model

from label_assistant.cli import main
from label_assistant.ml_backend.store import Store
from label_assistant.model.job import NamesJob, job_label
from label_assistant.model.registry import ModelRegistry
from label_assistant.reporting.rounds import LINE_WIDTH, quarantined_by
from label_assistant.workspace import Workspace

PROJECT = "7"
CLASSES = ["Background", "Cell"]
PNGS = ("dice_by_class.png", "labeled_pixels.png", "training_curves.png")
ORIGINAL_KEYS = ("version", "current", "created_at", "parent", "classes", "train_images",
                 "val_images", "images", "labeled_pixels", "val_dice", "val_mean_dice",
                 "epochs_run", "train_seconds")


def _publish(registry: ModelRegistry, seed: int, annotations: list[int], job: int | None,
             dice: float, champion_dice: float = 0.6, promoted: bool = True) -> None:
    """A version as a training job would record it, without training: 2 train + 1 val image,
    and the verdict against the champion (``dice`` against ``champion_dice``)."""
    champion = registry.serving()
    reason = (f"mean Dice (all classes) {dice:.4f} {'beats' if promoted else 'does not beat'} "
              f"{champion}'s {champion_dice:.4f} on the same 1000 validation pixels")
    images = [{"name": f"i{seed}{k}.png", "split": "train" if k < 2 else "val",
               "labeled_pixels": [1000 * (k + 1), 100 * (seed + 1) + k]} for k in range(3)]
    extra = {} if job is None else {"project": PROJECT, "job": job, "annotations": [
        {"task": a, "annotation": a, "revision": a} for a in annotations]}
    registry.publish(
        tiny_model(seed).state_dict(), spec={"arch": "tiny"}, class_names=CLASSES,
        label_config_hash="abc", manifest={"images": images, **extra},
        metrics={"val_dice": [0.9, dice], "val_iou": [0.8, dice / 2], "val_mean_dice": dice,
                 "labeled_pixels": [3000, 2 * 100 * (seed + 1) + 1], "train_images": 2,
                 "val_images": 1, "epochs_run": 3, "train_seconds": 1.5 + seed},
        curve=[{"epoch": e, "train_loss": 1.0 / (e + seed), "val_mean_dice": dice * e / 3}
               for e in (1, 2, 3)],
        config={"epochs": 3}, parent=registry.current_id(), make_current=promoted,
        promotion={"promoted": promoted, "reason": reason, "champion": champion,
                   "candidate_scores": {"mean_dice": dice}, "champion_scores": {
                       "mean_dice": champion_dice}})
    time.sleep(0.01)  # what the store records next is after the version, even rounded to ms


def _annotate(store: Store, annotation: int, state: str) -> None:
    event = store.record_event(PROJECT, "ANNOTATION_CREATED", "{}")
    store.record_annotation(PROJECT, task_id=annotation, annotation_id=annotation,
                            event_id=event, state=state, findings={"state": state},
                            image_path=None, label_path=None)


def _job(store: Store, state: str, version: str | None = None, error: str | None = None) -> int:
    _, job_id = store.request_training(PROJECT, "admitted")
    store.claim_job(job_id, f"/jobs/{job_id}")
    store.finish_job(job_id, state, version=version, error=error)
    return job_id


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Project 7: v0001 (annotations 1, 2; 3 quarantined), then 3 fixed and 4, 5 quarantined,
    v0002 (1, 2, 3), then a job that failed, then v0003, kept: it did not beat v0002."""
    work = tmp_path / "work"
    registry = Workspace(work).registry(PROJECT)
    store = Store.for_workdir(work)
    store.upsert_project(PROJECT, label_config="<View/>")
    for a, state in ((1, "admitted"), (2, "admitted"), (3, "quarantined")):
        _annotate(store, a, state)
    _publish(registry, 0, [1, 2], _job(store, "done", "v0001"), 0.5)
    for a, state in ((3, "admitted"), (4, "quarantined"), (5, "quarantined")):
        _annotate(store, a, state)
    _publish(registry, 1, [1, 2, 3], _job(store, "done", "v0002"), 0.7)
    _job(store, "failed", error="ValueError: boom")
    _publish(registry, 2, [1, 2, 3], _job(store, "done", "v0003"), 0.65, 0.7, promoted=False)
    store.close()
    return work


def _rounds_json(capsys, *args: str) -> dict:
    assert main(["rounds", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rounds_json_with_store(workdir, capsys):
    listing = _rounds_json(capsys, "--workdir", str(workdir), "--project", PROJECT)
    v1, v2, v3 = listing["versions"]
    assert listing["current"] == "v0002" and listing["store"].endswith("backend.sqlite3")
    assert listing["serving"] == "v0002" and "beats v0001's 0.6000" in listing["serving_reason"]
    assert (v1["promoted"], v2["promoted"], v3["promoted"]) == (True, True, False)
    assert v1["champion"] == "otsu" and v3["champion"] == "v0002"
    assert (v3["val_mean_dice_all"], v3["champion_mean_dice_all"]) == (0.65, 0.7)
    assert "does not beat" in v3["verdict"]
    assert all(key in v1 for key in ORIGINAL_KEYS)
    assert (v1["admitted"], v1["quarantined"]) == (2, 1)
    # Annotation 3 was fixed after v0001: v0001 still counts it, v0002 doesn't.
    assert (v2["admitted"], v2["quarantined"]) == (3, 2)
    assert v1["labeled_pixels_by_class"] == {"Background": 6000, "Cell": 303}
    assert v2["labeled_pixels_by_class"] == {"Background": 6000, "Cell": 603}
    assert v1["labeled_pixels"] == [3000, 201]  # the training split, as before
    assert v2["val_dice_by_class"] == {"Background": 0.9, "Cell": 0.7}
    assert v2["val_iou_by_class"] == {"Background": 0.8, "Cell": 0.35}
    assert v1["created_utc"].endswith("Z") and v2["parent"] == "v0001"
    assert v1["status"] == "published" and v1["job"]["id"] == 1 and v1["job"]["state"] == "done"
    assert v2["job"]["id"] == 2 and v2["current"] and not v1["current"]
    (failed,) = listing["jobs"]
    assert failed["id"] == 3 and failed["state"] == "failed" and "boom" in failed["error"]


def test_rounds_without_store_and_edge_cases(workdir, tmp_path, capsys):
    # The same versions copied to a work dir without the store: quarantined is unknown.
    plain = tmp_path / "plain"
    (plain / "models").parent.mkdir()
    Workspace(workdir).models_dir(PROJECT).rename(plain / "models")
    listing = _rounds_json(capsys, "--workdir", str(plain))
    assert [v["quarantined"] for v in listing["versions"]] == [None, None, None]
    assert [v["admitted"] for v in listing["versions"]] == [2, 3, 3]  # the manifest's
    assert listing["jobs"] == [] and listing["store"] is None
    assert main(["rounds", "--workdir", str(plain)]) == 0
    assert "v0002" in capsys.readouterr().out

    assert main(["rounds", "--workdir", str(plain), "--project", "99"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.splitlines() == [out] and "project 99 has no model versions" in out
    assert main(["rounds", "--workdir", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_rounds_text(workdir, capsys):
    assert main(["rounds", "--workdir", str(workdir), "--project", PROJECT]) == 0
    lines = capsys.readouterr().out.splitlines()
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= LINE_WIDTH
    (v1,) = [line for line in lines if line.startswith("  v0001 ")]
    (v2,) = [line for line in lines if line.startswith("* v0002 ")]
    (v3,) = [line for line in lines if line.startswith("  v0003 ")]
    assert lines[0].startswith("serving: v0002 (promoted: mean Dice (all classes) 0.7000")
    assert v2.endswith("serving, job 2") and "0.700    0.600" in v2
    assert v3.endswith("kept, job 4")
    assert any(line.startswith("    verdict: mean Dice (all classes) 0.6500 does not beat "
                               "v0002's 0.7000") for line in lines)
    assert v1.split()[4:6] == ["2", "1"]  # admitted, quarantined (the date is 2 words)
    assert "Background" in text and "Cell" in text and "603" in text
    (job,) = [line for line in lines if "job 3" in line]
    assert "failed: ValueError: boom" in job


def test_report_writes_plots_and_a_page(workdir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--workdir", str(workdir), "--project", PROJECT,
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == sorted([*PNGS, "index.html"])
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name
    page = (out / "index.html").read_text()
    for name in PNGS:
        assert f'src="{name}"' in page
    for needle in ("v0001", "v0002", "job 3", "Generated", "UTC", 'class="current"'):
        assert needle in page
    assert "http://" not in page and "https://" not in page

    assert main(["report", "--workdir", str(workdir), "--project", PROJECT, "--out",
                 str(out), "--embed"]) == 0
    assert 'src="data:image/png;base64,' in (out / "index.html").read_text()


def test_report_without_versions_writes_the_page_only(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report"
    assert main(["report", "--workdir", str(tmp_path / "empty"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "index.html")
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert "No model versions yet" in (out / "index.html").read_text()
    assert main(["report", "--workdir", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_quarantined_counts_the_verdict_at_the_time():
    def rev(annotation, event, state, at, recorded=None):
        return {"annotation_id": annotation, "event_id": event, "state": state,
                "received_at": at, "verdict": recorded}

    revisions = [
        rev(1, 1, "superseded", 1.0, "quarantined"), rev(1, 3, "admitted", 3.0),  # fixed at 3
        rev(2, 2, "deleted", 2.0, "quarantined"), rev(2, 4, "deleted", 4.0),  # deleted at 4
        rev(3, 5, "quarantined", 5.0),
    ]
    assert [quarantined_by(revisions, t) for t in (0.5, 2.0, 3.5, 4.5, 9.0)] == [0, 2, 1, 0, 1]


def test_job_logs_name_the_project():
    request = {"manifest_extra": {"project": "7", "job": 3}}
    assert job_label(request, Path("/w/jobs/job-00003-1")) == "project 7 job 3"
    assert job_label({}, Path("/w/jobs/job-00003-1")) == "job-00003-1"
    assert job_label({}, Path("/tmp/retrain")) == "job retrain"
    record = logging.LogRecord("label_assistant.model.train", logging.INFO, __file__, 1,
                               "epoch %d/%d", (1, 5), None)
    assert NamesJob("project 7 job 3").filter(record) and record.job_label == "project 7 job 3: "

"""Training end to end on tiny synthetic data: reproducible, versioned, killable, from the CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from label_assistant.cli import main
from label_assistant.datasets import Example, content_hash
from label_assistant.labelmap import UNLABELED

pytestmark = pytest.mark.slow

TINY = dict(arch="Unet", encoder="resnet18", epochs=2, steps_per_epoch=2, batch_size=2, tile=64,
            inference_tile=64, min_labeled_pixels=1, device="cpu")


def _blob_image(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(3):
        y, x = rng.integers(8, size - 8, 2)
        label[y - 5 : y + 5, x - 5 : x + 5] = 1
    image = (label * 0.8 + rng.normal(0, 0.05, label.shape)).astype(np.float32)
    return image, label


def _examples(n: int = 3) -> list[Example]:
    out = []
    for i in range(n):
        image, label = _blob_image(i)
        label = label.copy()
        label[:, :20] = UNLABELED  # partial annotation
        out.append(Example(f"img{i}", image[None], label, content_hash(image, label)))
    return out


def test_training_is_reproducible_with_a_seed():
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.train import train

    config = TrainConfig(**TINY)
    a = train(_examples(), ["Background", "Cell"], config)
    b = train(_examples(), ["Background", "Cell"], config)
    for key in a.state_dict:
        assert np.array_equal(a.state_dict[key].numpy(), b.state_dict[key].numpy()), key
    assert len(a.curve) == 2
    assert a.metrics["val_images"] == 1 and a.metrics["train_images"] == 2
    assert {m["split"] for m in a.manifest["images"]} == {"train", "val"}


def test_training_refuses_data_without_labels():
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.train import TrainingError, train

    examples = _examples(1)
    examples[0].label_map[:] = UNLABELED
    with pytest.raises(TrainingError, match="no labeled pixel"):
        train(examples, ["Background", "Cell"], TrainConfig(**TINY))
    with pytest.raises(TrainingError, match="unknown training settings"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(TrainingError, match="tile_sampling must be image or pixel"):
        train(_examples(2), ["Background", "Cell"], TrainConfig(**TINY, tile_sampling="area"))


def _write_dataset(root: Path, n: int = 3) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n):
        image, label = _blob_image(i)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(images / f"s{i}.png")
        Image.fromarray(label).save(labels / f"s{i}.png")
    return images, labels


def test_cli_train_registers_candidates_that_serve_only_when_they_beat_otsu(tmp_path, capsys):
    images, labels = _write_dataset(tmp_path)
    work = tmp_path / "work"
    args = ["train", str(images), str(labels), "--workdir", str(work), "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "2", "--tile", "64", "--device", "cpu",
            "--classes", "Cell"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # One step of training does not beat Otsu on the bright blobs: kept, Otsu still serves.
    assert "registered v0001" in out and "kept, otsu-" in out and "does not beat" in out
    assert main(args) == 0
    capsys.readouterr()
    assert main(["rounds", "--workdir", str(work), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listing["versions"]] == ["v0001", "v0002"]
    assert listing["current"] is None and listing["serving"] == "otsu"
    assert [v["promoted"] for v in listing["versions"]] == [False, False]
    assert listing["versions"][1]["parent"] is None  # trained while Otsu served
    assert listing["versions"][0]["classes"] == ["Background", "Cell"]
    assert listing["versions"][0]["champion"].startswith("otsu-")
    assert main(["rounds", "--workdir", str(work), "--promote", "v0002"]) == 0
    assert "serving now: v0002 (forced)" in capsys.readouterr().out
    assert main(["rounds", "--workdir", str(work), "--rollback"]) == 0
    out = capsys.readouterr().out
    assert "serving now: Otsu" in out and out.splitlines()[1].startswith("serving: Otsu")
    assert main(["rounds", "--workdir", str(work), "--rollback"]) == 2  # nothing to go back to
    assert "Otsu serves" in capsys.readouterr().err


def test_cli_train_bad_input_is_one_line(tmp_path, capsys):
    images, labels = _write_dataset(tmp_path, 2)
    (labels / "s0.png").unlink()
    code = main(["train", str(images), str(labels), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "s0.png" in err
    assert main(["train", str(tmp_path / "nope"), str(labels), "--workdir", "w"]) == 2


def test_job_killed_mid_training_leaves_published_version_untouched(tmp_path):
    from label_assistant.ml_backend.jobs import LOG_FILE, start_process
    from label_assistant.model import job
    from label_assistant.model.registry import ModelRegistry

    images, labels = _write_dataset(tmp_path)
    registry_root = tmp_path / "models"
    request = {
        "images": sorted(str(p) for p in images.iterdir()),
        "labels": sorted(str(p) for p in labels.iterdir()),
        "class_names": ["Background", "Cell"],
        "registry": str(registry_root),
        "config": {**TINY, "epochs": 1},
    }
    first = job.write_request(tmp_path / "job1", request)
    assert start_process(first).wait(timeout=300) == 0
    assert job.read_status(first).state == "done"
    registry = ModelRegistry(registry_root)
    assert registry.get("v0001").promotion["promoted"] is False  # a 1-step model: kept
    registry.set_current("v0001", event="promote", reason="forced (test)")

    second = job.write_request(tmp_path / "job2", {**request, "config": {**TINY, "epochs": 500}})
    process = start_process(second)
    deadline = time.time() + 240
    while (job.read_status(second).epoch or 0) < 1 and time.time() < deadline:
        assert process.poll() is None, (second / LOG_FILE).read_text()
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert ModelRegistry(registry_root).current().id == "v0001"
    assert [v.id for v in ModelRegistry(registry_root).list()] == ["v0001"]


def test_prelabel_with_a_trained_version(tmp_path, capsys):
    images, labels = _write_dataset(tmp_path)
    work = tmp_path / "work"
    assert main(["train", str(images), str(labels), "--workdir", str(work), "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--tile", "64",
                 "--device", "cpu"]) == 0
    out = tmp_path / "pre"
    assert main(["prelabel", str(images), "--out", str(out), "--model", "current",
                 "--workdir", str(work), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # v0001 did not beat Otsu: "current" serves Otsu, as the backend would.
    assert summary["source"] == "otsu" and summary["version"].startswith("otsu-")
    assert main(["prelabel", str(images), "--out", str(out), "--model", "v0001",
                 "--workdir", str(work), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "model" and summary["version"] == "v0001"
    label_map = np.asarray(Image.open(out / "s0.png"))
    assert label_map.shape == (64, 64) and set(np.unique(label_map)) <= {0, 1}
    capsys.readouterr()
    assert main(["prelabel", str(images), "--out", str(out), "--model", "v0042",
                 "--workdir", str(work)]) == 2
    assert "v0042" in capsys.readouterr().err
    assert main(["prelabel", str(images), "--out", str(out), "--model", "current"]) == 2

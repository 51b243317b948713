"""Model version registry: publish, list, current, rollback, ids, atomicity, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from label_assistant.model.registry import (
    OTSU,
    ModelRegistry,
    RegistryError,
    UnknownVersionError,
    VersionInfo,
    VersionMismatchError,
)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["Background", "Cell"]


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def publish(registry: ModelRegistry, seed: int = 0, parent: str | None = None,
            classes: list[str] | None = None, **extra) -> VersionInfo:
    return registry.publish(
        tiny_model(seed).state_dict(),
        spec={"arch": "tiny", "seed": seed},
        class_names=classes or CLASSES,
        label_config_hash="abc",
        manifest={"images": [{"name": "a.png", "hash": "sha256:00"}]},
        metrics={"val_mean_dice": 0.5 + seed / 100},
        curve=[{"epoch": 1, "train_loss": 0.3}],
        config={"epochs": 1},
        parent=parent,
        **extra,
    )


def _publish_many(root: str, n: int, start, results) -> None:
    """Worker of the concurrency test (module level: spawned processes import it)."""
    registry = ModelRegistry(Path(root))
    state = tiny_model().state_dict()
    start.wait()  # both workers are imported and ready: their publishes overlap
    ids = [registry.publish(state, spec={}, class_names=CLASSES, label_config_hash=None,
                            manifest={}, metrics={}, curve=[], config={}, parent=None).id
           for _ in range(n)]
    results.put(ids)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_empty_registry(registry: ModelRegistry) -> None:
    assert registry.list() == [] and registry.current() is None and registry.history() == []
    assert not registry.root.exists()  # reading creates nothing
    with pytest.raises(UnknownVersionError):
        registry.get("v0001")
    with pytest.raises(UnknownVersionError):
        registry.get("current")
    with pytest.raises(RegistryError):
        registry.rollback()


def test_publish_list_get_current(registry: ModelRegistry) -> None:
    first = publish(registry)
    assert first.id == "v0001" and first.parent is None and first.status == "published"
    second = publish(registry, seed=1, parent=first.id)
    assert second.id == "v0002" and second.parent == "v0001"
    assert [v.id for v in registry.list()] == ["v0001", "v0002"]
    assert registry.current().id == "v0002"
    got = registry.get("v0001")
    assert got == first
    assert got.class_names == CLASSES and got.label_config_hash == "abc"
    assert got.manifest["images"][0]["hash"] == "sha256:00"
    assert got.metrics == {"val_mean_dice": 0.5} and got.curve[0]["epoch"] == 1
    assert got.config == {"epochs": 1} and got.spec == {"arch": "tiny", "seed": 0}
    on_disk = json.loads((registry.root / "v0002" / "version.json").read_text())
    assert on_disk["id"] == "v0002" and on_disk["parent"] == "v0001"
    assert (registry.root / "v0002" / "model.safetensors").is_file()
    assert registry.get("current") == second
    assert (registry.root / "current").read_text().strip() == "v0002"


def test_rollback_and_history(registry: ModelRegistry) -> None:
    assert registry.serving() == OTSU and registry.current_id() is None
    v1 = publish(registry)
    v2 = publish(registry, seed=1, parent=v1.id)
    publish(registry, seed=2, parent=v2.id)
    assert registry.rollback().id == "v0002"  # the parent of v0003
    assert registry.current().id == "v0002"
    assert registry.rollback().id == "v0001"
    assert registry.rollback() is None  # a first model's parent: Otsu
    assert registry.serving() == OTSU and registry.current() is None
    with pytest.raises(RegistryError, match="Otsu serves"):
        registry.rollback()
    assert registry.rollback("v0003").id == "v0003"
    with pytest.raises(UnknownVersionError):
        registry.rollback("v0009")
    with pytest.raises(UnknownVersionError):
        registry.set_current("latest")
    assert registry.current().id == "v0003"
    events = [(h["event"], h["version"], h["previous"]) for h in registry.history()]
    assert events == [
        ("publish", "v0001", OTSU), ("publish", "v0002", "v0001"),
        ("publish", "v0003", "v0002"), ("rollback", "v0002", "v0003"),
        ("rollback", "v0001", "v0002"), ("rollback", OTSU, "v0001"),
        ("rollback", "v0003", OTSU),
    ]
    assert all(isinstance(h["at"], float) for h in registry.history())


def test_a_candidate_is_kept_without_serving_until_promoted(registry: ModelRegistry) -> None:
    v1 = publish(registry)
    verdict = {"promoted": False, "reason": "does not beat v0001"}
    kept = publish(registry, seed=1, parent=v1.id, make_current=False, promotion=verdict)
    assert registry.current().id == "v0001"
    assert registry.get(kept.id).promotion == verdict
    assert registry.set_current(kept.id, event="promote", reason="forced").id == kept.id
    assert registry.history()[-1]["reason"] == "forced"
    assert registry.set_current(OTSU) is None and registry.current_id() is None


def test_ids_are_never_reused(registry: ModelRegistry) -> None:
    publish(registry)
    publish(registry)
    publish(registry)
    registry.rollback("v0001")
    registry.delete("v0003")
    import shutil

    shutil.rmtree(registry.root / "v0002")  # by hand, too
    assert [v.id for v in registry.list()] == ["v0001"]
    assert publish(registry).id == "v0004"
    with pytest.raises(RegistryError, match="current"):
        registry.delete("v0004")


def test_ids_survive_a_lost_counter_file(registry: ModelRegistry) -> None:
    publish(registry)
    publish(registry)
    (registry.root / ".last_id").unlink()
    assert publish(registry).id == "v0003"


def test_ids_past_9999_sort_by_number(registry: ModelRegistry) -> None:
    publish(registry)
    (registry.root / ".last_id").write_text("9999\n")
    assert publish(registry).id == "v10000"
    assert [v.id for v in registry.list()] == ["v0001", "v10000"]


def test_state_dict_round_trip(registry: ModelRegistry) -> None:
    model = tiny_model(3)
    model.train()
    model(torch.randn(2, 1, 8, 8))  # moves the BatchNorm running statistics
    info = publish(registry, seed=3, parent=None)
    registry.publish(model.state_dict(), spec={}, class_names=CLASSES, label_config_hash=None,
                     manifest={}, metrics={}, curve=[], config={}, parent=info.id)
    loaded = registry.load_state_dict("v0002")
    expected = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor), name
    fresh = tiny_model(99)
    fresh.load_state_dict(registry.load_state_dict("current"))
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_damaged_weights_raise_a_registry_error(registry: ModelRegistry) -> None:
    publish(registry)
    (registry.root / "v0001" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="can't read"):
        registry.load_state_dict("v0001")


def test_non_contiguous_and_shared_tensors_are_saved(registry: ModelRegistry) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    state = {"t": base.t(), "same": base, "alias": base}
    publish_info = registry.publish(state, spec={}, class_names=CLASSES, label_config_hash=None,
                                    manifest={}, metrics={}, curve=[], config={}, parent=None)
    loaded = registry.load_state_dict(publish_info.id)
    assert torch.equal(loaded["t"], base.t()) and torch.equal(loaded["alias"], base)


def test_bad_state_dict_leaves_nothing_behind(registry: ModelRegistry) -> None:
    publish(registry)
    with pytest.raises(RegistryError):
        registry.publish({"w": [1, 2]}, spec={}, class_names=CLASSES, label_config_hash=None,
                         manifest={}, metrics={}, curve=[], config={}, parent=None)
    with pytest.raises(TypeError):  # a record that isn't JSON
        registry.publish({}, spec={}, class_names=CLASSES, label_config_hash=None,
                         manifest={"x": object()}, metrics={}, curve=[], config={}, parent=None)
    assert [v.id for v in registry.list()] == ["v0001"]
    assert registry.current().id == "v0001"
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".tmp-")]


def test_numpy_values_in_metrics_are_stored(registry: ModelRegistry) -> None:
    import numpy as np

    info = registry.publish({}, spec={}, class_names=CLASSES, label_config_hash=None,
                            manifest={}, metrics={"dice": np.float32(0.5),
                                                  "counts": np.array([1, 2])},
                            curve=[], config={}, parent=None)
    assert registry.get(info.id).metrics == {"dice": 0.5, "counts": [1, 2]}


def test_leftover_temp_dir_is_ignored_and_cleaned(registry: ModelRegistry) -> None:
    publish(registry)
    # What a publish killed before its rename leaves: a complete-looking temp directory.
    leftover = registry.root / ".tmp-v0002-dead"
    leftover.mkdir()
    (leftover / "version.json").write_text(json.dumps({"id": "v0002"}))
    (leftover / "model.safetensors").write_bytes(b"")
    incomplete = registry.root / "v0007"  # a version directory without its files
    incomplete.mkdir()
    assert [v.id for v in registry.list()] == ["v0001"]
    assert registry.current().id == "v0001"
    with pytest.raises(UnknownVersionError):
        registry.get("v0007")
    assert registry.cleanup_incomplete() == [leftover]
    assert not leftover.exists() and incomplete.exists()  # only temp entries are removed
    assert publish(registry).id == "v0008"  # never reuses an id seen on disk


def test_kill_between_temp_write_and_rename(registry: ModelRegistry) -> None:
    publish(registry)
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
import label_assistant.model.registry as r
from test_registry import publish

def killed(*args):  # the process dies right where the temp directory would be renamed
    os.kill(os.getpid(), signal.SIGKILL)

r.os.rename = killed
publish(r.ModelRegistry(Path({str(registry.root)!r})), seed=5, parent="v0001")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = [p for p in registry.root.iterdir() if p.name.startswith(".tmp-v0002")]
    assert len(leftovers) == 1
    assert (leftovers[0] / "version.json").is_file()  # it was killed after writing everything
    assert [v.id for v in registry.list()] == ["v0001"]
    assert registry.current().id == "v0001"
    assert [h["version"] for h in registry.history()] == ["v0001"]
    # The dead process's lock is gone: the next publish goes through with a fresh id.
    assert publish(registry).id == "v0003"
    assert registry.cleanup_incomplete() == leftovers


def test_concurrent_publish_gives_distinct_ids(registry: ModelRegistry) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork after torch has threads can hang
    start, results = ctx.Barrier(2), ctx.Queue()
    n = 10
    workers = [ctx.Process(target=_publish_many, args=(str(registry.root), n, start, results))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:  # the ids are a few bytes: the queue never blocks a worker's exit
        w.join(timeout=120)
        assert w.exitcode == 0
    ids = [i for _ in workers for i in results.get(timeout=10)]
    assert len(ids) == len(set(ids)) == 2 * n
    assert sorted(ids) == [f"v{i:04d}" for i in range(1, 2 * n + 1)]
    assert [v.id for v in registry.list()] == sorted(ids)
    assert registry.current().id in ids
    assert len(registry.history()) == 2 * n


def test_load_model_checks_classes(registry: ModelRegistry) -> None:
    publish(registry)
    with pytest.raises(VersionMismatchError) as excinfo:
        registry.load_model("current", expected_classes=["Background", "Nucleus"])
    message = str(excinfo.value)
    assert "v0001" in message and "'Cell'" in message and "'Nucleus'" in message
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(UnknownVersionError):
        registry.load_model("v0042")


def test_load_model_builds_from_the_spec(registry: ModelRegistry, monkeypatch) -> None:
    # A stand-in factory: this test must not depend on the real one.
    seen = {}
    fake = types.ModuleType("label_assistant.model.factory")

    class ModelSpec:
        @staticmethod
        def from_dict(data: dict) -> dict:
            seen["spec"] = data
            return data

    def create_model(spec: dict, weights_file=None) -> nn.Module:
        return tiny_model(seed=123)

    fake.ModelSpec, fake.create_model = ModelSpec, create_model
    monkeypatch.setitem(sys.modules, "label_assistant.model.factory", fake)
    original = tiny_model(seed=7)
    info = registry.publish(original.state_dict(), spec={"arch": "tiny"}, class_names=CLASSES,
                            label_config_hash=None, manifest={}, metrics={}, curve=[],
                            config={}, parent=None)
    model, loaded_info = registry.load_model(expected_classes=list(CLASSES))
    assert loaded_info == info and seen["spec"] == {"arch": "tiny"}
    assert not model.training
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


@pytest.mark.slow
def test_load_model_with_the_real_factory(registry: ModelRegistry) -> None:
    factory = pytest.importorskip("label_assistant.model.factory")
    spec = factory.ModelSpec(arch="Unet", encoder="resnet18", in_channels=1,
                             classes=("Background", "Cell"), dropout=0.1)
    model = factory.create_model(spec)
    registry.publish(model.state_dict(), spec=spec.to_dict(), class_names=CLASSES,
                     label_config_hash=None, manifest={}, metrics={}, curve=[], config={},
                     parent=None)
    loaded, info = registry.load_model("v0001", expected_classes=CLASSES)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x))

"""One way to run a model version: ``/predict``, the simulator's evaluation and training's
validation give the same label map for the same image and version."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_backend_support import CONFIG, blob_image, data_url

from label_assistant.datasets import load_example
from label_assistant.labelstudio import annotation_to_label_map, parse_label_config
from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion
from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.settings import Settings
from label_assistant.model.predictor import Predictor, Tiling, overlap_for
from label_assistant.workspace import Workspace

pytestmark = pytest.mark.slow

# Validation on half the images, so that the version records Dice that can be recomputed.
TINY = dict(arch="Unet", encoder="resnet18", epochs=2, steps_per_epoch=2, batch_size=2, tile=64,
            inference_tile=96, min_labeled_pixels=1, device="cpu", val_fraction=0.5)


def test_the_overlap_rule_is_one_rule():
    assert overlap_for(512) == 64 and overlap_for(64) == 16 and overlap_for(100) == 32
    assert Tiling(512).overlap == 64 and Tiling(100).tile == 128
    assert Tiling.of_config({"inference_tile": 64}) == Tiling(64, 16)
    assert Tiling.of_config({"inference_tile": 64, "inference_overlap": 8}).overlap == 8
    assert Tiling.of_config(Tiling(96).to_config()) == Tiling(96)


def test_a_predictor_runs_its_model_on_its_own_device():
    """A model built on the CPU (as a round's candidate is, from a state dict) is moved to
    the predictor's device: on a CUDA machine the simulator's first challenge failed with
    "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor)". The meta
    device stands in for CUDA on machines without one."""
    from label_assistant.model.factory import ModelSpec, create_model

    model = create_model(ModelSpec(classes=("Background", "Cell")))
    predictor = Predictor(model.eval(), version="candidate", class_names=["Background", "Cell"],
                          device="meta")
    assert {p.device.type for p in predictor.model.parameters()} == {"meta"}


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A version of project 1 trained and published as the backend's job does it, and the
    examples it was trained and validated on (loaded from disk as training loads them)."""
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.train import train

    root = tmp_path_factory.mktemp("one-predictor")
    examples = []
    for seed in range(4):
        image, mask = blob_image(64, 80, seed=seed)
        Image.fromarray(image).save(root / f"im{seed}.png")
        Image.fromarray(mask).save(root / f"lb{seed}.png")
        examples.append(load_example(root / f"im{seed}.png", root / f"lb{seed}.png"))
    result = train(examples, ["Background", "Cell"], TrainConfig(**TINY))
    workdir = root / "work"
    info = Workspace(workdir).registry("1").publish(
        result.state_dict, spec=result.spec, class_names=["Background", "Cell"],
        label_config_hash=None, manifest=result.manifest, metrics=result.metrics,
        curve=result.curve, config=result.config, parent=None)
    return workdir, info, examples, root


def _served_label_map(workdir, path) -> np.ndarray:
    """What ``/predict`` answers for the image file, decoded back into a label map."""
    settings = Settings(workdir=workdir, device="cpu", predict_background=True)
    client = create_app(settings).test_client()
    body = {"project": "1.1", "label_config": CONFIG,
            "tasks": [{"id": 1, "data": {"image": data_url(path.read_bytes())}}]}
    answer = client.post("/predict", json=body).json["results"][0]
    assert answer["model_version"] == "v0001"
    height, width = np.asarray(Image.open(path)).shape[:2]
    return annotation_to_label_map(answer["result"], parse_label_config(CONFIG), height,
                                   width).label_map


def test_predict_validation_and_simulation_give_the_same_label_maps(version):
    from label_assistant.model.train import evaluate
    from label_assistant.simulate import Dataset, Simulation, SimulationSettings
    from label_assistant.simulate.oracle import prelabel

    workdir, info, examples, root = version
    predictor = Predictor.from_registry(Workspace(workdir).registry("1"), device="cpu")
    assert predictor.tiling == Tiling(96)  # the tiling stored with the version
    served = {}
    for i, example in enumerate(examples):
        served[example.name] = _served_label_map(workdir, root / f"im{i}.png")
        # validation and the simulator predict through Predictor.label_map
        assert np.array_equal(predictor.label_map(example.image)[0], served[example.name])
        assert np.array_equal(prelabel(example, predictor, 1)[0], served[example.name])
        assert set(np.unique(served[example.name])) <= {0, 1}

    # The version's recorded validation scores are the ones /predict's maps give.
    val_names = [m["name"] for m in info.manifest["images"] if m["split"] == "val"]
    val = [e for e in examples if e.name in val_names]
    assert val
    cm = sum(confusion_matrix(e.label_map, served[e.name], 1) for e in val)
    dice = dice_iou_from_confusion(cm)[0]
    assert info.metrics["val_dice"] == [float(d) for d in dice]
    assert evaluate(predictor, val, 1)["dice"] == info.metrics["val_dice"]

    # The simulator's evaluation of that version on those images says the same.
    settings = SimulationSettings(strategies=("random",), initial=1, per_round=1, rounds=0)
    data = Dataset(pool=[e for e in examples if e not in val], test=val, sequences=[None] * 2,
                   class_names=["Background", "Cell"])
    simulation = Simulation(data, settings, root / "sim", device="cpu", log=lambda _: None)
    assert simulation._evaluate(predictor)["test_dice"] == info.metrics["val_mean_dice"]


def test_a_version_for_other_classes_is_refused(version):
    from label_assistant.model.registry import VersionMismatchError

    workdir, *_ = version
    with pytest.raises(VersionMismatchError, match="trained for classes"):
        Predictor.from_registry(Workspace(workdir).registry("1"),
                                expected_classes=["Background", "Nucleus"], device="cpu")

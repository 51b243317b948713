"""Building pools from images with a model's callables (selectors.pool) and ``label-assistant
select`` on a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from label_assistant.cli import main
from label_assistant.model.inference import Prediction
from label_assistant.selectors import rank, score_prediction
from label_assistant.selectors.pool import (
    PoolError,
    check_strategy,
    model_free_strategies,
    pool_from_images,
    pool_from_predictions,
)

TINY = dict(arch="Unet", encoder="resnet18", epochs=1, steps_per_epoch=2, batch_size=2, tile=64,
            inference_tile=128, min_labeled_pixels=1, device="cpu")


def _blobs(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(3):
        y, x = rng.integers(8, size - 8, 2)
        label[y - 5 : y + 5, x - 5 : x + 5] = 1
    image = np.clip(label * 150 + 50 + rng.normal(0, 15, label.shape), 0, 255).astype(np.uint8)
    return image, label


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    """6 images of 3 time-lapse sequences: seqA_t0, seqA_t1, seqB_t0, ..."""
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(6):
        image, _ = _blobs(i)
        Image.fromarray(image).save(folder / f"seq{'ABC'[i // 2]}_t{i % 2}.png")
    return folder


class Tiny(torch.nn.Module):
    """A 1x1 convolution as a 2-class segmentation model; counts its forward calls."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(in_channels, 2, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x * 4 - 2)


def _predictor(model: torch.nn.Module, **kwargs):
    from label_assistant.model.predictor import Predictor, Tiling

    return Predictor(model, version="t", class_names=["Background", "Cell"], tiling=Tiling(64),
                     device="cpu", **kwargs)


def _images(n: int, channels: int = 1) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(f"im{i}", rng.random((channels, 64, 64), dtype=np.float32)) for i in range(n)]


# ---------------------------------------------------------------- pool building


def test_without_a_model_pool_has_descriptors_and_no_scores():
    pool = pool_from_images(iter(_images(4)), sequences=["a", "a", "b", None])
    assert pool.n == 4 and pool.scores == {}
    assert pool.embeddings.shape[0] == 4 and np.isfinite(pool.embeddings).all()
    assert pool.sequences[:3] == ["a", "a", "b"]
    assert [i.index for i in rank(pool, "sequence+diversity", 4)][:3] != []
    # a model-free strategy that needs no embeddings computes none
    assert pool_from_images(iter(_images(2)), strategy="sequence").embeddings is None


def test_a_pool_mixing_grey_and_colour_images_ranks_by_diversity():
    from label_assistant.selectors.diversity import image_descriptor

    grey, colour = _images(3), _images(3, channels=3)
    items = [grey[0], ("rgb0", colour[0][1]), grey[1], ("rgb1", colour[1][1]), grey[2]]
    pool = pool_from_images(iter(items), strategy="diversity")
    length = len(image_descriptor(grey[0][1]))
    assert pool.embeddings.shape == (5, 3 * length)
    # a grey image's descriptor tiled to three channels: as if it were grey in RGB
    np.testing.assert_array_equal(pool.embeddings[0], np.tile(image_descriptor(grey[0][1]), 3))
    np.testing.assert_array_equal(pool.embeddings[0],
                                  image_descriptor(np.repeat(grey[0][1], 3, axis=0)))
    np.testing.assert_array_equal(pool.embeddings[1], image_descriptor(colour[0][1]))
    ranked = rank(pool, "diversity")
    assert sorted(item.index for item in ranked) == [0, 1, 2, 3, 4]


def test_embeddings_of_other_lengths_are_a_one_line_error():
    from label_assistant.selectors.pool import ImageNumbers, pool_from_numbers, stack_vectors

    assert stack_vectors([np.ones(2), np.zeros(6)]).tolist()[0] == [1.0] * 6
    for lengths in ([2, 4], [2, 6, 4], [2, 5]):
        numbers = [ImageNumbers({}, np.ones(n)) for n in lengths]
        with pytest.raises(PoolError, match=r"^embeddings of different lengths \(") as error:
            pool_from_numbers([str(i) for i in range(len(lengths))], numbers)
        assert "\n" not in str(error.value)


class _Composition:
    """A predict stand-in: each image's mean intensity per channel is its class shares."""

    def __call__(self, image: np.ndarray):
        from types import SimpleNamespace

        return SimpleNamespace(probabilities=image / image.sum(axis=0, keepdims=True))


def test_class_balance_through_pool_from_images_prefers_the_rarest_labeled_class():
    shares = {"bg": (0.8, 0.1, 0.1), "rich1": (0.2, 0.7, 0.1), "rich2": (0.2, 0.1, 0.7)}
    items = [(name, np.broadcast_to(np.array(v, np.float32)[:, None, None], (3, 4, 4)).copy())
             for name, v in shares.items()]
    counts = [10_000, 5_000, 20]  # class 2 has the fewest labeled pixels
    pool = pool_from_images(iter(items), predict=_Composition(), strategy="class_balance",
                            labeled_counts=counts)
    assert [pool.names[i.index] for i in rank(pool, "class_balance")] == \
        ["rich2", "rich1", "bg"]
    # without counts: the foreground share, equal for rich1 and rich2, both before bg
    plain = pool_from_images(iter(items), predict=_Composition(), strategy="class_balance")
    assert plain.scores["class_balance"].tolist() == pytest.approx([0.1, 0.4, 0.4])
    assert pool.scores["class_balance"][2] == pytest.approx(
        (0.2 / 10_001 + 0.1 / 5_001 + 0.7 / 21) / (1 / 10_001 + 1 / 5_001 + 1 / 21))
    with pytest.raises(ValueError, match="labeled_counts needs 3 values"):
        pool_from_images(iter(items), predict=_Composition(), strategy="class_balance",
                         labeled_counts=[1, 2])


def test_model_scores_equal_score_prediction_and_skip_labeled_images():
    from label_assistant.model.inference import predict_proba

    model, images = Tiny(), _images(3)
    predictor = _predictor(model)
    pool = pool_from_images(iter(images), predict=predictor.predict, strategy="entropy",
                            labeled=[1])
    assert model.calls == 2  # the labeled image is not predicted
    expected = score_prediction(predict_proba(model, images[2][1], tile=64, overlap=16))
    assert set(pool.scores) == set(expected) and "bald" not in pool.scores
    assert pool.scores["entropy"][2] == pytest.approx(expected["entropy"])
    assert pool.scores["entropy"][1] == 0.0 and pool.labeled.tolist() == [False, True, False]
    assert pool.embeddings is None  # entropy alone needs no embeddings
    assert [i.index for i in rank(pool, "entropy")] == sorted(
        [0, 2], key=lambda i: -pool.scores["entropy"][i])


def test_epistemic_scores_with_tta():
    from functools import partial

    predict = partial(_predictor(Tiny()).predict, tta=True)
    pool = pool_from_images(iter(_images(2)), predict=predict, strategy="bald", tta=True)
    assert set(pool.scores) >= {"bald", "variance", "entropy"}
    assert (pool.scores["bald"] >= 0).all()


def test_strategy_checks_name_what_is_missing():
    with pytest.raises(PoolError, match="needs a trained model.*sequence, sequence\\+diversity"):
        check_strategy("sequence+entropy", has_model=False)
    with pytest.raises(PoolError, match="several predictions"):
        check_strategy("bald", has_model=True)
    assert check_strategy("bald", has_model=True, mc_samples=3).score == "bald"
    assert set(model_free_strategies()) == {
        "random", "sequential", "sequence", "diversity", "sequence+diversity"}
    with pytest.raises(PoolError, match="needs a trained model"):
        pool_from_images(iter(_images(1)), strategy="margin")


def test_the_channel_policy_gives_a_grey_model_colour_images_and_back():
    grey, colour = _predictor(Tiny(1)), _predictor(Tiny(3))
    rgb = _images(1, channels=3)[0][1]
    assert grey.predict(rgb).probabilities.shape == (2, 64, 64)
    assert colour.predict(rgb[:1]).probabilities.shape == (2, 64, 64)
    np.testing.assert_allclose(grey.match(rgb)[0], rgb.mean(axis=0), rtol=1e-6)
    assert (colour.match(rgb[:1]) == rgb[:1]).all()


def test_pool_from_predictions():
    rng = np.random.default_rng(1)
    predictions = []
    for _ in range(3):
        p = rng.random((2, 8, 8)).astype(np.float32)
        predictions.append(Prediction(p / p.sum(0)))
    pool = pool_from_predictions(["a", "b", "c"], iter(predictions), score_names=["margin"])
    assert list(pool.scores) == ["margin"]
    assert pool.scores["margin"][1] == pytest.approx(
        score_prediction(predictions[1], ["margin"])["margin"])
    with pytest.raises(PoolError, match="2 predictions for 3 names"):
        pool_from_predictions(["a", "b", "c"], predictions[:2])
    with pytest.raises(PoolError, match="unknown score"):
        pool_from_predictions(["a"], predictions[:1], score_names=["nope"])


# ---------------------------------------------------------------- the command


def test_select_without_model_one_per_sequence(pool_dir, capsys):
    code = main(["select", str(pool_dir), "--budget", "3", "--strategy", "sequence",
                 "--sequence-regex", r"seq(\w)_", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version"] is None and out["pool"] == 6 and out["budget"] == 3
    items = out["items"]
    assert [i["rank"] for i in items] == [1, 2, 3]
    assert sorted(i["sequence"] for i in items) == ["A", "B", "C"]
    assert all("first pick" in i["reason"] for i in items)


def test_select_table_with_diversity_on_descriptors(pool_dir, capsys, tmp_path):
    # an empty work dir: no model yet, model-free strategies still run
    assert main(["select", str(pool_dir), "--budget", "2", "--strategy", "diversity",
                 "--workdir", str(tmp_path / "w")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 of 6 images by diversity (no model")
    assert lines[1].split() == ["rank", "name", "sequence", "score", "components", "reason"]
    assert "most central image" in lines[2] and "distance" in lines[3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "entropy"], "needs a trained model and there is none yet"),
        (["--strategy", "entropy+nope"], "unknown strategy part 'nope'"),
        (["--budget", "0"], "--budget must be >= 1"),
        (["--sequence-regex", "(open"], "invalid sequence pattern"),
        (["--project", "3"], "--project needs --workdir"),
        (["--mc-samples", "-1"], "--mc-samples must be >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(pool_dir, capsys, argv, message):
    assert main(["select", str(pool_dir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_pool_folder(tmp_path, capsys):
    assert main(["select", str(tmp_path / "nope"), "--budget", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _tiny_training():
    """A tiny model trained with the real train() on blob images."""
    from label_assistant.datasets import Example, content_hash
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.train import train

    examples = []
    for i in range(3):
        image, label = _blobs(100 + i)
        image = (image / 255.0).astype(np.float32)[None]
        examples.append(Example(f"t{i}", image, label, content_hash(image, label)))
    return train(examples, ["Background", "Cell"], TrainConfig(**TINY))


def _publish(result, models: Path) -> str:
    from label_assistant.model.registry import ModelRegistry

    info = ModelRegistry(models).publish(
        result.state_dict, spec=result.spec, class_names=["Background", "Cell"],
        label_config_hash=None, manifest=result.manifest, metrics=result.metrics,
        curve=result.curve, config=result.config, parent=None)
    return info.id


@pytest.mark.slow
def test_select_with_the_current_model(pool_dir, tmp_path, capsys):
    from label_assistant.workspace import Workspace

    workdir = tmp_path / "work"
    result = _tiny_training()
    version = _publish(result, Workspace(workdir).models_dir())
    code = main(["select", str(pool_dir), "--workdir", str(workdir), "--strategy", "entropy",
                 "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version"] == version and len(out["items"]) == 6
    scores = [i["score"] for i in out["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert all(set(i["components"]) == {"entropy"} for i in out["items"])

    # the model's embeddings for diversity, ranked batch with sequences
    assert main(["select", str(pool_dir), "--workdir", str(workdir), "--budget", "3",
                 "--strategy", "sequence+entropy+diversity", "--sequence-regex", r"seq(\w)_",
                 "--device", "cpu", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert sorted(i["sequence"] for i in items) == ["A", "B", "C"]
    assert all({"entropy", "round"} <= set(i["components"]) for i in items)

    # a project's models live elsewhere: none there yet
    assert main(["select", str(pool_dir), "--workdir", str(workdir), "--project", "7",
                 "--strategy", "entropy"]) == 2
    assert "no model version" in capsys.readouterr().err
    _publish(result, Workspace(workdir).models_dir("7"))
    assert main(["select", str(pool_dir), "--workdir", str(workdir), "--project", "7",
                 "--strategy", "bald", "--tta", "--budget", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "2 of 6 images by bald (model v0001)" and "bald" in table[2]

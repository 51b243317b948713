"""One training round (model.round): warm start from the champion, its schedule, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.assist.pre import OtsuPrelabeler
from label_assistant.datasets import Example, content_hash
from label_assistant.model.config import TrainConfig
from label_assistant.model.factory import ModelSpec, create_model
from label_assistant.model.predictor import Predictor, Tiling
from label_assistant.model.round import train_round, warm_state

pytestmark = pytest.mark.slow
CLASSES = ["Background", "Cell"]
TINY = dict(arch="Unet", encoder="resnet18", epochs=2, steps_per_epoch=1, batch_size=2,
            tile=64, inference_tile=64, min_labeled_pixels=1, device="cpu", val_fraction=0.5)


def _examples(n: int = 4, channels: int = 1) -> list[Example]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        label = np.zeros((64, 64), np.uint8)
        label[10 + 3 * i: 30 + 3 * i, 20:40] = 1
        image = np.clip(label * 0.7 + 0.1 + rng.normal(0, 0.05, label.shape), 0, 1)
        x = np.repeat(image[None].astype(np.float32), channels, axis=0)
        out.append(Example(f"im{i}", x, label, content_hash(x, label)))
    return out


def _champion(spec: ModelSpec, version: str = "v0007") -> Predictor:
    return Predictor(create_model(spec).eval(), version=version, class_names=CLASSES,
                     tiling=Tiling(64), device="cpu", spec=spec)


def test_a_round_warm_starts_from_a_champion_of_the_same_architecture_on_its_own_schedule():
    config = TrainConfig(**TINY, warm_epochs=1)
    same = ModelSpec(arch="Unet", encoder="resnet18", in_channels=1, classes=tuple(CLASSES),
                     dropout=config.dropout)
    champion = _champion(same)
    assert warm_state(champion, config, _examples(), CLASSES) is not None
    trained = train_round(_examples(), CLASSES, config, champion)
    assert trained.result.metrics["init"] == "v0007"
    assert trained.result.metrics["epochs_run"] == 1 and trained.result.config["epochs"] == 1
    assert trained.verdict.champion == "v0007" and trained.verdict.candidate_scores is not None
    # Another encoder or classes, Otsu, or warm_start off: from scratch.
    other = ModelSpec(arch="Unet", encoder="resnet34", in_channels=1, classes=tuple(CLASSES),
                      dropout=config.dropout)
    assert warm_state(_champion(other), config, _examples(), CLASSES) is None
    three = ModelSpec(arch="Unet", encoder="resnet18", in_channels=1,
                      classes=("Background", "Cell", "Dirt"), dropout=config.dropout)
    assert warm_state(_champion(three), config, _examples(), CLASSES) is None
    assert warm_state(OtsuPrelabeler(), config, _examples(), CLASSES) is None
    cold = TrainConfig(**{**TINY, "warm_start": False})
    assert warm_state(champion, cold, _examples(), CLASSES) is None
    scratch = train_round(_examples(), CLASSES, cold, OtsuPrelabeler())
    assert scratch.result.metrics["init"] == "scratch"
    assert scratch.result.metrics["epochs_run"] == 2


def test_mixed_grey_and_colour_images_train_as_colour():
    from label_assistant.model.train import channel_policy, train

    mixed = _examples(2, channels=1) + _examples(2, channels=3)[::-1]
    mixed = [Example(f"m{i}", e.image, e.label_map, e.content_hash) for i, e in enumerate(mixed)]
    assert channel_policy(mixed) == 3 and channel_policy(_examples(2)) == 1
    result = train(mixed, CLASSES, TrainConfig(**TINY))
    assert result.spec["in_channels"] == 3 and result.metrics["channels"] == 3


def test_the_best_epoch_is_chosen_by_mean_dice_over_all_classes_and_said(caplog):
    from label_assistant.model.train import train

    result = train(_examples(), CLASSES, TrainConfig(**{**TINY, "epochs": 3}))
    curve = result.curve
    scores = [e["val_mean_dice_all"] for e in curve]
    assert result.metrics["best_epoch"] == int(np.argmax(scores)) + 1
    assert result.metrics["stop_reason"] == "ran all 3 epochs"
    assert result.metrics["kept"].startswith(f"kept epoch {result.metrics['best_epoch']} of 3")


def test_validation_every_n_epochs_chooses_the_best_among_the_validated_ones():
    from label_assistant.model.config import TrainingError
    from label_assistant.model.train import train

    result = train(_examples(), CLASSES, TrainConfig(**{**TINY, "epochs": 5, "val_every": 2}))
    validated = [e["epoch"] for e in result.curve if "val_mean_dice_all" in e]
    assert validated == [2, 4, 5]  # every 2nd epoch, and the last
    assert result.metrics["best_epoch"] in validated
    best = max(result.curve[i - 1]["val_mean_dice_all"] for i in validated)
    assert result.curve[result.metrics["best_epoch"] - 1]["val_mean_dice_all"] == best
    with pytest.raises(TrainingError, match="val_every"):
        train(_examples(), CLASSES, TrainConfig(**{**TINY, "val_every": 0}))


@pytest.mark.parametrize("weak_weight", [0.0, 1.0])
def test_weak_supervision_only_reaches_unlabeled_pixels(weak_weight):
    """With every pixel labeled there is nothing for the champion to teach: same weights."""
    from label_assistant.model.train import train

    config = TrainConfig(**{**TINY, "val_fraction": 0.0, "weak_weight": weak_weight})
    dense = _examples(2)
    plain = train(dense, CLASSES, TrainConfig(**{**TINY, "val_fraction": 0.0}))
    weak = train(dense, CLASSES, config, weak=[np.ones((64, 64), np.uint8)] * 2)
    for key, value in plain.state_dict.items():
        assert np.array_equal(value.numpy(), weak.state_dict[key].numpy()), key


@pytest.mark.parametrize(("before", "after"), [(1, 3), (3, 1)])
def test_a_changed_channel_policy_still_warm_starts_with_the_same_answers(before, after):
    """A grey project's first colour image turns the policy to colour: the champion's first
    layer is spread over the new channels, so grey images get the champion's answer."""
    import torch

    config = TrainConfig(**TINY)
    old = ModelSpec(arch="Unet", encoder="resnet18", in_channels=before, classes=tuple(CLASSES),
                    dropout=config.dropout)
    champion = _champion(old)
    state = warm_state(champion, config, _examples(channels=after), CLASSES)
    assert state is not None
    new = create_model(ModelSpec(arch="Unet", encoder="resnet18", in_channels=after,
                                 classes=tuple(CLASSES), dropout=config.dropout)).eval()
    new.load_state_dict(state)
    grey = torch.from_numpy(_examples(1)[0].image[None])  # (1, 1, 64, 64)
    with torch.no_grad():
        expected = champion.model(grey.repeat(1, before, 1, 1))
        got = new(grey.repeat(1, after, 1, 1))
    assert torch.allclose(expected, got, atol=1e-4)
    trained = train_round(_examples(channels=after), CLASSES, config, champion)
    assert trained.result.metrics["init"] == "v0007"


class _PaintsEverything:
    """A model champion sure that every pixel is a cell (a bright-field image after dark
    fluorescence, say)."""

    version = "v0001"

    def label_map(self, x, where=None):
        shape = x.shape[1:]
        return np.ones(shape, np.uint8), np.ones(shape, np.float32), None


def test_a_model_champion_teaches_only_where_otsu_agrees():
    from label_assistant.model.round import weak_labels

    examples = _examples(2)
    for e in examples:  # partial labels: there is something to teach
        e.label_map[:, :2] = 255
    alone = weak_labels(_PaintsEverything(), examples)
    assert all((w == 1).all() for w in alone)  # without a prior: its mistake is taught
    checked = weak_labels(_PaintsEverything(), examples, prior=OtsuPrelabeler())
    for w, e in zip(checked, examples, strict=True):
        cell = e.label_map == 1  # (the unlabeled strip holds no cell)
        assert (w[cell] == 1).mean() > 0.95  # Otsu agrees on the bright cell
        assert (w[~cell] == 255).mean() > 0.95  # and contradicts the painted background


class _MustNotRun:
    version = "v0002"

    def label_map(self, x, where=None):
        raise AssertionError("the champion ran on a fully labeled image")


def test_weak_labels_skip_fully_labeled_images_without_running_the_champion():
    from label_assistant.model.round import weak_labels

    dense = _examples(1)[0]
    partial = _examples(2)[1]
    partial.label_map[:, :8] = 255
    (skipped,) = weak_labels(_MustNotRun(), [dense], prior=OtsuPrelabeler())
    assert skipped.dtype == np.uint8 and (skipped == 255).all()
    with pytest.raises(AssertionError, match="champion ran"):
        weak_labels(_MustNotRun(), [partial])


def test_the_challenge_reuses_the_kept_epochs_validation_maps_and_decides_the_same():
    from label_assistant.model.round import challenge

    examples = _examples(6)
    examples[0].label_map[:5] = 255  # partial: only its labeled tiles are exact
    trained = train_round(examples, CLASSES, TrainConfig(**TINY, val_every=1),
                          OtsuPrelabeler())
    kept = trained.result.validation_maps
    validation = trained.result.validation
    assert kept is not None and len(kept) == len(validation) > 0
    for m, e in zip(kept, validation, strict=True):
        own = trained.candidate.label_map(e.image, fallback=False)[0]
        labeled = e.label_map != 255
        assert np.array_equal(m[labeled], own[labeled])
    again = challenge(trained.candidate, OtsuPrelabeler(), validation, CLASSES)
    assert again.to_dict() == trained.verdict.to_dict()


def test_the_verdict_checks_each_validation_image_and_the_domain_keeps_what_was_won():
    from label_assistant.model.domain import Domain

    trained = train_round(_examples(6), CLASSES, TrainConfig(**TINY), OtsuPrelabeler())
    names = [e.name for e in trained.result.validation]
    checks = trained.verdict.images
    assert names and [c.name for c in checks] == names
    assert all(c.won == (c.candidate >= c.fallback) for c in checks)
    assert f"beats Otsu on {sum(c.won for c in checks)} of {len(checks)}" in \
        trained.verdict.reason
    stored = Domain.from_dict(trained.result.domain)
    assert stored is not None and stored.won.tolist() == [c.won for c in checks]
    assert trained.candidate.domain.won.tolist() == [c.won for c in checks]
    assert trained.verdict.to_dict()["images"][0]["name"] == names[0]


def test_a_warm_round_runs_at_its_own_learning_rate():
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=1, classes=tuple(CLASSES),
                     dropout=TINY.get("dropout", 0.1))
    config = TrainConfig(**TINY, warm_epochs=2, warm_lr=1e-4)
    warm = train_round(_examples(), CLASSES, config, _champion(spec))
    assert warm.result.metrics["init"] == "v0007"
    # Cosine over 2 epochs: half the starting rate after the first.
    assert warm.result.curve[0]["lr"] == pytest.approx(0.5e-4)
    cold = train_round(_examples(), CLASSES, config, OtsuPrelabeler())
    assert cold.result.curve[0]["lr"] == pytest.approx(0.5 * config.lr)


class _Fixed:
    """A pre-labeler (candidate, Otsu) that answers a fixed label map per image."""

    def __init__(self, version, maps, domain=None, fallback=None):
        self.version, self.maps, self.domain, self.fallback = version, maps, domain, fallback

    def label_map(self, image, where=None, fallback=True):
        return self.maps[round(float(image.mean()) * 100)], None

    def match(self, x):
        return x

    def familiar(self, x):
        return True


def test_a_candidate_is_scored_as_it_will_serve_otsu_where_it_lost():
    """Images of two kinds: Otsu is perfect on the dark ones and wrong on the bright ones;
    the candidate is the other way round. As it will serve (Otsu on the kind it lost), it
    beats Otsu on every validation image it serves, so it is promoted."""
    from label_assistant.model.domain import Domain
    from label_assistant.model.round import challenge

    truth = np.zeros((128, 128), np.uint8)
    truth[20:60, 20:60] = truth[80:120, 70:110] = 1
    wrong = np.zeros_like(truth)
    validation, cand, otsu = [], {}, {}
    for i in range(8):
        bright = i >= 4
        x = np.full((1, 128, 128), (0.6 if bright else 0.1) + i / 100, np.float32)
        key = round(float(x.mean()) * 100)
        cand[key] = truth if bright else np.where(truth == 1, 0, truth)  # misses dark nuclei
        otsu[key] = wrong if bright else truth
        validation.append(Example(f"im{i}", x, truth, content_hash(x, truth)))
    domain = Domain.of_inputs([e.image for e in validation], distance=0.5)
    fallback = _Fixed("otsu-1", otsu)
    verdict = challenge(_Fixed("candidate", cand, domain, fallback), fallback, validation,
                        CLASSES, fallback)
    assert [c.won for c in verdict.images] == [False] * 4 + [True] * 4
    assert verdict.promoted, verdict.reason
    assert verdict.candidate_scores.mean_dice > verdict.champion_scores.mean_dice

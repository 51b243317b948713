"""Learning from partial labels robustly: the demo's failure, reproduced, and its remedy.

In a trial, three annotations labeled the nuclei and painted Background only as bands along
the image borders. The model trained on them learned "the interior is nucleus" and
pre-labeled most of every image as foreground. With the champion's pre-label supervising the
unlabeled pixels (``weak_weight``; the annotator's labels always win), it does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from label_assistant.assist.pre import OtsuPrelabeler
from label_assistant.datasets import Example, content_hash
from label_assistant.devtools.samples import nuclei_sequence
from label_assistant.images import normalize_for_model
from label_assistant.labelmap import UNLABELED, instances_to_label_map
from label_assistant.model.config import TrainConfig
from label_assistant.model.promotion import score
from label_assistant.model.round import train_round, weak_labels

pytestmark = pytest.mark.slow
CLASSES = ["Background", "Nucleus"]


def border_annotation(instances: np.ndarray, band: int = 16) -> np.ndarray:
    """The trial's annotation: every nucleus, Background only in bands along the borders."""
    label_map = np.full(instances.shape, UNLABELED, np.uint8)
    for edge in (np.s_[:band], np.s_[-band:], np.s_[:, :band], np.s_[:, -band:]):
        label_map[edge] = 0
    label_map[instances_to_label_map(instances, 1) == 1] = 1
    return label_map


@pytest.fixture(scope="module")
def data() -> tuple[list[Example], list[Example]]:
    train, test = [], []
    for name, seed in (("A", 1), ("B", 2), ("C", 3)):
        frames = nuclei_sequence(name, 2, seed, size=192, count=8)
        x = normalize_for_model(frames[0].image)
        label_map = border_annotation(frames[0].instances, band=10)
        train.append(Example(f"{name}0", x, label_map, content_hash(x, label_map)))
        truth = instances_to_label_map(frames[1].instances, 1)
        test.append(Example(f"{name}1", normalize_for_model(frames[1].image), truth,
                            content_hash(truth)))
    return train, test


def _foreground_share(model, examples: list[Example]) -> float:
    return float(np.mean([(model.label_map(e.image)[0] == 1).mean() for e in examples]))


def test_weak_labels_come_from_the_champion_and_leave_its_doubts_unlabeled(data):
    train, _ = data
    (weak,) = weak_labels(OtsuPrelabeler(), train[:1])
    label_map, confidence, _ = OtsuPrelabeler().label_map(train[0].image)
    assert weak.dtype == np.uint8 and set(np.unique(weak)) <= {0, 1, UNLABELED}
    assert np.array_equal(weak == UNLABELED, confidence < 0.5)
    assert np.array_equal(weak[confidence >= 0.5], label_map[confidence >= 0.5])


def test_background_only_at_the_borders_turns_the_interior_into_nuclei_without_weak_labels(
        data):
    """Over three training seeds: the failure is a matter of chance at this short schedule
    (without weak labels, nucleus shares 0.039, 0.060 and 0.683 of the test images against
    0.046 true; 0.102, 0.013 and 0.404 when tiles were drawn by labeled pixel), the remedy is
    not (0.028, 0.047, 0.045)."""
    train, test = data
    truth = float(np.mean([(e.label_map == 1).mean() for e in test]))
    otsu = OtsuPrelabeler()
    shares: dict[str, list[float]] = {"plain": [], "weak": []}
    scores: dict[str, list[float]] = {"plain": [], "weak": []}
    for seed in (0, 1, 2):
        config = dict(encoder="resnet18", epochs=4, steps_per_epoch=10, batch_size=4, tile=64,
                      inference_tile=192, min_labeled_pixels=1, device="cpu", val_fraction=0.0,
                      seed=seed)
        for name, weight in (("plain", 0.0), ("weak", 1.0)):
            model = train_round(train, CLASSES, TrainConfig(**config, weak_weight=weight),
                                otsu).candidate
            shares[name].append(_foreground_share(model, test))
            scores[name].append(score([e.label_map for e in test],
                                      [model.label_map(e.image)[0] for e in test], 1).mean_dice)
    print(f"\nnucleus share: truth {truth:.3f}, {shares}; mean Dice (all classes): {scores}")
    # The trial's failure, in one seed at least: the interior becomes "nucleus".
    assert max(shares["plain"]) > 2 * truth
    assert max(shares["weak"]) < 1.5 * truth  # the champion's background holds, every seed
    assert np.mean(scores["weak"]) > np.mean(scores["plain"]) + 0.05

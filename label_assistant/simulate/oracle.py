"""One simulated annotation: the oracle's label map, cleaned and gated as the service does."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from label_assistant import metrics
from label_assistant.datasets import Example, content_hash
from label_assistant.labelmap import UNLABELED
from label_assistant.simulate.settings import SimulationSettings

# ---------------------------------------------------------------- one annotation: the real path


@dataclass
class Intake:
    """Images that entered in one round: how they were selected, pre-labeled and gated."""

    names: list[str]
    admitted: list[str]
    quarantined: list[str]
    select_seconds: float = 0.0
    prelabel_source: str | None = None
    prelabel_dice: float | None = None
    warnings: int = 0


def foreground_dice(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> float | None:
    """:func:`label_assistant.metrics.foreground_dice`, None when no class occurs in either."""
    dice = metrics.foreground_dice(truth, prediction, n_classes)
    return None if np.isnan(dice) else dice


#: ``ring``: the Background ring around each object, pixels.
RING_WIDTH = 2
#: ``border``: the Background bands along the edges, as a share of the shorter side.
BORDER_BAND = 0.06


def oracle_annotation(example: Example, settings: SimulationSettings, seed: int,
                      index: int, dense: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The oracle's label map (and instances restricted to it) for pool image ``index``; see
    :data:`label_assistant.simulate.settings.ANNOTATIONS` for the kinds."""
    from label_assistant.model.sparsify import sparsify

    kind = "dense" if dense else settings.annotation
    if kind == "dense":
        return example.label_map, example.instances
    if kind == "border":
        label_map = border_annotation(example)
    else:
        # Seeded by run seed and image: every strategy gets the same annotation of an image.
        label_map = sparsify(example.label_map, settings.sparse_fraction,
                             band=RING_WIDTH if kind == "ring" else 3,
                             seed=np.random.default_rng([seed, index]))
    instances = None
    if example.instances is not None:
        instances = np.where(label_map != UNLABELED, example.instances, 0)
    return label_map, instances


def border_annotation(example: Example, band: float = BORDER_BAND) -> np.ndarray:
    """The Otsu pre-label's objects as the annotator accepted them, and Background painted
    only in bands along the image borders; the rest unlabeled."""
    from label_assistant.assist.pre import OtsuParams, OtsuPrelabeler

    n_classes = int(example.label_map[example.label_map != UNLABELED].max(initial=1))
    pre, _, _ = OtsuPrelabeler(OtsuParams(n_classes=n_classes)).label_map(example.image)
    label_map = np.full(pre.shape, UNLABELED, np.uint8)
    width = max(4, round(band * min(pre.shape)))
    for edge in (np.s_[:width], np.s_[-width:], np.s_[:, :width], np.s_[:, -width:]):
        label_map[edge] = 0
    label_map[pre > 0] = pre[pre > 0]
    return label_map


def cleaned_example(example: Example, label_map: np.ndarray, instances: np.ndarray | None,
                    class_names: list[str]) -> Example:
    """The training example an oracle annotation becomes: its map as the gate cleans it
    (``class_names``: the K foreground classes). Cleanup does not depend on the model, so a
    resumed run rebuilds the same example."""
    from label_assistant.assist.gate import gate

    decision = gate(label_map, class_names=class_names, instances=instances)
    return replace(example, label_map=decision.label_map, instances=decision.instances,
                   content_hash=content_hash(example.image, decision.label_map))


def prelabel(example: Example, serving: Any | None, n_classes: int
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pre-label map (and the model's probabilities) the annotator would start from: what
    serves in that round, run as the service runs it (Otsu before any model)."""
    if serving is None:
        from label_assistant.assist.pre import OtsuParams, OtsuPrelabeler

        serving = OtsuPrelabeler(OtsuParams(n_classes=n_classes))
    label_map, _, probabilities = serving.label_map(example.image)
    return label_map, probabilities

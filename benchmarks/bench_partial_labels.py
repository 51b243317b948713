"""Learning from partial labels: Background painted only along the image borders.

The trial that made a model paint the whole interior as nucleus: every nucleus labeled,
Background only in bands along the edges, the rest unlabeled. For each remedy, a round
against Otsu (:func:`label_assistant.model.round.train_round`) is trained on such
annotations and its model scored on held-out images with complete truth: mean Dice over all
classes (Background included), foreground Dice, and the share of pixels it calls nucleus.

Remedies (``--weights``): none (``0``), and the champion's (Otsu's) pre-label supervising the
unlabeled pixels at a weight (``0.3``, ``1.0``). Tile sampling cannot help here: there is no
interior Background label to draw a tile around.

Data: generated nuclei (always), and the 2018 Data Science Bowl subset when
``../shared/data/dsb2018_stage1_train_subset`` is there (its dark-field fluorescence groups).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_partial_labels.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from _common import print_table, shared_data, write_results

from label_assistant.assist.pre import OtsuPrelabeler
from label_assistant.datasets import Example, content_hash, load_example
from label_assistant.devtools.samples import nuclei_sequence
from label_assistant.images import normalize_for_model
from label_assistant.labelmap import UNLABELED, instances_to_label_map
from label_assistant.model.config import TrainConfig
from label_assistant.model.promotion import score
from label_assistant.model.round import train_round

CLASSES = ["Background", "Nucleus"]


def border_annotation(truth: np.ndarray, band_share: float = 0.06) -> np.ndarray:
    """Every object of the truth, Background only in bands along the borders."""
    label_map = np.full(truth.shape, UNLABELED, np.uint8)
    band = max(4, round(band_share * min(truth.shape)))
    for edge in (np.s_[:band], np.s_[-band:], np.s_[:, :band], np.s_[:, -band:]):
        label_map[edge] = 0
    label_map[truth == 1] = 1
    return label_map


def generated() -> tuple[list[Example], list[Example]]:
    train, test = [], []
    for name, seed in (("A", 1), ("B", 2), ("C", 3)):
        frames = nuclei_sequence(name, 2, seed)
        x = normalize_for_model(frames[0].image)
        label_map = border_annotation(instances_to_label_map(frames[0].instances, 1))
        train.append(Example(f"{name}0", x, label_map, content_hash(x, label_map)))
        truth = instances_to_label_map(frames[1].instances, 1)
        test.append(Example(f"{name}1", normalize_for_model(frames[1].image), truth,
                            content_hash(truth)))
    return train, test


def dsb(per_group: int = 2) -> tuple[list[Example], list[Example]] | None:
    """Dark-field groups of the DSB subset: ``per_group`` images to train, 2 to test."""
    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        return None
    manifest = json.loads((root / "manifest.json").read_text())
    groups: dict[str, list[str]] = {}
    for item in manifest["images"]:
        if item["group"].endswith("_dark") and item["width"] <= 696:
            groups.setdefault(item["group"], []).append(item["id"])
    train, test = [], []
    for ids in groups.values():
        ids = sorted(ids)
        for k, image_id in enumerate(ids[: per_group + 2]):
            example = load_example(root / "images" / f"{image_id}.png",
                                   root / "masks" / f"{image_id}.png", "instance")
            if k < per_group:
                example.label_map = border_annotation(example.label_map)
                train.append(example)
            else:
                test.append(example)
    return train, test


def measure(train: list[Example], test: list[Example], weight: float, steps: int
            ) -> dict[str, Any]:
    config = TrainConfig(epochs=max(1, steps // 10), steps_per_epoch=10, batch_size=4, tile=128,
                         min_labeled_pixels=1, device="cpu", val_fraction=0.0,
                         weak_weight=weight)
    started = time.perf_counter()
    model = train_round(train, CLASSES, config, OtsuPrelabeler()).candidate
    seconds = time.perf_counter() - started
    return _scores(model, test) | {"weak_weight": weight, "train_seconds": round(seconds, 1)}


def _scores(model: Any, test: list[Example]) -> dict[str, Any]:
    maps = [model.label_map(e.image)[0] for e in test]
    s = score([e.label_map for e in test], maps, 1)
    return {"mean_dice_all": s.mean_dice, "dice_background": s.dice[0],
            "dice_nucleus": s.dice[1],
            "nucleus_share": float(np.mean([(m == 1).mean() for m in maps]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round")
    parser.add_argument("--weights", default="0,0.3,1.0", help="weak weights to compare")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    rows = []
    for name, data in (("generated", generated()), ("dsb2018 dark", dsb())):
        if data is None:
            print(f"{name}: data not found, skipped")
            continue
        train, test = data
        truth = float(np.mean([(e.label_map == 1).mean() for e in test]))
        otsu = _scores(OtsuPrelabeler(), test)
        rows.append({"data": name, "remedy": "Otsu itself", **otsu, "truth_share": truth})
        for weight in weights:
            result = measure(train, test, weight, args.steps)
            remedy = "none" if weight == 0 else f"weak labels x{weight:g}"
            rows.append({"data": name, "remedy": remedy, **result, "truth_share": truth})
            print(rows[-1], flush=True)
    out = write_results("partial_labels", rows, {"steps": args.steps})
    print_table(rows, ["data", "remedy", "mean_dice_all", "dice_background", "dice_nucleus",
                       "nucleus_share", "truth_share", "train_seconds"])
    print(f"written {out}")


if __name__ == "__main__":
    main()

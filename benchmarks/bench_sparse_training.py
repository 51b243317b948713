"""Dense vs sparse (partial) labels on the ISBI 2012 EM membranes: test Dice and training time.

Fixed split: slices 0-19 train, 20-29 test. Class 1 = membrane (mask == 0). The sparse
conditions come from :func:`label_assistant.model.sparsify.sparsify`, which keeps a few whole
objects (cells, with the membrane in a band around them) per image until about 5% or 10% of
the pixels are labeled; the rest is unlabeled (255). Every condition trains with the same
settings and epochs; test Dice is computed on the full test masks.

Goal (issue 3): sparse at <= 10% of pixels reaches at least 90% of the dense Dice.

    python benchmarks/bench_sparse_training.py [--epochs 30 --steps 20 --device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, shared_data, write_results  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--fractions", default="0.05,0.10", help="sparse label fractions")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from label_assistant.datasets import load_example
    from label_assistant.labelmap import UNLABELED
    from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion
    from label_assistant.model.config import TrainConfig
    from label_assistant.model.inference import predict_proba, probabilities_to_label_map
    from label_assistant.model.sparsify import sparsify
    from label_assistant.model.train import train

    data = shared_data("isbi2012_em_membrane")
    if data is None:
        print("skipped: ../shared/data/isbi2012_em_membrane not found")
        return 0
    names = sorted(p.name for p in (data / "images").glob("*.png"))
    examples = [load_example(data / "images" / n, data / "masks" / n, "binary", invert=True)
                for n in names]
    train_set, test_set = examples[:20], examples[20:]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        conditions = [("dense", None)] + [(f"sparse {float(f):.0%}", float(f))
                                          for f in args.fractions.split(",")]
        for label, fraction in conditions:
            if fraction is None:
                used = train_set
            else:
                used = [replace(e, label_map=sparsify(e.label_map, fraction, seed=seed + i))
                        for i, e in enumerate(train_set)]
            labeled = float(np.mean([(e.label_map != UNLABELED).mean() for e in used]))
            config = TrainConfig(arch=args.arch, encoder=args.encoder, epochs=args.epochs,
                                 steps_per_epoch=args.steps, batch_size=args.batch_size,
                                 tile=args.tile, seed=seed, device=args.device,
                                 patience=args.epochs)
            start = time.perf_counter()
            result = train(used, ["Background", "Membrane"], config)
            seconds = time.perf_counter() - start
            from label_assistant.model.factory import ModelSpec, create_model

            model = create_model(ModelSpec.from_dict(result.spec))
            model.load_state_dict(result.state_dict)
            model.to(config.device or ("cuda" if _cuda() else "cpu"))
            cm = np.zeros((2, 2), np.int64)
            for e in test_set:
                probs = predict_proba(model, e.image, device=next(model.parameters()).device)
                cm += confusion_matrix(e.label_map,
                                       probabilities_to_label_map(probs.probabilities)[0], 1)
            dice, iou = dice_iou_from_confusion(cm)
            row = {"seed": seed, "labels": label, "labeled_share": round(labeled, 4),
                   "test_dice_membrane": float(dice[1]), "test_dice_mean": float(np.mean(dice)),
                   "test_iou_membrane": float(iou[1]), "train_seconds": round(seconds, 1),
                   "best_epoch": result.metrics["best_epoch"]}
            rows.append(row)
            print(row, flush=True)
    dense = {r["seed"]: r["test_dice_membrane"] for r in rows if r["labels"] == "dense"}
    for r in rows:
        r["share_of_dense_dice"] = round(r["test_dice_membrane"] / dense[r["seed"]], 4)
    path = write_results("bench_sparse_training", rows, {"settings": vars(args) | {
        "out": str(args.out)}}, args.out)
    print_table(rows, ["seed", "labels", "labeled_share", "test_dice_membrane",
                       "test_dice_mean", "share_of_dense_dice", "train_seconds", "best_epoch"])
    print(f"results: {path}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

"""Warm against cold rounds: does fine-tuning the champion reach a fresh model's Dice sooner?

On the 2018 Data Science Bowl subset (``../shared/data/dsb2018_stage1_train_subset``, its
images up to ``--max-side`` pixels, grey and colour; ``--oracle sparse`` annotations: whole
nuclei and a ring of context, 10% of the pixels, or ``dense``: the full masks), with the CPU
default config
(:class:`label_assistant.model.config.TrainConfig`):

1. round 1: a cold model on the first ``--first`` images; it becomes the champion;
2. round 2 on ``--second`` images (the first ones included), twice: **cold** (from scratch,
   the full schedule) and **warm** (from the champion, ``warm_epochs``); each epoch's
   validation mean Dice (all classes) is logged with the wall time.

Reported: the curves, each round's best Dice, wall and CPU time, and the time each warm
round (one per ``--warm-lrs`` learning rate, all from the same champion) takes to reach the
cold round's best Dice (the goal: at most half the cold round's time; judged on the
process's CPU seconds, which other work on the machine disturbs less than wall time).
Validation is the fixed hash split of the round's annotations; test Dice is on held-out
images with their complete truth, every model on every test image (no domain fallback).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_warm_start.py [--first 8 --second 16]
        [--oracle sparse|dense] [--warm-lrs 0.001,0.0003]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
from _common import print_table, shared_data, write_results

from label_assistant.assist.pre import OtsuPrelabeler
from label_assistant.datasets import load_example
from label_assistant.model.config import TrainConfig
from label_assistant.model.promotion import score
from label_assistant.model.round import train_round
from label_assistant.model.sparsify import sparsify

CLASSES = ["Background", "Nucleus"]


def load(n_train: int, n_test: int, max_side: int, oracle: str = "sparse"
         ) -> tuple[list[Any], list[Any]]:
    root = shared_data("dsb2018_stage1_train_subset")
    if root is None:
        raise SystemExit("../shared/data/dsb2018_stage1_train_subset not found")
    manifest = json.loads((root / "manifest.json").read_text())
    ids = sorted(i["id"] for i in manifest["images"]
                 if max(i["height"], i["width"]) <= max_side)
    rng = np.random.default_rng(0)
    order = [ids[i] for i in rng.permutation(len(ids))]
    examples = []
    for image_id in order[: n_train + n_test]:
        e = load_example(root / "images" / f"{image_id}.png", root / "masks" / f"{image_id}.png",
                         "instance")
        examples.append(e)
    train, test = examples[:n_train], examples[n_train:]
    for i, e in enumerate(train):  # the oracle's partial annotation
        if oracle == "sparse":
            e.label_map = sparsify(e.label_map, 0.1, seed=i)
    return train, test


def timed_round(examples: list[Any], config: TrainConfig, champion: Any
                ) -> tuple[Any, list[dict[str, Any]]]:
    """A round with its curve: per epoch the wall and the process's CPU seconds (all its
    threads; steadier than wall time when other work shares the machine) and the validation
    mean Dice (all classes)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    curve: list[dict[str, Any]] = []

    def on_epoch(entry: dict[str, Any]) -> None:
        curve.append({"epoch": entry["epoch"], "seconds": time.perf_counter() - started,
                      "cpu_seconds": time.process_time() - cpu_started,
                      "val_dice_all": entry.get("val_mean_dice_all")})

    return train_round(examples, CLASSES, config, champion, on_epoch=on_epoch), curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=8)
    parser.add_argument("--second", type=int, default=16)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--max-side", type=int, default=400,
                        help="only images whose longer side is at most this (default 400: "
                        "the 256-360 px groups; validating on the large ones every epoch "
                        "costs more than the training steps on 2 cores)")
    parser.add_argument("--oracle", choices=["sparse", "dense"], default="sparse")
    parser.add_argument("--warm-lrs", default="0.001",
                        help="learning rates of the warm rounds to compare, comma-separated "
                        "(each its own run from the same champion; default 0.001, the "
                        "cold round's)")
    args = parser.parse_args()
    train, test = load(args.second, args.test, args.max_side, args.oracle)
    config = TrainConfig(device="cpu")
    otsu = OtsuPrelabeler()

    def test_dice(model: Any) -> float:
        return score([e.label_map for e in test], [model.label_map(e.image)[0] for e in test],
                     1).mean_dice

    def row(name: str, trained: Any, curve: list[dict[str, Any]], images: int
            ) -> dict[str, Any]:
        return {"round": name, "images": images, "epochs": len(curve),
                "seconds": curve[-1]["seconds"], "cpu_seconds": curve[-1]["cpu_seconds"],
                "best_val_dice_all": max(c["val_dice_all"] or 0 for c in curve),
                "test_dice_all": test_dice(trained.candidate)}

    first, first_curve = timed_round(train[: args.first], config, otsu)
    champion = replace_version(first.candidate, "round1")
    champion.domain = None  # the benchmark compares models on every test image
    cold, cold_curve = timed_round(train, replace(config, warm_start=False), champion)
    cold.candidate.domain = None
    cold_best = max(c["val_dice_all"] or 0 for c in cold_curve)
    rows = [row("1 (cold, champion)" + ("" if first.verdict.promoted else
                                        ", though it did not beat Otsu"),
                first, first_curve, args.first),
            row("2 cold", cold, cold_curve, args.second)]
    curves = {"first": first_curve, "cold": cold_curve}
    goals = {}
    for lr in (float(v) for v in args.warm_lrs.split(",")):
        warm, warm_curve = timed_round(train, replace(config, warm_lr=lr), champion)
        warm.candidate.domain = None
        reach = next((c for c in warm_curve if (c["val_dice_all"] or 0) >= cold_best), None)
        name = f"2 warm, lr {lr:g}"
        rows.append({**row(name, warm, warm_curve, args.second),
                     "reaches_cold_best_after_s": reach and reach["seconds"],
                     "reaches_cold_best_after_cpu_s": reach and reach["cpu_seconds"]})
        curves[name] = warm_curve
        goals[name] = reach is not None and \
            reach["cpu_seconds"] <= cold_curve[-1]["cpu_seconds"] / 2
    rows.append({"round": "Otsu", "images": 0, "test_dice_all": test_dice(otsu)})
    out = write_results(f"warm_start_{args.oracle}", rows, {
        "curves": curves, "goal_warm_reaches_cold_in_half_the_cpu_time": goals,
        "oracle": args.oracle, "round1_verdict": first.verdict.reason,
        "config": config.to_dict()})
    print_table(rows, ["round", "images", "epochs", "seconds", "cpu_seconds",
                       "best_val_dice_all", "test_dice_all", "reaches_cold_best_after_s",
                       "reaches_cold_best_after_cpu_s"])
    for name, met in goals.items():
        print(f"{name}: reaches the cold round's best validation Dice in at most half its "
              f"CPU time: {'met' if met else 'not met'}")
    print(f"written {out}")


def replace_version(predictor: Any, version: str) -> Any:
    predictor.version = version
    return predictor


if __name__ == "__main__":
    main()

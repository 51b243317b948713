"""CPU training speed: test Dice reached per minute of training, per training config.

Measures two things separately, so that machine load (other jobs on a shared CPU) cannot
touch the quality numbers:

- **quality per optimizer step** (deterministic): for each config,
  :func:`label_assistant.model.train.train` is run from scratch once per step budget S in
  ``--checkpoints`` (each run split into ``--epochs`` epochs of S / epochs steps, so every
  budget gets the same cosine schedule, as a round with that budget would), with
  ``val_fraction=0`` (the weights kept are the epoch of lowest training loss). A config runs
  the budgets whose training pixels (S x batch x tile^2) stay within those of
  ``--equal-pixels`` steps of the baseline (batch 8, tile 256), so cheaper steps get more of
  them (tile 128: 4x the steps, batch 4: 2x; points beyond that already in the cache are
  shown too). The returned weights are scored on a fixed test set with
  :class:`~label_assistant.model.predictor.Predictor` (tiling 512) and
  :func:`label_assistant.model.promotion.score`: mean Dice over all classes (Background
  included, the promotion score) and the Nucleus Dice. Otsu
  (:class:`~label_assistant.assist.pre.OtsuPrelabeler`) on the same images is the reference.
  torch threads and the memory format do not change the arithmetic (up to float rounding),
  so configs that differ from another only in those share its quality runs.
- **seconds per step** (robust to load): each config's training step exactly as ``train()``
  runs it (tile sampling, augmentation, forward, ce+dice loss, backward, AdamW) is timed in
  blocks of ``--time-steps`` steps, ``--time-repeats`` blocks per config after
  ``--warmup`` steps; blocks of all configs are interleaved (round robin), so a busy spell of
  the machine hits them all, and the **minimum** block mean is the s/step (median and max
  are kept to show the noise); each block starts with ``--settle`` untimed steps, since
  the other configs ran in between. ``s_step_train`` (contiguous, 2 threads) is the fastest
  of the quality runs' own ``train()`` wall times per step, set-up included: an independent
  upper bound. Blocks accumulate over runs in ``--timing-history``: the
  minimum is taken over all of them (more chances to catch the machine quiet).

Quality points are kept in ``--cache`` (keyed by config, budget, schedule, seed and split)
and reused by later runs, so an interrupted run resumes; delete the file when the training
code changes.

Dice per minute at S = Dice after S steps / (S x s/step / 60). "Minutes to beat Otsu" is
the smallest checkpoint whose mean Dice (all classes) exceeds Otsu's, in minutes of training.

Data: ``../shared/data/dsb2018_stage1_train_subset`` (122 DSB 2018 nuclei images in 9
groups, grey and colour). Fixed split by sorted id within each group: the first
min(3, n - 1) images train, the next min(2, rest) test. Every image is given 3 channels
(:func:`label_assistant.images.match_channels`; the colour policy of mixed projects).

    python benchmarks/bench_train_speed.py [--checkpoints 25,50,100,200]
        [--equal-pixels 100] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, print_table, shared_data, write_results  # noqa: E402

DATASET = "dsb2018_stage1_train_subset"
CLASSES = ["Background", "Nucleus"]
CHANNELS = 3


@dataclass(frozen=True)
class Candidate:
    """One training config: what a step costs depends on all fields, what it learns only on
    :attr:`quality_key`."""

    name: str
    encoder: str = "resnet18"
    tile: int = 256
    batch: int = 8
    threads: int = 2
    channels_last: bool = False

    @property
    def quality_key(self) -> tuple[str, int, int]:
        return (self.encoder, self.tile, self.batch)


#: The small encoder of the comparison (timm's MobileNetV3-Small through smp's timm-universal
#: encoder; smp 0.6 has no ``timm-mobilenetv3_*`` of its own). Built with random weights.
SMALL = "tu-mobilenetv3_small_100"


def candidates(small: str) -> list[Candidate]:
    """Baseline (today's CPU default) and one factor changed at a time; then channels_last
    with the other encoders, tile and batch (timing only: their quality is that of the
    contiguous row)."""
    base = Candidate("baseline")
    return [
        base,
        replace(base, name="mobilenet_v2", encoder="mobilenet_v2"),
        replace(base, name="efficientnet-b0", encoder="efficientnet-b0"),
        replace(base, name=f"small ({small})", encoder=small),
        replace(base, name="tile 128", tile=128),
        replace(base, name="batch 4", batch=4),
        replace(base, name="channels_last", channels_last=True),
        replace(base, name="threads 1", threads=1),
        replace(base, name="mobilenet_v2 +cl", encoder="mobilenet_v2", channels_last=True),
        replace(base, name="efficientnet-b0 +cl", encoder="efficientnet-b0", channels_last=True),
        replace(base, name="small +cl", encoder=small, channels_last=True),
        replace(base, name="tile 128 +cl", tile=128, channels_last=True),
        replace(base, name="batch 4 +cl", batch=4, channels_last=True),
    ]


# --- data ------------------------------------------------------------------------------------


def split_ids(manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) manifest entries: per group, by sorted id, the first min(3, n-1) train
    and the next min(2, rest) test."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["images"]:
        groups.setdefault(entry["group"], []).append(entry)
    train_set, test_set = [], []
    for group in sorted(groups):
        entries = sorted(groups[group], key=lambda e: e["id"])
        n_train = min(3, len(entries) - 1)
        train_set += entries[:n_train]
        test_set += entries[n_train:n_train + 2]
    return train_set, test_set


def load(data: Path, entries: list[dict[str, Any]]) -> list[Any]:
    from label_assistant.datasets import load_example

    return [load_example(data / "images" / f"{e['id']}.png", data / "masks" / f"{e['id']}.png",
                         mask_type="instance") for e in entries]


def colour(examples: list[Any]) -> list[Any]:
    from label_assistant.images import match_channels

    return [replace(e, image=match_channels(e.image, CHANNELS)) for e in examples]


# --- quality per step ------------------------------------------------------------------------


def evaluate(model: Any, test_set: list[Any]) -> dict[str, float | None]:
    """Mean Dice (all classes) and Nucleus Dice of a model on the test images."""
    from label_assistant.model.predictor import Predictor, Tiling
    from label_assistant.model.promotion import score

    model.eval()
    predictor = Predictor(model, version="bench", class_names=CLASSES, tiling=Tiling(512),
                          device="cpu")
    predictions = [predictor.label_map(e.image)[0] for e in test_set]
    scores = score([e.label_map for e in test_set], predictions, 1)
    return {"mean_dice": scores.mean_dice, "fg_dice": scores.dice[1]}


def otsu_scores(test_set: list[Any]) -> dict[str, float | None]:
    """Otsu on each test image as loaded (grey or colour), scored like a model."""
    from label_assistant.assist.pre import OtsuPrelabeler
    from label_assistant.model.promotion import score

    otsu = OtsuPrelabeler()
    predictions = [otsu.label_map(e.image)[0] for e in test_set]
    scores = score([e.label_map for e in test_set], predictions, 1)
    return {"mean_dice": scores.mean_dice, "fg_dice": scores.dice[1], "version": otsu.version}


def quality_run(key: tuple[str, int, int], steps: int, epochs: int, train_set: list[Any],
                test_set: list[Any], seed: int) -> dict[str, Any]:
    """Train ``steps`` optimizer steps from scratch with ``train()``; score on the test set."""
    import torch

    from label_assistant.model.config import TrainConfig
    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.model.train import train

    encoder, tile, batch = key
    epochs = max(1, min(epochs, steps))
    if steps % epochs:
        raise SystemExit(f"checkpoint {steps} is not a multiple of --epochs {epochs}")
    config = TrainConfig(encoder=encoder, tile=tile, batch_size=batch, epochs=epochs,
                         steps_per_epoch=steps // epochs, val_fraction=0.0, patience=epochs,
                         seed=seed, device="cpu")
    torch.set_num_threads(2)
    start = time.perf_counter()
    result = train(train_set, CLASSES, config)
    seconds = time.perf_counter() - start
    model = create_model(ModelSpec.from_dict(result.spec))
    model.load_state_dict(result.state_dict)
    start = time.perf_counter()
    scores = evaluate(model, test_set)
    return {"steps": steps, **scores, "best_epoch": result.metrics["best_epoch"],
            "epochs": epochs, "train_wall_s": round(seconds, 1),
            "eval_wall_s": round(time.perf_counter() - start, 1)}


def budgets(checkpoints: list[int], key: tuple[str, int, int], equal_pixels: int) -> list[int]:
    """The step budgets a config runs: those within ``equal_pixels`` baseline steps of
    training pixels (all of them when 0)."""
    if equal_pixels <= 0:
        return checkpoints
    limit = equal_pixels * 8 * 256 ** 2
    return [n for n in checkpoints if n * key[2] * key[1] ** 2 <= limit]


def cache_key(key: tuple[str, int, int], steps: int, epochs: int, seed: int,
              train_entries: list[dict[str, Any]], test_entries: list[dict[str, Any]]) -> str:
    """What decides a quality point: config, budget, schedule, seed and the split."""
    split = hashlib.sha256(json.dumps([[e["id"] for e in train_entries],
                                       [e["id"] for e in test_entries]]).encode()).hexdigest()
    encoder, tile, batch = key
    return f"{encoder}|tile {tile}|batch {batch}|steps {steps}|epochs {epochs}|seed {seed}|" \
           f"split {split[:12]}"


# --- seconds per step ------------------------------------------------------------------------


class StepTimer:
    """One config's training step, as ``train()`` takes it, ready to be timed."""

    def __init__(self, candidate: Candidate, train_set: list[Any], seed: int) -> None:
        import torch

        from label_assistant.model.factory import ModelSpec, create_model
        from label_assistant.model.losses import make_loss
        from label_assistant.model.tiles import TileSampler

        torch.manual_seed(seed)
        self.candidate = candidate
        self.rng = np.random.default_rng(seed)
        self.model = create_model(ModelSpec(encoder=candidate.encoder, in_channels=CHANNELS,
                                            classes=tuple(CLASSES)))
        if candidate.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.loss_fn = make_loss("ce+dice")
        self.sampler = TileSampler([e.image for e in train_set], [e.label_map for e in train_set],
                                   tile=candidate.tile, min_labeled_pixels=64,
                                   max_background_only_share=0.5, seed=seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.times: list[float] = []  # per block: mean seconds per step

    def step(self) -> None:
        import torch

        from label_assistant.model.tiles import augment_batch

        batch = augment_batch(self.sampler.sample_batch(self.candidate.batch), self.rng)
        x = torch.from_numpy(np.ascontiguousarray(batch.x))
        if self.candidate.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.ascontiguousarray(batch.y)).long()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()

    def block(self, steps: int, settle: int) -> float:
        """Mean seconds per step over ``steps`` steps, after ``settle`` untimed steps (the
        other configs' blocks ran in between: caches, allocator and thread pool re-warm)."""
        import torch

        if torch.get_num_threads() != self.candidate.threads:
            torch.set_num_threads(self.candidate.threads)
        for _ in range(settle):
            self.step()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps


def time_candidates(cands: list[Candidate], train_set: list[Any], warmup: int, steps: int,
                    repeats: int, settle: int, seed: int) -> dict[str, list[float]]:
    """Block means (s/step) of every candidate, ``repeats`` blocks each, interleaved."""
    import torch

    timers = [StepTimer(c, train_set, seed) for c in cands]
    for timer in timers:
        torch.set_num_threads(timer.candidate.threads)
        for _ in range(warmup):
            timer.step()
    for r in range(repeats):
        for timer in timers:
            timer.times.append(timer.block(steps, settle))
        print(f"timing round {r + 1}/{repeats}: "
              + ", ".join(f"{t.candidate.name} {t.times[-1]:.2f}s" for t in timers), flush=True)
    torch.set_num_threads(2)
    return {t.candidate.name: t.times for t in timers}


def timing_key(c: Candidate) -> str:
    return (f"{c.encoder}|tile {c.tile}|batch {c.batch}|threads {c.threads}|"
            f"channels_last {c.channels_last}")


def pool_timing(cands: list[Candidate], blocks: dict[str, list[float]], run: str,
                history_path: Path | None) -> dict[str, dict[str, Any]]:
    """s/step per candidate: the minimum block mean over this run's blocks and those of
    earlier runs kept in ``history_path`` (this run's are added to it); median and max show
    the noise."""
    history: dict[str, list[dict[str, Any]]] = {}
    if history_path is not None and history_path.is_file():
        history = json.loads(history_path.read_text())
    out = {}
    for c in cands:
        mine = blocks.get(c.name, [])
        kept = history.setdefault(timing_key(c), [])
        kept += [{"run": run, "s_per_step": round(v, 4)} for v in mine]
        values = [b["s_per_step"] for b in kept] if history_path is not None else mine
        if not values:
            continue
        out[c.name] = {"s_per_step": min(values), "s_per_step_median": statistics.median(values),
                       "s_per_step_max": max(values), "blocks": len(values),
                       "runs": len({b["run"] for b in kept}) if history_path else 1,
                       "this_run": [round(v, 3) for v in mine],
                       "this_run_min": min(mine) if mine else None}
    if history_path is not None and blocks:
        history_path.parent.mkdir(parents=True, exist_ok=True)
        history_path.write_text(json.dumps(history, indent=1) + "\n")
    return out


# --- report ----------------------------------------------------------------------------------


def summarize(cand: Candidate, timing: dict[str, Any], curve: list[dict[str, Any]],
              otsu: dict[str, Any], base_s: float | None) -> dict[str, Any]:
    s = timing["s_per_step"]
    row: dict[str, Any] = {"config": cand.name, **{k: v for k, v in asdict(cand).items()
                                                   if k != "name"},
                           "s_step": round(s, 3),
                           "s_step_this_run": timing.get("this_run_min") and
                           round(timing["this_run_min"], 3),
                           "blocks": timing.get("blocks"),
                           "s_step_median": round(timing["s_per_step_median"], 3),
                           "noise": round(timing["s_per_step_median"] / s, 2),
                           "speed_x": round(base_s / s, 2) if base_s else None}
    beat = None
    for point in curve:
        n = point["steps"]
        minutes = n * s / 60
        row[f"dice@{n}"] = point["mean_dice"]
        row[f"fg@{n}"] = point["fg_dice"]
        row[f"min@{n}"] = round(minutes, 2)
        row[f"dpm@{n}"] = None if point["mean_dice"] is None else point["mean_dice"] / minutes
        if beat is None and point["mean_dice"] is not None and \
                point["mean_dice"] > otsu["mean_dice"]:
            beat = round(minutes, 2)
    row["min_to_beat_otsu"] = beat
    if curve and cand.threads == 2 and not cand.channels_last:
        # Cross-check: the fastest train() run of the quality points (set-up included).
        row["s_step_train"] = round(min(p["train_wall_s"] / p["steps"] for p in curve), 3)
    row["timing"] = timing
    row["curve"] = curve
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="25,50,100,200",
                        help="optimizer-step budgets, one train() run each")
    parser.add_argument("--equal-pixels", type=int, default=100,
                        help="run the budgets whose training pixels stay within those of this "
                             "many baseline steps (batch 8, tile 256); 0: all budgets")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per train() run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per config")
    parser.add_argument("--time-steps", type=int, default=2, help="steps per timed block")
    parser.add_argument("--settle", type=int, default=1,
                        help="untimed steps before each timed block")
    parser.add_argument("--time-repeats", type=int, default=5, help="timed blocks per config")
    parser.add_argument("--small", default=SMALL, help="the small encoder of the comparison")
    parser.add_argument("--configs", default=None,
                        help="comma-separated config names to run (default: all)")
    parser.add_argument("--only", choices=["all", "timing", "quality"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=RESULTS / "bench_train_speed_cache.json",
                        help="quality points kept between runs (they are deterministic); "
                             "delete it when the training code changes")
    parser.add_argument("--timing-history", type=Path,
                        default=RESULTS / "bench_train_speed_timing.json",
                        help="timed blocks of earlier runs: s/step is the minimum over all")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every quality point and use this run's timing only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 configs, 2+2 small images, few steps (< 1 min)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    data = shared_data(DATASET)
    if data is None:
        print(f"skipped: ../shared/data/{DATASET} not found")
        return 0
    manifest = json.loads((data / "manifest.json").read_text())
    train_entries, test_entries = split_ids(manifest)
    cands = candidates(args.small)
    if args.quick:
        small_first = sorted(train_entries, key=lambda e: (e["height"] * e["width"], e["id"]))
        train_entries = small_first[:2]
        test_entries = sorted(test_entries, key=lambda e: (e["height"] * e["width"], e["id"]))[:2]
        cands = [replace(c, tile=128, batch=2) for c in cands[:4:3]]  # baseline, small
        args.checkpoints, args.epochs, args.equal_pixels = "2,4", 2, 0
        args.warmup, args.time_steps, args.time_repeats = 1, 2, 1
    if args.configs:
        wanted = {n.strip() for n in args.configs.split(",")}
        cands = [c for c in cands if c.name in wanted]
    checkpoints = [int(s) for s in args.checkpoints.split(",")]
    started = time.perf_counter()
    load_start = os.getloadavg()

    raw_test = load(data, test_entries)
    train_set, test_set = colour(load(data, train_entries)), colour(raw_test)
    print(f"{len(train_set)} training images, {len(test_set)} test images "
          f"({sum(e.label_map.size for e in test_set) / 1e6:.1f} Mpx)", flush=True)
    otsu = otsu_scores(raw_test)
    print(f"Otsu: mean Dice (all classes) {otsu['mean_dice']:.4f}, "
          f"Nucleus Dice {otsu['fg_dice']:.4f}", flush=True)

    blocks: dict[str, list[float]] = {}
    if args.only in ("all", "timing"):
        blocks = time_candidates(cands, train_set, args.warmup, args.time_steps,
                                 args.time_repeats, args.settle, args.seed)
    history = None if args.quick or args.no_cache else args.timing_history
    timing = pool_timing(cands, blocks, time.strftime("%Y-%m-%dT%H:%M:%S"), history)
    curves: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    cache_path = None if args.quick or args.no_cache else args.cache
    cache: dict[str, dict[str, Any]] = {}
    if cache_path is not None and cache_path.is_file():
        cache = json.loads(cache_path.read_text())
    if args.only in ("all", "quality"):
        for key in dict.fromkeys(c.quality_key for c in cands):
            curves[key] = []
            within = budgets(checkpoints, key, args.equal_pixels)
            for steps in checkpoints:
                tag = cache_key(key, steps, args.epochs, args.seed, train_entries, test_entries)
                point = cache.get(tag)
                if steps not in within and point is None:
                    continue  # beyond the equal-pixels budget (shown when cached)
                if point is None:
                    point = quality_run(key, steps, args.epochs, train_set, test_set,
                                        args.seed)
                    cache[tag] = point
                    if cache_path is not None:
                        cache_path.parent.mkdir(parents=True, exist_ok=True)
                        cache_path.write_text(json.dumps(cache, indent=1) + "\n")
                else:
                    point = {**point, "cached": True}
                curves[key].append(point)
                print(f"quality {key} {point}", flush=True)
    torch.set_num_threads(2)

    base_s = timing.get("baseline", {}).get("s_per_step")
    nan_timing = {"s_per_step": float("nan"), "s_per_step_median": float("nan")}
    rows = [summarize(c, timing.get(c.name, nan_timing), curves.get(c.quality_key, []), otsu,
                      base_s) for c in cands]
    extra = {"settings": vars(args) | {"out": str(args.out)},
             "split": {"train": [e["id"] for e in train_entries],
                       "test": [e["id"] for e in test_entries]},
             "otsu": otsu, "load_average": {"start": load_start, "end": os.getloadavg()},
             "total_minutes": round((time.perf_counter() - started) / 60, 1)}
    name = "bench_train_speed_quick" if args.quick and args.out is None else "bench_train_speed"
    path = write_results(name, rows, extra, args.out)
    print(f"\nOtsu: mean Dice (all classes) {otsu['mean_dice']:.4f}, "
          f"Nucleus Dice {otsu['fg_dice']:.4f}")
    print("\nSpeed (s/step = min block mean over all runs' blocks, this run's min beside it; "
          "noise = median/min) and test mean Dice (all classes) after N steps")
    print_table(rows, ["config", "s_step", "s_step_this_run", "s_step_median", "noise",
                       "blocks", "s_step_train", "speed_x",
                       *[f"dice@{n}" for n in checkpoints], "min_to_beat_otsu"])
    print("\nNucleus Dice, and mean Dice (all classes) per minute of training")
    print_table(rows, ["config", *[f"fg@{n}" for n in checkpoints],
                       *[f"dpm@{n}" for n in checkpoints]])
    print(f"\nresults: {path} ({extra['total_minutes']} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

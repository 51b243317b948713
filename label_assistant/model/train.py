"""Masked training of a segmentation model on partial label maps.

Unlabeled pixels (255) carry no loss; validation uses annotated images held out from
training and counts labeled pixels only. ``train`` is pure computation (examples in, weights
and metrics out); publishing a version is :func:`train_and_publish`, and running it in a
separate process with readable progress is :mod:`label_assistant.model.job`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from label_assistant.datasets import Example
from label_assistant.labelmap import labeled_pixel_counts
from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion
from label_assistant.model.config import TrainConfig, TrainingError
from label_assistant.model.inference import default_device
from label_assistant.model.predictor import Predictor, Tiling

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Weights of the best epoch, with what produced them."""

    state_dict: dict[str, torch.Tensor]
    spec: dict[str, Any]
    metrics: dict[str, Any]
    curve: list[dict[str, Any]]
    manifest: dict[str, Any]
    config: dict[str, Any]
    seconds: float = 0.0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def split_examples(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out ``val_fraction`` of the annotated images (at least one training image).

    With fewer than 3 images nothing is held out: early stopping then follows the training loss.
    """
    n_val = int(round(len(examples) * val_fraction)) if len(examples) >= 3 else 0
    n_val = min(n_val, len(examples) - 1)
    order = np.random.default_rng(seed).permutation(len(examples))
    val = [examples[i] for i in sorted(order[:n_val])]
    train = [examples[i] for i in sorted(order[n_val:])]
    return train, val


def evaluate(predictor: Predictor, examples: list[Example], n_classes: int) -> dict[str, Any]:
    """Per-class Dice and IoU over the labeled pixels of ``examples`` (pooled confusion),
    predicted by ``predictor`` exactly as ``/predict`` predicts (one path:
    :meth:`~label_assistant.model.predictor.Predictor.label_map`)."""
    cm = np.zeros((n_classes + 1, n_classes + 1), np.int64)
    for example in examples:
        prediction = predictor.label_map(example.image)[0]
        cm += confusion_matrix(example.label_map, prediction, n_classes)
    dice, iou = dice_iou_from_confusion(cm)
    fg = dice[1:]
    return {
        "dice": [None if np.isnan(d) else float(d) for d in dice],
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "mean_dice": float(np.nanmean(fg)) if np.isfinite(fg).any() else None,
        "labeled_pixels": int(cm.sum()),
    }


def manifest_of(examples: list[Example], n_classes: int, split: str) -> list[dict[str, Any]]:
    """Which images trained or validated the model, with content hashes and labeled pixels."""
    return [
        {
            "name": e.name,
            "hash": e.content_hash,
            "split": split,
            "labeled_pixels": labeled_pixel_counts(e.label_map, n_classes).tolist(),
        }
        for e in examples
    ]


def train(
    examples: list[Example],
    class_names: list[str],
    config: TrainConfig | None = None,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a model on ``examples``; ``class_names`` = background first, then the K classes.

    ``on_epoch`` receives each epoch's log entry (progress reporting); ``should_stop`` lets a
    caller end training early (the best weights so far are returned).
    """
    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.model.losses import class_weights_from_counts, make_loss, unet_weight_map
    from label_assistant.model.tiles import TileSampler, augment

    config = config or TrainConfig()
    started = time.perf_counter()
    n_classes = len(class_names) - 1
    if not examples:
        raise TrainingError("no annotated images to train on")
    channels = {e.image.shape[0] for e in examples}
    if len(channels) != 1:
        raise TrainingError(f"images have different channel counts: {sorted(channels)}")
    train_set, val_set = split_examples(examples, config.val_fraction, config.seed)
    counts = sum(labeled_pixel_counts(e.label_map, n_classes) for e in train_set)
    if counts.sum() == 0:
        raise TrainingError("the training images hold no labeled pixel")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device) if config.device else default_device()
    spec = ModelSpec(
        arch=config.arch,
        encoder=config.encoder,
        in_channels=channels.pop(),
        classes=tuple(class_names),
        dropout=config.dropout,
    )
    model = create_model(spec).to(device)
    # Validation runs the model in training as a version would be run (same tiling).
    validator = Predictor(model, version="training", class_names=list(class_names),
                          tiling=Tiling(config.inference_tile, config.inference_overlap),
                          device=device)
    weights = None
    if config.class_weights == "auto":
        weights = torch.as_tensor(class_weights_from_counts(counts), dtype=torch.float32)
    loss_fn = make_loss(config.loss, class_weights=weights).to(device)
    pixel_weights = None
    if config.separate_contours:
        pixel_weights = [
            unet_weight_map(e.instances if e.instances is not None else e.label_map,
                            w0=config.w0, sigma=config.sigma)
            for e in train_set
        ]
    sampler = TileSampler(
        [e.image for e in train_set],
        [e.label_map for e in train_set],
        tile=config.tile,
        min_labeled_pixels=config.min_labeled_pixels,
        max_background_only_share=config.max_background_only_share,
        seed=config.seed,
        pixel_weights=pixel_weights,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))

    curve: list[dict[str, Any]] = []
    best_score, best_state, best_epoch, stale = -np.inf, None, 0, 0
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        losses = []
        for _ in range(config.steps_per_epoch):
            batch = sampler.sample(config.batch_size)
            x, y = batch[0], batch[1]
            w = batch[2] if len(batch) > 2 else None
            if config.augment:
                x, y, w = augment(x, y, rng, weights=w)
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            yt = torch.from_numpy(np.ascontiguousarray(y)).long().to(device)
            wt = None if w is None else torch.from_numpy(np.ascontiguousarray(w)).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt), yt, pixel_weights=wt) if wt is not None else loss_fn(
                model(xt), yt
            )
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "lr": float(scheduler.get_last_lr()[0]),
        }
        if val_set:
            val = evaluate(validator, val_set, n_classes)
            entry.update(val_dice=val["dice"], val_iou=val["iou"], val_mean_dice=val["mean_dice"])
            score = val["mean_dice"] if val["mean_dice"] is not None else -entry["train_loss"]
        else:
            score = -entry["train_loss"]
        entry["seconds"] = round(time.perf_counter() - epoch_start, 3)
        curve.append(entry)
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
        log.info(
            "epoch %d/%d loss %.4f%s", epoch, config.epochs, entry["train_loss"],
            f" val dice {entry['val_mean_dice']:.4f}" if entry.get("val_mean_dice") is not None
            else "",
        )
        if on_epoch is not None:
            on_epoch(entry)
        if stale >= config.patience:
            stopped_early = True
            break
        if should_stop is not None and should_stop():
            stopped_early = True
            break

    assert best_state is not None  # at least one epoch ran
    best = curve[best_epoch - 1]
    metrics = {
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "train_loss": best["train_loss"],
        "val_dice": best.get("val_dice"),
        "val_iou": best.get("val_iou"),
        "val_mean_dice": best.get("val_mean_dice"),
        "train_images": len(train_set),
        "val_images": len(val_set),
        "labeled_pixels": counts.tolist(),
    }
    manifest = {
        "images": manifest_of(train_set, n_classes, "train")
        + manifest_of(val_set, n_classes, "val"),
    }
    return TrainResult(
        state_dict=best_state,
        spec=spec.to_dict(),
        metrics=metrics,
        curve=curve,
        manifest=manifest,
        config=config.to_dict(),
        seconds=time.perf_counter() - started,
        stopped_early=stopped_early,
    )

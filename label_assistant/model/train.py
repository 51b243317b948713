"""Masked training of a segmentation model on partial label maps.

Unlabeled pixels (255) carry no loss; validation uses annotations held out from training
(:func:`split_examples`: a fixed share by a stable hash of each example's name, and an image
of every kind, see :func:`label_assistant.model.promotion.validation_keys`) and counts
labeled pixels only. The best epoch is the one with the best **mean Dice over all classes,
Background included** on them, the score that also decides promotion.

Optional, per call: ``init_state`` warm-starts from a version's weights (fine-tuning the
champion); ``weak`` gives, per example, the champion's dense pre-label, which supervises the
pixels the annotator left unlabeled at ``config.weak_weight`` (ramped up over the first
epochs; the annotator's labels always win); images are given the project's channel count
(:func:`channel_policy`). ``train`` is pure computation (examples in, weights
and metrics out); publishing a version is :func:`train_and_publish`, and running it in a
separate process with readable progress is :mod:`label_assistant.model.job`.

In a distributed run (``config.nproc`` > 1, :mod:`label_assistant.model.distributed`) every
rank calls ``train`` with the same inputs: each trains on its part of every tile batch
(DistributedDataParallel), rank 0 alone validates, and its epoch entries and stop decisions
are broadcast, so every rank returns the same curve and best epoch.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from label_assistant.datasets import Example
from label_assistant.images import match_channels
from label_assistant.labelmap import UNLABELED, labeled_pixel_counts
from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion
from label_assistant.model import distributed
from label_assistant.model.config import TrainConfig, TrainingError
from label_assistant.model.domain import Domain
from label_assistant.model.predictor import Predictor, Tiling
from label_assistant.model.promotion import Scores

log = logging.getLogger(__name__)

#: Share of all training steps over which the weak supervision's weight ramps up from 0.
WEAK_RAMP = 0.3


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
    #: The examples held out for validation (the champion is scored on them too).
    validation: list[Example] = field(default_factory=list)
    #: The kept epoch's label maps of ``validation`` (:func:`labeled_label_maps`), so that
    #: the challenge does not run the candidate on them again; None where this process did
    #: not validate (another rank of a distributed run, no validation images).
    validation_maps: list[np.ndarray] | None = None
    #: The images it knows (:class:`~label_assistant.model.domain.Domain`, as a dict).
    domain: dict[str, Any] | None = None


def split_examples(examples: list[Example], share: float
                   ) -> tuple[list[Example], list[Example]]:
    """``(training, validation)``: the examples whose names
    :func:`~label_assistant.model.promotion.validation_keys` holds out: a stable share, and
    an image of every kind (by the descriptors of the images as the model takes them)."""
    from label_assistant.model.promotion import validation_keys
    from label_assistant.selectors.diversity import image_descriptor

    descriptors = None
    if share > 0 and len(examples) >= 3 and len({e.image.shape[0] for e in examples}) == 1:
        descriptors = np.stack([image_descriptor(e.image) for e in examples])
    held = validation_keys([e.name for e in examples], share, descriptors)
    return ([e for e in examples if e.name not in held], [e for e in examples if e.name in held])


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU (the best epoch's, kept)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def channel_policy(examples: list[Example]) -> int:
    """The channel count a project's model takes: 3 (colour) when any image has three or
    more channels, else 1 (grey). Grey images are then repeated to colour, and colour is
    averaged to grey only for a grey model (:func:`label_assistant.images.match_channels`)."""
    return 3 if any(e.image.shape[0] >= 3 for e in examples) else 1


def evaluate(predictor: Predictor, examples: list[Example], n_classes: int, *,
             fallback: bool = True) -> dict[str, Any]:
    """Per-class Dice and IoU over the labeled pixels of ``examples`` (pooled confusion, and
    each example's foreground Dice in ``image_dice``), predicted by ``predictor`` exactly as
    ``/predict`` predicts (see :func:`image_confusions`)."""
    return scores_of_confusions(image_confusions(predictor, examples, n_classes,
                                                 fallback=fallback))


def image_confusions(predictor: Predictor, examples: list[Example], n_classes: int, *,
                     fallback: bool = True) -> list[np.ndarray]:
    """The confusion matrix of each example's labeled pixels, predicted as ``/predict``
    predicts (see :func:`labeled_label_maps`)."""
    return confusions_of(examples, labeled_label_maps(predictor, examples, fallback=fallback),
                         n_classes)


def labeled_label_maps(predictor: Predictor, examples: list[Example], *,
                       fallback: bool = True) -> list[np.ndarray]:
    """Each example's label map as ``/predict`` predicts it (one path:
    :meth:`~label_assistant.model.predictor.Predictor.label_map`; ``fallback`` False: a
    model's own answer also on images it would leave to its fallback), exact on the labeled
    pixels (elsewhere 0 where no tile ran)."""
    options = {} if fallback else {"fallback": False}
    maps = []
    for example in examples:
        # Only the tiles over labeled pixels run (the same predictions there). It pays only
        # where the labels sit in a part of a large image: with the simulator's oracles on the
        # DSB images of 512 px and more, 98-100% of the 512-px tiles still run
        # (benchmarks/bench_validation_tiles.py).
        labeled = example.label_map != UNLABELED
        maps.append(predictor.label_map(example.image, where=None if labeled.all() else labeled,
                                        **options)[0])
    return maps


def confusions_of(examples: list[Example], label_maps: list[np.ndarray], n_classes: int
                  ) -> list[np.ndarray]:
    """The confusion matrix of each example's labeled pixels against a predicted label map."""
    return [confusion_matrix(e.label_map, m, n_classes)
            for e, m in zip(examples, label_maps, strict=True)]


def scores_of_confusions(confusions: list[np.ndarray]) -> dict[str, Any]:
    """The scores of :func:`evaluate` from per-example confusion matrices."""
    cm = np.sum(confusions, axis=0).astype(np.int64)
    per_image: list[float | None] = []
    for image_cm in confusions:
        image_fg = dice_iou_from_confusion(image_cm)[0][1:]
        per_image.append(float(np.nanmean(image_fg)) if np.isfinite(image_fg).any() else None)
    dice, iou = dice_iou_from_confusion(cm)
    fg = dice[1:]
    scores = Scores.of_confusion(cm)
    return {
        "dice": [None if np.isnan(d) else float(d) for d in dice],
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "mean_dice": float(np.nanmean(fg)) if np.isfinite(fg).any() else None,
        "mean_dice_all": scores.mean_dice,
        "pixel_accuracy": scores.pixel_accuracy,
        "labeled_pixels": int(cm.sum()),
        "image_dice": per_image,  # foreground Dice of each example (None: no foreground)
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
    init_state: dict[str, torch.Tensor] | None = None,
    init_version: str | None = None,
    weak: list[np.ndarray] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a model on ``examples``; ``class_names`` = background first, then the K classes.

    ``init_state`` (``init_version`` names it) starts from a version's weights;
    ``weak`` holds one dense label map per example (the champion's pre-label, 255 where it
    is unsure) for the pixels the annotator left unlabeled. ``on_epoch`` receives each
    epoch's log entry (progress reporting); ``should_stop`` lets a caller end training early
    (the best weights so far are returned).
    """
    from label_assistant.model.factory import ModelSpec, create_model
    from label_assistant.model.losses import (
        class_weights_from_counts,
        make_loss,
        masked_cross_entropy,
        unet_weight_map,
    )
    from label_assistant.model.tiles import TileSampler, augment_batch

    config = config or TrainConfig()
    started = time.perf_counter()
    ranks = distributed.place()
    distributed.check_split(replace(config, nproc=ranks.world))
    n_classes = len(class_names) - 1
    if not examples:
        raise TrainingError("no annotated images to train on")
    if weak is not None and len(weak) != len(examples):
        raise TrainingError(f"{len(weak)} weak label maps for {len(examples)} examples")
    channels = channel_policy(examples)
    weak_by_name = {e.name: w for e, w in zip(examples, weak, strict=True)} if weak else {}
    examples = [e if e.image.shape[0] == channels else
                replace(e, image=match_channels(e.image, channels)) for e in examples]
    train_set, val_set = split_examples(examples, config.val_fraction)
    counts = sum(labeled_pixel_counts(e.label_map, n_classes) for e in train_set)
    if counts.sum() == 0:
        raise TrainingError("the training images hold no labeled pixel")
    if config.val_every < 1:
        raise TrainingError(f"val_every must be 1 or more, got {config.val_every}")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = distributed.train_device(config.device)
    spec = ModelSpec(arch=config.arch, encoder=config.encoder, in_channels=channels,
                     classes=tuple(class_names), dropout=config.dropout)
    model = create_model(spec)
    if init_state is not None:
        model.load_state_dict(init_state)
    # channels_last: 1.6x faster training steps on this 2-core CPU, same weights per step
    # (benchmarks/bench_train_speed.py).
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory)
    trainer = distributed.wrap(model, device)  # the model itself in one process
    model = distributed.unwrapped(trainer)  # the weights a version saves, for validation
    if ranks.world > 1:  # dropout differs between ranks; tiles and augmentation don't
        torch.manual_seed(config.seed + ranks.rank)
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
    use_weak = bool(weak_by_name) and config.weak_weight > 0
    sampler = TileSampler(
        [e.image for e in train_set],
        [e.label_map for e in train_set],
        tile=config.tile,
        min_labeled_pixels=config.min_labeled_pixels,
        max_background_only_share=config.max_background_only_share,
        seed=config.seed,
        pixel_weights=pixel_weights,
        weak_labels=[weak_by_name[e.name] for e in train_set] if use_weak else None,
        balance=config.tile_sampling,
    )
    lr = config.warm_lr if init_state is not None and config.warm_lr else config.lr
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    total_steps = max(1, config.epochs * config.steps_per_epoch)
    ramp_steps = max(1, round(WEAK_RAMP * total_steps))

    curve: list[dict[str, Any]] = []
    best_score, best_state, best_epoch, stale = -np.inf, None, 0, 0
    best_maps: list[np.ndarray] | None = None
    stop_reason = f"ran all {config.epochs} epochs"
    step = 0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        trainer.train()
        losses = []
        for _ in range(config.steps_per_epoch):
            batch = sampler.sample_batch(config.batch_size)
            if config.augment:
                batch = augment_batch(batch, rng)
            batch = batch.shard(ranks.rank, ranks.world)  # this rank's tiles of the batch
            x, y, w, wk = batch.x, batch.y, batch.weights, batch.weak
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(device, memory_format=memory)
            yt = torch.from_numpy(np.ascontiguousarray(y)).long().to(device)
            wt = None if w is None else torch.from_numpy(np.ascontiguousarray(w)).to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = trainer(xt)
            loss = loss_fn(logits, yt, pixel_weights=wt) if wt is not None else \
                loss_fn(logits, yt)
            if wk is not None:
                # The champion's labels where the annotator left pixels unlabeled only.
                target = np.where(y == UNLABELED, wk, UNLABELED)
                wkt = torch.from_numpy(np.ascontiguousarray(target)).long().to(device)
                factor = config.weak_weight * min(1.0, (step + 1) / ramp_steps)
                loss = loss + factor * masked_cross_entropy(logits, wkt)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        scheduler.step()
        entry: dict[str, Any] = {
            "epoch": epoch,
            "epochs": config.epochs,
            "train_loss": distributed.mean_over_ranks(float(np.mean(losses)), device),
            "lr": float(scheduler.get_last_lr()[0]),
        }
        asked = False
        maps: list[np.ndarray] | None = None  # this epoch's validation label maps
        validates = bool(val_set) and (epoch % config.val_every == 0 or epoch == config.epochs)
        if ranks.is_main:  # only rank 0 validates, and says whether to stop
            if validates:
                maps = labeled_label_maps(validator, val_set)
                val = scores_of_confusions(confusions_of(val_set, maps, n_classes))
                entry.update(val_dice=val["dice"], val_iou=val["iou"],
                             val_mean_dice=val["mean_dice"],
                             val_mean_dice_all=val["mean_dice_all"],
                             val_pixel_accuracy=val["pixel_accuracy"])
            entry["seconds"] = round(time.perf_counter() - epoch_start, 3)
            asked = should_stop is not None and should_stop()
        entry, asked = distributed.from_main((entry, asked))
        score = -entry["train_loss"]
        if entry.get("val_mean_dice_all") is not None:
            score = entry["val_mean_dice_all"]
        curve.append(entry)
        if val_set and not validates:
            pass  # not a candidate for the best epoch: no validation score to compare
        elif score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = _weights(model)
            best_maps = maps
        else:
            stale += 1
        if ranks.is_main:
            log.info("epoch %d/%d loss %.4f%s", epoch, config.epochs, entry["train_loss"],
                     f" val mean Dice (all classes) {entry['val_mean_dice_all']:.4f}"
                     if entry.get("val_mean_dice_all") is not None else "")
            if on_epoch is not None:
                on_epoch(entry)
        if stale >= config.patience:
            every = "" if config.val_every == 1 else " validated"
            stop_reason = f"no better score for {config.patience}{every} epochs (patience)"
            break
        if asked:
            stop_reason = "asked to stop"
            if best_state is None:  # stopped before the first validation: the last epoch
                best_epoch, best_state = epoch, _weights(model)
            break

    assert best_state is not None  # at least one epoch ran
    best = curve[best_epoch - 1]
    kept = (f"kept epoch {best_epoch} of {len(curve)}: "
            + ("best validation mean Dice (all classes)" if val_set and
               best.get("val_mean_dice_all") is not None else "lowest training loss "
               "(no validation annotations)") + f"; stopped: {stop_reason}")
    if ranks.is_main:
        log.info("%s", kept)
    metrics = {
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "stop_reason": stop_reason,
        "kept": kept,
        "init": init_version or "scratch",
        "weak_supervision": config.weak_weight if use_weak else 0.0,
        "channels": channels,
        "train_loss": best["train_loss"],
        "val_dice": best.get("val_dice"),
        "val_iou": best.get("val_iou"),
        "val_mean_dice": best.get("val_mean_dice"),
        "val_mean_dice_all": best.get("val_mean_dice_all"),
        "val_pixel_accuracy": best.get("val_pixel_accuracy"),
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
        stopped_early=len(curve) < config.epochs,
        validation=val_set,
        validation_maps=best_maps,
        domain=Domain.of_inputs(e.image for e in train_set + val_set).to_dict(),
    )

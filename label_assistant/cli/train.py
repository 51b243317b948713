"""``label-assistant train``: one training round on image/label files; registers a version."""

from __future__ import annotations

import argparse
import sys

from label_assistant.cli.common import (
    CliError,
    add_device,
    add_json,
    add_mask_type,
    add_training_options,
    add_workdir,
    image_files,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on images and label maps; registers a new version",
        description="Train a segmentation model (segmentation-models-pytorch) with a masked "
        "loss on IMAGES and LABELS (paired by file name) and register it as a new version in "
        "WORKDIR/models. Labels are label maps (0 = background, 1..K = classes, 255 = "
        "unlabeled, ignored in training) unless --mask-type says otherwise.",
    )
    p.add_argument("images", help="folder of images (PNG, JPEG, TIFF)")
    p.add_argument("labels", help="folder of label maps / masks, same file names")
    add_workdir(p, required=True, help="work directory holding the model versions")
    add_mask_type(p, "labelmap")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names, without Background (default: Class1..K)")
    add_training_options(
        p, ("loss", str, "loss: ce, focal, dice or a sum like 0.5*ce+0.5*dice"),
        ("val_fraction", float, "share of images held out for validation"),
        ("patience", int, "early stopping patience in epochs"), ("seed", int, "random seed"))
    p.add_argument("--class-weights", choices=["auto"], default=None,
                   help="auto: weight classes by inverse labeled-pixel frequency")
    p.add_argument("--separate-contours", action="store_true",
                   help="raise the weight of background between close objects (U-Net paper)")
    add_device(p)
    add_json(p, "the new version's record")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.cli.common import progress
    from label_assistant.datasets import DatasetError, load_example, pair_files
    from label_assistant.images import ImageError
    from label_assistant.model.train import TrainConfig, TrainingError, train
    from label_assistant.workspace import Workspace

    try:
        pairs_paths = pair_files(image_files(args.images), image_files(args.labels, "label folder"))
        examples = [
            load_example(i, lb, args.mask_type, args.invert)
            for i, lb in progress(pairs_paths, "loading", total=len(pairs_paths))
        ]
    except (DatasetError, ImageError) as error:
        raise CliError(str(error)) from None
    k = max(int(e.label_map[e.label_map != 255].max(initial=0)) for e in examples)
    if args.classes:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
        if len(names) < k:
            raise CliError(f"labels hold classes up to {k} but --classes names {len(names)}")
    else:
        names = [f"Class{i}" for i in range(1, max(k, 1) + 1)]
    class_names = ["Background", *names]
    try:
        config = TrainConfig(
            arch=args.arch, encoder=args.encoder, epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, tile=args.tile,
            lr=args.lr, loss=args.loss, class_weights=args.class_weights,
            separate_contours=args.separate_contours, val_fraction=args.val_fraction,
            patience=args.patience, seed=args.seed, device=args.device,
        )
        bar = progress(range(config.epochs), "training", total=config.epochs)

        def on_epoch(entry: dict) -> None:
            next(bar, None)
            if not sys.stderr.isatty():
                return
            dice = entry.get("val_mean_dice")
            print(f"  epoch {entry['epoch']}: loss {entry['train_loss']:.4f}"
                  + (f", val dice {dice:.3f}" if dice is not None else ""), file=sys.stderr)

        result = train(examples, class_names, config, on_epoch=on_epoch)
    except (TrainingError, ValueError) as error:
        raise CliError(str(error)) from None
    registry = Workspace(args.workdir).registry(args.project)
    current = registry.current()
    info = registry.publish(
        result.state_dict,
        spec=result.spec,
        class_names=class_names,
        label_config_hash=None,
        manifest=result.manifest,
        metrics={**result.metrics, "train_seconds": round(result.seconds, 2)},
        curve=result.curve,
        config=result.config,
        parent=current.id if current else None,
    )
    dice = result.metrics.get("val_mean_dice")
    print(f"registered {info.id} in {registry.root} "
          f"({len(examples)} images, {result.metrics['epochs_run']} epochs, "
          f"{result.seconds:.0f} s" + (f", validation Dice {dice:.3f}" if dice is not None else "")
          + ")")
    if args.json:
        write_json(info.to_dict() if hasattr(info, "to_dict") else vars(info), args.json)
    return 0

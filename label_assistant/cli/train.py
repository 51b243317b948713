"""``label-assistant train``: one training round on image/label files; registers a version."""

from __future__ import annotations

import argparse
import sys

from label_assistant.cli.common import CliError, image_files, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    from label_assistant.datasets import MASK_TYPES
    from label_assistant.model.config import TrainConfig

    d = TrainConfig()
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
    p.add_argument("--workdir", required=True, help="work directory holding the model versions")
    p.add_argument("--project", default=None, help="Label Studio project id (backend work dir)")
    p.add_argument("--mask-type", choices=MASK_TYPES, default="labelmap",
                   help="labelmap (default; 255 = unlabeled), binary (non-zero = class 1), "
                   "semantic (values = classes), instance (objects -> class 1, separated)")
    p.add_argument("--invert", action="store_true",
                   help="binary masks: zero pixels are the class (e.g. ISBI membranes)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names, without Background (default: Class1..K)")
    p.add_argument("--arch", default=d.arch, help=f"smp architecture (default {d.arch})")
    p.add_argument("--encoder", default=d.encoder, help=f"smp encoder (default {d.encoder})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help=f"batches per epoch (default {d.steps_per_epoch})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--tile", type=int, default=d.tile,
                   help=f"training tile size (default {d.tile})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--loss", default=d.loss,
                   help=f"loss: ce, focal, dice or a sum like 0.5*ce+0.5*dice (default {d.loss})")
    p.add_argument("--class-weights", choices=["auto"], default=None,
                   help="auto: weight classes by inverse labeled-pixel frequency")
    p.add_argument("--separate-contours", action="store_true",
                   help="raise the weight of background between close objects (U-Net paper)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"share of images held out for validation (default {d.val_fraction})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"early stopping patience in epochs (default {d.patience})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the new version's record as JSON (to FILE or stdout)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from label_assistant.cli.common import progress
    from label_assistant.datasets import DatasetError, load_example, pair_files
    from label_assistant.images import ImageError
    from label_assistant.model.registry import ModelRegistry
    from label_assistant.model.train import TrainConfig, TrainingError, train
    from label_assistant.workdir import models_dir

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
    registry = ModelRegistry(models_dir(args.workdir, args.project))
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

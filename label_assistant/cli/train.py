"""``label-assistant train``: one training round on image/label files; registers a candidate
version, which serves only if it beats the serving one (Otsu included) on the validation
pixels of the given label maps (:mod:`label_assistant.model.round`). With ``--nproc N`` the
round runs as a job on N processes (DistributedDataParallel through torchrun,
:mod:`label_assistant.model.distributed`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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
        help="train a model on images and label maps; registers a candidate version",
        description="Train a segmentation model (segmentation-models-pytorch) with a masked "
        "loss on IMAGES and LABELS (paired by file name) and register it as a new version in "
        "WORKDIR/models. It serves (becomes current) only if it beats what serves now, Otsu "
        "before any model, by mean Dice over all classes on the labeled pixels of the "
        "validation images (a fixed share, --val-fraction, chosen by a stable hash of the "
        "file names); otherwise it is kept, and 'rounds --promote V' can force it. Labels "
        "are label maps (0 = background, 1..K = classes, 255 = unlabeled, ignored in "
        "training) unless --mask-type says otherwise. --nproc N trains on N processes of "
        "this machine with DistributedDataParallel, started by torchrun: one per GPU (nccl) "
        "when there are N GPUs, else CPU processes (gloo); --batch-size stays the total "
        "batch (each process trains on batch-size / N tiles of it) and rank 0 alone "
        "validates and registers the version; the run's request, status and logs are kept "
        "in WORKDIR/jobs.",
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
        ("patience", int, "early stopping patience in epochs"), ("seed", int, "random seed"),
        ("val_every", int, "validate every N epochs and after the last (validation on whole "
         "large images can cost more than an epoch)"),
        ("nproc", int, "training processes (DistributedDataParallel through torchrun): one "
         "per GPU, or CPU processes without enough GPUs; must divide --batch-size"))
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
    from label_assistant.model.distributed import check_split
    from label_assistant.model.job import publish_round
    from label_assistant.model.predictor import serving
    from label_assistant.model.round import train_round
    from label_assistant.model.train import TrainConfig, TrainingError
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
            lr=args.lr, tile_sampling=args.tile_sampling, loss=args.loss,
            class_weights=args.class_weights,
            separate_contours=args.separate_contours, val_fraction=args.val_fraction,
            patience=args.patience, seed=args.seed, device=args.device, nproc=args.nproc,
            val_every=args.val_every,
        )
        check_split(config)
        registry = Workspace(args.workdir).registry(args.project)
        if config.nproc > 1:
            info = _train_on_processes(args, pairs_paths, examples, class_names, config)
            return _report(info, registry, len(examples), args.json)
        bar = progress(range(config.epochs), "training", total=config.epochs)

        def on_epoch(entry: dict) -> None:
            next(bar, None)
            if not sys.stderr.isatty():
                return
            dice = entry.get("val_mean_dice_all")
            print(f"  epoch {entry['epoch']}/{entry['epochs']}: loss {entry['train_loss']:.4f}"
                  + (f", validation mean Dice (all classes) {dice:.3f}" if dice is not None
                     else ""), file=sys.stderr)

        champion = serving(registry, class_names, device=args.device)
        trained = train_round(examples, class_names, config, champion, on_epoch=on_epoch)
    except (TrainingError, ValueError) as error:
        raise CliError(str(error)) from None
    info = publish_round(registry, trained, class_names)
    return _report(info, registry, len(examples), args.json)


def _train_on_processes(args: argparse.Namespace, pairs: list, examples: list,
                        class_names: list[str], config: Any) -> Any:
    """The round as a job on ``config.nproc`` processes (:func:`label_assistant.model.job.run`
    launches them); the version rank 0 registered."""
    from label_assistant.model.job import TrainingRequest, write_request
    from label_assistant.model.job import run as run_job
    from label_assistant.workspace import Workspace

    workspace = Workspace(args.workdir)
    job_dir = workspace.command_job_dir(args.project)
    request = TrainingRequest(
        images=[str(i.resolve()) for i, _ in pairs], labels=[str(lb.resolve()) for _, lb in pairs],
        keys=[e.name for e in examples], class_names=class_names,
        registry=str(workspace.registry(args.project).root.resolve()), config=config.to_dict(),
        mask_type=args.mask_type, invert=args.invert)
    write_request(job_dir, request.to_dict())
    print(f"training on {config.nproc} processes (torchrun; job folder {job_dir})",
          file=sys.stderr)
    status = run_job(job_dir)
    if status.state != "done" or status.version is None:
        raise CliError(f"training on {config.nproc} processes failed: {status.error}")
    return workspace.registry(args.project).get(status.version)


def _report(info: Any, registry: Any, images: int, json_to: str | None) -> int:
    """Say what was registered and whether it serves (from its record)."""
    metrics, verdict = info.metrics, info.promotion
    dice = metrics.get("val_mean_dice_all")
    print(f"registered {info.id} in {registry.root} "
          f"({images} images, {metrics['epochs_run']} epochs from "
          f"{metrics['init']}, {metrics.get('train_seconds', 0):.0f} s"
          + (f", validation mean Dice (all classes) {dice:.3f}" if dice is not None else "")
          + ")")
    print(("it serves now: " if verdict["promoted"] else
           f"kept, {verdict['champion']} still serves ('rounds --promote {info.id}' forces "
           "it): ") + verdict["reason"])
    if json_to:
        write_json(info.to_dict(), json_to)
    return 0

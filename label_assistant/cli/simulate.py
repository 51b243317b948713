"""``label-assistant simulate``: the oracle active-learning experiment with learning curves.

The loop and what it runs are described in :mod:`label_assistant.simulate`; this module
only parses, checks and reports.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from label_assistant.cli.common import (
    CliError,
    add_device,
    add_json,
    add_mask_type,
    add_training_options,
    image_files,
    progress,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="oracle active-learning experiment: learning curves per selection strategy",
        description="Simulate labeling rounds with ground-truth masks as the oracle: each "
        "strategy selects images, which are pre-labeled, annotated (the truth, or a sparse "
        "part of it), cleaned and gated like real annotations; each round trains a candidate "
        "against what serves (Otsu first; warm-started from the champion) and promotes it only "
        "if it wins on the validation annotations, as the service does; what serves is tested "
        "on held-out images. A full-data baseline runs once per seed. "
        "Interrupt at any time: rerunning with the same --out continues where it stopped.",
    )
    p.add_argument("images", help="folder of images")
    p.add_argument("masks", help="folder of ground-truth masks, same file names")
    p.add_argument("--strategies", default="random,sequential,sequence,sequence+entropy",
                   help="comma-separated strategies (default "
                   "random,sequential,sequence,sequence+entropy)")
    p.add_argument("--initial", type=int, default=2, metavar="K",
                   help="images labeled before the first model (default 2)")
    p.add_argument("--per-round", type=int, default=2, metavar="B",
                   help="images selected per round (default 2)")
    p.add_argument("--rounds", type=int, default=3, metavar="R",
                   help="selection rounds after the initial one (default 3)")
    p.add_argument("--seeds", default="3", metavar="S",
                   help="number of seeds (0..S-1), or a comma-separated list (one seed: "
                   "'5,') (default 3)")
    p.add_argument("--annotation", choices=["dense", "sparse", "ring", "border"],
                   default="dense",
                   help="oracle annotation: dense (the full mask); sparse (whole objects and "
                   "context, see --sparse-fraction); ring (whole objects with a 2-pixel "
                   "Background ring); border (the Otsu pre-label's objects accepted, "
                   "Background only in bands along the image borders)")
    p.add_argument("--sparse-fraction", type=float, default=0.1,
                   help="sparse and ring annotation: share of pixels labeled (default 0.1)")
    add_mask_type(p, "binary")
    seq = p.add_mutually_exclusive_group()
    seq.add_argument("--sequence-regex", default=None, metavar="R",
                     help="sequence id from file names (group 'seq', else group 1)")
    seq.add_argument("--sequence-chunks", type=int, default=None, metavar="N",
                     help="cut the ordered pool into N contiguous sequences (a single stack)")
    seq.add_argument("--groups", default=None, metavar="CSV",
                     help="each image's group (experiment, video, z-stack): a CSV file with "
                     "the columns name,group")
    seq.add_argument("--sequence-clusters", default=None, metavar="auto|K",
                     help="groups without metadata: k-means clusters of the image "
                     "descriptors (auto: k by silhouette)")
    p.add_argument("--test-split", default="last:10", metavar="SPEC",
                   help="test images by name order: last:N, first:N, every:N (positions 0, N, "
                   "2N...), list:a,b,c, or stratified:N (N of each group, evenly spaced; "
                   "needs groups) (default last:10)")
    p.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    p.add_argument("--tta", action="store_true", help="flip TTA when scoring (variance, bald)")
    p.add_argument("--mc-samples", type=int, default=0, help="MC dropout passes when scoring")
    add_training_options(p, ("inference_tile", int, "tile side for prediction"),
                         ("warm_epochs", int, "epochs of a round warm-started from the champion"),
                         ("val_every", int, "validate every N epochs and after the last"))
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience in epochs (default: --epochs, i.e. off, so "
                   "that every round trains alike)")
    add_device(p)
    add_json(p, "also the summary")
    p.set_defaults(run=run)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` -> (0, 1, 2); ``"0,5,7"`` -> (0, 5, 7); ``"5,"`` -> (5,) (one seed)."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        if int(text) < 1:
            raise CliError("--seeds must be at least 1")
        return tuple(range(int(text)))
    try:
        seeds = tuple(int(s) for s in text.removesuffix(",").split(","))
    except ValueError:
        raise CliError(f"--seeds {text!r}: a count, or seeds separated by commas") from None
    return seeds


def _settings(args: argparse.Namespace):  # -> SimulationSettings
    from label_assistant.simulate import SimulationError, SimulationSettings

    for name in ("epochs", "steps_per_epoch", "batch_size", "tile", "inference_tile",
                 "warm_epochs", "val_every"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1")
    train = {
        "arch": args.arch, "encoder": args.encoder, "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "tile": args.tile, "inference_tile": args.inference_tile, "lr": args.lr,
        "tile_sampling": args.tile_sampling,
        "warm_epochs": args.warm_epochs,
        "patience": args.patience if args.patience is not None else args.epochs,
    }
    if args.val_every != 1:  # only then: runs from before the option keep their settings hash
        train["val_every"] = args.val_every
    try:
        return SimulationSettings(
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
            initial=args.initial, per_round=args.per_round, rounds=args.rounds,
            seeds=parse_seeds(args.seeds), annotation=args.annotation,
            sparse_fraction=args.sparse_fraction, mask_type=args.mask_type,
            invert=args.invert, sequence_regex=args.sequence_regex,
            sequence_chunks=args.sequence_chunks, groups=args.groups,
            sequence_clusters=args.sequence_clusters, test_split=args.test_split,
            tta=args.tta, mc_samples=args.mc_samples, train=train,
        )
    except SimulationError as error:
        raise CliError(str(error)) from None


def _check_model(settings, device: str | None) -> None:
    """Bad training or model settings fail here, before any image is read."""
    from label_assistant.model.factory import ModelSpec

    config = settings.train_config(0, device)
    try:
        ModelSpec(arch=config.arch, encoder=config.encoder)
    except ValueError as error:
        raise CliError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    from label_assistant.simulate import SimulationError, run_simulation, summarize

    settings = _settings(args)
    images = image_files(args.images)
    masks = image_files(args.masks, "mask folder")
    try:
        _check_model(settings, args.device)
        rows = run_simulation(
            images, masks, settings, Path(args.out), device=args.device,
            progress=lambda items: progress(items, "loading", total=len(images)),
        )
    except SimulationError as error:
        raise CliError(str(error)) from None
    print((Path(args.out) / "summary.md").read_text(), end="")
    print(f"results in {args.out}: results.csv, results.json, summary.md, "
          "dice_vs_images.png, dice_vs_pixels.png")
    if args.json:
        write_json(summarize(rows, settings), args.json)
    return 0

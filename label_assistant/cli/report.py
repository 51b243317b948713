"""``label-assistant report``: plots and an HTML page of the training rounds."""

from __future__ import annotations

import argparse
from pathlib import Path

from label_assistant.cli.common import CliError, add_workdir, existing_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="plots and an HTML page of the training rounds",
        description="Write a report of the training rounds of a work directory into --out: "
        "dice_by_class.png (validation Dice per class and mean, per version), "
        "labeled_pixels.png (labeled pixels per class per version against the minimum per "
        "class), training_curves.png (training loss and validation Dice per epoch, the "
        "current version bold) and index.html, a self-contained page (no network) with the "
        "table of 'label-assistant rounds' that links the plots by relative name. "
        "A work directory without versions still gets index.html, saying so, and no plots. "
        "Prints the paths written.",
    )
    add_workdir(p, required=True)
    p.add_argument("--out", required=True, help="folder to write into (created if missing)")
    p.add_argument("--min-class-pixels", type=int, default=None, metavar="N",
                   help="labeled pixels each class needs, drawn as a dashed line (default: "
                   "the inspection's, 5000, as in 'inspect')")
    p.add_argument("--embed", action="store_true",
                   help="also embed the plots in index.html (data URIs): one file to send")
    p.set_defaults(run=run)


def _min_class_pixels(value: int | None) -> int:
    """The minimum line: given, else the inspection's default (``class_progress``'s minimum).

    Not a version's ``config.min_labeled_pixels``: that is the training sampler's minimum per
    tile, another quantity.
    """
    if value is None:
        from label_assistant.assist.inspect import InspectionConfig

        return InspectionConfig().min_class_pixels
    if value < 0:
        raise CliError(f"--min-class-pixels must be >= 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from label_assistant.reporting.report import write_report
    from label_assistant.reporting.rounds import empty_message, gather

    existing_dir(args.workdir, "work directory")
    minimum = _min_class_pixels(args.min_class_pixels)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is a file, not a folder")
    history = gather(args.workdir, args.project, include_curves=True)
    try:
        written = write_report(history, out, minimum=minimum, embed=args.embed)
    except OSError as error:
        raise CliError(f"can't write the report into {str(out)!r}: {error}") from None
    if not history["versions"]:
        print(f"{empty_message(history, args.workdir)}: wrote the page only")
    for path in written:
        print(path)
    return 0

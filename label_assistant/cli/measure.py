"""``label-assistant measure``: per-object measurements (CSV) from label maps on disk, a
project's admitted annotations, or a model version's predictions
(:mod:`label_assistant.measure`).

Exit status: 0 = every image measured, 1 = some could not be read (reported, skipped),
2 = bad input.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from label_assistant.cli.common import (
    CliError,
    add_device,
    add_json,
    add_mask_type,
    add_plane_options,
    channel_list,
    existing_dir,
    image_files,
    input_files,
    progress,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "measure",
        help="per-object measurements (CSV) from label maps, annotations or a model",
        description="Measure every object: area (pixels, and um^2 when the image carries a "
        "pixel size), perimeter, equivalent diameter, eccentricity, solidity, skeleton "
        "length, centroid, bounding box, min/mean/max intensity per channel of the original "
        "image. Three forms: 'measure IMAGES LABELS' (masks paired by file stem, "
        "--mask-type), 'measure --project ID --workdir W' (the project's admitted "
        "annotations in the backend's store), 'measure IMAGES --model VERSION|current "
        "--workdir W' (a model version's predictions). Writes one row per object to --out "
        "and a per-image summary (objects, mean area) beside it (<out>_summary.csv). "
        "Touching objects of an instance mask are split by the cleanup's one-pixel rule. "
        "Exit 0 = all measured, 1 = some images unreadable (skipped), 2 = bad input.",
    )
    p.add_argument("images", nargs="?", default=None,
                   help="folder of images, or one image (not with --project alone)")
    p.add_argument("labels", nargs="?", default=None,
                   help="folder of masks paired with IMAGES by file stem, or one mask")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="the per-object CSV")
    add_mask_type(p, "labelmap")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="comma-separated names of classes 1..K for masks on disk "
                   "(default: the class numbers)")
    p.add_argument("--project", default=None, metavar="ID",
                   help="a Label Studio project in --workdir: its admitted annotations, or "
                   "with --model its model versions")
    p.add_argument("--workdir", default=None, help="the backend's (or train's) work directory")
    p.add_argument("--model", default=None, metavar="VERSION",
                   help="measure a model version's predictions of IMAGES (e.g. v0003, or "
                   "'current': what serves, Otsu before any model)")
    m = p.add_argument_group("with --model: stacks are measured plane by plane, with the "
                             "channels chosen as by import")
    add_plane_options(m)
    add_device(p)
    add_json(p, "the objects and the summary")
    p.set_defaults(run=run)


def _items(args: argparse.Namespace) -> tuple[list[str] | None, int | None, Any]:
    """(class names or None, how many items if known, items) for the form chosen."""
    from label_assistant.datasets import DatasetError, pair_files
    from label_assistant.measure.sources import (
        MeasureInputError,
        from_folders,
        from_model,
        from_store,
        model_prelabeler,
    )

    try:
        if args.model is not None:
            if args.images is None or args.labels is not None:
                raise CliError("--model measures IMAGES alone: measure IMAGES --model V "
                               "--workdir W")
            if args.workdir is None:
                raise CliError("--model needs --workdir (where the model versions are)")
            files = input_files([args.images])
            names, prelabel, _ = model_prelabeler(
                existing_dir(args.workdir, "work directory"), args.model, args.project,
                args.device)
            return names, None, from_model(files, prelabel, split_axis=args.split_axis,
                                           channel=args.channel,
                                           channels=channel_list(args.channels))
        if args.project is not None and args.images is None:
            if args.workdir is None:
                raise CliError("--project needs --workdir (the backend's work directory)")
            names, items = from_store(existing_dir(args.workdir, "work directory"),
                                      args.project)
            return names, None, items
        if args.images is None or args.labels is None:
            raise CliError("give IMAGES LABELS, IMAGES --model V --workdir W, or --project ID "
                           "--workdir W")
        if args.project is not None:
            raise CliError("--project with IMAGES LABELS: choose one form")
        images = image_files(args.images)
        labels = image_files(args.labels, "label folder")
        pairs = pair_files(images, labels)
        names = [c.strip() for c in args.classes.split(",")] if args.classes else None
        return names, len(pairs), from_folders(pairs, args.mask_type, args.invert)
    except (DatasetError, MeasureInputError) as error:
        raise CliError(str(error)) from None


def summary_path(out: Path) -> Path:
    """Where the per-image summary goes: ``<out stem>_summary.csv`` beside ``out``."""
    return out.with_name(f"{out.stem}_summary.csv")


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def run(args: argparse.Namespace) -> int:
    from label_assistant.measure.objects import (
        OBJECT_COLUMNS,
        SUMMARY_COLUMNS,
        measure_objects,
        objects_of,
        summarize,
    )
    from label_assistant.measure.sources import MeasureFailure

    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {str(out)!r} is a folder; give a .csv file")
    class_names, total, items = _items(args)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    measured: list[str] = []
    channels = 0
    for item in progress(items, "measure", total):
        if isinstance(item, MeasureFailure):
            print(f"label-assistant measure: warning: skipped {item.name}: {item.error}",
                  file=sys.stderr)
            failed.append({"image": item.name, "error": item.error})
            continue
        objects, classes = objects_of(item.label_map, item.instances)
        rows.extend(measure_objects(objects, classes, item.image, image_name=item.name,
                                    class_names=class_names, pixel_size=item.pixel_size))
        channels = max(channels, item.image.shape[2] if item.image.ndim == 3 else 1)
        measured.append(item.name)
    columns = list(OBJECT_COLUMNS) + [f"{stat}_{c}" for c in range(channels)
                                      for stat in ("min", "mean", "max")]
    summary = summarize(rows, measured)
    write_csv(out, rows, columns)
    write_csv(summary_path(out), summary, list(SUMMARY_COLUMNS))
    if args.json is not None:
        write_json({"objects": rows, "summary": summary, "failed": failed}, args.json)
    if args.json != "-":
        print(f"measured {len(rows)} objects in {len(measured)} images -> {out} and "
              f"{summary_path(out)}" + (f"; {len(failed)} skipped" if failed else ""))
    return 1 if failed else 0

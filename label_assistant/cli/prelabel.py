"""``label-assistant prelabel``: Otsu pre-labels for a folder of images (or one image), or
a whole Label Studio project's pre-labels written into Label Studio (``--project ID
--workdir W`` without IMAGES: :mod:`._prelabel_project`).

Writes ``DIR/<stem>.png`` (uint8 label map, 0 = background, 1..K = classes: black in an image
viewer), optionally ``DIR/overlay/<stem>.png`` (the objects outlined over the image, to look
at) and ``DIR/confidence/<stem>.png`` (confidence x 255), and ``DIR/summary.json``.

An unreadable image in a folder is skipped with a one-line warning and listed under
``failed`` in the summary; the other images are still pre-labeled and the exit status is 1.
A bad path, bad parameters, or a single given image that can't be read exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from label_assistant.cli.common import (
    CliError,
    add_device,
    add_json,
    add_workdir,
    existing_dir,
    image_files,
    progress,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from label_assistant.assist.pre import METHODS, POLARITIES, OtsuParams
    from label_assistant.ml_backend.project_prelabels import DEFAULT_BATCH

    d = OtsuParams()
    p = subparsers.add_parser(
        "prelabel",
        help="write pre-label maps (Otsu or a model) for a folder of images, or pre-label a "
        "whole Label Studio project",
        description="Pre-label images with Otsu thresholding (before any model exists) or a "
        "model version: one label-map PNG per image (0 = background, 1..K = classes) and "
        "summary.json. An unreadable image in a folder is skipped with a warning (exit status "
        "1 at the end). Project form, without IMAGES: 'prelabel --project ID --workdir W' "
        "writes the project's serving version's pre-labels (W's current model, else Otsu) for "
        "every unlabeled task into Label Studio as predictions, in batches, without Label "
        "Studio's 100-second limit; tasks that already hold that version's prediction are "
        "skipped, older versions' predictions of this backend are deleted, and an interrupted "
        "run continues where it stopped when run again.",
    )
    p.add_argument("images", nargs="?", default=None,
                   help="folder of images (PNG, JPEG, TIFF) or one image file; leave out with "
                   "--project to pre-label a Label Studio project")
    p.add_argument("--out", default=None,
                   help="output folder (created if missing); required with IMAGES")
    p.add_argument("--polarity", choices=POLARITIES, default=d.polarity,
                   help="objects brighter or darker than the background; auto: the phase "
                   f"with the smaller area (default {d.polarity})")
    p.add_argument("--classes", type=int, default=d.n_classes, metavar="K",
                   help=f"foreground classes; K > 1 uses multi-Otsu (default {d.n_classes})")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="global Otsu, or local for uneven illumination (default "
                   f"{d.method})")
    p.add_argument("--block-size", type=int, default=d.block_size, metavar="PX",
                   help=f"local method: background scale, larger than the objects "
                   f"(default {d.block_size})")
    p.add_argument("--min-size", type=int, default=d.min_size, metavar="PX",
                   help=f"smaller objects become background (default {d.min_size})")
    p.add_argument("--max-hole-size", type=int, default=d.max_hole_size, metavar="PX",
                   help="fill holes up to this many pixels; 0 = holes of any size "
                   f"(default {d.max_hole_size})")
    p.add_argument("--no-fill-holes", action="store_true", help="don't fill holes")
    p.add_argument("--no-separate", action="store_true",
                   help="don't split touching objects (they are split by default, with at "
                   "least one background pixel between them)")
    p.add_argument("--equalize", action="store_true", help="CLAHE contrast equalization first")
    p.add_argument("--smooth", type=float, default=d.smooth_sigma, metavar="SIGMA",
                   help=f"Gaussian blur before thresholding, pixels (default {d.smooth_sigma})")
    p.add_argument("--save-confidence", action="store_true",
                   help="also write DIR/confidence/<stem>.png (confidence x 255)")
    p.add_argument("--overlay", action="store_true",
                   help="also write DIR/overlay/<stem>.png: each class's outlines over the "
                   "image, to look at (the label maps themselves hold 0, 1, ...: black)")
    add_json(p, "also the summary")
    m = p.add_argument_group("trained model instead of Otsu")
    m.add_argument("--model", default=None, metavar="VERSION",
                   help="a model version (e.g. v0003) or 'current', from --workdir")
    add_workdir(m, help="work directory holding the model versions")
    add_device(m)
    ls = p.add_argument_group("project form (--project ID --workdir W, no IMAGES)")
    ls.add_argument("--label-studio-url", default=None,
                    help="Label Studio's address (default: the one the project's /setup sent, "
                    "else LABEL_STUDIO_URL)")
    ls.add_argument("--api-key", default=None,
                    help="Label Studio token (default: the one that came with the address, "
                    "from /setup or LABEL_STUDIO_API_KEY)")
    ls.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N",
                    help=f"tasks per batch: one query and one write to Label Studio each, "
                    f"and a checkpoint after it (default {DEFAULT_BATCH})")
    p.set_defaults(run=run)


def otsu_params_from_args(args: argparse.Namespace) -> Any:
    from label_assistant.assist.pre import OtsuParams

    return OtsuParams(
        polarity=args.polarity,
        n_classes=args.classes,
        method=args.method,
        block_size=args.block_size,
        min_size=args.min_size,
        fill_holes=not args.no_fill_holes,
        max_hole_size=None if args.max_hole_size == 0 else args.max_hole_size,
        separate_touching=not args.no_separate,
        equalize=args.equalize,
        smooth_sigma=args.smooth,
    )


def make_prelabeler(args: argparse.Namespace) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """(function image -> PreLabel, description for the summary), chosen by the arguments.

    The one place that picks the pre-label source: Otsu, or ``--model VERSION --workdir W``.
    """
    from label_assistant.assist.pre import PreLabelError, otsu_prelabel

    if args.model is not None:
        return _model_prelabeler(args)

    try:
        params = otsu_params_from_args(args)
    except PreLabelError as error:
        raise CliError(str(error)) from None
    source = {"source": "otsu", "version": params.version_name(), "params": asdict(params)}
    return (lambda image: otsu_prelabel(image, params)), source


def _model_prelabeler(args: argparse.Namespace) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """A version (``--model v0003``), or whatever serves (``--model current``: Otsu with
    these options until a model has been promoted, or after a rollback to Otsu)."""
    from label_assistant.assist.pre import OtsuPrelabeler, PreLabelError
    from label_assistant.model.predictor import Predictor
    from label_assistant.model.registry import RegistryError
    from label_assistant.workspace import Workspace

    if args.workdir is None:
        raise CliError("--model needs --workdir (where the model versions are)")
    registry = Workspace(existing_dir(args.workdir, "work directory")).registry(args.project)
    if args.model == "current" and registry.current_id() is None:
        try:
            otsu = OtsuPrelabeler(otsu_params_from_args(args))
        except PreLabelError as error:
            raise CliError(str(error)) from None
        return otsu.prelabel, {"source": "otsu", "version": otsu.version,
                               "params": asdict(otsu.params),
                               "serving": "Otsu (no model version serves)"}
    try:
        predictor = Predictor.from_registry(registry, args.model, device=args.device)
    except RegistryError as error:
        raise CliError(str(error)) from None
    source = {"source": "model", "version": predictor.version,
              "classes": predictor.class_names, "tiling": predictor.tiling.to_config()}
    return predictor.prelabel, source


def _check_unique_stems(files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise CliError(f"{seen[f.stem].name} and {f.name} would both write {f.stem}.png")
        seen[f.stem] = f


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from label_assistant.assist.pre import PreLabelError
    from label_assistant.images import ImageError, read_image

    if args.images is None:
        from label_assistant.cli._prelabel_project import run_project

        return run_project(args)
    if args.out is None:
        raise CliError("--out is required with IMAGES (where the label maps go)")
    if not Path(args.images).exists():
        raise CliError(f"images {args.images!r} do not exist")
    files = image_files(args.images)
    single = Path(args.images).is_file()
    _check_unique_stems(files)
    prelabel, source = make_prelabeler(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if args.save_confidence:
        (out / "confidence").mkdir(exist_ok=True)
    if args.overlay:
        from label_assistant.reporting.overlay import overlay

        (out / "overlay").mkdir(exist_ok=True)

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for path in progress(files, desc="prelabel", total=len(files)):
        try:
            image = read_image(path)
            pre = prelabel(image)
        except (ImageError, PreLabelError) as error:
            if single:
                raise CliError(str(error)) from None
            print(f"label-assistant prelabel: warning: skipped {error}", file=sys.stderr)
            failed.append({"file": str(path), "error": str(error)})
            continue
        label_path = out / f"{path.stem}.png"
        Image.fromarray(pre.label_map, mode="L").save(label_path)
        row: dict[str, Any] = {
            "image": path.name,
            "label_map": str(label_path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "channels": int(image.shape[2]),
            "dtype": str(image.dtype),
            "polarity": pre.polarity,
            "thresholds": [round(t, 6) for t in pre.thresholds],
            "objects": pre.n_objects,
            "foreground_fraction": round(pre.foreground_fraction, 6),
            "mean_confidence": round(float(pre.confidence.mean()), 6),
            "version": pre.version,
        }
        if args.save_confidence:
            confidence_path = out / "confidence" / f"{path.stem}.png"
            scaled = np.round(pre.confidence * 255).astype(np.uint8)
            Image.fromarray(scaled, mode="L").save(confidence_path)
            row["confidence"] = str(confidence_path)
        if args.overlay:
            overlay_path = out / "overlay" / f"{path.stem}.png"
            Image.fromarray(overlay(image, pre.label_map), mode="RGB").save(overlay_path)
            row["overlay"] = str(overlay_path)
        rows.append(row)

    summary = {**source, "images": rows, "failed": failed}
    write_json(summary, out / "summary.json")
    if args.json is not None:
        write_json(summary, args.json)
    if args.json != "-":
        print(f"pre-labeled {len(rows)} of {len(files)} images into {out} "
              f"({source['version']})" + (f"; {len(failed)} unreadable" if failed else ""))
    return 1 if failed else 0

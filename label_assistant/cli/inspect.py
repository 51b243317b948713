"""``label-assistant inspect``: inspection report and gate decision for label maps on disk.

Label files are paired with images by file stem; every label file needs its image (else
exit 2), while images without a label file are simply not labeled yet and are counted.
Exit status: 0 = every annotation admitted, 1 = some quarantined (an error finding, e.g. a
label map whose size differs from its image), 2 = bad input (paths, pairs, unreadable files,
bad config).

Label files are label maps (255 = unlabeled) unless ``--mask-type`` says they are
ground-truth masks (binary, semantic, instance: read as ``train`` and ``simulate`` read them).
Hints follow the report when the input looks misread: a class with no labeled pixel at all,
label maps that are mostly 255, label maps that hold nothing but 0 and 255 (a binary
ground-truth mask read as a label map).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from label_assistant.cli.common import (
    CliError,
    add_json,
    add_mask_type,
    image_files,
    progress,
    write_json,
)

#: A label map counts as "mostly unlabeled" past this share of 255 pixels (hints).
MOSTLY_UNLABELED = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="inspect label maps: findings per annotation, admitted or quarantined",
        description="Run the inspection rules on label maps (uint8 PNG: 0 = background, "
        "1..K = classes, 255 = unlabeled) paired with IMAGES by file stem, print each "
        "annotation's findings and whether it is admitted to training, and the per-class "
        "progress of the admitted ones. Exit 0 when all are admitted, 1 when some are "
        "quarantined, 2 on bad input.",
    )
    p.add_argument("images", help="folder of images, or one image")
    p.add_argument("labels", help="folder of label maps, or one label map")
    add_mask_type(p, "labelmap")
    add_json(p, "the report, instead of the text,")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON inspection config (severity per rule code, thresholds)")
    p.add_argument("--rule", action="append", default=[], metavar="CODE=LEVEL",
                   help="set a rule's level: off, warning or error (repeatable)")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="comma-separated class names without Background, giving K "
                   "(default: K = the largest label value, names class 1..K)")
    p.add_argument("--min-class-pixels", type=int, default=None, metavar="N",
                   help="labeled pixels each class needs (progress; default 5000)")
    p.add_argument("--no-background", action="store_true",
                   help="the project has no background class (turns off no_background)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from label_assistant.assist.inspect import (
        InspectionContext,
        InspectionError,
        class_progress,
        inspect,
    )
    from label_assistant.images import ImageError, read_image
    from label_assistant.labelmap import MAX_CLASSES, UNLABELED

    config = _config(args)
    pairs, unlabeled_images = _pairs(args.images, args.labels)

    labels, instance_maps = {}, {}
    for _, label_path in pairs:
        try:
            labels[label_path], instance_maps[label_path] = _label_map(
                read_image(label_path, palette_indices=True), label_path, args.mask_type,
                args.invert)
        except ImageError as error:
            raise CliError(str(error)) from None

    if args.classes is not None:
        names = [n.strip() for n in args.classes.split(",")]
        if not all(names) or len(names) > MAX_CLASSES:
            raise CliError(f"--classes: give 1..{MAX_CLASSES} non-empty names, comma-separated")
    else:
        k = max((int(lm[lm != UNLABELED].max(initial=0)) for lm in labels.values()), default=0)
        names = [f"class {c}" for c in range(1, max(k, 1) + 1)]

    results = []
    admitted_maps = []
    for image_path, label_path in progress(pairs, "inspecting", total=len(pairs)):
        try:
            image = read_image(image_path)
        except ImageError as error:
            raise CliError(str(error)) from None
        label_map = labels[label_path]
        try:
            ctx = InspectionContext(
                label_map=label_map, n_classes=len(names), class_names=names,
                image_shape=image.shape[:2], uses_background=not args.no_background,
                instances=instance_maps[label_path],
            )
        except InspectionError as error:
            raise CliError(f"{label_path.name}: {error}") from None
        report = inspect(ctx, config)
        if report.admitted:
            admitted_maps.append(label_map)
        results.append({"image": str(image_path), "labels": str(label_path),
                        **report.to_dict(), "_report": report})

    progress_rows = class_progress(
        (np.bincount(m.ravel(), minlength=256)[: len(names) + 1] for m in admitted_maps),
        names, minimum=config.min_class_pixels,
    )
    n_quarantined = sum(not r["admitted"] for r in results)
    summary = {"annotations": len(results), "admitted": len(results) - n_quarantined,
               "quarantined": n_quarantined, "images_without_labels": len(unlabeled_images)}
    hints = _hints(list(labels.values()), names, args.mask_type)

    if args.json != "-":
        _print_text(results, progress_rows, summary, config.min_class_pixels)
        for hint in hints:
            print(f"\nhint: {hint}")
    if args.json is not None:
        write_json({
            "summary": summary,
            "annotations": [{k: v for k, v in r.items() if k != "_report"} for r in results],
            "class_progress": [row.to_dict() for row in progress_rows],
            "hints": hints,
            "config": config.to_dict(),
        }, args.json)
    return 1 if n_quarantined else 0


def _config(args: argparse.Namespace) -> Any:
    from label_assistant.assist.inspect import InspectionConfig, InspectionError

    data: dict[str, Any] = {}
    if args.config is not None:
        path = Path(args.config)
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise CliError(f"--config {str(path)!r}: can't read ({error.strerror})") from None
        except json.JSONDecodeError as error:
            raise CliError(f"--config {str(path)!r}: not valid JSON ({error.msg}, line "
                           f"{error.lineno})") from None
        if not isinstance(data, dict):
            raise CliError(f"--config {str(path)!r}: must hold a JSON object")
    severity = dict(data.get("severity") or {})
    for item in args.rule:
        code, sep, level = item.partition("=")
        if not sep:
            raise CliError(f"--rule {item!r}: expected CODE=off|warning|error")
        severity[code.strip()] = level.strip()
    data = {**data, "severity": severity}
    if args.min_class_pixels is not None:
        data["min_class_pixels"] = args.min_class_pixels
    try:
        return InspectionConfig.from_dict(data)
    except (InspectionError, TypeError) as error:
        raise CliError(f"inspection config: {error}") from None


def _pairs(images_arg: str, labels_arg: str) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, label) pairs by stem, and the images that have no label file."""
    images = image_files(images_arg)
    labels = image_files(labels_arg, "label folder")
    if len(images) == 1 and len(labels) == 1 and Path(images_arg).is_file():
        return [(images[0], labels[0])], []  # two files named on the command line: a pair
    by_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in by_stem:
            raise CliError(f"two images named {image.stem!r}: {by_stem[image.stem].name} and "
                           f"{image.name}; pairing is by file name")
        by_stem[image.stem] = image
    pairs = []
    seen: set[str] = set()
    for label in labels:
        if label.stem in seen:
            raise CliError(f"two label files named {label.stem!r}; pairing is by file name")
        seen.add(label.stem)
        image = by_stem.get(label.stem)
        if image is None:
            raise CliError(f"no image for label file {label.name!r} (paired by file name)")
        pairs.append((image, label))
    return pairs, [p for s, p in by_stem.items() if s not in seen]


def _label_map(array: Any, path: Path, mask_type: str = "labelmap", invert: bool = False
               ) -> tuple[Any, Any]:
    """(label map, instance map or None) of a read label file, or a one-line error."""
    import numpy as np

    from label_assistant.datasets import DatasetError, mask_to_label_map

    if array.shape[2] > 1 and not (array == array[..., :1]).all():
        raise CliError(f"{path.name}: a label map must be single-channel, got "
                       f"{array.shape[2]} different channels")
    if mask_type == "labelmap" and array.dtype != np.uint8:
        raise CliError(f"{path.name}: a label map must be 8-bit (uint8), got {array.dtype}; "
                       "if it is a ground-truth mask, say which: --mask-type instance (one "
                       "value per object), semantic (values = classes) or binary")
    try:
        label_map, instances = mask_to_label_map(array[..., 0], mask_type, invert)
    except DatasetError as error:
        raise CliError(f"{path.name}: {error}") from None
    return label_map, instances


def _hints(label_maps: list[Any], names: list[str], mask_type: str) -> list[str]:
    """What the user probably meant, when the label maps look misread (module docstring)."""
    import numpy as np

    from label_assistant.labelmap import UNLABELED

    if not label_maps:
        return []
    hints = []
    counts = sum(np.bincount(m.ravel(), minlength=256) for m in label_maps)
    empty = [name for c, name in enumerate(names, start=1) if counts[c] == 0]
    if empty:
        hints.append(f"{', '.join(empty)}: no labeled pixel in any label map")
    mostly = sum((m == UNLABELED).mean() > MOSTLY_UNLABELED for m in label_maps)
    if mostly:
        hints.append(f"{mostly} of {len(label_maps)} label maps are mostly unlabeled (255)")
    if mask_type == "labelmap" and all(set(np.unique(m).tolist()) <= {0, UNLABELED}
                                       for m in label_maps) and counts[UNLABELED]:
        hints.append("the label maps hold only 0 and 255: if 255 marks objects (a binary "
                     "ground-truth mask), use --mask-type binary")
    return hints


def _print_text(results: list[dict], rows: list, summary: dict, minimum: int) -> None:
    for r in results:
        report = r["_report"]
        name = Path(r["labels"]).name
        if report.admitted:
            n = len(report.warnings)
            decision = "admitted" + (f" ({n} warning{'s' * (n != 1)})" if n else "")
        else:
            decision = "QUARANTINED"
        print(f"{name}: {decision}")
        for f in report.findings:
            print(f"  {f.severity} {f.code}: {f.message}")
        for code, n in report.omitted.items():
            print(f"  ... {n} more {code} finding{'s' * (n != 1)} not shown")
    n, unlabeled = summary["annotations"], summary["images_without_labels"]
    print(f"\n{n} annotation{'s' * (n != 1)}: {summary['admitted']} admitted, "
          f"{summary['quarantined']} quarantined; {unlabeled} image{'s' * (unlabeled != 1)} "
          "without labels")
    print(f"\nClass progress (admitted annotations, {minimum} labeled pixels needed per class):")
    width = max((len(row.name) for row in rows), default=0)
    for row in rows:
        state = "done" if row.done else f"{100 * row.fraction:.0f}%"
        print(f"  {row.name:<{width}}  {row.pixels:>9} / {row.minimum}  {state}")

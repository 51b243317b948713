"""``label-assistant rounds``: the history of training rounds (model versions)."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from label_assistant.cli.common import CliError, existing_dir, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rounds",
        help="list model versions with their data and metrics; roll back",
        description="List the training rounds of a work directory: per version its time, "
        "parent, training data, validation Dice per class and training time. "
        "--rollback makes an earlier version current again.",
    )
    p.add_argument("--workdir", required=True, help="work directory (train's or the service's)")
    p.add_argument("--project", default=None, help="Label Studio project id (service work dir)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="machine-readable output (to FILE or stdout)")
    p.add_argument("--rollback", nargs="?", const="parent", default=None, metavar="VERSION",
                   help="make VERSION current (default: the parent of the current version)")
    p.set_defaults(run=run)


def _row(info: Any, current_id: str | None) -> dict[str, Any]:
    metrics = info.metrics or {}
    images = (info.manifest or {}).get("images", [])
    return {
        "version": info.id,
        "current": info.id == current_id,
        "created_at": info.created_at,
        "parent": info.parent,
        "classes": list(info.class_names),
        "train_images": metrics.get("train_images"),
        "val_images": metrics.get("val_images"),
        "images": len(images),
        "labeled_pixels": metrics.get("labeled_pixels"),
        "val_dice": metrics.get("val_dice"),
        "val_mean_dice": metrics.get("val_mean_dice"),
        "epochs_run": metrics.get("epochs_run"),
        "train_seconds": metrics.get("train_seconds"),
    }


def _fmt_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    return str(value or "")[:16]


def run(args: argparse.Namespace) -> int:
    from label_assistant.model.registry import ModelRegistry, RegistryError
    from label_assistant.workdir import models_dir

    existing_dir(args.workdir, "work directory")
    root = models_dir(args.workdir, args.project)
    registry = ModelRegistry(root)
    if args.rollback:
        try:
            info = registry.rollback(None if args.rollback == "parent" else args.rollback)
        except RegistryError as error:
            raise CliError(str(error)) from None
        print(f"current version is now {info.id}")
    versions = registry.list()
    current = registry.current()
    rows = [_row(v, current.id if current else None) for v in versions]
    if args.json:
        write_json({"models": str(root), "current": current.id if current else None,
                    "versions": rows}, args.json)
        return 0
    if not rows:
        print(f"no model versions in {root} yet")
        return 0
    print(f"{'':1} {'version':8} {'created (UTC)':16} {'parent':7} {'images':>6} "
          f"{'labeled px':>11} {'val Dice':>8} {'epochs':>6} {'time s':>7}")
    for r in rows:
        px = sum(r["labeled_pixels"] or [])
        dice = r["val_mean_dice"]
        print(f"{'*' if r['current'] else ' ':1} {r['version']:8} {_fmt_time(r['created_at']):16} "
              f"{r['parent'] or '-':7} {r['images']:>6} {px:>11} "
              f"{'-' if dice is None else f'{dice:.3f}':>8} {r['epochs_run'] or '-':>6} "
              f"{r['train_seconds'] or '-':>7}")
    return 0

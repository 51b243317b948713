"""Helpers shared by the command modules: the one-line error, path checks, progress."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: File extensions read as images by folder-taking commands.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class CliError(Exception):
    """Bad input: printed as one line, exit status 2, no traceback."""


def existing_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} {str(p)!r} does not exist")
    if not p.is_dir():
        raise CliError(f"{what} {str(p)!r} is not a folder")
    return p


def image_files(path: str | Path, what: str = "image folder") -> list[Path]:
    """Sorted image files of a folder (or the one file given); error if there are none."""
    p = Path(path)
    if p.is_file():
        return [p]
    folder = existing_dir(p, what)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CliError(f"{what} {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A progress bar on a terminal; silent when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, total=total, disable=not sys.stderr.isatty(), unit="img"))


def write_json(data: Any, path: str | Path | None) -> None:
    """Write JSON to a file, or to stdout when ``path`` is ``-`` or None."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str)
    if path in (None, "-"):
        print(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


# --- options shared by several commands, declared once ----------------------------------------


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """``--json [FILE]``: ``what`` as JSON, to FILE or stdout."""
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help=f"{what} as JSON (to FILE, or stdout)")


def add_device(p: Any) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")


def add_workdir(p: Any, *, required: bool = False,
                help: str = "work directory (train's or the service's)") -> None:
    """``--workdir`` and ``--project`` (a Label Studio project's versions in a service's
    work directory; without it the command line's ``W/models``)."""
    p.add_argument("--workdir", required=required, default=None, help=help)
    p.add_argument("--project", default=None,
                   help="Label Studio project id: that project's models in the service's "
                   "work directory (default: the command line's W/models)")


def add_mask_type(p: Any, default: str) -> None:
    """``--mask-type`` and ``--invert``: how ground-truth masks on disk are read."""
    from label_assistant.datasets import MASK_TYPES

    p.add_argument("--mask-type", choices=MASK_TYPES, default=default,
                   help=f"labelmap (255 = unlabeled), binary (non-zero = class 1), semantic "
                   f"(values = classes), instance (objects -> class 1, separated); default "
                   f"{default}")
    p.add_argument("--invert", action="store_true",
                   help="binary masks: zero pixels are the class (e.g. ISBI membranes)")


#: Training options of ``train`` and ``simulate``: TrainConfig field -> (flag, type, help).
_TRAINING_OPTIONS = {
    "arch": (str, "smp architecture"),
    "encoder": (str, "smp encoder"),
    "epochs": (int, "epochs"),
    "steps_per_epoch": (int, "batches per epoch"),
    "batch_size": (int, "tiles per batch"),
    "tile": (int, "training tile side"),
    "lr": (float, "learning rate"),
}


def add_training_options(p: Any, *extra: tuple[str, type, str]) -> None:
    """The :class:`~label_assistant.model.config.TrainConfig` options both training commands
    take, with TrainConfig's defaults; ``extra`` adds ``(field, type, help)`` ones."""
    from label_assistant.model.config import TrainConfig

    defaults = TrainConfig()
    options = [(name, kind, text) for name, (kind, text) in _TRAINING_OPTIONS.items()]
    for name, kind, text in [*options, *extra]:
        default = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default,
                       help=f"{text} (default {default})")

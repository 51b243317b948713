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


def input_files(paths: list[str]) -> list[Path]:
    """Files as given and the image files of folders (sorted), in order, once each;
    error for a path that does not exist or a folder without images."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"folder {raw!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            raise CliError(f"{raw!r} does not exist")
    return list(dict.fromkeys(files))


def channel_list(text: str | None) -> tuple[int, ...] | None:
    """``--channels R,G[,B]`` as numbers (None when not given)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--channels {text!r}: give 2 or 3 channel numbers, like 0,1,2") from None
    if not 2 <= len(values) <= 3 or min(values) < 0:
        raise CliError(f"--channels {text!r}: give 2 or 3 channel numbers (0-based)")
    return values


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A progress bar on a terminal; silent when stderr is not a terminal (logs, CI)."""
    return iter(progress_bar(desc, total, items))


def progress_bar(desc: str, total: int | None = None, items: Iterable[Any] | None = None) -> Any:
    """The bar :func:`progress` shows, to advance by hand (``update(n)``, then ``close()``)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, disable=not sys.stderr.isatty(), unit="img")


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


def add_plane_options(p: Any) -> None:
    """``--split-axis`` and ``--channel`` / ``--channels``: how stacks become planes and
    which channels a plane is labeled with (:mod:`label_assistant.microscopy`)."""
    p.add_argument("--split-axis", choices=("t", "z"), default=None,
                   help="the axis whose index is a plane's frame when a stack has both t "
                   "and z (default t); each level of the other axis is a sequence of its own")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--channel", type=_channel_number, default=None, metavar="C",
                        help="channel C (0-based) alone, in grey")
    chosen.add_argument("--channels", default=None, metavar="R,G,B",
                        help="a colour composite of these channels (2 or 3, 0-based); "
                        "default: 1 channel grey, 2 as red+green, 3 as RGB, 4: the first 3")


def _channel_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a channel number (0, 1, ...)")
    return int(text)


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
    "tile_sampling": (str, "how a training tile's image is drawn: image (each image alike) or "
                      "pixel (by its labeled pixels)"),
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


def project_settings_and_origin(args: Any, project: int, **overrides: Any) -> tuple[Any, Any]:
    """For a ``--project ID --workdir W`` command: the backend's settings of ``W``
    (``--device`` and ``overrides`` on top) and the project's Label Studio origin, resolved
    as the backend resolves it (:func:`label_assistant.ml_backend.origin.project_origin`:
    ``--label-studio-url`` / ``--api-key``, else what the project's ``/setup`` sent, else
    ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``). Bad settings or no origin: CliError."""
    from label_assistant.ml_backend.origin import project_origin
    from label_assistant.ml_backend.settings import Settings, SettingsError
    from label_assistant.ml_backend.store import Store

    if getattr(args, "device", None):
        overrides = {"device": args.device, **overrides}
    try:
        settings = Settings.from_env(workdir=args.workdir, **overrides)
    except (SettingsError, ValueError) as error:
        raise CliError(str(error)) from None
    store = Store.existing(settings.workdir)
    row = store.get_project(str(project)) if store is not None else None
    origin = project_origin(settings, row, url=args.label_studio_url, token=args.api_key)
    if origin is None or not origin.token:
        raise CliError("no Label Studio address and token: pass --label-studio-url and "
                       "--api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
    return settings, origin

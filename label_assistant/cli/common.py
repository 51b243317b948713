"""Helpers shared by the command modules: the one-line error, path checks, progress."""

from __future__ import annotations

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

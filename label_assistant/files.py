"""Writing files so that a reader, or a crash, never leaves half of one: the one helper.

A file is written next to its place under a temporary name and renamed over it
(``os.replace`` is atomic on POSIX), so readers see the old file or the new one. With
``durable`` the data and the directory entry are fsynced too: the file survives a power cut
once the call returns (the store points at intake files only after that).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str, *, durable: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | Path, data: Any, *, durable: bool = False,
                      default: Any = str) -> Path:
    """:func:`write_atomic` of ``data`` as indented JSON."""
    return write_atomic(path, json.dumps(data, indent=2, default=default) + "\n",
                        durable=durable)

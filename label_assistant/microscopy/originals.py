"""What a task is labeled with: the chosen channels of a plane, its display PNG, and the
original plane kept in the work directory for the backend.

Channels (:func:`choose_channels`): ``channel=c`` keeps channel ``c`` (grey);
``channels=(r, g[, b])`` makes a colour composite of those channels in that order;
without either, 1 channel stays grey, 2 become red and green, 3 stay as they are, 4 keep
the first three. A composite of two channels gets a third, all-zero channel, so the
original and the display both have 1 or 3 channels (what the models take) and the model
sees exactly the channels shown.

Display PNG (:func:`display_png`): :func:`label_assistant.images.to_display_uint8` of the
chosen channels: each channel stretched between its 1st and 99.8th percentiles, as
:func:`~label_assistant.images.normalize_for_model` gives it to the model (8-bit planes
are shown as they are).

Originals: the chosen channels in the file's own dtype, as an uncompressed TIFF named by
the plane's content hash (:func:`original_hash`: its values and pixel size, through
:func:`label_assistant.datasets.content_hash`) at
:meth:`label_assistant.workspace.Workspace.original_file`, with the pixel size when known
(a ``pixel_size_um`` entry of tifffile's description). A task points at it through its data
fields :data:`ORIGINAL_FIELD` (the hash) and :data:`SOURCE_FIELD` (file and plane, for
people). :func:`load_original` is the backend's way back: it refuses a malformed hash, a
missing file and a file whose content no longer has that hash, with one-line reasons.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from label_assistant.datasets import content_hash
from label_assistant.files import write_atomic
from label_assistant.images import ImageError, read_image, to_display_uint8
from label_assistant.workspace import Workspace

#: Task data field: the content hash of the task's original plane.
ORIGINAL_FIELD = "la_original"
#: Task data field: where the plane came from (``<file> T=3,Z=0``), for people.
SOURCE_FIELD = "la_source"
_HASH = re.compile(r"[0-9a-f]{16}")


class OriginalError(ValueError):
    """A task's original plane can't be used (one line: which, and why)."""


def choose_channels(plane: np.ndarray, channel: int | None = None,
                    channels: tuple[int, ...] | None = None) -> np.ndarray:
    """The channels a plane is labeled with, ``(H, W, 1)`` or ``(H, W, 3)``, in its dtype
    (module doc); :class:`ValueError` naming the channel count for an index out of range."""
    have = plane.shape[2]
    if channel is not None and channels is not None:
        raise ValueError("give a channel or a list of channels, not both")
    if channel is not None:
        picked: tuple[int, ...] = (channel,)
    elif channels is not None:
        if not 1 <= len(channels) <= 3:
            raise ValueError(f"a composite takes 1 to 3 channels, got {len(channels)}")
        picked = tuple(channels)
    else:
        picked = tuple(range(min(have, 3)))
    bad = [c for c in picked if not 0 <= c < have]
    if bad:
        raise ValueError(f"channel {bad[0]} is not among the {have} channels (0..{have - 1})")
    out = plane[..., list(picked)]
    if out.shape[2] == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=2)
    return np.ascontiguousarray(out)


def display_png(original: np.ndarray) -> bytes:
    """The PNG shown in Label Studio: 8-bit, normalized as the model sees the plane."""
    from PIL import Image

    shown = to_display_uint8(original)
    mode_image = Image.fromarray(shown[..., 0] if shown.shape[2] == 1 else shown)
    buffer = io.BytesIO()
    mode_image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def original_tiff(original: np.ndarray, pixel_size: tuple[float, float] | None = None) -> bytes:
    """The original plane as TIFF bytes that :func:`label_assistant.images.read_image`
    reads back to the same array."""
    import tifffile

    data = original[..., 0] if original.shape[2] == 1 else original
    metadata = {"pixel_size_um": list(pixel_size)} if pixel_size else {}
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric="minisblack", planarconfig="contig",
                     metadata=metadata)
    return buffer.getvalue()


def original_hash(original: np.ndarray, pixel_size: tuple[float, float] | None = None) -> str:
    """The content hash naming an original: its values and its pixel size (the same
    values from two files of different pixel sizes are two originals)."""
    size = np.asarray(pixel_size if pixel_size else (0.0, 0.0), dtype=np.float64)
    return content_hash(original, size)


def _file_pixel_size(data: bytes) -> tuple[float, float] | None:
    import tifffile

    from label_assistant.microscopy.stacks import pixel_size_um

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return pixel_size_um(tif)


def keep_original(workspace: Workspace, original: np.ndarray,
                  pixel_size: tuple[float, float] | None = None) -> str:
    """Store the plane under its content hash (once: an existing file is kept); the hash."""
    digest = original_hash(original, pixel_size)
    path = workspace.original_file(digest)
    if not path.exists():
        write_atomic(path, original_tiff(original, pixel_size), durable=True)
    return digest


def original_path(workspace: Workspace, digest: object) -> Path:
    """Where the original with this hash lives; :class:`OriginalError` for a malformed one
    (the hash comes from task data: it must never name another file)."""
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise OriginalError(f"the task's {ORIGINAL_FIELD} {str(digest)[:40]!r} is not a "
                            "content hash (16 hex digits)")
    return workspace.original_file(digest)


def load_original(workspace: Workspace, digest: object, source: object = None
                  ) -> tuple[bytes, np.ndarray]:
    """The original plane's file bytes and ``(H, W, C)`` array; :class:`OriginalError` when
    it is not in the work directory, unreadable, or not the plane the hash names."""
    path = original_path(workspace, digest)
    where = f" ({source})" if source else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OriginalError(f"the original plane {digest}{where} is not in {path.parent}: "
                            "run label-assistant import with this work directory, or copy "
                            "its originals folder here") from None
    except OSError as error:
        raise OriginalError(f"the original plane {digest}{where} can't be read "
                            f"({error.strerror or error})") from None
    try:
        array = read_image(data)
        pixel_size = _file_pixel_size(data)
    except ImageError as error:
        raise OriginalError(f"the original plane {digest}{where} is unreadable: "
                            f"{str(error).removeprefix('<bytes>: ')}") from None
    except Exception as error:  # tifffile on a damaged file
        raise OriginalError(f"the original plane {digest}{where} is unreadable "
                            f"({type(error).__name__})") from None
    if original_hash(array, pixel_size) != digest:
        raise OriginalError(f"the original plane file {path.name}{where} no longer holds "
                            "the plane its name says (changed or damaged)")
    return data, array

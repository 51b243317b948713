"""Microscopy files as planes, each read on its own.

:func:`open_stack` lists a file's planes without reading pixels; :meth:`Stack.read` reads one
plane as ``(H, W, C)`` in the file's own dtype (bool as uint8, big-endian made native).

Axes (tifffile's letters) and the rule for each:

- ``Y``, ``X``: the plane; ``C`` (channels) and ``S`` (samples of a page, e.g. RGB): its
  channels, ``C`` first. A file must have ``Y`` and ``X``.
- every other axis (``T`` time, ``Z`` depth, and what tifffile names ``I``, ``Q`` and the
  rest when no metadata says more) indexes planes: one plane per combination of indices.
- Which axis is the **frame** axis (the task's ``frame``, its index along it): the
  ``split_axis`` asked for (``t`` or ``z``) when the file has it; when the file has exactly
  one plane axis, that one whatever its letter (a plain multi-page TIFF: its pages are
  frames); else ``T``, then ``Z``, then the first plane axis. A file with several plane
  axes but not the one asked for is a :class:`StackError`.
- The **sequence** of a plane (the task's ``sequence``) is the file, plus the series when
  the file has several, plus the indices of the plane axes other than the frame axis: in a
  ``TZCYX`` hyperstack split along ``t`` every z level is a time-lapse of its own
  (``stack.tif Z=3``); split along ``z`` every time point is a z-stack.

Where the axes come from: OME-XML (OME-TIFF) or the ImageJ description (hyperstacks) when
present, as tifffile reads them; otherwise tifffile's own reading (a shaped description
written by tifffile, or pages of one shape as ``I``/``Q`` frames; samples of a page as
``S``). All series of a file are read (OME files can hold several).

Reading: an uncompressed, contiguous series is memory-mapped and the plane copied out (only
its bytes are read, and the map is dropped after each plane); otherwise only the pages
holding the plane are decoded. PNG, JPEG and
the other single images read through :func:`label_assistant.images.read_image` as one plane
with no sequence.

Pixel size (µm per pixel, ``(y, x)``): OME ``PhysicalSizeY``/``X`` (with their units),
the ImageJ ``unit`` (micron, µm, um, nm, mm) with the resolution tags, a ``pixel_size_um``
entry of a tifffile shaped description (the originals :mod:`.originals` keeps carry it),
or a resolution in pixels per centimetre; None otherwise (an inch resolution is a DPI, not
a physical size).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.images import ImageError, read_image

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
SPLIT_AXES = ("t", "z")
_CHANNEL_AXES = "CS"
_PLANE_AXES = "YX" + _CHANNEL_AXES
#: Length units to µm.
_UNITS = {"micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "μm": 1.0,
          "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3,
          "cm": 1e4, "m": 1e6, "pm": 1e-6, "Å": 1e-4}


class StackError(ValueError):
    """A file that can't be read as planes; the message names the file."""


@dataclass(frozen=True)
class PlaneRef:
    """One plane of a stack: its series and the index along each plane axis."""

    series: int
    index: tuple[tuple[str, int], ...]  # (axis, index) of every plane axis, file order
    frame: int | None  # index along the frame axis (None: a single image)
    sequence: str | None  # the sequence key, None for a single image

    @property
    def label(self) -> str:
        """``T=3,Z=1`` (``s1:`` first for a second series); ``""`` for a single image."""
        text = ",".join(f"{a}={i}" for a, i in self.index)
        return f"s{self.series}:{text}" if self.series else text


@dataclass
class Stack:
    """An opened file: its planes (no pixel read yet) and how to read one."""

    path: Path
    planes: list[PlaneRef]
    channels: int
    dtype: np.dtype
    shape_hw: tuple[int, int]
    axes: str  # of the first series, tifffile's letters ("YXS" for a PNG)
    frame_axis: str | None
    pixel_size: tuple[float, float] | None  # µm per pixel (y, x)
    _tif: Any = field(default=None, repr=False)
    _layouts: dict[int, Any] = field(default_factory=dict, repr=False)  # series -> memmap layout
    _single: np.ndarray | None = field(default=None, repr=False)

    def read(self, ref: PlaneRef) -> np.ndarray:
        """The plane as ``(H, W, C)`` in the file's dtype."""
        if self._tif is None:
            if self._single is None:
                raise StackError(f"{self.path}: the stack is closed")
            return self._single
        try:
            array, kept = self._read_tiff(ref)
        except StackError as error:
            text = str(error)
            if str(self.path) in text:
                raise
            raise StackError(f"{self.path}: plane {ref.label}: {text}") from None
        except Exception as error:  # decoders raise many types for corrupt data
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise StackError(f"{self.path}: plane {ref.label} can't be read ({reason})") from None
        return _to_hwc(array, kept)

    def _read_tiff(self, ref: PlaneRef) -> tuple[np.ndarray, list[str]]:
        series = self._tif.series[ref.series]
        axes, shape = series.axes, tuple(series.shape)
        index = dict(ref.index)
        mapped = self._memmap(ref.series)
        if mapped is not None:
            plane = np.array(mapped[tuple(index.get(a, slice(None)) for a in axes)])
            del mapped  # unmapped: only this plane's pages were read
            return plane, [a for a in axes if a in _PLANE_AXES]
        pages = series.pages
        lead = _leading_dims(shape, len(pages))
        lead_axes, lead_shape = axes[:lead], shape[:lead]
        page_axes, page_shape = axes[lead:], shape[lead:]
        ranges = [range(n) if a in _CHANNEL_AXES else [index[a]]
                  for a, n in zip(lead_axes, lead_shape, strict=True)]
        inner = tuple(index.get(a, slice(None)) for a in page_axes)
        parts = []
        for combo in itertools.product(*ranges):
            k = int(np.ravel_multi_index(combo, lead_shape)) if lead else 0
            page = pages[k]
            if page is None:
                raise StackError(f"{self.path}: plane {ref.label}: page {k} is missing")
            parts.append(np.asarray(page.asarray()).reshape(page_shape)[inner])
        kept_lead = [a for a in lead_axes if a in _CHANNEL_AXES]
        array = np.stack(parts).reshape(*[n for a, n in zip(lead_axes, lead_shape, strict=True)
                                          if a in _CHANNEL_AXES], *parts[0].shape)
        return array, kept_lead + [a for a in page_axes if a in _PLANE_AXES]

    def _memmap(self, series_index: int) -> Any:
        """A fresh memory map of an uncompressed, contiguous series (None otherwise). It is
        unmapped once the plane is copied out, so reading every plane of a stack never
        keeps more than one plane's pages resident."""
        if series_index not in self._layouts:
            series = self._tif.series[series_index]
            layout = None
            if series.dataoffset is not None and series.keyframe.compression == 1:
                dtype = np.dtype(series.dtype).newbyteorder(self._tif.byteorder)
                layout = (dtype, int(series.dataoffset), tuple(series.shape))
            self._layouts[series_index] = layout
        layout = self._layouts[series_index]
        if layout is None:
            return None
        dtype, offset, shape = layout
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)

    def close(self) -> None:
        self._layouts.clear()
        self._single = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_tiff(path: str | Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _TIFF_MAGICS
    except OSError as error:
        raise StackError(f"{path}: can't read ({error.strerror or error})") from None


def open_stack(path: str | Path, split_axis: str | None = None) -> Stack:
    """A file's planes (see the module doc); :class:`StackError` if it can't be read.

    ``split_axis``: ``"t"`` or ``"z"`` (or None) for the frame axis. The caller closes it
    (``with open_stack(...) as stack``).
    """
    path = Path(path)
    if split_axis is not None and split_axis.lower() not in SPLIT_AXES:
        raise StackError(f"split axis {split_axis!r}: choose t or z")
    if not is_tiff(path):
        return _single_image(path)
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StackError(f"{path}: not a readable TIFF ({reason})") from None
    try:
        return _tiff_stack(path, tif, split_axis)
    except BaseException:
        tif.close()
        raise


def _single_image(path: Path) -> Stack:
    try:
        image = read_image(path)  # a single image: read once, kept for read()
    except ImageError as error:
        raise StackError(str(error)) from None
    return Stack(path, [PlaneRef(0, (), None, None)], int(image.shape[2]), image.dtype,
                 (int(image.shape[0]), int(image.shape[1])), "YXS", None, None,
                 _single=image)


def _tiff_stack(path: Path, tif: Any, split_axis: str | None) -> Stack:
    planes: list[PlaneRef] = []
    first: dict[str, Any] = {}
    several = len(tif.series) > 1
    for s, series in enumerate(tif.series):
        axes, shape = series.axes, tuple(int(n) for n in series.shape)
        if "Y" not in axes or "X" not in axes:
            raise StackError(f"{path}: series {s} has axes {axes!r}, no Y and X")
        plane_axes = [a for a in axes if a not in _PLANE_AXES]
        frame_axis = _frame_axis(plane_axes, split_axis, path)
        channels = math.prod(n for a, n in zip(axes, shape, strict=True) if a in _CHANNEL_AXES)
        hw = (shape[axes.index("Y")], shape[axes.index("X")])
        if not first:
            first = {"channels": channels, "dtype": np.dtype(series.dtype), "hw": hw,
                     "axes": axes, "frame_axis": frame_axis}
        sizes = [shape[axes.index(a)] for a in plane_axes]
        for combo in itertools.product(*(range(n) for n in sizes)):
            index = tuple(zip(plane_axes, combo, strict=True))
            others = [f"{a}={i}" for a, i in index if a != frame_axis]
            key = str(path) + (f" series {s}" if several else "")
            key += (" " + ",".join(others)) if others else ""
            if frame_axis is None:  # one plane: a single image, its own sequence
                planes.append(PlaneRef(s, index, None, None))
            else:
                planes.append(PlaneRef(s, index, dict(index)[frame_axis], key))
    if not planes:
        raise StackError(f"{path}: no image data")
    return Stack(path, planes, first["channels"], first["dtype"], first["hw"], first["axes"],
                 first["frame_axis"], pixel_size_um(tif), _tif=tif)


def _frame_axis(plane_axes: list[str], split_axis: str | None, path: Path) -> str | None:
    if not plane_axes:
        return None
    if len(plane_axes) == 1:
        return plane_axes[0]
    if split_axis is not None:
        wanted = split_axis.upper()
        if wanted not in plane_axes:
            raise StackError(f"{path}: no {split_axis} axis to split along (plane axes "
                             f"{''.join(plane_axes)})")
        return wanted
    for preferred in ("T", "Z"):
        if preferred in plane_axes:
            return preferred
    return plane_axes[0]


def _leading_dims(shape: tuple[int, ...], pages: int) -> int:
    """How many leading axes of ``shape`` index pages (their product is the page count);
    :class:`StackError` when no leading axes do (pages missing or of another layout)."""
    product = 1
    for n, size in enumerate(shape):
        if product == pages:
            return n
        product *= size
    if product == pages:
        return len(shape)
    raise StackError(f"{pages} pages don't match the series shape {shape}")


def _to_hwc(array: np.ndarray, kept: list[str]) -> np.ndarray:
    order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept)
                                                  if a in _CHANNEL_AXES]
    array = np.transpose(array, order)
    array = array.reshape(array.shape[0], array.shape[1], -1)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


# --- pixel size --------------------------------------------------------------------------------


def pixel_size_um(tif: Any) -> tuple[float, float] | None:
    """µm per pixel ``(y, x)`` of an open ``tifffile.TiffFile``; None when unknown."""
    for reader in (_ome_pixel_size, _imagej_pixel_size, _shaped_pixel_size, _cm_pixel_size):
        try:
            found = reader(tif)
        except Exception:  # a malformed tag or description: try the next source
            found = None
        if found is not None and all(math.isfinite(v) and v > 0 for v in found):
            return (float(found[0]), float(found[1]))
    return None


def _ome_pixel_size(tif: Any) -> tuple[float, float] | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    from defusedxml.ElementTree import fromstring

    root = fromstring(tif.ome_metadata, forbid_dtd=True)
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.rsplit("}", 1)[-1] == "Pixels":
            x, y = element.get("PhysicalSizeX"), element.get("PhysicalSizeY")
            if x is None or y is None:
                return None
            ux = _UNITS.get(element.get("PhysicalSizeXUnit", "µm"))
            uy = _UNITS.get(element.get("PhysicalSizeYUnit", "µm"))
            if ux is None or uy is None:
                return None
            return float(y) * uy, float(x) * ux
    return None


def _resolution(page: Any) -> tuple[float, float] | None:
    """Pixels per unit ``(y, x)`` from the resolution tags."""
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if xres is None or yres is None:
        return None
    x = xres.value[0] / xres.value[1]
    y = yres.value[0] / yres.value[1]
    return (y, x) if x > 0 and y > 0 else None


def _imagej_pixel_size(tif: Any) -> tuple[float, float] | None:
    meta = tif.imagej_metadata if tif.is_imagej else None
    if not meta or "unit" not in meta:
        return None
    scale = _UNITS.get(str(meta["unit"]).strip().lower()) or _UNITS.get(str(meta["unit"]))
    resolution = _resolution(tif.pages.first)
    if scale is None or resolution is None:
        return None
    return scale / resolution[0], scale / resolution[1]


def _shaped_pixel_size(tif: Any) -> tuple[float, float] | None:
    if not tif.is_shaped or not tif.shaped_metadata:
        return None
    value = tif.shaped_metadata[0].get("pixel_size_um")
    return (float(value[0]), float(value[1])) if value else None


def _cm_pixel_size(tif: Any) -> tuple[float, float] | None:
    page = tif.pages.first
    unit = page.tags.get("ResolutionUnit")
    if unit is None or int(unit.value) != 3:  # 3 = centimetre; 2 = inch (a DPI)
        return None
    resolution = _resolution(page)
    return None if resolution is None else (1e4 / resolution[0], 1e4 / resolution[1])

"""Reading images as the annotator sees them, and turning them into model input.

Layout: :func:`read_image` always returns a 3-D ``(H, W, C)`` array in the file's own dtype,
``C`` in 1..4 (grayscale -> 1; RGB -> 3; an alpha channel is dropped: RGBA -> 3, gray+alpha
-> 1). Values are the stored ones: no scaling, no bit-depth change (a 1-bit image reads as
uint8 0/1), so the same function reads ground-truth masks.

- PNG: Pillow, except 16-bit colour PNGs, which Pillow reduces to 8 bits: those go through
  OpenCV (``IMREAD_UNCHANGED``, converted from BGR to RGB).
- JPEG, BMP and the rest: Pillow, turned upright by the EXIF orientation as browsers do.
- TIFF: tifffile, first page (the first plane of a multi-page stack); Pillow if tifffile can't
  decode it (a compression it lacks a codec for).

The format is found from the file's first bytes, not its name. :func:`image_size` reads the
size the same decoders would decode from the header alone, for limits checked before decoding.

Normalization (:func:`normalize_for_model`, :func:`to_display_uint8`) stretches each channel
between its ``low`` and ``high`` percentiles for every dtype, 8-bit included: dim 8-bit
fluorescence images are common, and the model should see the same range whatever the bit depth.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# TIFF ExtraSamples values that mean alpha (associated, unassociated).
_ALPHA_EXTRASAMPLES = (1, 2)


class ImageError(ValueError):
    """An image that can't be read or used; the message names the file."""


def read_image(source: str | Path | bytes, *, palette_indices: bool = False) -> np.ndarray:
    """Read a PNG, JPEG, TIFF (or other Pillow format) as ``(H, W, C)`` in its own dtype.

    ``palette_indices``: for palette images (PNG/TIFF/GIF mode ``P``) return the palette
    indices (C = 1), as wanted for palette-coded masks, instead of the colours shown.
    Raises :class:`ImageError` (one line naming the file) for missing, empty, corrupt or
    unsupported files.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise ImageError(f"{name}: can't read ({error.strerror or error})") from None
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        if data.startswith(_TIFF_MAGICS):
            image = _read_tiff(data, palette_indices)
        elif data.startswith(_PNG_MAGIC) and _png_is_16bit_colour(data):
            image = _read_cv2(data)
        else:
            image = _read_pillow(data, palette_indices)
    except ImageError as error:
        raise ImageError(f"{name}: {error}") from None
    except Exception as error:  # decoders raise many types for corrupt data
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageError(f"{name}: not a readable image ({reason})") from None
    return _check_layout(image, name)


def image_size(source: bytes) -> tuple[int, int, int]:
    """``(height, width, values)`` of the image :func:`read_image` would decode, read from
    its header without decoding a pixel; ``values`` is how many numbers decoding makes
    (height x width x samples, x depth for a volumetric TIFF page).

    The same decoders as :func:`read_image` read the header: tifffile's first page for a
    TIFF (and Pillow's, when it reads one too: the larger counts, since :func:`read_image`
    may fall back to Pillow), Pillow's for everything else (16-bit colour PNGs too: OpenCV
    decodes the size in their IHDR). Raises :class:`ImageError` when no header can be read
    (:func:`read_image` would fail too); Pillow's ``DecompressionBombError`` passes through.
    """
    from PIL import Image

    data = bytes(source)
    if not data:
        raise ImageError("empty file")
    sizes = []
    if data.startswith(_TIFF_MAGICS):
        try:
            sizes.append(_tiff_size(data))
        except Exception:  # read_image falls back to Pillow: so do we
            pass
    try:
        sizes.append(_pillow_size(data))
    except Image.DecompressionBombError:
        raise
    except ImageError:
        if not sizes:
            raise
    except Exception as error:
        if not sizes:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ImageError(f"not a readable image ({reason})") from None
    return max(sizes, key=lambda s: (s[0] * s[1], s[2]))


def _tiff_size(data: bytes) -> tuple[int, int, int]:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first  # what _read_tiff decodes: the whole first page
        height, width = int(page.imagelength), int(page.imagewidth)
        values = 1
        for n in page.shape:
            values *= int(n)
    return height, width, max(values, height * width)


def _pillow_size(data: bytes) -> tuple[int, int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image in a supported format") from None
    with opened:
        width, height = opened.size
        bands = len(opened.getbands())
    return int(height), int(width), int(height) * int(width) * max(bands, 1)


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR follows the signature: length(4) type(4) width(4) height(4) depth(1) colour type(1).
    if len(data) < 26 or data[12:16] != b"IHDR":
        return False
    depth, colour_type = data[24], data[25]
    return depth == 16 and colour_type in (2, 4, 6)  # RGB, gray+alpha, RGBA


def _read_cv2(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError("not a readable image (OpenCV could not decode it)")
    if image.ndim == 2:
        return image[..., None]
    if image.shape[2] == 4:
        b, g, r = image[..., 0], image[..., 1], image[..., 2]
        if np.array_equal(b, g) and np.array_equal(g, r):  # gray+alpha, expanded by OpenCV
            return image[..., :1].copy()
        return image[..., 2::-1].copy()  # BGRA -> RGB, alpha dropped
    return image[..., ::-1].copy()  # BGR -> RGB


def _read_pillow(data: bytes, palette_indices: bool) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image in a supported format") from None
    with opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    mode = image.mode
    if mode == "P" and palette_indices:
        return np.asarray(image)[..., None]
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        rgb = np.asarray(image)[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., :1].copy()  # a gray palette is a grayscale image
        return rgb.copy()
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)[..., None]  # 0/1, the stored values
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        array = np.asarray(image)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("="))
        return array[..., None]
    if mode in ("LA", "La", "PA"):
        return np.asarray(image.convert("L"))[..., None]
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(image)[..., :3].copy()
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV


def _read_tiff(data: bytes, palette_indices: bool) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            array = page.asarray()
            axes = page.axes
            extrasamples = tuple(int(e) for e in (page.extrasamples or ()))
            photometric = int(page.photometric)
            colormap = page.colormap
    except Exception:
        # tifffile lacks codecs for some compressions (without imagecodecs); Pillow has them.
        return _read_pillow(data, palette_indices)
    # Keep Y, X and samples; take the first index of any other axis (depth, planes).
    index = tuple(slice(None) if a in "YXS" else 0 for a in axes)
    array = array[index]
    kept = [a for a in axes if a in "YXS"]
    if "S" not in kept:
        array, kept = array[..., None], [*kept, "S"]
    array = np.moveaxis(array, [kept.index("Y"), kept.index("X"), kept.index("S")], [0, 1, 2])
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if photometric == 0 and array.dtype.kind in "ui":  # MINISWHITE: 0 is white on screen
        array = np.iinfo(array.dtype).max - array
    if photometric == 3 and colormap is not None and not palette_indices:
        rgb = np.moveaxis(np.asarray(colormap)[:, array[..., 0]], 0, -1)
        array = (rgb >> 8).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
    n_alpha = sum(1 for e in extrasamples if e in _ALPHA_EXTRASAMPLES)
    if n_alpha and array.shape[2] > 1 and extrasamples[-1] in _ALPHA_EXTRASAMPLES:
        array = array[..., :-1]
    return np.ascontiguousarray(array)


def _check_layout(image: np.ndarray, name: str) -> np.ndarray:
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"{name}: unsupported image shape {image.shape}")
    if not 1 <= image.shape[2] <= 4:
        raise ImageError(f"{name}: {image.shape[2]} channels; 1 to 4 are supported")
    if image.dtype.kind not in "uif":
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    return image


def image_hw(image: np.ndarray) -> tuple[int, int]:
    """(H, W) of an ``(H, W)`` or ``(H, W, C)`` image."""
    if image.ndim not in (2, 3):
        raise ImageError(f"an image must be (H, W) or (H, W, C), got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    image_hw(image)
    return image[..., None] if image.ndim == 2 else image


def _stretch(channel: np.ndarray, low: float, high: float, step: int = 1) -> np.ndarray:
    """One channel to float32 [0, 1] between its percentiles (taken over every ``step``-th
    row and column); non-finite pixels -> 0."""
    values = channel.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(channel.shape, np.float32)
    if finite.all():
        sample = values[::step, ::step] if step > 1 else values
    else:
        sample = values[finite]
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        # The percentiles met (sparse objects on a flat background): use the full range.
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        return np.zeros(channel.shape, np.float32)  # constant: zeros, not NaN
    out = (values - np.float32(lo)) / np.float32(hi - lo)
    out = np.clip(out, 0.0, 1.0, out=out)
    out[~finite] = 0.0
    return out.astype(np.float32, copy=False)


def normalize_for_model(image: np.ndarray, low: float = 1.0, high: float = 99.8, *,
                        step: int = 1) -> np.ndarray:
    """float32 ``(C, H, W)`` in [0, 1]: each channel stretched between its percentiles.

    The same rule for every dtype (see the module docstring); a constant channel becomes 0.
    Accepts ``(H, W)`` or ``(H, W, C)``. ``step`` > 1 takes the percentiles over every
    ``step``-th row and column only (faster on large images; the model's input uses all).
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    hwc = _as_hwc(image)
    return np.stack([_stretch(hwc[..., c], low, high, step) for c in range(hwc.shape[2])])


def to_display_uint8(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """uint8 ``(H, W, C)`` for display: 8-bit images as they are, others by percentiles."""
    hwc = _as_hwc(image)
    if hwc.dtype == np.uint8:
        return hwc.copy()
    normalized = normalize_for_model(hwc, low, high)
    return np.round(np.moveaxis(normalized, 0, -1) * 255).astype(np.uint8)


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A model input (float ``(C, H, W)``) with ``channels`` channels: the project's channel
    policy, applied the same way in training, prediction and ranking.

    Grey to colour repeats the grey channel; colour to grey averages the colour channels
    (after each was normalized on its own); RGBA to RGB drops alpha. Anything else is an
    :class:`ImageError` naming both counts.
    """
    have = image.shape[0]
    if have == channels:
        return image
    if have == 1:
        return np.repeat(image, channels, axis=0)
    if channels == 1:
        colour = image[:3] if have == 4 else image
        return colour.mean(axis=0, keepdims=True, dtype=np.float32)
    if have == 4 and channels == 3:
        return image[:3]
    raise ImageError(f"an image with {have} channels can't be given to a model of {channels}")


def chw_to_hwc(x: np.ndarray) -> np.ndarray:
    """A model input (C, H, W) as an image again: (H, W) for one channel, else (H, W, C)."""
    x = np.asarray(x)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)

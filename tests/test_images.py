"""read_image for each format and layout; normalization for the model and for display."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from label_assistant.images import (
    ImageError,
    image_hw,
    normalize_for_model,
    read_image,
    to_display_uint8,
)

RNG = np.random.default_rng(0)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, "PNG")
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def test_png_8bit_gray_from_path(tmp_path):
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(gray))
    image = read_image(path)
    assert image.shape == (5, 7, 1) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], gray)
    assert np.array_equal(read_image(str(path)), image)


def test_png_16bit_gray_keeps_values():
    gray = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    image = read_image(png_bytes(gray))
    assert image.dtype == np.uint16 and np.array_equal(image[..., 0], gray)


def test_png_16bit_rgb_keeps_values_and_channel_order():
    rgb = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
    assert ok
    image = read_image(encoded.tobytes())
    assert image.dtype == np.uint16 and np.array_equal(image, rgb)


def test_png_rgb_and_rgba_drop_alpha():
    rgba = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    assert np.array_equal(read_image(png_bytes(rgba[..., :3])), rgba[..., :3])
    image = read_image(png_bytes(rgba, "RGBA"))
    assert image.shape == (4, 5, 3) and np.array_equal(image, rgba[..., :3])


def test_gray_alpha_png_is_one_channel():
    la = np.stack([np.arange(20, dtype=np.uint8).reshape(4, 5), np.full((4, 5), 9, np.uint8)], -1)
    image = read_image(png_bytes(la, "LA"))
    assert image.shape == (4, 5, 1) and np.array_equal(image[..., 0], la[..., 0])


def test_palette_png_reads_colours_or_indices():
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    pil = Image.fromarray(indices, "P")
    pil.putpalette([0, 0, 0, 255, 0, 0, 0, 128, 0] + [0] * (253 * 3))
    buffer = io.BytesIO()
    pil.save(buffer, "PNG")
    colours = read_image(buffer.getvalue())
    assert colours.shape == (2, 2, 3) and tuple(colours[0, 1]) == (255, 0, 0)
    assert np.array_equal(read_image(buffer.getvalue(), palette_indices=True)[..., 0], indices)


def test_jpeg_rgb_and_gray():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red: a BGR mix-up would put it in channel 2
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)
    image = read_image(buffer.getvalue())
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert abs(int(image[..., 0].mean()) - 200) < 5 and image[..., 2].mean() < 10
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(buffer, "JPEG")
    assert read_image(buffer.getvalue()).shape == (8, 8, 1)


def test_jpeg_exif_orientation_is_applied_like_a_browser():
    array = np.zeros((8, 16, 3), np.uint8)  # stored landscape
    pil = Image.fromarray(array)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", exif=exif)
    assert read_image(buffer.getvalue()).shape == (16, 8, 3)


def test_tiff_16bit_gray():
    gray = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    image = read_image(tiff_bytes(gray))
    assert image.shape == (6, 5, 1) and image.dtype == np.uint16
    assert np.array_equal(image[..., 0], gray)


def test_multipage_tiff_gives_the_first_plane():
    stack = RNG.integers(0, 65536, (3, 6, 5), dtype=np.uint16)
    image = read_image(tiff_bytes(stack, photometric="minisblack"))
    assert image.shape == (6, 5, 1) and np.array_equal(image[..., 0], stack[0])


def test_float_tiff_keeps_values():
    data = RNG.normal(size=(4, 4)).astype(np.float32)
    image = read_image(tiff_bytes(data))
    assert image.dtype == np.float32 and np.array_equal(image[..., 0], data)


def test_tiff_rgb_planar_and_rgba():
    rgb = RNG.integers(0, 256, (3, 5, 6), dtype=np.uint8)  # planes first
    image = read_image(tiff_bytes(rgb, photometric="rgb", planarconfig="separate"))
    assert image.shape == (5, 6, 3) and np.array_equal(image, np.moveaxis(rgb, 0, -1))
    rgba = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    image = read_image(tiff_bytes(rgba, photometric="rgb"))
    assert image.shape == (5, 6, 3) and np.array_equal(image, rgba[..., :3])


def test_two_channel_tiff_keeps_both_channels():
    data = RNG.integers(0, 4096, (5, 6, 2), dtype=np.uint16)
    image = read_image(tiff_bytes(data, photometric="minisblack", planarconfig="contig"))
    assert image.shape == (5, 6, 2) and np.array_equal(image, data)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"this is not an image", "supported format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not"),
        (b"II*\x00" + b"\x00" * 10, "not"),
    ],
)
def test_unreadable_files_raise_one_line_naming_the_file(tmp_path, data, match):
    path = tmp_path / "broken.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_png_raises(tmp_path):
    full = png_bytes(RNG.integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageError):
        read_image(full[: len(full) // 2])


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_normalize_for_model_percentiles_per_channel():
    image = np.zeros((10, 10, 2), np.uint16)
    image[..., 0] = np.arange(100).reshape(10, 10)
    image[..., 1] = 1000 + 10 * np.arange(100).reshape(10, 10)
    out = normalize_for_model(image, low=0, high=100)
    assert out.shape == (2, 10, 10) and out.dtype == np.float32
    assert np.allclose(out[0], out[1]) and out.min() == 0 and out.max() == 1
    # Default percentiles clip the extremes into [0, 1].
    clipped = normalize_for_model(image)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_normalize_constant_and_sparse_images():
    assert not normalize_for_model(np.full((4, 4), 9, np.uint8)).any()
    sparse = np.zeros((100, 100), np.uint8)
    sparse[0, 0] = 50  # fewer than 0.2 % of pixels: percentiles meet, full range used
    out = normalize_for_model(sparse)
    assert out[0, 0, 0] == 1.0 and np.isfinite(out).all()
    with_nan = np.array([[0.0, 1.0], [np.nan, 0.5]], np.float32)
    assert np.isfinite(normalize_for_model(with_nan, 0, 100)).all()


def test_normalize_rejects_bad_percentiles():
    with pytest.raises(ValueError):
        normalize_for_model(np.zeros((2, 2)), low=50, high=10)


def test_to_display_uint8():
    eight = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    assert np.array_equal(to_display_uint8(eight), eight)
    sixteen = (np.arange(12, dtype=np.uint16) * 1000).reshape(3, 4)
    shown = to_display_uint8(sixteen, low=0, high=100)
    assert shown.dtype == np.uint8 and shown.shape == (3, 4, 1)
    assert shown.min() == 0 and shown.max() == 255


def test_image_hw():
    assert image_hw(np.zeros((3, 4))) == (3, 4)
    assert image_hw(np.zeros((3, 4, 1))) == (3, 4)
    with pytest.raises(ImageError):
        image_hw(np.zeros(5))


def test_reads_the_shared_data(shared_data):
    nuclei = shared_data / "stardist_dsb2018_sample" / "images" / "img2d.tif"
    if nuclei.is_file():
        image = read_image(nuclei)
        assert image.shape == (512, 512, 1) and image.dtype == np.uint16


def test_normalize_for_model_can_take_its_percentiles_from_a_sample():
    from label_assistant.images import normalize_for_model

    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 300.0, (512, 512)).astype(np.uint16)
    full = normalize_for_model(image)
    sampled = normalize_for_model(image, step=4)
    assert sampled.shape == full.shape and sampled.dtype == np.float32
    assert np.abs(sampled - full).max() < 0.02

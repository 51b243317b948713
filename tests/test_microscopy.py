"""Microscopy files plane by plane, the channels and display PNG of a plane, the originals
kept by content hash, and the backend reading a task's original (or refusing it)."""

from __future__ import annotations

import base64
import io
import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image

from label_assistant.images import to_display_uint8
from label_assistant.labelstudio.config import brush_label_config, parse_label_config
from label_assistant.microscopy.originals import (
    ORIGINAL_FIELD,
    SOURCE_FIELD,
    OriginalError,
    choose_channels,
    display_png,
    keep_original,
    load_original,
)
from label_assistant.microscopy.stacks import StackError, open_stack
from label_assistant.ml_backend.fetch import FetchOriginalMissing, ImageFetcher
from label_assistant.ml_backend.prelabels import Prelabels
from label_assistant.workspace import Workspace

T, Z, C, H, W = 3, 2, 2, 24, 32


def hyperstack(seed: int = 0) -> np.ndarray:
    """16-bit TZCYX with values no plane shares."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65535, size=(T, Z, C, H, W), dtype=np.uint16)


@pytest.fixture
def stacks(tmp_path):
    data = hyperstack()
    paths = {
        "ome": tmp_path / "cells.ome.tif",
        "imagej": tmp_path / "cells_ij.tif",
        "imagej_zlib": tmp_path / "cells_ij_zlib.tif",
    }
    tifffile.imwrite(paths["ome"], data, ome=True,
                     metadata={"axes": "TZCYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325})
    tifffile.imwrite(paths["imagej"], data, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "TZCYX", "unit": "micron"})
    tifffile.imwrite(paths["imagej_zlib"], data, imagej=True, compression="zlib",
                     metadata={"axes": "TZCYX"})
    return data, paths


@pytest.mark.parametrize("kind", ["ome", "imagej", "imagej_zlib"])
def test_a_hyperstack_is_its_planes_with_frames_and_sequences(stacks, kind):
    data, paths = stacks
    with open_stack(paths[kind]) as stack:  # default: split along t
        assert (stack.axes, stack.frame_axis, stack.channels) == ("TZCYX", "T", C)
        assert len(stack.planes) == T * Z
        for ref in stack.planes:
            index = dict(ref.index)
            assert ref.frame == index["T"]
            assert ref.sequence == f"{paths[kind]} Z={index['Z']}"  # each z level a time-lapse
            plane = stack.read(ref)
            assert plane.dtype == np.uint16 and plane.shape == (H, W, C)
            np.testing.assert_array_equal(plane, np.moveaxis(data[index["T"], index["Z"]], 0, -1))
    with open_stack(paths[kind], "z") as stack:
        ref = stack.planes[3]
        assert ref.frame == dict(ref.index)["Z"]
        assert ref.sequence == f"{paths[kind]} T={dict(ref.index)['T']}"


def test_pixel_sizes_come_from_ome_and_imagej(stacks):
    _, paths = stacks
    with open_stack(paths["ome"]) as stack:
        assert stack.pixel_size == pytest.approx((0.325, 0.325))
    with open_stack(paths["imagej"]) as stack:
        assert stack.pixel_size == pytest.approx((0.5, 0.5))
    with open_stack(paths["imagej_zlib"]) as stack:
        assert stack.pixel_size is None  # no unit: no physical size


def test_a_plain_multipage_tiff_is_one_sequence_of_frames(tmp_path):
    pages = np.arange(5 * H * W, dtype=np.float32).reshape(5, H, W)
    path = tmp_path / "plain.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:  # separate pages, no shape metadata
            tif.write(page, photometric="minisblack", metadata=None)
    with open_stack(path) as stack:
        assert len(stack.planes) == 5 and stack.channels == 1
        assert [r.frame for r in stack.planes] == [0, 1, 2, 3, 4]
        assert {r.sequence for r in stack.planes} == {str(path)}
        np.testing.assert_array_equal(stack.read(stack.planes[4])[..., 0], pages[4])
    with pytest.raises(StackError, match="choose t or z"):
        open_stack(path, "x")


def test_a_single_image_is_its_own_sequence(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(np.full((H, W, 3), 7, np.uint8)).save(path)
    with open_stack(path, "t") as stack:
        (ref,) = stack.planes
        assert (ref.frame, ref.sequence, ref.label) == (None, None, "")
        assert stack.read(ref).shape == (H, W, 3)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(StackError, match="bad.tif"):
        open_stack(bad)


def test_one_plane_is_read_without_loading_the_stack(tmp_path):
    big = np.zeros((64, 256, 256), np.uint16)  # 8 MiB
    for compression in (None, "zlib"):
        path = tmp_path / f"big-{compression}.tif"
        tifffile.imwrite(path, big, imagej=True, compression=compression,
                         metadata={"axes": "TYX"})
        with open_stack(path) as stack:
            tracemalloc.start()
            stack.read(stack.planes[40])
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        # Decoding makes a few copies of one plane (128 KiB); the stack is 8 MiB.
        assert peak < 8 * 256 * 256 * 2, (compression, peak)


def test_channels_default_rule_and_choices():
    plane = np.stack([np.full((4, 5), v, np.uint16) for v in (10, 20, 30, 40)], axis=-1)
    assert choose_channels(plane[..., :1]).shape == (4, 5, 1)
    two = choose_channels(plane[..., :2])
    assert two.shape == (4, 5, 3) and two[0, 0].tolist() == [10, 20, 0]  # red + green
    assert choose_channels(plane)[0, 0].tolist() == [10, 20, 30]  # 4 channels: the first 3
    assert choose_channels(plane, channel=3)[0, 0].tolist() == [40]
    assert choose_channels(plane, channels=(3, 1))[0, 0].tolist() == [40, 20, 0]
    with pytest.raises(ValueError, match="not among the 4 channels"):
        choose_channels(plane, channel=4)


def test_the_display_png_is_the_models_normalization():
    rng = np.random.default_rng(1)
    plane = rng.integers(100, 4000, size=(H, W, 1), dtype=np.uint16)
    shown = np.asarray(Image.open(io.BytesIO(display_png(plane))))
    np.testing.assert_array_equal(shown, to_display_uint8(plane)[..., 0])


def test_originals_round_trip_and_refusals(tmp_path):
    workspace = Workspace(tmp_path / "work")
    plane = hyperstack()[1, 0, :1].transpose(1, 2, 0)  # (H, W, 1) uint16
    digest = keep_original(workspace, plane, (0.5, 0.5))
    assert keep_original(workspace, plane, (0.5, 0.5)) == digest  # once per content
    _, back = load_original(workspace, digest)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, plane)
    with open_stack(workspace.original_file(digest)) as stack:
        assert stack.pixel_size == (0.5, 0.5)
    with pytest.raises(OriginalError, match="not a content hash"):
        load_original(workspace, "../../etc/passwd")
    with pytest.raises(OriginalError, match="is not in"):
        load_original(workspace, "0" * 16, "cells.tif T=0")
    # The same values with another pixel size (or none) are another original.
    unscaled = keep_original(workspace, plane)
    assert unscaled != digest
    with open_stack(workspace.original_file(unscaled)) as stack:
        assert stack.pixel_size is None
    other = keep_original(workspace, plane + 1)
    workspace.original_file(digest).write_bytes(workspace.original_file(other).read_bytes())
    with pytest.raises(OriginalError, match="no longer holds"):
        load_original(workspace, digest)


def _data_url(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_backend_reads_a_tasks_original_and_refuses_a_missing_one(tmp_path):
    workspace = Workspace(tmp_path / "work")
    config = parse_label_config(brush_label_config(["Nucleus"]))
    plane = np.zeros((H, W, 1), np.uint16)
    plane[5:15, 5:15] = 3000
    digest = keep_original(workspace, plane)
    display = _data_url(to_display_uint8(plane)[..., 0])
    fetcher = ImageFetcher(label_studio_url=None, workspace=workspace)
    task = {"id": 7, "data": {"image": display, ORIGINAL_FIELD: digest,
                              SOURCE_FIELD: "cells.tif T=0"}}
    got = fetcher.task_image(task, config)
    assert got.image.dtype == np.uint16 and got.suffix == ".tif"
    np.testing.assert_array_equal(got.image, plane)
    plain = fetcher.task_image({"id": 8, "data": {"image": display}}, config)
    assert plain.image.dtype == np.uint8  # a task without an original: the image shown

    workspace.original_file(digest).unlink()
    with pytest.raises(FetchOriginalMissing, match="task 7: the original plane .* is not in"):
        fetcher.task_image(task, config)
    errors: list = []
    answers = Prelabels(workspace).predict([task], config, fetcher, "1", errors)
    assert answers[0]["result"] == []  # never the PNG in its place
    assert "cells.tif T=0" in errors[0]["error"]

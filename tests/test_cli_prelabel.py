"""``label-assistant prelabel`` end to end on tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from label_assistant.cli import main


def blob_image(size=40, value=200):
    image = np.full((size, size), 20, np.uint8)
    image[10:25, 10:25] = value
    return image


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(blob_image()).save(images / "a.png")
    Image.fromarray(np.dstack([blob_image()] * 3)).save(images / "b.jpg", quality=95)
    (images / "notes.txt").write_text("not an image")
    return images


def read_png(path):
    return np.asarray(Image.open(path))


def test_folder_writes_label_maps_and_summary(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prelabel", str(folder), "--out", str(out), "--save-confidence"]) == 0
    for stem in ("a", "b"):
        label_map = read_png(out / f"{stem}.png")
        assert label_map.dtype == np.uint8 and label_map.shape == (40, 40)
        assert set(np.unique(label_map)) == {0, 1}
        assert label_map[17, 17] == 1 and label_map[35, 35] == 0
        assert read_png(out / "confidence" / f"{stem}.png").dtype == np.uint8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "otsu" and summary["version"].startswith("otsu-")
    assert [r["image"] for r in summary["images"]] == ["a.png", "b.jpg"]
    row = summary["images"][0]
    assert row["width"] == 40 and row["objects"] == 1 and row["polarity"] == "bright"
    assert row["foreground_fraction"] == pytest.approx(15 * 15 / 40**2, abs=0.02)
    assert summary["failed"] == []
    assert "pre-labeled 2 of 2" in capsys.readouterr().out


def test_single_file_and_json_to_stdout(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prelabel", str(folder / "a.png"), "--out", str(out), "--json",
                 "--classes", "2", "--polarity", "bright", "--no-separate", "--min-size", "0"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["params"]["n_classes"] == 2 and printed["params"]["separate_touching"] is False
    assert len(printed["images"]) == 1 and len(printed["images"][0]["thresholds"]) == 2
    assert (out / "a.png").is_file() and not (out / "b.png").exists()


def test_parameters_change_the_version(folder, tmp_path, capsys):
    main(["prelabel", str(folder / "a.png"), "--out", str(tmp_path / "x")])
    main(["prelabel", str(folder / "a.png"), "--out", str(tmp_path / "y"), "--method", "local",
          "--block-size", "31", "--equalize", "--no-fill-holes"])
    x = json.loads((tmp_path / "x" / "summary.json").read_text())
    y = json.loads((tmp_path / "y" / "summary.json").read_text())
    assert x["version"] != y["version"] and y["params"]["method"] == "local"


def test_unreadable_image_in_folder_is_skipped_and_exit_1(folder, tmp_path, capsys):
    (folder / "c.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert main(["prelabel", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "c.png" in err and "warning" in err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == 2 and summary["failed"][0]["file"].endswith("c.png")
    assert (out / "a.png").is_file() and not (out / "c.png").exists()


def test_unreadable_single_image_is_exit_2_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert main(["prelabel", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.png" in err


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_bad_paths_exit_2_with_one_line(tmp_path, capsys, where):
    path = tmp_path / where
    if where == "empty":
        path.mkdir()
    assert main(["prelabel", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err


def test_bad_parameters_exit_2(folder, tmp_path, capsys):
    assert main(["prelabel", str(folder), "--out", str(tmp_path / "o"), "--classes", "0"]) == 2
    assert "n_classes" in capsys.readouterr().err


def test_output_that_is_a_file_is_an_error(folder, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["prelabel", str(folder), "--out", str(out)]) == 2


def test_two_images_with_one_stem_are_refused(folder, tmp_path, capsys):
    Image.fromarray(blob_image()).save(folder / "a.tif")
    assert main(["prelabel", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "a.png" in capsys.readouterr().err


def test_overlay_outlines_the_objects_over_the_image(folder, tmp_path):
    out = tmp_path / "out"
    assert main(["prelabel", str(folder), "--out", str(out), "--overlay"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for row, stem in zip(summary["images"], ("a", "b"), strict=True):
        shown = read_png(out / "overlay" / f"{stem}.png")
        assert row["overlay"] == str(out / "overlay" / f"{stem}.png")
        assert shown.shape == (40, 40, 3) and shown.dtype == np.uint8
        red = np.all(shown == (230, 25, 75), axis=2)
        # The square 10..24 is outlined: its edges, on both sides, and nothing else.
        assert red[10, 10:25].all() and red[24, 10:25].all() and red[9, 12] and red[25, 12]
        assert not red[17, 17] and not red[0:5, 0:5].any() and not red[30:, 30:].any()
        assert shown[17, 17, 0] == shown[17, 17, 1] > 150  # the image, grey, under it


def test_overlay_refuses_a_label_map_of_another_size():
    from label_assistant.reporting.overlay import overlay

    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8))

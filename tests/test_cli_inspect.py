"""``label-assistant inspect`` on tiny PNGs written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from label_assistant.cli import main
from label_assistant.labelmap import UNLABELED


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def good_map(shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    lm = np.zeros(shape, np.uint8)
    lm[2:6, 2:6] = 1  # 16 pixels: no fragment
    lm[:, -1] = UNLABELED
    return lm


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """Images a, b, c; label maps for a (good) and b (good); c is not labeled yet."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in "abc":
        write_png(images / f"{name}.png", np.full((8, 8), 100, np.uint8))
    write_png(labels / "a.png", good_map())
    write_png(labels / "b.png", good_map())
    return images, labels


def test_all_admitted_exits_zero(project, capsys):
    images, labels = project
    assert main(["inspect", str(images), str(labels), "--min-class-pixels", "30"]) == 0
    out = capsys.readouterr().out
    assert "a.png: admitted" in out and "b.png: admitted" in out
    assert "2 admitted, 0 quarantined; 1 image without labels" in out
    assert "Background" in out and "class 1" in out


def test_quarantined_annotation_exits_one_with_its_reason(project, capsys):
    images, labels = project
    write_png(labels / "b.png", np.full((8, 8), UNLABELED, np.uint8))
    assert main(["inspect", str(images), str(labels)]) == 1
    out = capsys.readouterr().out
    assert "b.png: QUARANTINED" in out
    assert "error empty: Nothing is labeled" in out


def test_json_to_stdout(project, capsys):
    images, labels = project
    write_png(labels / "b.png", np.full((8, 8), UNLABELED, np.uint8))
    assert main(["inspect", str(images), str(labels), "--json", "--classes", "Nucleus",
                 "--min-class-pixels", "20"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == {"annotations": 2, "admitted": 1, "quarantined": 1,
                               "images_without_labels": 1}
    by_name = {Path(a["labels"]).name: a for a in data["annotations"]}
    assert by_name["a.png"]["admitted"] is True
    assert [f["code"] for f in by_name["b.png"]["findings"]] == ["empty"]
    # progress counts admitted annotations only: a.png has 16 Nucleus pixels
    nucleus = data["class_progress"][1]
    assert nucleus["name"] == "Nucleus" and nucleus["pixels"] == 16
    assert nucleus["minimum"] == 20 and nucleus["done"] is False


def test_json_to_file_keeps_the_text(project, tmp_path, capsys):
    images, labels = project
    out_file = tmp_path / "out" / "report.json"
    assert main(["inspect", str(images), str(labels), "--json", str(out_file)]) == 0
    assert "a.png: admitted" in capsys.readouterr().out
    assert json.loads(out_file.read_text())["summary"]["admitted"] == 2


def test_size_mismatch_quarantines(project, capsys):
    images, labels = project
    write_png(labels / "a.png", good_map((8, 9)))
    assert main(["inspect", str(images), str(labels)]) == 1
    out = capsys.readouterr().out
    assert "a.png: QUARANTINED" in out and "size_mismatch" in out


def test_rule_override_and_config_file(project, tmp_path, capsys):
    images, labels = project
    write_png(labels / "b.png", np.full((8, 8), UNLABELED, np.uint8))
    assert main(["inspect", str(images), str(labels), "--rule", "empty=warning"]) == 0
    assert "b.png: admitted (1 warning)\n  warning empty:" in capsys.readouterr().out
    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"severity": {"empty": "off"}, "min_class_pixels": 10}))
    assert main(["inspect", str(images), str(labels), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "b.png: admitted\n" in out and "empty" not in out
    assert "10 labeled pixels needed" in out
    # --rule wins over the file
    assert main(["inspect", str(images), str(labels), "--config", str(config),
                 "--rule", "empty=error"]) == 1


def test_classes_give_k_and_unknown_values_quarantine(project, capsys):
    images, labels = project
    lm = good_map()
    lm[0:2, 0:2] = 2
    write_png(labels / "a.png", lm)
    assert main(["inspect", str(images), str(labels), "--classes", "Nucleus"]) == 1
    assert "unknown_class" in capsys.readouterr().out
    # without --classes, K is the largest value: 2 is a class
    assert main(["inspect", str(images), str(labels)]) == 0


def test_single_files_are_a_pair_whatever_their_names(tmp_path):
    image = write_png(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))
    label = write_png(tmp_path / "mask.png", good_map())
    assert main(["inspect", str(image), str(label)]) == 0


def test_no_background_project(tmp_path):
    image = write_png(tmp_path / "i.png", np.zeros((8, 8), np.uint8))
    lm = np.full((8, 8), UNLABELED, np.uint8)
    lm[2:6, 2:6] = 1
    label = write_png(tmp_path / "l.png", lm)
    assert main(["inspect", str(image), str(label)]) == 1
    assert main(["inspect", str(image), str(label), "--no-background"]) == 0


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("label-assistant inspect: error: ") and "\n" not in err
    return err


@pytest.mark.parametrize("change, expected", [
    (lambda i, lb: ["inspect", str(i / "missing"), str(lb)], "does not exist"),
    (lambda i, lb: ["inspect", str(i), str(lb / "missing")], "does not exist"),
    (lambda i, lb: ["inspect", str(i), str(lb), "--rule", "typo=off"], "unknown rule"),
    (lambda i, lb: ["inspect", str(i), str(lb), "--rule", "empty"], "CODE="),
    (lambda i, lb: ["inspect", str(i), str(lb), "--rule", "empty=fatal"], "level"),
    (lambda i, lb: ["inspect", str(i), str(lb), "--config", str(lb / "nope.json")],
     "can't read"),
])
def test_bad_input_is_one_line_and_exit_two(project, capsys, change, expected):
    images, labels = project
    assert main(change(images, labels)) == 2
    assert expected in one_line_error(capsys)


def test_label_without_image_is_bad_input(project, capsys):
    images, labels = project
    write_png(labels / "zzz.png", good_map())
    assert main(["inspect", str(images), str(labels)]) == 2
    assert "zzz.png" in one_line_error(capsys)


def test_unreadable_image_is_bad_input(project, capsys):
    images, labels = project
    (images / "a.png").write_bytes(b"not a png")
    assert main(["inspect", str(images), str(labels)]) == 2
    assert "a.png" in one_line_error(capsys)


def test_bad_config_json_is_bad_input(project, tmp_path, capsys):
    images, labels = project
    config = tmp_path / "rules.json"
    config.write_text("{not json")
    assert main(["inspect", str(images), str(labels), "--config", str(config)]) == 2
    assert "not valid JSON" in one_line_error(capsys)


def test_colour_label_map_is_bad_input(project, capsys):
    images, labels = project
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 2] = 1
    write_png(labels / "a.png", colour)
    assert main(["inspect", str(images), str(labels)]) == 2
    assert "single-channel" in one_line_error(capsys)


def binary_truth(shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    """A ground-truth mask as ISBI ships them: 255 = object, 0 = background."""
    mask = np.zeros(shape, np.uint8)
    mask[1:15, 1:15] = 255  # most of the image
    return mask


def test_a_binary_truth_read_as_label_maps_gets_a_hint_and_mask_type_reads_it(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "masks"
    for name in "ab":
        write_png(images / f"{name}.png", np.full((16, 16), 100, np.uint8))
        write_png(labels / f"{name}.png", binary_truth())
    main(["inspect", str(images), str(labels)])
    out = capsys.readouterr().out
    assert "hint: class 1: no labeled pixel in any label map" in out
    assert "hint: 2 of 2 label maps are mostly unlabeled (255)" in out
    assert "hint: the label maps hold only 0 and 255: if 255 marks objects" in out
    assert "--mask-type binary" in out
    assert main(["inspect", str(images), str(labels), "--mask-type", "binary",
                 "--min-class-pixels", "100", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hints"] == []
    assert report["class_progress"][1]["pixels"] == 2 * 14 * 14


def test_a_16_bit_instance_mask_names_mask_type_and_is_read_with_it(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "masks"
    write_png(images / "a.png", np.full((16, 16), 100, np.uint8))
    instances = np.zeros((16, 16), np.uint16)
    instances[2:7, 2:7], instances[2:7, 7:12] = 300, 301  # touching objects
    write_png(labels / "a.png", instances)
    assert main(["inspect", str(images), str(labels)]) == 2
    err = one_line_error(capsys)
    assert "uint16" in err and "--mask-type instance" in err
    assert main(["inspect", str(images), str(labels), "--mask-type", "instance",
                 "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["annotations"][0]["admitted"] and report["hints"] == []

"""Per-object measurements: hand-computable shapes, the one-pixel split of touching objects,
the DSB instance masks (counts exactly), and the three forms of ``label-assistant measure``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from label_assistant.cli import main
from label_assistant.datasets import mask_to_label_map
from label_assistant.images import read_image
from label_assistant.labelstudio.config import brush_label_config, config_hash
from label_assistant.measure.objects import measure_objects, objects_of, skeleton_length
from label_assistant.ml_backend.store import Store
from label_assistant.workspace import Workspace

H, W = 64, 96


def shapes() -> tuple[np.ndarray, np.ndarray]:
    """A disc (radius 10 at (20, 20)), a 12 x 12 square, a one-pixel line of 41 pixels; the
    image's channel 0 = row, channel 1 = 100 + column."""
    yy, xx = np.mgrid[:H, :W]
    label_map = np.zeros((H, W), np.uint8)
    label_map[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 1
    label_map[10:22, 50:62] = 1
    label_map[50, 30:71] = 2
    image = np.stack([yy, 100 + xx], axis=-1).astype(np.uint16)
    return label_map, image


def test_a_disc_a_square_and_a_line():
    label_map, image = shapes()
    objects, classes = objects_of(label_map)
    rows = measure_objects(objects, classes, image, image_name="shapes",
                           class_names=["Nucleus", "Fibre"], pixel_size=(0.5, 0.5))
    disc = next(r for r in rows if r["area_px"] not in (144, 41))
    square = next(r for r in rows if r["area_px"] == 144)
    line = next(r for r in rows if r["class"] == "Fibre")
    yy, xx = np.mgrid[:H, :W]
    disc_pixels = int(((yy - 20) ** 2 + (xx - 20) ** 2 <= 100).sum())
    assert disc["area_px"] == disc_pixels and disc["class"] == "Nucleus"
    assert (disc["centroid_y"], disc["centroid_x"]) == (20.0, 20.0)
    assert disc["eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert disc["equivalent_diameter_px"] == pytest.approx(2 * math.sqrt(disc_pixels / math.pi))
    assert disc["area_um2"] == pytest.approx(disc_pixels * 0.25)
    assert (disc["bbox_min_row"], disc["bbox_max_row"]) == (10, 31)
    assert square["solidity"] == 1.0 and square["eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert (square["centroid_y"], square["centroid_x"]) == (15.5, 55.5)
    assert (square["bbox_min_row"], square["bbox_min_col"], square["bbox_max_row"],
            square["bbox_max_col"]) == (10, 50, 22, 62)
    assert (square["min_0"], square["max_0"], square["mean_0"]) == (10, 21, 15.5)
    assert (square["min_1"], square["max_1"], square["mean_1"]) == (150, 161, 155.5)
    assert line["area_px"] == 41 and line["skeleton_length_px"] == 40.0
    assert line["skeleton_length_um"] == 20.0
    assert line["eccentricity"] == pytest.approx(1.0)
    assert (line["min_1"], line["max_1"], line["mean_1"]) == (130, 170, 150.0)


def test_skeleton_length_counts_diagonal_steps_as_root_two():
    diagonal = np.eye(11, dtype=bool)
    assert skeleton_length(diagonal) == pytest.approx(10 * math.sqrt(2))
    corner = np.zeros((5, 5), bool)
    corner[2, :3] = corner[:3, 2] = True  # an L; thinning cuts its corner pixel:
    assert skeleton_length(corner) == pytest.approx(2 + math.sqrt(2))  # 2 steps + 1 diagonal
    cross = np.zeros((5, 5), bool)
    cross[2, :] = cross[:, 2] = True  # a plus: 4 + 4 pixels around the centre, 8 steps
    assert skeleton_length(cross) == pytest.approx(8.0)


def test_touching_instances_are_split_by_the_cleanups_one_pixel_rule():
    instances = np.zeros((10, 20), np.int32)
    instances[2:8, 2:10] = 1
    instances[2:8, 10:18] = 2  # touching along a column
    label_map, inst = mask_to_label_map(instances, "instance")
    objects, classes = objects_of(label_map, inst)
    rows = measure_objects(objects, classes)
    assert len(rows) == 2 and set(classes.values()) == {1}
    # The lower id loses the pixels that touch the higher one: one column of 6.
    assert sorted(r["area_px"] for r in rows) == [42, 48]
    # Without instances, touching pixels of one class are one object (can't be told apart).
    assert len(measure_objects(*objects_of((instances > 0).astype(np.uint8)))) == 1


@pytest.mark.slow
def test_dsb_instance_masks_give_exactly_their_object_counts(shared_data):
    root = shared_data / "dsb2018_stage1_train_subset"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    masks = sorted((root / "masks").glob("*.png"))
    assert masks
    for mask_path in masks:
        mask = read_image(mask_path, palette_indices=True)[..., 0]
        image = read_image(root / "images" / mask_path.name)
        label_map, instances = mask_to_label_map(mask, "instance")
        rows = measure_objects(*objects_of(label_map, instances), image)
        expected = len(np.unique(mask[mask > 0]))
        assert len(rows) == expected, mask_path.name
        assert sum(r["area_px"] for r in rows) <= int((mask > 0).sum())


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_measure_folders_writes_objects_and_a_summary(tmp_path, capsys):
    label_map, image = shapes()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", image, photometric="minisblack",
                     planarconfig="contig", metadata={"pixel_size_um": [0.5, 0.5]})
    Image.fromarray(label_map).save(tmp_path / "labels" / "a.png")
    out = tmp_path / "out" / "objects.csv"
    code = main(["measure", str(tmp_path / "images"), str(tmp_path / "labels"), "--out",
                 str(out), "--classes", "Nucleus,Fibre", "--json", str(tmp_path / "m.json")])
    assert code == 0
    rows = _read_csv(out)
    assert len(rows) == 3 and {r["class"] for r in rows} == {"Nucleus", "Fibre"}
    assert float(next(r for r in rows if r["area_px"] == "144")["area_um2"]) == 36.0
    summary = _read_csv(tmp_path / "out" / "objects_summary.csv")
    assert [(s["class"], s["objects"]) for s in summary] == [("Nucleus", "2"), ("Fibre", "1")]
    data = json.loads((tmp_path / "m.json").read_text())
    assert len(data["objects"]) == 3 and data["failed"] == []
    assert main(["measure", str(tmp_path / "images"), "--out", str(out)]) == 2
    assert "give IMAGES LABELS" in capsys.readouterr().err


def test_measure_a_projects_admitted_annotations(tmp_path):
    workdir = tmp_path / "work"
    workspace = Workspace(workdir)
    label_map, image = shapes()
    image_path = workspace.intake_images("3") / "img.tif"
    image_path.parent.mkdir(parents=True)
    tifffile.imwrite(image_path, image[..., :1][..., 0])
    label_path = workspace.intake_labels("3") / "a1-e1.png"
    label_path.parent.mkdir(parents=True)
    partial = label_map.copy()
    partial[:, 80:] = 255  # unlabeled pixels are no object
    Image.fromarray(np.where(partial == 2, 1, partial).astype(np.uint8)).save(label_path)
    xml = brush_label_config(["Nucleus"])
    store = Store.for_workdir(workdir)
    store.upsert_project("3", label_config=xml)
    event = store.record_event("3", "ANNOTATION_CREATED", "{}")
    store.record_annotation("3", task_id=11, annotation_id=1, event_id=event, state="admitted",
                            findings={}, image_path=str(image_path), label_path=str(label_path),
                            config_hash=config_hash(xml))
    out = tmp_path / "annotations.csv"
    assert main(["measure", "--project", "3", "--workdir", str(workdir), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert len(rows) == 3 and {r["class"] for r in rows} == {"Nucleus"}
    assert rows[0]["image"] == "task 11 annotation 1"
    assert main(["measure", "--project", "4", "--workdir", str(workdir), "--out",
                 str(out)]) == 2


def test_measure_what_serves_before_any_model_plane_by_plane(tmp_path):
    label_map, _ = shapes()
    (tmp_path / "images").mkdir()
    bright = np.where(label_map > 0, 3000, 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.stack([bright, bright]), imagej=True,
                     metadata={"axes": "TYX"})
    out = tmp_path / "model.csv"
    assert main(["measure", str(tmp_path / "images"), "--model", "current", "--workdir",
                 str(tmp_path), "--out", str(out)]) == 0  # Otsu: no model version yet
    rows = _read_csv(out)
    assert {r["class"] for r in rows} == {"Object"}
    assert {r["image"] for r in rows} == {"a.tif T=0", "a.tif T=1"}
    assert len(rows) == 4  # disc and square in each plane (Otsu drops the 1-pixel line)
    assert {r["max_0"] for r in rows} == {"3000"}  # the original 16-bit values

import numpy as np
import pytest
from PIL import Image

from label_assistant.datasets import DatasetError, load_example, mask_to_label_map, pair_files


def test_mask_types():
    binary = np.array([[0, 255, 7]], np.uint8)
    assert mask_to_label_map(binary, "binary")[0].tolist() == [[0, 1, 1]]
    assert mask_to_label_map(binary, "binary", invert=True)[0].tolist() == [[1, 0, 0]]
    semantic = np.array([[0, 2, 255]], np.uint8)
    assert mask_to_label_map(semantic, "semantic")[0].tolist() == [[0, 2, 255]]
    instances = np.array([[1, 1, 2, 2]], np.uint16)
    label_map, inst = mask_to_label_map(instances, "instance")
    assert label_map.tolist() == [[1, 0, 1, 1]]  # one background pixel between the objects
    assert inst is not None
    with pytest.raises(DatasetError, match="unknown mask type"):
        mask_to_label_map(binary, "polygons")
    with pytest.raises(DatasetError, match="invert"):
        mask_to_label_map(binary, "semantic", invert=True)


def test_pairing_and_size_check(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "i" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "l" / "a.png")
    pairs = pair_files([tmp_path / "i" / "a.png"], [tmp_path / "l" / "a.png"])
    with pytest.raises(DatasetError, match="differs"):
        load_example(*pairs[0])
    with pytest.raises(DatasetError, match="no label file"):
        pair_files([tmp_path / "i" / "b.png"], [tmp_path / "l" / "a.png"])

"""A version pre-labels only images like its own (model.domain); Otsu pre-labels the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from label_assistant.assist.pre import OtsuPrelabeler
from label_assistant.model.domain import FAMILIAR_DISTANCE, Domain
from label_assistant.model.predictor import Predictor, Tiling


def _dark(seed: int) -> np.ndarray:
    """Bright nuclei on a dark background (float32 (1, H, W) in [0, 1])."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.08, 0.02, (96, 96))
    for _ in range(6):
        y, x = rng.integers(10, 86, 2)
        yy, xx = np.ogrid[:96, :96]
        image[(yy - y) ** 2 + (xx - x) ** 2 < 36] = 0.7
    return np.clip(image, 0, 1)[None].astype(np.float32)


def _bright(seed: int) -> np.ndarray:
    """The same kind of scene in bright field: dark nuclei on a bright background."""
    return (1.0 - _dark(seed)).astype(np.float32)


def test_images_of_the_same_kind_are_familiar_and_others_are_not():
    domain = Domain.of_inputs(_dark(s) for s in range(3))
    assert domain.descriptors.shape[0] == 3
    assert domain.familiar(_dark(10))
    assert domain.nearest(_bright(10)) > FAMILIAR_DISTANCE
    assert not domain.familiar(np.repeat(_dark(10), 3, axis=0))  # other channel count


def test_one_image_of_a_kind_is_not_yet_a_kind():
    mixed = Domain.of_inputs([_dark(0), _dark(1), _bright(2)])
    assert mixed.familiar(_dark(10))
    assert mixed.nearest(_bright(10)) <= FAMILIAR_DISTANCE  # one bright image is near...
    assert not mixed.familiar(_bright(10))  # ...but one example is not enough
    assert Domain.of_inputs([_bright(2)]).familiar(_bright(10))  # a domain of one image


def test_a_domain_travels_in_json_at_float16_precision():
    domain = Domain.of_inputs(_dark(s) for s in range(3))
    back = Domain.from_dict(domain.to_dict())
    assert back is not None and back.descriptors.shape == domain.descriptors.shape
    assert abs(back.nearest(_dark(10)) - domain.nearest(_dark(10))) < 1e-2
    assert Domain.from_dict(None) is None  # a version that predates domains


def test_the_model_prelabels_familiar_images_and_otsu_the_others():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 1).eval()
    otsu = OtsuPrelabeler()
    predictor = Predictor(model, version="v0003", class_names=["Background", "Nucleus"],
                          tiling=Tiling(64), device="cpu",
                          domain=Domain.of_inputs(_dark(s) for s in range(3)), fallback=otsu)
    as_read = (_dark(10)[0] * 255).astype(np.uint8)
    assert predictor.prelabel(as_read).version == "v0003"
    unlike = (_bright(10)[0] * 255).astype(np.uint8)
    pre = predictor.prelabel(unlike)
    assert pre.version == otsu.version
    np.testing.assert_array_equal(pre.label_map, otsu.prelabel(unlike).label_map)
    x = predictor.model_input(unlike)
    np.testing.assert_array_equal(predictor.label_map(x)[0], otsu.label_map(x)[0])
    # Without a fallback (validation during training) the model labels everything.
    predictor.fallback = None
    assert predictor.prelabel(unlike).version == "v0003"


def test_a_kind_of_image_is_familiar_only_where_the_version_beat_otsu_on_held_out_ones():
    trained = Domain.of_inputs([_dark(0), _dark(1), _bright(2), _bright(3)])
    assert trained.familiar(_bright(10))  # two bright training images: a kind it has seen
    checked = trained.with_checks([_dark(4), _bright(5)], [True, False])
    assert checked.familiar(_dark(10))
    assert not checked.familiar(_bright(10))  # seen in training, but lost to Otsu there
    assert "not beaten Otsu" in checked.unfamiliar(_bright(10))
    # A kind that no validation image shows is not earned either.
    assert not trained.with_checks([_dark(4)], [True]).familiar(_bright(10))
    # Mixed evidence: more won than lost within the distance, else Otsu.
    assert not trained.with_checks([_dark(4), _dark(5)], [True, False]).familiar(_dark(10))
    assert trained.with_checks([_dark(4), _dark(5), _dark(6)],
                               [True, False, True]).familiar(_dark(10))
    back = Domain.from_dict(checked.to_dict())
    assert back is not None and back.won.tolist() == [True, False]
    assert back.familiar(_dark(10)) and not back.familiar(_bright(10))
    assert trained.with_checks([], []).checked is None
    with pytest.raises(ValueError, match="2 checked images for 1 outcomes"):
        trained.with_checks([_dark(4), _dark(5)], [True])


def test_the_prelabel_says_why_otsu_serves_an_image(caplog):
    torch.manual_seed(0)
    otsu = OtsuPrelabeler()
    domain = Domain.of_inputs([_dark(0), _dark(1), _bright(2), _bright(3)]).with_checks(
        [_dark(4), _bright(5)], [True, False])
    predictor = Predictor(torch.nn.Conv2d(1, 2, 1).eval(), version="v0004",
                          class_names=["Background", "Nucleus"], tiling=Tiling(64),
                          device="cpu", domain=domain, fallback=otsu)
    with caplog.at_level("INFO", logger="label_assistant.model.predictor"):
        pre = predictor.prelabel((_bright(10)[0] * 255).astype(np.uint8))
    assert pre.version == otsu.version
    assert "v0004 does not pre-label this image: it has not beaten Otsu" in caplog.text
    assert predictor.prelabel((_dark(10)[0] * 255).astype(np.uint8)).version == "v0004"

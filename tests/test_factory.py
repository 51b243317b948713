"""The model factory: every arch x encoder builds offline, specs validate, dropout, weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from label_assistant.model.factory import (
    ModelSpec,
    ModelSpecError,
    WeightsFileError,
    available_archs,
    create_model,
    enable_mc_dropout,
    load_encoder_weights,
)

ARCHS = ["Unet", "FPN", "Linknet", "PSPNet", "DeepLabV3Plus"]
ENCODERS = ["resnet18", "resnet34", "mobilenet_v2", "efficientnet-b0"]
CLASSES = ("Background", "Nucleus", "Membrane")
SIZE = 64  # divisible by every output stride used here (32, 16, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_output(spec: ModelSpec) -> None:
    model = create_model(spec).eval()
    with torch.no_grad():
        out = model(torch.rand(2, spec.in_channels, SIZE, SIZE))
    assert tuple(out.shape) == (2, len(spec.classes), SIZE, SIZE)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_builds(arch):
    _check_output(ModelSpec(arch=arch, encoder="resnet18", in_channels=1, classes=CLASSES))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_encoder_builds_with_three_channels(encoder):
    _check_output(ModelSpec(arch="Unet", encoder=encoder, in_channels=3, classes=CLASSES[:2]))


@pytest.mark.slow
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_full_grid_builds(arch, encoder, in_channels):
    _check_output(ModelSpec(arch=arch, encoder=encoder, in_channels=in_channels, classes=CLASSES))


def test_building_never_downloads(monkeypatch):
    import huggingface_hub
    import torch.hub

    from label_assistant.model.compat import import_smp

    smp = import_smp()

    class Refused(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Refused("a download was attempted")

    for module, name in [
        (huggingface_hub, "hf_hub_download"),
        (smp.encoders, "hf_hub_download"),  # smp binds the name at import
        (torch.hub, "load_state_dict_from_url"),
        (torch.hub, "download_url_to_file"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    # the trap works: smp's default pretrained weights would be fetched
    with pytest.raises(Refused):
        smp.create_model("Unet", "resnet18", encoder_weights="imagenet", in_channels=1)
    for encoder in ENCODERS:
        _check_output(ModelSpec(encoder=encoder, in_channels=1))


def test_spec_with_encoder_weights_name_is_rejected():
    with pytest.raises(ModelSpecError, match="encoder_weights"):
        ModelSpec.from_dict({"arch": "Unet", "encoder_weights": "imagenet"})
    with pytest.raises(TypeError):
        ModelSpec(encoder_weights="imagenet")  # type: ignore[call-arg]


def test_spec_round_trip_through_json():
    spec = ModelSpec(arch="fpn", encoder="mobilenet_v2", in_channels=3, classes=CLASSES,
                     dropout=0.2)
    assert spec.arch == "FPN"  # normalized to smp's class name
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.n_outputs == 3


@pytest.mark.parametrize(
    "data, match",
    [
        ({"arch": "NoSuchNet"}, "unknown arch"),
        ({"encoder": "resnet9000"}, "unknown encoder"),
        ({"in_channels": 0}, "in_channels"),
        ({"classes": ["Background"]}, "classes"),
        ({"classes": ["Background", "A", "A"]}, "repeat"),
        ({"dropout": 1.0}, "dropout"),
        ({"colour": "red"}, "unknown model spec keys: colour"),
    ],
)
def test_bad_specs_are_rejected(data, match):
    with pytest.raises(ModelSpecError, match=match):
        ModelSpec.from_dict(data)


def test_available_archs_include_the_common_ones():
    assert set(ARCHS) <= set(available_archs())


def test_head_dropout_keeps_state_dict_keys():
    plain = create_model(ModelSpec(dropout=0.0))
    with_dropout = create_model(ModelSpec(dropout=0.3))
    assert not any(isinstance(m, nn.Dropout2d) for m in plain.segmentation_head.modules())
    first = next(iter(with_dropout.segmentation_head.children()))
    assert isinstance(first, nn.Dropout2d) and first.p == 0.3
    assert list(plain.state_dict()) == list(with_dropout.state_dict())
    with_dropout.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(1, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), with_dropout.eval()(x))


def test_mc_dropout_samples_differ_only_when_enabled():
    model = create_model(ModelSpec(dropout=0.5))
    x = torch.rand(1, 1, SIZE, SIZE)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x))
        enable_mc_dropout(model)
        assert not torch.allclose(model(x), model(x))
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout2d))


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_encoder_weights_file_round_trip(tmp_path, fmt):
    source = create_model(ModelSpec(in_channels=1))
    path = tmp_path / f"encoder.{fmt}"
    state = {k: v.contiguous() for k, v in source.encoder.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = create_model(ModelSpec(in_channels=1), weights_file=path)
    for key, value in source.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[key], value)
    fresh = create_model(ModelSpec(in_channels=1))
    assert not torch.equal(fresh.encoder.conv1.weight, source.encoder.conv1.weight)


def test_whole_model_checkpoint_and_classifier_keys(tmp_path):
    source = create_model(ModelSpec(in_channels=1))
    state = dict(source.state_dict())
    state["encoder.fc.weight"] = torch.zeros(10, 512)  # a classifier the encoder lacks
    path = tmp_path / "model.pt"
    torch.save(state, path)
    target = create_model(ModelSpec(in_channels=1))
    ignored = load_encoder_weights(target, path)
    assert ignored == ["fc.weight"]
    torch.testing.assert_close(target.encoder.layer4[1].conv2.weight,
                               source.encoder.layer4[1].conv2.weight)


def test_rgb_weights_fit_a_one_channel_encoder(tmp_path):
    rgb = create_model(ModelSpec(in_channels=3))
    path = tmp_path / "rgb.pt"
    torch.save(rgb.encoder.state_dict(), path)
    gray = create_model(ModelSpec(in_channels=1), weights_file=path)
    torch.testing.assert_close(gray.encoder.conv1.weight,
                               rgb.encoder.conv1.weight.sum(dim=1, keepdim=True))


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsFileError, match="not found"):
        create_model(ModelSpec(), weights_file=tmp_path / "imagenet")
    other = create_model(ModelSpec(encoder="mobilenet_v2"))
    path = tmp_path / "mobilenet.pt"
    torch.save(other.encoder.state_dict(), path)
    with pytest.raises(WeightsFileError):
        create_model(ModelSpec(encoder="resnet18"), weights_file=path)

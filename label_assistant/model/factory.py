"""One factory for every segmentation architecture segmentation_models_pytorch offers.

A :class:`ModelSpec` is everything needed to rebuild a model's structure (stored with each
model version); :func:`create_model` builds it through ``smp.create_model`` with
``encoder_weights=None`` always, so building never reaches the network. Pretrained encoder
weights come only from a local file.

Monte-Carlo dropout: when ``spec.dropout > 0`` a ``Dropout2d`` runs in front of the
segmentation head. It is inserted *inside* smp's ``SegmentationHead`` (an ``nn.Sequential``)
under the name ``"dropout"``, before its children ``"0"`` (conv), ``"1"`` (upsampling) and
``"2"`` (activation). Dropout has no parameters, so the state-dict keys are the same with and
without it (``segmentation_head.0.weight``, ...): weights move freely between specs that
differ only in ``dropout``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from label_assistant.model.compat import import_smp

# Dropout modules that enable_mc_dropout switches to train mode.
_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class ModelSpecError(ValueError):
    """A model spec that can't be built: unknown arch, encoder, key, or bad value."""


class WeightsFileError(ValueError):
    """An encoder weights file that is missing or does not fit the encoder."""


def available_archs() -> list[str]:
    """Architecture names smp offers (its class names: ``Unet``, ``FPN``, ...)."""
    smp = import_smp()
    return [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]


def available_encoders() -> list[str]:
    """smp's own encoder names; timm encoders (``tu-<name>``) are accepted as well."""
    return list(import_smp().encoders.get_encoder_names())


def _canonical_arch(arch: str) -> str:
    by_lower = {name.lower(): name for name in available_archs()}
    if not isinstance(arch, str) or arch.lower() not in by_lower:
        raise ModelSpecError(f"unknown arch {arch!r}; choose one of {', '.join(by_lower.values())}")
    return by_lower[arch.lower()]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: architecture, encoder, input channels, class names (background first)."""

    arch: str = "Unet"
    encoder: str = "resnet18"
    in_channels: int = 1
    classes: tuple[str, ...] = ("Background", "Foreground")
    dropout: float = 0.1

    def __post_init__(self) -> None:
        # Normalized here so that equal models have equal specs ("unet" == "Unet").
        object.__setattr__(self, "arch", _canonical_arch(self.arch))
        object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.encoder, str) or not (
            self.encoder.startswith("tu-") or self.encoder in available_encoders()
        ):
            raise ModelSpecError(f"unknown encoder {self.encoder!r}")
        if isinstance(self.in_channels, bool) or not isinstance(self.in_channels, int) or (
            self.in_channels < 1
        ):
            raise ModelSpecError(f"in_channels must be a positive int, got {self.in_channels!r}")
        if len(self.classes) < 2 or not all(isinstance(c, str) and c for c in self.classes):
            raise ModelSpecError("classes must be >= 2 non-empty names, background first")
        if len(set(self.classes)) != len(self.classes):
            raise ModelSpecError(f"class names repeat: {list(self.classes)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelSpecError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def n_outputs(self) -> int:
        """Output channels: one per class, background included."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)  # JSON has no tuples
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Spec from ``to_dict()`` output; unknown keys (``encoder_weights`` too) are an error."""
        if not isinstance(data, dict):
            raise ModelSpecError(f"a model spec must be a dict, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelSpecError(f"unknown model spec keys: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "classes" in data:
            data["classes"] = tuple(data["classes"])
        return cls(**data)


def create_model(spec: ModelSpec, weights_file: str | Path | None = None) -> nn.Module:
    """Build ``spec`` with smp, never downloading; optionally load a local encoder weights file.

    The model maps (N, in_channels, H, W) to logits (N, len(spec.classes), H, W); H and W must
    be divisible by the encoder's output stride (32 for most, 8 or 16 for PSPNet/DeepLab).
    """
    if not isinstance(spec, ModelSpec):
        raise ModelSpecError(f"create_model needs a ModelSpec, got {type(spec).__name__}")
    smp = import_smp()
    try:
        model = smp.create_model(
            spec.arch,
            encoder_name=spec.encoder,
            encoder_weights=None,  # never the hub: weights come from weights_file only
            in_channels=spec.in_channels,
            classes=spec.n_outputs,
        )
    except (KeyError, ValueError) as error:  # smp's wording for unsupported combinations
        raise ModelSpecError(f"can't build {spec.arch}/{spec.encoder}: {error}") from error
    if spec.dropout > 0:
        _insert_head_dropout(model, spec.dropout)
    if weights_file is not None:
        load_encoder_weights(model, weights_file)
    return model


def _insert_head_dropout(model: nn.Module, p: float) -> None:
    head = model.segmentation_head
    if not isinstance(head, nn.Sequential):
        raise ModelSpecError(f"{type(model).__name__} has no sequential segmentation head")
    # An OrderedDict keeps the children's names ("0", "1", "2"): state-dict keys stay stable.
    children = OrderedDict([("dropout", nn.Dropout2d(p))])
    children.update((name, module) for name, module in head.named_children() if name != "dropout")
    model.segmentation_head = nn.Sequential(children)


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere except dropout modules (train mode): Monte-Carlo dropout sampling.

    Batch norm keeps its running statistics. Returns ``model`` for chaining.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, _DROPOUT_TYPES):
            module.train()
    return model


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors have many types
        raise WeightsFileError(f"can't read weights file {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common checkpoint wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path} does not hold a state dict of tensors")
    return state


def _fit_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    # smp's rule for pretrained weights with other channel counts: sum for one channel,
    # else repeat the RGB kernels and rescale so activations keep their magnitude.
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return torch.cat([weight] * reps, dim=1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_encoder_weights(model: nn.Module, weights_file: str | Path) -> list[str]:
    """Load a local weights file into ``model.encoder``; return the keys it ignored.

    Accepts an encoder state dict, or a whole-model one (only ``encoder.*`` keys are used).
    Classifier keys the encoder lacks (``fc.*``) are ignored; a missing encoder key or a shape
    mismatch is an error, except a first convolution with another channel count, which is
    adapted as smp does for pretrained weights.
    """
    state = read_weights_file(weights_file)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    first_conv = next(k for k, v in own.items() if v.ndim == 4)
    ignored = sorted(k for k in state if k not in own)
    fitted = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key]
        if key == first_conv and value.ndim == 4 and value.shape[0] == target.shape[0] \
                and value.shape[1] != target.shape[1] and value.shape[2:] == target.shape[2:]:
            value = _fit_first_conv(value, target.shape[1])
        if value.shape != target.shape:
            raise WeightsFileError(
                f"{key}: shape {tuple(value.shape)} in file, {tuple(target.shape)} in encoder"
            )
        fitted[key] = value
    missing = sorted(set(own) - set(fitted))
    if missing:
        raise WeightsFileError(f"weights file lacks {len(missing)} encoder keys, e.g. {missing[0]}")
    model.encoder.load_state_dict(fitted, strict=True)
    return ignored

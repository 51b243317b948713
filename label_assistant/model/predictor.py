"""One way to run a model version: load it, pick the device, tile, normalize, predict.

Every caller that turns an image into a model's prediction goes through :class:`Predictor`:
``/predict`` and the intake gate (:mod:`label_assistant.ml_backend`), ranking and ``select``
(they hand :meth:`Predictor.predict` and :meth:`Predictor.embed` to
:mod:`label_assistant.selectors.pool` as scoring callables), ``prelabel --model``, the
simulator, and validation inside training (:func:`label_assistant.model.train.evaluate`). So
one image and one version give the same label map wherever it is computed.

What is fixed here, once:

- **tiling**: :class:`Tiling` (tile side, overlap, tile batch); the overlap rule is
  :func:`overlap_for`; a version stores its tiling in its config (``inference_tile``,
  ``inference_overlap``) and is run with it;
- **input**: :meth:`Predictor.model_input` turns an image as read
  (:func:`label_assistant.images.read_image`) into what the model was trained on
  (:func:`~label_assistant.images.normalize_for_model`, then the channel policy
  :func:`~label_assistant.images.match_channels`);
- **device**: CUDA when present, else the CPU, unless named;
- **the class check**: a version trained for other classes is refused
  (:class:`~label_assistant.model.registry.VersionMismatchError`).

:class:`VersionCache` keeps the current version of each registry loaded in a process and
reloads it when the registry's ``current`` pointer moves (one small file read per call).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from label_assistant.images import match_channels, normalize_for_model
from label_assistant.model.domain import Domain
from label_assistant.model.inference import (
    TILE_MULTIPLE,
    InferenceError,
    Prediction,
    default_device,
    embed,
    predict_proba,
    probabilities_to_label_map,
    round_up,
)

if TYPE_CHECKING:
    import torch

    from label_assistant.assist.pre import PreLabel
    from label_assistant.model.factory import ModelSpec
    from label_assistant.model.registry import ModelRegistry, VersionInfo

log = logging.getLogger(__name__)

#: The tile side a version is run with when its config names none.
DEFAULT_TILE = 512


def overlap_for(tile: int) -> int:
    """The overlap of neighbouring tiles: a quarter of the tile, at most 64 pixels (64 at the
    default 512, 16 at 64)."""
    return min(64, round_up(tile) // 4)


@dataclass(frozen=True)
class Tiling:
    """How an image is cut for the model: tile side (a multiple of 32), overlap, tile batch."""

    tile: int = DEFAULT_TILE
    overlap: int | None = None  # None: overlap_for(tile)
    batch_size: int = 4

    def __post_init__(self) -> None:
        tile = round_up(int(self.tile), TILE_MULTIPLE)
        overlap = overlap_for(tile) if self.overlap is None else int(self.overlap)
        if not 0 <= overlap < tile:
            raise InferenceError(f"tile overlap must be in 0..{tile - 1}, got {overlap}")
        if self.batch_size < 1:
            raise InferenceError(f"tile batch must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "overlap", overlap)

    @classmethod
    def of_config(cls, config: dict[str, Any] | None, default_tile: int = DEFAULT_TILE
                  ) -> Tiling:
        """The tiling stored in a training config (``inference_tile``, ``inference_overlap``)."""
        config = config or {}
        return cls(int(config.get("inference_tile") or default_tile),
                   config.get("inference_overlap"))

    def to_config(self) -> dict[str, int]:
        return {"inference_tile": self.tile, "inference_overlap": int(self.overlap or 0)}


def _in_channels(model: Any) -> int | None:
    """Input channels of the model's first convolution (None if it has none)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return None


class Predictor:
    """A model version, ready to run on images."""

    def __init__(self, model: torch.nn.Module, *, version: str, class_names: list[str],
                 tiling: Tiling | None = None, device: Any = None,
                 spec: ModelSpec | None = None, domain: Domain | None = None,
                 fallback: Any = None) -> None:
        import torch

        self.device = device if device is not None else default_device()
        # The model runs where its inputs are sent: a model built on the CPU from a state
        # dict (a round's candidate) failed on a CUDA device before this move.
        # channels_last (NHWC), as training uses by default: tiled inference of a Unet-resnet18
        # on one CPU thread 1.61x faster on 512 x 512 and 1.40x on 2048 x 2048 (one run of
        # benchmarks/bench_inference.py --large 2048: 20.6 s against 14.7 s), the same
        # probabilities to 4e-6. A model in training (validated as it trains) keeps the
        # layout its training chose.
        layout = {} if model.training else {"memory_format": torch.channels_last}
        self.model = model = model.to(self.device, **layout)
        self.spec = spec  # the architecture, when known (a warm start needs to compare it)
        self.version = version
        self.class_names = list(class_names)
        self.tiling = tiling or Tiling()
        self.in_channels = _in_channels(model)
        #: The images the version knows, and who pre-labels the others (Otsu): see
        #: :mod:`label_assistant.model.domain`. Without either, the model labels every image.
        self.domain = domain
        self.fallback = fallback

    @classmethod
    def from_registry(cls, registry: ModelRegistry, version: str = "current", *,
                      expected_classes: list[str] | None = None, device: Any = None,
                      default_tile: int = DEFAULT_TILE) -> Predictor:
        """Load ``version`` (``"current"`` allowed) of ``registry`` with the class check."""
        device = device or default_device()
        model, info = registry.load_model(version, expected_classes=expected_classes,
                                          device=device)
        return cls.of_version(model, info, device=device, default_tile=default_tile)

    @classmethod
    def of_version(cls, model: torch.nn.Module, info: VersionInfo, *, device: Any = None,
                   default_tile: int = DEFAULT_TILE) -> Predictor:
        from label_assistant.model.factory import ModelSpec

        return cls(model, version=info.id, class_names=list(info.class_names),
                   tiling=Tiling.of_config(info.config, default_tile), device=device,
                   spec=ModelSpec.from_dict(info.spec), domain=Domain.from_dict(info.domain))

    @property
    def n_classes(self) -> int:
        """K, the foreground classes (the class names hold background first)."""
        return len(self.class_names) - 1

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """An image as read ((H, W) or (H, W, C), any dtype) as the model sees it: float32
        (C, H, W) normalized as in training, with the model's channel count."""
        return self.match(normalize_for_model(image))

    def match(self, x: np.ndarray) -> np.ndarray:
        """A normalized (C, H, W) input with the model's channel count (the channel policy)."""
        return x if self.in_channels is None else match_channels(x, self.in_channels)

    def predict(self, x: np.ndarray, *, tta: bool = False, mc_samples: int = 0,
                out: np.ndarray | None = None, where: np.ndarray | None = None) -> Prediction:
        """Tiled class probabilities of a model input (float32 (C, H, W) in [0, 1]);
        ``where``: only the tiles over these pixels run (see
        :func:`~label_assistant.model.inference.predict_proba`)."""
        return predict_proba(self.model, self.match(np.asarray(x)), tile=self.tiling.tile,
                             overlap=int(self.tiling.overlap or 0),
                             batch_size=self.tiling.batch_size, device=self.device, tta=tta,
                             mc_samples=mc_samples, out=out, where=where)

    def label_map(self, x: np.ndarray, where: np.ndarray | None = None, *,
                  fallback: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(label map, confidence, probabilities)`` of a model input: the argmax of the
        probabilities, and the winning probability per pixel (exact at ``where``'s pixels,
        when given; see :meth:`predict`). On an image unlike the version's own (see
        :meth:`familiar`), the fallback's label map, as :meth:`prelabel` serves it, unless
        ``fallback`` is False (the model's own answer, to check it against the fallback)."""
        if fallback and not self.familiar(x):
            return self.fallback.label_map(x, where=where)
        probabilities = self.predict(x, where=where).probabilities
        label_map, confidence = probabilities_to_label_map(probabilities)
        return label_map, confidence, probabilities

    def prelabel(self, image: np.ndarray) -> PreLabel:
        """The pre-label of an image as read, like Otsu's
        (:class:`~label_assistant.assist.pre.PreLabel`): argmax label map, winning probability
        as confidence, class-1 objects as its connected parts, and the probabilities."""
        from scipy import ndimage as ndi

        from label_assistant.assist.pre import PreLabel

        x = self.model_input(image)
        why = self.unfamiliar(x)
        if why:
            pre = self.fallback.prelabel(image)
            log.info("%s does not pre-label this image: %s; %s pre-labels it", self.version,
                     why, pre.version)
            return pre
        label_map, confidence, probabilities = self.label_map(x, fallback=False)
        instances = ndi.label(label_map == 1)[0].astype(np.int32)
        return PreLabel(label_map, confidence, instances, (), "model", self.version,
                        probabilities)

    def familiar(self, x: np.ndarray) -> bool:
        """Whether the model pre-labels this model input (:meth:`unfamiliar` is None)."""
        return self.unfamiliar(x) is None

    def unfamiliar(self, x: np.ndarray) -> str | None:
        """None when the model pre-labels this model input: always without a domain or a
        fallback, else when its domain knows the image
        (:meth:`~label_assistant.model.domain.Domain.unfamiliar`); else why not."""
        if self.domain is None or self.fallback is None:
            return None
        return self.domain.unfamiliar(self.match(np.asarray(x)))

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The encoder's pooled features of a model input (diversity in embedding space)."""
        return embed(self.model, self.match(np.asarray(x)), device=self.device)


class VersionCache:
    """The current version of each registry, loaded once per process and per version.

    :meth:`current` reads the registry's ``current`` pointer (a small file, no torch) at every
    call and loads the version only when the pointer moved; several threads asking at once
    load it once. A version trained for other classes than the caller's is not used (None,
    one warning), nor is one that can't be loaded (None, logged).
    """

    def __init__(self, device: str | None = None, default_tile: int = DEFAULT_TILE) -> None:
        self.device = device
        self.default_tile = default_tile
        self._loaded: dict[Path, Predictor] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[Path, str]] = set()

    def current(self, registry: ModelRegistry, expected_classes: list[str]) -> Predictor | None:
        """The registry's current version for these classes (background first), or None."""
        from label_assistant.model.registry import RegistryError

        version = registry.current_id()
        if version is None:
            return None
        root = registry.root
        loaded = self._loaded.get(root)
        if loaded is None or loaded.version != version:
            with self._lock:
                loaded = self._loaded.get(root)
                if loaded is None or loaded.version != version:
                    try:
                        loaded = Predictor.from_registry(registry, version, device=self.device,
                                                         default_tile=self.default_tile)
                    except (RegistryError, OSError, RuntimeError) as error:
                        log.error("can't load model %s from %s: %s", version, root, error)
                        return None
                    self._loaded[root] = loaded
                    log.info("loaded model %s from %s on %s", version, root, loaded.device)
        if loaded.class_names != list(expected_classes):
            if (root, loaded.version) not in self._warned:
                self._warned.add((root, loaded.version))
                log.warning("%s: model %s was trained for classes %s, the label config has %s: "
                            "it is not used", root, loaded.version, loaded.class_names,
                            list(expected_classes))
            return None
        return loaded


def serving(registry: ModelRegistry, class_names: list[str], *, otsu: Any = None,
            cache: VersionCache | None = None, device: Any = None,
            default_tile: int = DEFAULT_TILE) -> Any:
    """What serves for a registry and these classes (background first): its current model
    version as a :class:`Predictor`, or Otsu (``otsu``, an
    :class:`~label_assistant.assist.pre.OtsuPrelabeler`, default parameters when None) before
    any promotion, after a rollback to Otsu, or when the version was trained for other
    classes or can't be loaded. Both answer ``version``, ``prelabel(image)`` and
    ``label_map(model_input)``. With ``cache`` the version stays loaded between calls."""
    from label_assistant.assist.pre import OtsuPrelabeler

    otsu = otsu if otsu is not None else OtsuPrelabeler()
    if registry.current_id() is None:  # reads the pointer only: Otsu needs no model
        return otsu
    cache = cache or VersionCache(device, default_tile)
    predictor = cache.current(registry, list(class_names))
    if predictor is None:
        return otsu
    predictor.fallback = otsu  # images unlike the version's own get Otsu's pre-label
    return predictor

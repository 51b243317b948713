"""The backend's settings, in one place: a frozen dataclass read from the environment.

Variable -> field (default): meaning.

- ``LA_WORKDIR`` -> ``workdir`` (``./work``): store, images, models, jobs.
- ``LABEL_STUDIO_URL`` -> ``label_studio_url`` (none): Label Studio's address, used when
  ``/setup`` gave no ``hostname``.
- ``LABEL_STUDIO_API_KEY`` -> ``label_studio_api_key`` (none): its token, used when
  ``/setup`` gave no ``access_token``.
- ``LA_ALLOWED_ORIGINS`` -> ``allowed_origins`` (none): comma-separated extra origins images
  may come from (``https://files.example.org``); the Label Studio token is never sent there.
- ``LA_MAX_IMAGE_BYTES`` -> ``max_image_bytes`` (64 MiB): larger downloads are refused.
- ``LA_MAX_IMAGE_PIXELS`` -> ``max_image_pixels`` (64 Mpx): larger images are refused.
- ``LA_MAX_REQUEST_BYTES`` -> ``max_request_bytes`` (256 MiB): larger request bodies get a
  413 (a /predict of many tasks with ``data:`` URLs is the large case).
- ``LA_FETCH_TIMEOUT`` -> ``fetch_timeout`` (30 s): connect/read timeout per image request.
- ``LA_IMAGE_CACHE_TTL`` -> ``image_cache_ttl`` (3600 s): a cached image younger than this is
  used without asking the server again.
- ``LA_TRAIN_AFTER`` -> ``train_after`` (5): newly admitted annotations that start a training
  job (0: only on request).
- ``LA_BACKGROUND_LABEL`` -> ``background_label`` (``Background``): the label meaning
  background.
- ``LA_INSPECTION_CONFIG`` -> ``inspection_config`` (none): JSON file of an
  :class:`~label_assistant.assist.inspect.InspectionConfig`.
- ``LA_TRAIN_CONFIG`` -> ``train_config`` (none): JSON file of
  :class:`~label_assistant.model.config.TrainConfig` settings for training jobs.
- ``LA_DEVICE`` -> ``device`` (auto): ``cpu`` / ``cuda``, for prediction and training jobs.
- ``LA_PREDICT_TILE`` -> ``predict_tile`` (512): tile side for prediction when the model
  version does not name one (its ``inference_tile``).
- ``LA_PREDICT_BACKGROUND`` -> ``predict_background`` (false): also send a Background result
  with pre-labels (off: annotators label background where they are sure).
- ``LA_POLL_INTERVAL`` -> ``poll_interval`` (0.5 s): how often the worker looks for events
  and job progress.
- ``LA_SINK`` -> ``sink`` (none): ``module:callable`` building the Label Studio sink; it is
  called with ``(settings, store)``. Unset: :func:`label_assistant.ml_backend.sink.make_sink`
  (writes to each project's Label Studio, from ``/setup`` or the two variables above, and
  does nothing for a project whose Label Studio is unknown); ``none``: tell nobody.
- ``LA_STRATEGY`` -> ``strategy`` (``sequence+entropy``): how unlabeled tasks are ranked
  after each new version (:mod:`label_assistant.selectors`; without a model its model-free
  part runs).
- ``LA_SEQUENCE_FIELD`` -> ``sequence_field`` (``sequence``): the task data field holding
  an image's sequence id.
- ``LA_PRELABEL_AHEAD`` -> ``prelabel_ahead`` (20): after each new version, Label Studio is
  asked for new pre-labels (from that version) of this many tasks at the head of the
  ranking; the others keep their older ones (0: none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting with a value that can't be used (the message names the variable)."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def _strategy(env: Mapping[str, str]) -> str:
    raw = _str(env, "LA_STRATEGY")
    if raw is None:
        return "sequence+entropy"
    from label_assistant.selectors.strategies import StrategyError, parse_strategy

    try:
        return parse_strategy(raw).name
    except StrategyError as error:
        raise SettingsError(f"LA_STRATEGY: {error}") from None


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything the backend is configured with; see the module docstring for the variables."""

    workdir: Path = Path("./work")
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_image_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    max_request_bytes: int = 256 * 1024 * 1024
    fetch_timeout: float = 30.0
    image_cache_ttl: float = 3600.0
    train_after: int = 5
    background_label: str = "Background"
    inspection_config: Path | None = None
    train_config: Path | None = None
    device: str | None = None
    predict_tile: int = 512
    predict_background: bool = False
    poll_interval: float = 0.5
    sink: str | None = None
    strategy: str = "sequence+entropy"
    sequence_field: str = "sequence"
    prelabel_ahead: int = 20
    #: Training settings given in code (tests); they override the ``train_config`` file.
    train_overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Paths given as strings (from code or tests) become Paths, as from_env makes them.
        for name in ("workdir", "inspection_config", "train_config"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables (``os.environ`` by default), then ``overrides``."""
        env = os.environ if env is None else env
        origins = tuple(o.strip().rstrip("/") for o in env.get("LA_ALLOWED_ORIGINS", "").split(",")
                        if o.strip())
        inspection = _str(env, "LA_INSPECTION_CONFIG")
        train = _str(env, "LA_TRAIN_CONFIG")
        settings = cls(
            workdir=Path(_str(env, "LA_WORKDIR") or "./work"),
            label_studio_url=(_str(env, "LABEL_STUDIO_URL") or "").rstrip("/") or None,
            label_studio_api_key=_str(env, "LABEL_STUDIO_API_KEY"),
            allowed_origins=origins,
            max_image_bytes=_int(env, "LA_MAX_IMAGE_BYTES", cls.max_image_bytes, 1),
            max_image_pixels=_int(env, "LA_MAX_IMAGE_PIXELS", cls.max_image_pixels, 1),
            max_request_bytes=_int(env, "LA_MAX_REQUEST_BYTES", cls.max_request_bytes, 1),
            fetch_timeout=_float(env, "LA_FETCH_TIMEOUT", cls.fetch_timeout),
            image_cache_ttl=_float(env, "LA_IMAGE_CACHE_TTL", cls.image_cache_ttl),
            train_after=_int(env, "LA_TRAIN_AFTER", cls.train_after),
            background_label=_str(env, "LA_BACKGROUND_LABEL") or "Background",
            inspection_config=Path(inspection) if inspection else None,
            train_config=Path(train) if train else None,
            device=_str(env, "LA_DEVICE"),
            predict_tile=_int(env, "LA_PREDICT_TILE", cls.predict_tile, 32),
            predict_background=_bool(env, "LA_PREDICT_BACKGROUND"),
            poll_interval=_float(env, "LA_POLL_INTERVAL", cls.poll_interval),
            sink=_str(env, "LA_SINK"),
            strategy=_strategy(env),
            sequence_field=_str(env, "LA_SEQUENCE_FIELD") or "sequence",
            prelabel_ahead=_int(env, "LA_PRELABEL_AHEAD", cls.prelabel_ahead),
        )
        return replace(settings, **overrides) if overrides else settings

    def to_env(self) -> dict[str, str]:
        """The environment variables that give these settings (for child processes).

        ``train_overrides`` has no variable; pass a ``train_config`` file instead.
        """
        names = {
            "workdir": "LA_WORKDIR", "label_studio_url": "LABEL_STUDIO_URL",
            "label_studio_api_key": "LABEL_STUDIO_API_KEY", "allowed_origins": "LA_ALLOWED_ORIGINS",
            "max_image_bytes": "LA_MAX_IMAGE_BYTES", "max_image_pixels": "LA_MAX_IMAGE_PIXELS",
            "max_request_bytes": "LA_MAX_REQUEST_BYTES",
            "fetch_timeout": "LA_FETCH_TIMEOUT", "image_cache_ttl": "LA_IMAGE_CACHE_TTL",
            "train_after": "LA_TRAIN_AFTER", "background_label": "LA_BACKGROUND_LABEL",
            "inspection_config": "LA_INSPECTION_CONFIG", "train_config": "LA_TRAIN_CONFIG",
            "device": "LA_DEVICE", "predict_tile": "LA_PREDICT_TILE",
            "predict_background": "LA_PREDICT_BACKGROUND", "poll_interval": "LA_POLL_INTERVAL",
            "sink": "LA_SINK", "strategy": "LA_STRATEGY", "sequence_field": "LA_SEQUENCE_FIELD",
            "prelabel_ahead": "LA_PRELABEL_AHEAD",
        }
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in names or value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[names[f.name]] = str(value)
        return env

    def load_inspection_config(self) -> Any:
        """The project-wide :class:`InspectionConfig` (defaults without a file)."""
        from label_assistant.assist.inspect import InspectionConfig

        if self.inspection_config is None:
            return InspectionConfig()
        return InspectionConfig.from_dict(_read_json(self.inspection_config,
                                                     "LA_INSPECTION_CONFIG"))

    def training_config(self) -> dict[str, Any]:
        """Training settings for jobs: the file, then ``train_overrides``, then ``device``."""
        config: dict[str, Any] = {}
        if self.train_config is not None:
            config.update(_read_json(self.train_config, "LA_TRAIN_CONFIG"))
        config.update(self.train_overrides)
        if self.device and "device" not in config:
            config["device"] = self.device
        return config


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise SettingsError(f"{name}: can't read {path} ({error.strerror or error})") from None
    except json.JSONDecodeError as error:
        raise SettingsError(f"{name}: {path} is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{name}: {path} must hold a JSON object")
    return data

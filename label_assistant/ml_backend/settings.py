"""The backend's settings, in one place: a frozen dataclass read from the environment.

Each field of :class:`Settings` but ``train_overrides`` is declared once, with
:func:`_setting`: its environment variable, default, parser and a one-line meaning.
:meth:`Settings.from_env`, :meth:`Settings.to_env`, :data:`VARIABLES` and
:func:`settings_table` (the markdown table README.md's "Settings" section shows) are all
derived from those declarations, so a new setting is one new field.

``LA_SINK`` names a ``module:callable`` called with ``(settings, store)``; see
:func:`label_assistant.ml_backend.sinks.load_sink`. ``LA_INSPECTION_CONFIG`` is a JSON file of
an :class:`~label_assistant.assist.inspect.InspectionConfig`, ``LA_TRAIN_CONFIG`` one of
:class:`~label_assistant.model.config.TrainConfig` settings for training jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from label_assistant.workspace import Workspace


class SettingsError(ValueError):
    """A setting with a value that can't be used (the message names the variable)."""


# Parsers: non-empty, stripped text -> value. A ValueError's message follows the variable's
# name in the SettingsError ("LA_TRAIN_AFTER must be an integer, got 'many'").

def _int(minimum: int = 0) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _str(raw: str) -> str:
    return raw


def _bool(raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes", "on")


def _url(raw: str) -> str | None:
    return raw.rstrip("/") or None


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def parse_redis_url(raw: str) -> str:
    """``raw`` if it is a Redis URL redis-py can connect with, else a ValueError whose
    message follows a setting's or an option's name (``must be a Redis URL ...``)."""
    text = raw.strip()
    example = "redis://host:6379/0"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises for a port that is not a number
    except ValueError:
        raise ValueError(f"must be a Redis URL like {example}, got {raw!r}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError(f"must be a Redis URL like {example} (redis://, rediss:// or "
                         f"unix://), got {raw!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"must name a socket (unix:///path/redis.sock), got {raw!r}")
        return text
    if not parts.hostname:
        raise ValueError(f"must name a host, like {example}, got {raw!r}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"has port {port}, not 1..65535")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"must end in a database number (/0), got {raw!r}")
    return text


def _queue(raw: str) -> str:
    return parse_redis_url(raw)


def _strategy(raw: str) -> str:
    from label_assistant.selectors.strategies import StrategyError, parse_strategy

    try:
        return parse_strategy(raw).name
    except StrategyError as error:
        raise ValueError(f"must be a ranking strategy: {error}") from None


def _clusters(raw: str) -> int | str:
    text = raw.lower()
    if text in ("auto", "off"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"must be auto, off or a cluster count >= 1, got {raw!r}")
    return value


#: The comm protocols a Dask scheduler address may name.
DASK_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")


def dask_address(raw: str) -> str:
    """A Dask scheduler address, ``tcp://host:port`` (``host:port`` means tcp); ValueError
    otherwise. Checked here, without importing Dask."""
    from urllib.parse import urlsplit

    text = raw.strip()
    address = text if "://" in text else f"tcp://{text}"
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if (parts is None or parts.scheme not in DASK_PROTOCOLS or not parts.hostname
            or port is None or parts.path not in ("", "/") or parts.query or parts.username):
        raise ValueError(f"must be a Dask scheduler address like tcp://host:8786 "
                         f"({'/'.join(DASK_PROTOCOLS)}), got {raw!r}")
    return address.rstrip("/")


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str,
             shown: str | None = None) -> Any:
    """A :class:`Settings` field read from ``env``: unset or blank gives ``default``, other
    text goes through ``parse``; ``doc`` is its meaning, ``shown`` its default in the table
    (derived from ``default`` when not given)."""
    return field(default=default,
                 metadata={"env": env, "parse": parse, "doc": doc, "shown": shown})


@dataclass(frozen=True)
class Variable:
    """One setting's declaration: the environment variable ``env`` sets the field ``attr``."""

    env: str
    attr: str
    default: Any
    parse: Callable[[str], Any]
    doc: str
    shown: str  # the default, as settings_table() shows it

    def read(self, env: Mapping[str, str]) -> Any:
        """The value ``env`` gives (the default when the variable is unset or blank)."""
        raw = env.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as error:
            raise SettingsError(f"{self.env} {error}") from None

    def text(self, value: Any) -> str:
        """``value`` as this variable's text (what :meth:`Settings.to_env` sets it to)."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)


@dataclass(frozen=True)
class Settings:
    """Everything the backend is configured with; each field's variable and meaning is in its
    declaration (:data:`VARIABLES`, :func:`settings_table`)."""

    workdir: Path = _setting(
        "LA_WORKDIR", Path("./work"), Path,
        "store (`backend.sqlite3`), image cache, models, jobs (`serve --workdir` wins)",
        shown="`./work`")
    label_studio_url: str | None = _setting(
        "LABEL_STUDIO_URL", None, _url,
        "Label Studio's address, when `/setup` gave none (images, results, ranking)")
    label_studio_api_key: str | None = _setting(
        "LABEL_STUDIO_API_KEY", None, _str, "its (legacy) API token, when `/setup` gave none")
    train_after: int = _setting(
        "LA_TRAIN_AFTER", 0, _int(0),
        "newly admitted annotations that start a training job while Label Studio's \"Start "
        "model training on annotation submission\" is off (0: only on Start Training; the "
        "toggle, when on, wins: README \"When training starts\")")
    train_config: Path | None = _setting(
        "LA_TRAIN_CONFIG", None, Path,
        "JSON file of training settings (`arch`, `encoder`, `epochs`, `tile`, `loss`, ...; "
        "see `label_assistant/model/config.py`)")
    strategy: str = _setting(
        "LA_STRATEGY", "sequence", _strategy,
        "how unlabeled tasks are ranked after each version (`sequence`: one image per "
        "sequence first, random within and across sequences; needs no model); chosen by "
        "benchmarks/bench_selection_dsb.py as the one strategy never significantly below "
        "random: README \"Which images first\"")
    sequence_field: str = _setting(
        "LA_SEQUENCE_FIELD", "sequence", _str,
        "the task data field holding an image's sequence (video, z-stack, experiment)")
    sequence_clusters: int | str = _setting(
        "LA_SEQUENCE_CLUSTERS", "auto", _clusters,
        "when no task of a project has the sequence field, a `sequence` strategy groups the "
        "images into clusters of look-alikes (k-means of image descriptors) and picks one per "
        "cluster first: `auto` (k by silhouette, 2..12), a count k, or `off` (each image its "
        "own sequence)")
    prelabel_ahead: int = _setting(
        "LA_PRELABEL_AHEAD", 20, _int(0),
        "tasks at the head of the ranking that get new pre-labels after each version "
        "(0: none)")
    background_label: str = _setting(
        "LA_BACKGROUND_LABEL", "Background", _str, "the label that means background")
    inspection_config: Path | None = _setting(
        "LA_INSPECTION_CONFIG", None, Path,
        "JSON file: rule levels (`off`/`warning`/`error`) and thresholds")
    predict_background: bool = _setting(
        "LA_PREDICT_BACKGROUND", False, _bool, "also send a Background region with pre-labels")
    predict_tile: int = _setting(
        "LA_PREDICT_TILE", 512, _int(32),
        "prediction tile side when the model version names none")
    device: str | None = _setting(
        "LA_DEVICE", None, _str,
        "`cpu` or `cuda` for prediction and training (auto: CUDA when present)", shown="auto")
    allowed_origins: tuple[str, ...] = _setting(
        "LA_ALLOWED_ORIGINS", (), _origins,
        "comma-separated extra origins images may come from (the token is never sent there)")
    max_image_bytes: int = _setting(
        "LA_MAX_IMAGE_BYTES", 64 * 1024 * 1024, _int(1), "larger image downloads are refused",
        shown="64 MiB")
    max_image_pixels: int = _setting(
        "LA_MAX_IMAGE_PIXELS", 64 * 1024 * 1024, _int(1), "larger images are refused",
        shown="64 Mpx")
    max_request_bytes: int = _setting(
        "LA_MAX_REQUEST_BYTES", 256 * 1024 * 1024, _int(1), "larger request bodies get a 413",
        shown="256 MiB")
    fetch_timeout: float = _setting(
        "LA_FETCH_TIMEOUT", 30.0, _positive_float, "connect/read timeout per image request",
        shown="30 s")
    image_cache_ttl: float = _setting(
        "LA_IMAGE_CACHE_TTL", 3600.0, _positive_float,
        "a cached image younger than this is used without asking again", shown="3600 s")
    poll_interval: float = _setting(
        "LA_POLL_INTERVAL", 0.5, _positive_float,
        "how often the worker looks for events and job progress", shown="0.5 s")
    sink: str | None = _setting(
        "LA_SINK", None, _str,
        "`module:callable` building where results go; `none`: nowhere",
        shown="per-project Label Studio")
    basic_auth_user: str | None = _setting(
        "LA_BASIC_AUTH_USER", None, _str,
        "with `LA_BASIC_AUTH_PASS`: every route but `/health` asks for HTTP basic auth (Label "
        "Studio's \"Use Basic Authentication\" when connecting the model)", shown="off")
    basic_auth_pass: str | None = _setting(
        "LA_BASIC_AUTH_PASS", None, _str, "the password of `LA_BASIC_AUTH_USER`", shown="off")
    metrics_token: str | None = _setting(
        "LA_METRICS_TOKEN", None, _str,
        "`/metrics` answers a request with `Authorization: Bearer <this>` (for Prometheus)",
        shown="off")
    max_webhook_bytes: int = _setting(
        "LA_MAX_WEBHOOK_BYTES", 16 * 1024 * 1024, _int(1),
        "larger `/webhook` and `/train` bodies get a 413 (they are stored)", shown="16 MiB")
    inference_slots: int = _setting(
        "LA_INFERENCE_SLOTS", 1, _int(1),
        "model predictions one web process runs at once; the others wait their turn (on a "
        "CPU, more at once only share the same cores)")
    job_nice: int = _setting(
        "LA_JOB_NICE", 10, _int(0),
        "niceness of training and ranking jobs, so that `/predict` keeps the CPU first "
        "(0: same priority)")
    image_cache_bytes: int = _setting(
        "LA_IMAGE_CACHE_BYTES", 1024 * 1024 * 1024, _int(0),
        "the image cache's size bound; the least recently used images go first (0: no cache)",
        shown="1 GiB")
    interactive_cache_bytes: int = _setting(
        "LA_INTERACTIVE_CACHE_BYTES", 512 * 1024 * 1024, _int(0),
        "per web process: the bound of the smart tools' per-task cache (working image and "
        "model probabilities, reused by every further click; least recently used first; 0: "
        "none)", shown="512 MiB")
    dask_scheduler: str | None = _setting(
        "LA_DASK_SCHEDULER", None, dask_address,
        "a Dask scheduler (`tcp://host:8786`): ranking jobs score the pool on its workers, "
        "which load the model version from the shared work directory", shown="off")
    queue: str | None = _setting(
        "LA_QUEUE", None, _queue,
        "a Redis URL (`redis://host:6379/0`): training and ranking jobs go to RQ workers "
        "(`label-assistant worker`) on machines that share the work directory, instead of "
        "local processes", shown="off (local processes)")
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
        """Settings from environment variables (``os.environ`` by default), then ``overrides``.

        Raises :class:`SettingsError` (naming the variable) for a value that can't be used.
        """
        env = os.environ if env is None else env
        settings = cls(**{v.attr: v.read(env) for v in VARIABLES})
        return replace(settings, **overrides) if overrides else settings

    def to_env(self) -> dict[str, str]:
        """The environment variables that give these settings (for child processes); a field
        that is ``None`` is left out.

        ``train_overrides`` has no variable; pass a ``train_config`` file instead.
        """
        return {v.env: v.text(getattr(self, v.attr)) for v in VARIABLES
                if getattr(self, v.attr) is not None}

    @property
    def workspace(self) -> Workspace:
        """The work directory's layout (:class:`~label_assistant.workspace.Workspace`)."""
        return Workspace(self.workdir)

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


def _shown(default: Any) -> str:
    if default is None or default == ():
        return "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (str, Path)):
        return f"`{default}`"
    return str(default)


#: Every setting's declaration, in the order of the fields of :class:`Settings`.
VARIABLES: tuple[Variable, ...] = tuple(
    Variable(env=f.metadata["env"], attr=f.name, default=f.default, parse=f.metadata["parse"],
             doc=f.metadata["doc"], shown=f.metadata["shown"] or _shown(f.default))
    for f in fields(Settings) if "env" in f.metadata)


def settings_table() -> str:
    """The settings as a markdown table (variable, default, meaning), as README.md shows it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.env}` | {v.shown} | {v.doc} |" for v in VARIABLES]
    return "\n".join(rows)


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

"""Model versions in a directory: publish atomically, list, pick the current one, roll back.

Layout of ``root``::

    v0001/model.safetensors   weights (safetensors)
    v0001/version.json        id, created_at, parent, spec, classes, manifest, metrics,
                              promotion (why it serves, or why it was kept), ...
    current                   what serves: a version id, or ``otsu`` (one line, replaced
                              atomically; no file: Otsu, the version before any model)
    history.jsonl             one line per change of what serves, with the reason
    .last_id                  the last id handed out: ids are never reused
    .lock                     fcntl lock serialising writers (publish, set_current, cleanup)
    .tmp-*                    a publish in progress, or one killed before its rename

A version appears only by ``os.rename`` of a complete, fsynced temporary directory, so a
reader never sees half a version, and a killed publish leaves the current version untouched.

Otsu is the version that exists before any model (:data:`OTSU`): :meth:`ModelRegistry.current_id`
is None while it serves. A trained version is a *candidate*: ``publish(...,
make_current=False)`` keeps it without serving it (the champion/challenger rule of
:mod:`label_assistant.model.promotion` decides), :meth:`ModelRegistry.set_current` promotes
one by hand, and :meth:`ModelRegistry.rollback` goes back to what served before, down to Otsu.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from label_assistant.files import fsync_dir, write_atomic

if TYPE_CHECKING:  # torch is imported where weights are touched: reading records stays light
    import torch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "version.json"
CURRENT_FILE = "current"
HISTORY_FILE = "history.jsonl"
_LAST_ID_FILE = ".last_id"
_LOCK_FILE = ".lock"
_TMP_PREFIX = ".tmp-"
_ID_PATTERN = re.compile(r"^v(\d{4,})$")
#: What ``current`` holds while Otsu serves (the version before any model).
OTSU = "otsu"


class RegistryError(ValueError):
    """A registry operation can't be done (nothing to roll back to, bad state dict, ...)."""


class UnknownVersionError(RegistryError):
    """No complete version with this id."""


class VersionMismatchError(RegistryError):
    """The version's classes differ from the ones the caller expects."""


@dataclass
class VersionInfo:
    """What ``version.json`` holds about one published model version."""

    id: str
    created_at: float
    parent: str | None
    spec: dict[str, Any]
    class_names: list[str]
    label_config_hash: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "published"
    #: The champion/challenger verdict when it was published: ``promoted``, ``reason``,
    #: ``champion``, and both versions' scores on the same validation pixels.
    promotion: dict[str, Any] = field(default_factory=dict)
    #: The images it trained and validated on (:class:`label_assistant.model.domain.Domain`).
    domain: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionInfo:
        # Keys added by later releases are ignored, so that old code reads new versions.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def version_number(version_id: str) -> int:
    """``"v0012"`` -> 12; raises :class:`UnknownVersionError` for anything else."""
    match = _ID_PATTERN.match(str(version_id))
    if not match:
        raise UnknownVersionError(f"{version_id!r} is not a version id (like v0001)")
    return int(match.group(1))


def format_id(number: int) -> str:
    return f"v{number:04d}"


def _cpu_tensors(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    import torch

    tensors = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise RegistryError(f"state dict entry {name!r} is a {type(value).__name__}, "
                                "not a tensor")
        # safetensors wants contiguous tensors that share no memory: clone each one.
        tensors[name] = value.detach().to("cpu").contiguous().clone()
    return tensors


class ModelRegistry:
    """Model versions under ``root`` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- reading ------------------------------------------------------------------------------

    def path(self, version_id: str) -> Path:
        """The directory of a version (which may not exist)."""
        return self.root / format_id(version_number(version_id))

    def list(self) -> list[VersionInfo]:
        """Complete versions, oldest first; temporary and incomplete directories are skipped."""
        if not self.root.is_dir():
            return []
        numbers = sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _ID_PATTERN.match(p.name))
        )
        infos = []
        for n in numbers:
            info = self._read_info(format_id(n))
            if info is not None:
                infos.append(info)
        return infos

    def get(self, version_id: str) -> VersionInfo:
        """The version's record; ``"current"`` names the current version."""
        if version_id == "current":
            info = self.current()
            if info is None:
                raise UnknownVersionError(f"no current version in {self.root}")
            return info
        info = self._read_info(format_id(version_number(version_id)))
        if info is None:
            raise UnknownVersionError(f"no version {version_id} in {self.root}")
        return info

    def serving(self) -> str:
        """What serves: a version id, or :data:`OTSU`."""
        try:
            text = (self.root / CURRENT_FILE).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return OTSU
        return text or OTSU

    def current_id(self) -> str | None:
        """The model version that serves, or None while Otsu does (before any promotion,
        or after a rollback to Otsu)."""
        serving = self.serving()
        return None if serving == OTSU else serving

    def current(self) -> VersionInfo | None:
        """The current version, or None (none published yet, or its directory is gone)."""
        version_id = self.current_id()
        if version_id is None:
            return None
        try:
            return self.get(version_id)
        except UnknownVersionError:
            log.warning("current version %s is missing from %s", version_id, self.root)
            return None

    def history(self) -> list[dict[str, Any]]:
        """Changes of the current version, oldest first (``at``, ``event``, ``version``, ...)."""
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def weights_path(self, version_id: str) -> Path:
        return self.path(self.get(version_id).id) / WEIGHTS_FILE

    def load_state_dict(self, version_id: str) -> dict[str, torch.Tensor]:
        """The version's weights, on the CPU; a damaged file raises :class:`RegistryError`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.weights_path(version_id)
        try:
            return load_file(path, device="cpu")
        except SafetensorError as error:
            raise RegistryError(f"can't read {path}: {error}") from None

    def load_model(
        self,
        version_id: str = "current",
        *,
        expected_classes: list[str] | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.nn.Module, VersionInfo]:
        """The version's model in eval mode on ``device``, with its record.

        ``expected_classes`` (background first) must equal the version's class names, else
        :class:`VersionMismatchError`: a model trained for other classes must not predict.
        """
        info = self.get(version_id)
        if expected_classes is not None and list(expected_classes) != list(info.class_names):
            raise VersionMismatchError(
                f"version {info.id} was trained for classes {list(info.class_names)}, "
                f"expected {list(expected_classes)}"
            )
        from label_assistant.model.factory import ModelSpec, create_model

        model = create_model(ModelSpec.from_dict(info.spec))
        model.load_state_dict(self.load_state_dict(info.id))
        return model.to(device).eval(), info

    def _read_info(self, version_id: str) -> VersionInfo | None:
        directory = self.root / version_id
        try:
            data = json.loads((directory / INFO_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not (directory / WEIGHTS_FILE).is_file():
            return None
        return VersionInfo.from_dict(data)

    # --- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock on ``root/.lock``; the kernel drops it if the process dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_FILE, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _allocate_id(self) -> str:
        """Next id after every id handed out or present; call under the lock."""
        last = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            last = int((self.root / _LAST_ID_FILE).read_text().strip())
        # Directories count too, should .last_id be lost or older than them.
        for p in self.root.iterdir():
            name = p.name[len(_TMP_PREFIX):].split("-")[0] if p.name.startswith(_TMP_PREFIX) \
                else p.name
            if m := _ID_PATTERN.match(name):
                last = max(last, int(m.group(1)))
        number = last + 1
        write_atomic(self.root / _LAST_ID_FILE, f"{number}\n", durable=True)
        return format_id(number)

    def publish(
        self,
        state_dict: dict[str, torch.Tensor],
        *,
        spec: dict[str, Any],
        class_names: list[str],
        label_config_hash: str | None,
        manifest: dict[str, Any],
        metrics: dict[str, Any],
        curve: list[dict[str, Any]],
        config: dict[str, Any],
        parent: str | None,
        make_current: bool = True,
        promotion: dict[str, Any] | None = None,
        domain: dict[str, Any] | None = None,
    ) -> VersionInfo:
        """Store a new version; it serves at once with ``make_current``, else it is kept as a
        candidate. ``parent``: what served when it was trained (None: Otsu). Its record."""
        from safetensors.torch import save_file

        tensors = _cpu_tensors(state_dict)
        with self._locked():
            version_id = self._allocate_id()
            info = VersionInfo(
                id=version_id,
                created_at=round(time.time(), 3),
                parent=parent,
                spec=dict(spec),
                class_names=list(class_names),
                label_config_hash=label_config_hash,
                manifest=manifest,
                metrics=metrics,
                curve=list(curve),
                config=config,
                promotion=dict(promotion or {}),
                domain=domain,
            )
            # Serialise before touching the disk: a record that isn't JSON fails here.
            record = json.dumps(info.to_dict(), indent=2, default=json_default).encode()
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version_id}-", dir=self.root))
            try:
                save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"version": version_id})
                with open(tmp / WEIGHTS_FILE, "rb") as f:
                    os.fsync(f.fileno())
                write_atomic(tmp / INFO_FILE, record, durable=True)
                os.rename(tmp, self.root / version_id)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(self.root)
            if make_current:
                self._point_current(version_id, "publish", (promotion or {}).get("reason"))
        log.info("published model version %s in %s%s", version_id, self.root,
                 "" if make_current else " (a candidate: it does not serve)")
        return VersionInfo.from_dict(json.loads(record))  # as readers will see it

    def set_current(self, version_id: str, *, event: str = "set_current",
                    reason: str | None = None) -> VersionInfo | None:
        """Make an existing version, or :data:`OTSU`, serve; its record (None for Otsu)."""
        with self._locked():
            info = None if version_id == OTSU else self.get(version_id)
            self._point_current(OTSU if info is None else info.id, event, reason)
        return info

    def rollback(self, version_id: str | None = None) -> VersionInfo | None:
        """Make ``version_id`` (or :data:`OTSU`) serve, by default what served before the
        current version: its parent, which is Otsu for a first model. The record of what
        serves now (None: Otsu)."""
        if version_id is None:
            current = self.current()
            if current is None:
                raise RegistryError(f"Otsu serves in {self.root}: nothing to roll back")
            version_id = current.parent or OTSU
        return self.set_current(version_id, event="rollback")

    def delete(self, version_id: str) -> None:
        """Remove a version that is not current; its id is never handed out again."""
        with self._locked():
            info = self.get(version_id)
            if info.id == self.current_id():
                raise RegistryError(f"{info.id} is the current version; roll back first")
            # Renamed first, so that the version disappears at once even if removal stops.
            doomed = self.root / f"{_TMP_PREFIX}{info.id}-deleted"
            os.rename(self.root / info.id, doomed)
            shutil.rmtree(doomed)

    def cleanup_incomplete(self) -> list[Path]:
        """Remove temporary directories of publishes that never finished; returns them."""
        if not self.root.is_dir():
            return []
        removed = []
        # Under the lock no publish is running, so every temp entry is left from a dead one.
        with self._locked():
            for p in self.root.iterdir():
                if p.name.startswith(_TMP_PREFIX):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    removed.append(p)
        for p in removed:
            log.info("removed incomplete %s", p)
        return removed

    def _point_current(self, version_id: str, event: str, reason: str | None = None) -> None:
        """Point ``current`` at ``version_id`` and log the change; call under the lock."""
        previous = self.serving()
        write_atomic(self.root / CURRENT_FILE, f"{version_id}\n", durable=True)
        entry = {"at": round(time.time(), 3), "event": event, "version": version_id,
                 "previous": previous, "reason": reason}
        with open(self.root / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays, paths and tuples in metrics and manifests."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

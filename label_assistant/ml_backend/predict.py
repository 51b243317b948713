"""Pre-labels for Label Studio tasks: the project's current model, or Otsu before there is one.

Per task: fetch the image (:mod:`.fetch`) -> if the project has a current model version whose
classes equal the label config's (background first), tiled prediction with it; otherwise
Otsu pre-labels (:func:`~label_assistant.assist.pre.otsu_prelabel`, class 1 = the config's
first class) -> ``brushlabels`` results, one per class present
(:func:`~label_assistant.labelstudio.annotations.label_map_to_results`).

Every task's answer carries ``model_version`` (the registry's version id, e.g. ``v0003``, or
Otsu's ``otsu-<hash>``, which changes with its parameters) and ``score``: the **mean
per-pixel confidence** of the prediction, in [0, 1] (model: the winning softmax probability;
Otsu: its threshold-distance confidence). High = sure. Label Studio's "Uncertainty sampling"
serves the lowest score first, so unsure images come to annotators sooner.

A task that fails (no image field, image refused, too large or unreadable) gets an empty
``result``, no score, and a logged reason; the batch still answers for every task, and the
app lists the reasons in its answer as ``errors`` (a key Label Studio does not read).

Models are cached per project in the process. Each request checks the registry's
``current`` pointer (one small file read, no torch import) and reloads when it changed, so a
newly published version is used from the next request on.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.assist.pre import OtsuParams
from label_assistant.labelstudio.config import LabelConfig, parse_label_config
from label_assistant.model.registry import CURRENT_FILE, INFO_FILE
from label_assistant.workdir import models_dir

log = logging.getLogger(__name__)



class PredictError(ValueError):
    """A task that can't be predicted (the message names the task)."""


def project_key(value: Any) -> str:
    """Label Studio's project number as a string, from ``"7.1795273793"``, ``7`` or ``{"id": 7}``.

    ``/setup`` and ``/predict`` send ``"<id>.<timestamp>"``; webhooks send the project object.
    """
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise ValueError("no project id")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip().split(".", 1)[0]
    if not text.isdigit():
        raise ValueError(f"project {value!r} is not a Label Studio project id like '7.1795273793'")
    return str(int(text))


@lru_cache(maxsize=64)
def load_label_config(xml: str, background_label: str = "Background") -> LabelConfig:
    """:func:`parse_label_config`, cached: Label Studio sends the same config with every call."""
    return parse_label_config(xml, background_label=background_label)


def current_version(project_models: Path) -> tuple[str, list[str]] | None:
    """``(version id, class names)`` of the registry's current version, or None.

    Reads the registry's record files only (no weights, no torch); a version whose record is missing
    counts as none.
    """
    try:
        version = (project_models / CURRENT_FILE).read_text().strip()
        info = json.loads((project_models / version / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not version:
        return None
    return version, list(info.get("class_names", []))


def current_version_id(project_models: Path) -> str | None:
    try:
        return (project_models / CURRENT_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass
class LoadedModel:
    version: str
    model: Any
    class_names: list[str]
    tile: int
    device: Any


class ModelCache:
    """The current model of each project, loaded once per process and per version."""

    def __init__(self, workdir: Path, device: str | None = None, default_tile: int = 512) -> None:
        self.workdir = Path(workdir)
        self.device = device
        self.default_tile = default_tile
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def version_hint(self, project: str, config: LabelConfig, otsu_version: str) -> str:
        """The version /predict would use now, without loading anything."""
        current = current_version(models_dir(self.workdir, project))
        if current is None or current[1] != list(config.labels):
            return otsu_version
        return current[0]

    def get(self, project: str, config: LabelConfig) -> LoadedModel | None:
        """The project's current model for this label config, or None (use Otsu)."""
        root = models_dir(self.workdir, project)
        version = current_version_id(root)
        if version is None:
            return None
        cached = self._models.get(project)
        if cached is not None and cached.version == version:
            return cached if cached.class_names == list(config.labels) else None
        with self._lock:  # several threads asking at once load the model once
            cached = self._models.get(project)
            if cached is None or cached.version != version:
                cached = self._load(root, version)
                if cached is None:
                    return None
                self._models[project] = cached
        if cached.class_names != list(config.labels):
            key = (project, cached.version)
            if key not in self._warned:
                self._warned.add(key)
                log.warning("project %s: model %s was trained for classes %s, the label config "
                            "has %s: pre-labels come from Otsu", project, cached.version,
                            cached.class_names, list(config.labels))
            return None
        return cached

    def _load(self, root: Path, version: str) -> LoadedModel | None:
        from label_assistant.model.inference import default_device
        from label_assistant.model.registry import ModelRegistry, RegistryError

        device = self.device or default_device()
        try:
            model, info = ModelRegistry(root).load_model(version, device=device)
        except (RegistryError, OSError, RuntimeError) as error:
            log.error("can't load model %s from %s: %s", version, root, error)
            return None
        tile = int((info.config or {}).get("inference_tile") or self.default_tile)
        log.info("loaded model %s from %s on %s", info.id, root, device)
        return LoadedModel(info.id, model, list(info.class_names), tile, device)


class Predictor:
    """Turns tasks into Label Studio prediction dicts."""

    def __init__(self, models: ModelCache, otsu: OtsuParams | None = None,
                 include_background: bool = False) -> None:
        self.models = models
        self.otsu = otsu or OtsuParams()
        self.otsu_version = self.otsu.version_name()
        self.include_background = include_background

    def version_hint(self, project: str | None, config: LabelConfig) -> str:
        if project is None:
            return self.otsu_version
        return self.models.version_hint(project, config, self.otsu_version)

    def warm_up(self, project: str, config: LabelConfig) -> None:
        """Load the project's model now (run in a background thread after /setup)."""
        try:
            self.models.get(project, config)
        except Exception:  # a warm-up must never take the process down
            log.exception("warm-up of project %s failed", project)

    def predict(self, tasks: list[dict[str, Any]], config: LabelConfig, fetcher: Any,
                project: str | None, errors: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
        """One prediction dict per task, in order; failing tasks get an empty result.

        ``errors``, if given, receives ``{"task", "index", "error"}`` for each failing task.
        """
        loaded = None
        if project is not None:
            try:
                loaded = self.models.get(project, config)
            except Exception:
                log.exception("project %s: the model can't be used; pre-labels from Otsu", project)
        version = loaded.version if loaded else self.otsu_version
        out = []
        for i, task in enumerate(tasks):
            task_id = task.get("id", f"#{i}") if isinstance(task, dict) else f"#{i}"
            try:
                out.append(self.predict_task(task, config, fetcher, loaded))
            except Exception as error:  # one task never fails the batch
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("project %s task %s: no prediction: %s", project, task_id, reason)
                out.append({"result": [], "model_version": version})
                if errors is not None:
                    errors.append({"task": task_id, "index": i, "error": reason})
        return out

    def predict_task(self, task: Any, config: LabelConfig, fetcher: Any,
                     loaded: LoadedModel | None) -> dict[str, Any]:
        from label_assistant.labelstudio.annotations import label_map_to_results

        image = fetcher.fetch_image(task_image_url(task, config)).image
        if loaded is not None:
            label_map, confidence = self._model_label_map(image, loaded)
            version = loaded.version
        else:
            from label_assistant.assist.pre import otsu_prelabel

            pre = otsu_prelabel(image, self.otsu)
            label_map, confidence, version = pre.label_map, pre.confidence, self.otsu_version
        score = float(np.clip(np.mean(confidence, dtype=np.float64), 0.0, 1.0)) \
            if confidence.size else 0.0
        results = label_map_to_results(label_map, config,
                                       include_background=self.include_background)
        return {"result": results, "score": round(score, 6), "model_version": version}

    @staticmethod
    def _model_label_map(image: np.ndarray, loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
        from label_assistant.images import normalize_for_model
        from label_assistant.model.inference import predict_proba, probabilities_to_label_map

        # inference's default overlap (64 px) needs tiles over 64: keep it a quarter at most.
        prediction = predict_proba(loaded.model, normalize_for_model(image), tile=loaded.tile,
                                   overlap=min(64, loaded.tile // 4), device=loaded.device)
        return probabilities_to_label_map(prediction.probabilities)


def task_image_url(task: Any, config: LabelConfig) -> str:
    """The task's image reference (``task["data"][<the Image tag's $field>]``)."""
    if not isinstance(task, dict):
        raise PredictError(f"a task must be an object, got {type(task).__name__}")
    data = task.get("data")
    if not isinstance(data, dict) or config.data_key not in data:
        raise PredictError(f"task {task.get('id')} has no data field {config.data_key!r} "
                           "(the label config's <Image value=\"$...\">)")
    return data[config.data_key]

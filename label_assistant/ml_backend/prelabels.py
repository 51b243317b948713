"""Pre-labels for Label Studio tasks from the project's serving version: Otsu before any
model, the current model version after.

:meth:`Prelabels.serving` is the one place that says which version serves a project: the
registry's current version (:class:`~label_assistant.model.predictor.VersionCache`, loaded
once per process, reloaded when ``current`` moves) when its classes equal the label
config's (background first), else Otsu (:class:`~label_assistant.assist.pre.OtsuPrelabeler`).
``/predict`` answers with it, and the worker's gate takes its probabilities.

Per task: fetch the image (:mod:`.fetch`) -> the serving version's
:meth:`prelabel` -> ``brushlabels`` results, one per class present
(:func:`~label_assistant.labelstudio.annotations.label_map_to_results`).

Every task's answer carries ``model_version`` (the registry's version id, e.g. ``v0003``, or
Otsu's ``otsu-<hash>``, which changes with its parameters) and ``score``, in [0, 1], which
places the task in our labeling order: Label Studio's "Uncertainty sampling" (the sampling
our ranking switches the project to) serves the lowest score first. A ranked task (its data
holds ``la_rank``) scores ``rank / 10**6``; one not ranked yet ``0.5 + confidence / 2``, the
**mean per-pixel confidence** of the prediction (model: the winning softmax probability;
Otsu: its threshold-distance confidence; high = sure), so unsure images come sooner
(:func:`label_assistant.labelstudio.order.order_score`).

A task that fails (no image field, image refused, too large or unreadable) gets an empty
``result``, no score, and a logged reason; the batch still answers for every task, and the
app lists the reasons in its answer as ``errors`` (a key Label Studio does not read).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from label_assistant.assist.pre import OtsuParams, OtsuPrelabeler
from label_assistant.labelstudio.config import LabelConfig
from label_assistant.labelstudio.order import order_score, task_rank
from label_assistant.workspace import Workspace

log = logging.getLogger(__name__)


class Prelabels:
    """The serving version of each project, and tasks turned into Label Studio predictions."""

    def __init__(self, workspace: Workspace, *, device: str | None = None,
                 default_tile: int = 512, otsu: OtsuParams | None = None,
                 include_background: bool = False, inference_slots: int = 1) -> None:
        self.workspace = workspace
        # Model runs in this process at once (LA_INFERENCE_SLOTS): on a CPU, concurrent
        # requests share the same cores, so taking turns keeps each one fast (bench_load).
        self._slots = threading.BoundedSemaphore(max(1, inference_slots))
        self.device, self.default_tile = device, default_tile
        self._versions: Any = None
        self.otsu = OtsuPrelabeler(otsu)
        self.include_background = include_background

    @property
    def versions(self) -> Any:
        """The :class:`~label_assistant.model.predictor.VersionCache`, made (and torch
        imported) when a project first has a model version: Otsu alone needs no torch."""
        if self._versions is None:
            from label_assistant.model.predictor import VersionCache

            self._versions = VersionCache(self.device, self.default_tile)
        return self._versions

    @property
    def otsu_version(self) -> str:
        return self.otsu.version

    def version_hint(self, project: str | None, config: LabelConfig) -> str:
        """The version ``/predict`` would use now, without loading anything."""
        if project is None:
            return self.otsu_version
        registry = self.workspace.registry(project)
        current = registry.current()
        if current is None or list(current.class_names) != list(config.labels):
            return self.otsu_version
        return current.id

    def serving(self, project: str | None, config: LabelConfig) -> Any:
        """The project's serving version (:func:`label_assistant.model.predictor.serving`):
        a model ``Predictor`` or Otsu."""
        if project is None:
            return self.otsu
        registry = self.workspace.registry(project)
        if registry.current_id() is None:  # Otsu: no torch import, no model cache
            return self.otsu
        from label_assistant.model.predictor import serving

        try:
            return serving(registry, list(config.labels), otsu=self.otsu, cache=self.versions)
        except Exception:  # a broken version must not stop pre-labels
            log.exception("project %s: the model can't be used; pre-labels from Otsu", project)
            return self.otsu

    def warm_up(self, project: str, config: LabelConfig) -> None:
        """Load the project's model now (run in a background thread after /setup), and run
        its domain check and one forward pass on a small blank image once: the first
        interactive call would otherwise pay for their first run (the domain check's imports
        alone: about 3 s on our 2-core CPU)."""
        try:
            serving = self.serving(project, config)
            if hasattr(serving, "model"):
                x = serving.model_input(np.zeros((64, 64), np.float32))
                serving.familiar(x)
                with self._slots:
                    serving.predict(x)
        except Exception:  # a warm-up must never take the process down
            log.exception("warm-up of project %s failed", project)

    def probability_windows(self, image: np.ndarray, serving: Any) -> Any:
        """The serving model's class probabilities of an image as read, computed only on the
        windows an interactive prompt reads
        (:class:`~label_assistant.interactive.probabilities.WindowedProbabilities`; each
        window's run takes a turn like :meth:`predict_task`, through the version's
        ``predict``); None when Otsu serves or the version does not know images like this one
        (its pre-label is Otsu's then, see ``Predictor.familiar``)."""
        if not hasattr(serving, "model"):
            return None
        from label_assistant.interactive.probabilities import WindowedProbabilities

        x = serving.model_input(image)
        if not serving.familiar(x):
            return None

        def predict(crop: np.ndarray) -> np.ndarray:
            with self._slots:
                return serving.predict(crop).probabilities

        return WindowedProbabilities(x, predict, len(serving.class_names))

    def predict(self, tasks: list[dict[str, Any]], config: LabelConfig, fetcher: Any,
                project: str | None, errors: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
        """One prediction dict per task, in order; failing tasks get an empty result.

        ``errors``, if given, receives ``{"task", "index", "error"}`` for each failing task.
        """
        serving = self.serving(project, config)
        out = []
        for i, task in enumerate(tasks):
            task_id = task.get("id", f"#{i}") if isinstance(task, dict) else f"#{i}"
            try:
                out.append(self.predict_task(task, config, fetcher, serving))
            except Exception as error:  # one task never fails the batch
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("project %s task %s: no prediction: %s", project, task_id, reason)
                out.append({"result": [], "model_version": serving.version})
                if errors is not None:
                    errors.append({"task": task_id, "index": i, "error": reason})
        return out

    def predict_task(self, task: Any, config: LabelConfig, fetcher: Any, serving: Any
                     ) -> dict[str, Any]:
        from label_assistant.labelstudio.annotations import label_map_to_results

        image = fetcher.task_image(task, config).image
        if hasattr(serving, "model"):
            with self._slots:
                pre = serving.prelabel(image)
        else:  # Otsu: cheap, no turn to take
            pre = serving.prelabel(image)
        confidence = pre.confidence
        mean = float(np.clip(np.mean(confidence, dtype=np.float64), 0.0, 1.0)) \
            if confidence.size else 0.0
        score = order_score(task_rank(task), mean)
        results = label_map_to_results(pre.label_map, config,
                                       include_background=self.include_background)
        return {"result": results, "score": round(score, 6), "model_version": serving.version}

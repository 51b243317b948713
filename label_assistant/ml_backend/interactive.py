"""Interactive labeling in ``/predict``: a smart tool's context -> one object's brush mask.

For a ``/predict`` with ``params.context`` (Label Studio's smart tools,
:mod:`label_assistant.labelstudio.context`), :meth:`Interactive.answer`:

1. reads the context (a malformed one: :class:`~label_assistant.labelstudio.context.ContextError`
   with its 4xx status);
2. takes the project's serving version (:meth:`.prelabels.Prelabels.serving`: Otsu or a
   model) and the task's image through the project's fetcher (its origin and token rules);
3. per task and version, computes once what every further click reuses: the GrabCut working
   image (:func:`~label_assistant.interactive.working_image`) and, when a model serves, its
   model input and the class probabilities computed so far
   (:meth:`.prelabels.Prelabels.probability_windows`: the model runs only on the windows
   the prompts read, a box or a window around a click, never the whole image, and each
   window once). They are kept in a :class:`TaskCache`, an LRU bounded in bytes
   (``LA_INTERACTIVE_CACHE_BYTES``; an entry counts its full-size probability array from
   the start) shared by the threads of a web process; an entry older than
   ``LA_IMAGE_CACHE_TTL`` is made again (the image is fetched again, so a changed image is
   seen);
4. segments (:func:`~label_assistant.interactive.segment`; model-guided when there are
   probabilities) and answers one ``brushlabels`` result for that object, labelled with the
   smart tool's label.

Label Studio sends a rectangle alone and clicks without the rectangle (only regions of the
same type and label travel together). So that clicks can correct a box's mask (MIA's
add/remove loop), the last box of each task and label is remembered (:class:`BoxMemory`) and
used with clicks when every positive click is inside it.

Nothing to do (no region left, three of four extreme points, only negative clicks and no
box, nothing found) is an empty ``result`` with a ``reason``; an image that can't be fetched
is an empty ``result`` with ``errors``, as in ``/predict``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from label_assistant.interactive import Box, Prompt, PromptError, segment, working_image
from label_assistant.interactive.probabilities import ModelRunError
from label_assistant.labelmap import UNLABELED
from label_assistant.labelstudio.annotations import label_map_to_results
from label_assistant.labelstudio.config import LabelConfig
from label_assistant.labelstudio.context import ContextError, parse_context
from label_assistant.ml_backend.fetch import FetchError
from label_assistant.ml_backend.protocol import TaskError, task_image_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskImage:
    """What a task's interactions reuse: the working image and the model's probabilities
    (an array, or a :class:`~label_assistant.interactive.probabilities.WindowedProbabilities`
    filled in as prompts read it; None when Otsu serves)."""

    work: np.ndarray  # uint8 (H, W, 3)
    probabilities: Any  # a ProbabilitySource with nbytes, or None
    made: float  # time.monotonic() when made

    @property
    def nbytes(self) -> int:
        return self.work.nbytes + (0 if self.probabilities is None else
                                   self.probabilities.nbytes)


class TaskCache:
    """A thread-safe LRU of :class:`TaskImage` bounded by ``max_bytes`` (0: keeps nothing);
    entries older than ``ttl`` seconds are misses."""

    def __init__(self, max_bytes: int, ttl: float) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.ttl = ttl
        self._entries: OrderedDict[Any, TaskImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Any) -> TaskImage | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry.made > self.ttl:
                self._drop(key)
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Any, entry: TaskImage) -> None:
        """Keep ``entry`` (not when it alone is larger than the bound), evicting the least
        recently used entries past the bound."""
        with self._lock:
            if key in self._entries:
                self._drop(key)
            if entry.nbytes > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Any) -> None:
        self._bytes -= self._entries.pop(key).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def entries(self) -> list[TaskImage]:
        """The entries, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


class BoxMemory:
    """The last box of each (project, task, class), at most ``size`` of them (LRU)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._boxes: OrderedDict[Any, Box] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key: Any, box: Box) -> None:
        with self._lock:
            self._boxes[key] = box
            self._boxes.move_to_end(key)
            while len(self._boxes) > self.size:
                self._boxes.popitem(last=False)

    def recall(self, key: Any) -> Box | None:
        with self._lock:
            return self._boxes.get(key)


def _empty(version: str, reason: str) -> dict[str, Any]:
    return {"result": [], "model_version": version, "reason": reason}


class Interactive:
    """The interactive path of ``/predict`` for one web process."""

    def __init__(self, prelabels: Any, *, cache_bytes: int, ttl: float) -> None:
        self.prelabels = prelabels
        self.cache = TaskCache(cache_bytes, ttl)
        self.boxes = BoxMemory()

    def answer(self, task: Any, context: Any, config: LabelConfig, fetcher: Any,
               project: str | None, errors: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
        """The prediction for one task and context: one brush result, or none and why.
        :class:`ContextError` for a context that can't be used."""
        parsed = parse_context(context, config)
        serving = self.prelabels.serving(project, config)
        version = serving.version
        task_id = task.get("id") if isinstance(task, dict) else None
        if parsed.reason:
            return _empty(version, parsed.reason)
        try:
            entry = self._task_image(task, config, fetcher, project, serving)
        except (FetchError, TaskError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("project %s task %s: no interactive mask: %s", project, task_id, reason)
            if errors is not None:
                errors.append({"task": task_id, "index": 0, "error": reason})
            return {"result": [], "model_version": version}
        height, width = entry.work.shape[:2]
        prompt = self._with_box(parsed.prompt(height, width), (project, task_id, parsed.cls))
        if prompt.empty:
            return _empty(version, "no box and no positive click: a negative click only "
                                   "removes from an object that a box or a positive click "
                                   "gives")
        try:
            found = segment(entry.work, prompt, entry.probabilities, parsed.cls)
        except PromptError as error:
            raise ContextError(str(error), 422) from None
        except ModelRunError as error:  # the annotator still gets GrabCut's answer
            log.error("project %s task %s: %s; GrabCut alone answers", project, task_id, error)
            found = segment(entry.work, prompt, None, parsed.cls)
        if found.empty:
            return _empty(version, found.reason or "no object found")
        label_map = np.full((height, width), UNLABELED, np.uint8)
        label_map[found.mask] = parsed.cls
        (result,) = label_map_to_results(label_map, config)
        # An id of this object's own: Label Studio keys regions by id, and a suggestion with
        # the id of an accepted region would replace it.
        result["id"] = hashlib.sha1(f"{task_id}\x00{prompt}\x00{version}".encode()
                                    ).hexdigest()[:10]
        return {"result": [result], "model_version": version, "method": found.method}

    def _task_image(self, task: Any, config: LabelConfig, fetcher: Any, project: str | None,
                    serving: Any) -> TaskImage:
        url = fetcher.resolve(task_image_url(task, config))  # the origin rules, every time
        key = (project, url, serving.version)
        entry = self.cache.get(key)
        if entry is None:
            image = fetcher.fetch_image(url).image
            entry = TaskImage(working_image(image),
                              self.prelabels.probability_windows(image, serving), time.monotonic())
            self.cache.put(key, entry)
        return entry

    def _with_box(self, prompt: Prompt, key: tuple[Any, ...]) -> Prompt:
        """Remember a box; give clicks without one the remembered box when every positive
        click is inside it."""
        if prompt.box is not None:
            self.boxes.remember(key, prompt.box)
            return prompt
        if prompt.extreme or not prompt.clicks:
            return prompt
        box = self.boxes.recall(key)
        if box is not None and all(box.contains(c) for c in prompt.positives):
            return Prompt(box=box, clicks=prompt.clicks)
        return prompt


__all__ = ["BoxMemory", "ContextError", "Interactive", "TaskCache", "TaskImage"]

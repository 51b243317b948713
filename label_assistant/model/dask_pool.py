"""Scoring a pool on a Dask cluster: each worker loads the model version once and scores its
partitions; the client merges the numbers and ranks them as in one process.

Only ``select --dask ADDRESS`` and the backend's ranking job with ``LA_DASK_SCHEDULER`` import
this module (and with it ``distributed``); without them nothing of Dask is imported.

- :func:`connect`: a :class:`distributed.Client` for a scheduler address, or a one-line
  :class:`DaskError` (unreachable scheduler, bad address). The connect timeout is Dask's own
  setting, ``distributed.comm.timeouts.connect`` (environment variable
  ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``, default 30 s).
- :func:`score_pool`: the pool's references (file paths, Label Studio tasks) are split into
  partitions, one Dask task each; a task loads each image with ``load`` (a picklable callable,
  run on the worker: the images never pass through the client), turns it into the model input
  with :meth:`~label_assistant.model.predictor.Predictor.model_input` and runs
  :func:`~label_assistant.selectors.pool.score_image`, the per-image step of the single-process
  path. Answers one :class:`~label_assistant.selectors.pool.ImageNumbers` or a one-line failure
  reason per reference, in order; the caller assembles the pool
  (:func:`~label_assistant.selectors.pool.pool_from_numbers`) and ranks it.
- :class:`ModelVersions`: the worker plugin that holds, per worker, the version of each
  registry loaded through :meth:`~label_assistant.model.predictor.Predictor.from_registry`
  (one version per registry: a newer one replaces it).

Workers read the registry (``W/models``) and image files by path: they need the work
directory on a shared filesystem at the same path, and ``label_assistant`` installed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from label_assistant.model.predictor import DEFAULT_TILE
from label_assistant.selectors.pool import ImageNumbers, Work, score_image

#: The name the worker plugin is registered under.
PLUGIN = "label-assistant-model-versions"

#: Partitions per worker thread: more than one, so that a slow partition doesn't hold the end.
PARTITIONS_PER_THREAD = 4


class DaskError(RuntimeError):
    """The Dask scheduler can't be reached or the scoring failed on the cluster (one line)."""


@dataclass(frozen=True)
class VersionRef:
    """Which model version the workers load and how they run it (what
    :meth:`~label_assistant.model.predictor.Predictor.from_registry` and
    :meth:`~label_assistant.model.predictor.Predictor.predict` take). ``version`` is a version
    id, resolved by the client, so that every worker runs the same one. ``device`` None: the
    worker's own default (CUDA when it has one)."""

    registry: str
    version: str
    expected_classes: tuple[str, ...] | None = None
    device: str | None = None
    default_tile: int = DEFAULT_TILE
    tta: bool = False
    mc_samples: int = 0


class ModelVersions(WorkerPlugin):
    """Per worker: the loaded version of each registry (``loads`` counts the loads)."""

    idempotent = True  # registering again keeps the worker's loaded versions

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}
        self.loads = 0
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (ModelVersions, ())  # what travels is the empty plugin, never a loaded model

    def predictor(self, ref: VersionRef) -> Any:
        """The :class:`~label_assistant.model.predictor.Predictor` of ``ref``, loaded once."""
        from label_assistant.model.predictor import Predictor
        from label_assistant.model.registry import ModelRegistry

        key = str(Path(ref.registry).resolve())
        with self._lock:
            predictor = self.loaded.get(key)
            if predictor is None or predictor.version != ref.version:
                self.loaded.pop(key, None)  # the older version goes before the new one loads
                expected = list(ref.expected_classes) if ref.expected_classes else None
                predictor = Predictor.from_registry(
                    ModelRegistry(ref.registry), ref.version, expected_classes=expected,
                    device=ref.device, default_tile=ref.default_tile)
                self.loaded[key] = predictor
                self.loads += 1
            return predictor


def _worker_versions() -> ModelVersions:
    worker = distributed.get_worker()
    plugin = worker.plugins.get(PLUGIN)
    if plugin is None:  # registered after this worker joined and not yet sent: keep one here
        plugin = worker.plugins.setdefault(PLUGIN, ModelVersions())
    return plugin


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def score_partition(ref: VersionRef, load: Callable[[Any], Any], work: Work,
                    items: Sequence[tuple[Any, bool]],
                    labeled_counts: Sequence[int] | None = None) -> list[ImageNumbers | str]:
    """On a worker: ``(reference, labeled)`` pairs -> numbers, or a failure reason for an
    image that can't be loaded or read (the others go on). ``labeled_counts``: for the
    ``class_balance`` score (:func:`~label_assistant.selectors.pool.score_image`)."""
    predictor = _worker_versions().predictor(ref)
    predict = partial(predictor.predict, tta=ref.tta, mc_samples=ref.mc_samples)
    out: list[ImageNumbers | str] = []
    for reference, labeled in items:
        try:  # FetchError, ImageError, InferenceError: this image only, as in one process
            out.append(score_image(predictor.model_input(load(reference)), work,
                                   predict=predict, embed=predictor.embed, labeled=labeled,
                                   labeled_counts=labeled_counts))
        except (ValueError, OSError) as error:
            out.append(_reason(error))
    return out


def connect(address: str) -> distributed.Client:
    """A client of the scheduler at ``address`` (``tcp://host:8786``), or :class:`DaskError`."""
    try:
        return distributed.Client(address, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise DaskError(f"can't reach the Dask scheduler at {address}: {_reason(error)}") \
            from None


def partitions(n: int, workers: int, per_thread: int = PARTITIONS_PER_THREAD
               ) -> list[range]:
    """``n`` items cut into contiguous ranges, about ``per_thread`` per worker thread."""
    if n == 0:
        return []
    count = max(1, min(n, workers * per_thread))
    size = math.ceil(n / count)
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def score_pool(
    client: distributed.Client,
    references: Sequence[Any],
    load: Callable[[Any], Any],
    ref: VersionRef,
    work: Work,
    *,
    labeled: Sequence[bool] | None = None,
    on_partition: Callable[[int], None] | None = None,
    labeled_counts: Sequence[int] | None = None,
) -> list[ImageNumbers | str]:
    """Score ``references`` on the cluster of ``client``; one result per reference, in order
    (see the module doc). ``labeled[i]``: the image is embedded, not scored.
    ``on_partition(n_images)`` hears each finished partition (progress). ``labeled_counts``:
    labeled pixels per class 0..K, for the ``class_balance`` score."""
    flags = [False] * len(references) if labeled is None else [bool(x) for x in labeled]
    if len(flags) != len(references):
        raise ValueError(f"{len(flags)} labeled flags for {len(references)} images")
    threads = sum(client.nthreads().values())
    if threads == 0:
        raise DaskError(f"the Dask scheduler at {client.scheduler.address} has no workers")
    client.register_plugin(ModelVersions(), name=PLUGIN)
    chunks = partitions(len(references), threads)
    futures = [
        client.submit(score_partition, ref, load, work,
                      [(references[i], flags[i]) for i in chunk],
                      None if labeled_counts is None else [int(c) for c in labeled_counts],
                      pure=False)
        for chunk in chunks
    ]
    results: list[list[ImageNumbers | str]] = []
    try:
        for chunk, future in zip(chunks, futures, strict=True):  # in order; all run meanwhile
            results.append(future.result())
            if on_partition is not None:
                on_partition(len(chunk))
    except Exception as error:  # a worker's exception (e.g. the version can't be loaded)
        client.cancel(futures)
        raise DaskError(f"scoring on Dask failed: {type(error).__name__}: {_reason(error)}") \
            from None
    return [numbers for part in results for numbers in part]

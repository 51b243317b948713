"""The labeling order of a Label Studio project: rank its unlabeled tasks with the selectors.

:func:`rank_tasks` is what the backend runs after each new model version (through
:class:`~label_assistant.labelstudio.client.LabelStudioSink`) and what
``label-assistant select --project ID`` runs on demand:

1. each task's image is fetched with the project's :class:`~.fetch.ImageFetcher` (Label
   Studio host and token from ``/setup`` or the settings; ``data:`` URLs as they are);
2. the model version (``version_id``; none: only the model-free part of the strategy runs)
   scores and embeds it through :func:`~label_assistant.selectors.pool.pool_from_images`, one
   image at a time: only per-image numbers are kept, so the pool may be any size;
3. sequence ids come from the task data field ``settings.sequence_field`` (default
   ``sequence``); tasks already labeled (``labeled_tasks``) count in their sequence, so a
   sequence that has a labeled image comes after those that have none;
4. :func:`~label_assistant.selectors.strategies.rank` orders the pool by
   ``settings.strategy`` (default ``sequence+entropy``).

The answer is ``[(task_id, rank, score, reason)]``, rank 1 = label first, as
:meth:`~label_assistant.labelstudio.client.LabelStudioClient.write_ranking` takes it. Tasks
whose image can't be fetched or read are ranked last, each with the reason.

Pure parts (:func:`effective_strategy`, :func:`merge_pools`, :func:`ranking_rows`) need no
server and no model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from label_assistant.ml_backend.fetch import FetchError, ImageFetcher
from label_assistant.ml_backend.predict import load_label_config, task_image_url
from label_assistant.ml_backend.settings import Settings
from label_assistant.selectors.strategies import Pool, RankedItem, parse_strategy, rank
from label_assistant.workdir import models_dir

log = logging.getLogger(__name__)

Ranking = list[tuple[int, int, float, str]]

#: Used when a strategy's only part needs a model and there is none yet.
MODEL_FREE_FALLBACK = "sequence"


class RankingError(ValueError):
    """The project can't be ranked (no label config, unknown model version)."""


# --- pure parts ----------------------------------------------------------------------------------


def effective_strategy(strategy: str, has_model: bool) -> str:
    """``strategy`` itself, or without its score part when there is no model yet
    (``sequence+entropy`` -> ``sequence``, ``entropy+diversity`` -> ``diversity``,
    ``entropy`` -> ``sequence``)."""
    spec = parse_strategy(strategy)
    if has_model or spec.score is None:
        return spec.name
    parts = (["sequence"] if spec.sequence else []) + (["diversity"] if spec.diversity else [])
    return "+".join(parts) or MODEL_FREE_FALLBACK


def merge_pools(parts: Sequence[Pool], sequences: Sequence[str | None]) -> Pool:
    """One pool from one-image pools (in order), with these sequence ids.

    Score columns missing from a part (labeled images are not scored) are 0; embeddings are
    kept only when every part has them.
    """
    if len(parts) != len(sequences):
        raise ValueError(f"{len(parts)} pools for {len(sequences)} sequence ids")
    names = [name for part in parts for name in part.names]
    keys = list(dict.fromkeys(k for part in parts for k in part.scores))
    scores = {k: np.concatenate([part.scores.get(k, np.zeros(part.n)) for part in parts])
              for k in keys}
    embeddings = None
    if parts and all(part.embeddings is not None for part in parts):
        embeddings = np.concatenate([part.embeddings for part in parts])
    labeled = np.concatenate([part.labeled for part in parts]) if parts else np.zeros(0, bool)
    return Pool(names=names, sequences=list(sequences), scores=scores, embeddings=embeddings,
                labeled=labeled)


def ranking_rows(task_ids: Sequence[int], items: Sequence[RankedItem],
                 failures: Sequence[tuple[int, str]]) -> Ranking:
    """``(task_id, rank, score, reason)``: the ranked items (their pool index is an index in
    ``task_ids``), then the failed tasks with their reasons."""
    rows: Ranking = []
    for item in items:
        rows.append((int(task_ids[item.index]), len(rows) + 1, _finite(item.score), item.reason))
    for task_id, reason in failures:
        rows.append((int(task_id), len(rows) + 1, 0.0, f"ranked last: {reason}"))
    return rows


def _finite(value: float) -> float:
    value = float(value)
    return value if np.isfinite(value) else 0.0


# --- the I/O side --------------------------------------------------------------------------------


@dataclass
class RankingModel:
    """A loaded model version and how to run it."""

    version: str
    model: Any
    tile: int
    device: Any
    channels: int | None = None


def load_ranking_model(settings: Settings, project_id: int | str, version_id: str | None,
                       ) -> RankingModel | None:
    """The project's model ``version_id`` (``"current"`` allowed), or None when
    ``version_id`` is None or names no model (Otsu's ``otsu-...``) or there is no current one."""
    if not version_id or version_id.startswith("otsu"):
        return None
    from label_assistant.model.inference import default_device
    from label_assistant.model.registry import ModelRegistry, RegistryError

    registry = ModelRegistry(models_dir(settings.workdir, str(project_id)))
    if version_id == "current" and registry.current_id() is None:
        return None
    device = settings.device or default_device()
    try:
        model, info = registry.load_model(version_id, device=device)
    except (RegistryError, OSError, RuntimeError) as error:
        raise RankingError(f"project {project_id}: can't load model {version_id}: {error}") \
            from None
    tile = int((info.config or {}).get("inference_tile") or settings.predict_tile)
    return RankingModel(info.id, model, tile, device, _in_channels(model))


def _in_channels(model: Any) -> int | None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return None


def rank_tasks(
    settings: Settings,
    project_id: int | str,
    version_id: str | None,
    unlabeled_tasks: Iterable[Mapping[str, Any]],
    *,
    labeled_tasks: Iterable[Mapping[str, Any]] = (),
    label_config: str | None = None,
    hostname: str | None = None,
    token: str | None = None,
    store: Any = None,
    model: RankingModel | None = None,
    strategy: str | None = None,
    seed: int = 0,
) -> Ranking:
    """Rank ``unlabeled_tasks`` (Label Studio task dicts) for labeling; see the module doc.

    The label config, host and token default to the project's record in the store (from
    ``/setup``); ``model`` (tests) replaces loading ``version_id``.
    """
    from label_assistant.images import ImageError, normalize_for_model
    from label_assistant.selectors.pool import pool_from_images

    project = str(project_id)
    row: Mapping[str, Any] = {}
    if label_config is None or hostname is None or token is None:
        if store is None:
            from label_assistant.ml_backend.store import Store

            store = Store.for_workdir(settings.workdir)
        row = store.get_project(project) or {}
    xml = label_config or row.get("label_config")
    if not xml:
        raise RankingError(f"project {project}: no label config known (connect the backend to "
                           "the project, or pass the label config)")
    config = load_label_config(xml, settings.background_label)
    fetcher = ImageFetcher.from_settings(settings, hostname or row.get("hostname"),
                                         token or row.get("token"))
    if model is None:
        model = load_ranking_model(settings, project, version_id)
    name = effective_strategy(strategy or settings.strategy, model is not None)
    spec = parse_strategy(name)
    net = model.model if model is not None else None
    inference = {} if model is None else {"device": model.device, "tile": model.tile,
                                          "overlap": min(64, model.tile // 4)}

    def image_of(task: Mapping[str, Any]) -> np.ndarray:
        image = normalize_for_model(fetcher.fetch_image(task_image_url(dict(task), config)).image)
        if model is not None and model.channels is not None and image.shape[0] != model.channels:
            raise ValueError(f"the image has {image.shape[0]} channel(s), model {model.version} "
                             f"expects {model.channels}")
        return image

    task_ids: list[int] = []
    data: list[Mapping[str, Any] | None] = []
    parts: list[Pool] = []
    failures: list[tuple[int, str]] = []
    unlabeled = list(unlabeled_tasks)
    labeled = list(labeled_tasks)
    for is_labeled, task in [(False, t) for t in unlabeled] + [(True, t) for t in labeled]:
        task_id = int(task["id"])
        if is_labeled and not spec.diversity:
            # Counts in its sequence; no image needed.
            part = Pool(names=[str(task_id)], labeled=[0])
        else:
            try:
                image = image_of(task)
                part = pool_from_images([(str(task_id), image)], model=net, strategy=name,
                                        labeled=[0] if is_labeled else None, **inference)
            except (FetchError, ImageError, ValueError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("project %s task %s: not ranked: %s", project, task_id, reason)
                if not is_labeled:
                    failures.append((task_id, reason))
                continue
        task_ids.append(task_id)
        data.append(task.get("data") if isinstance(task.get("data"), Mapping) else None)
        parts.append(part)
    from label_assistant.selectors.sequences import sequence_ids

    sequences = sequence_ids([str(t) for t in task_ids], data=data,
                             field=settings.sequence_field)
    pool = merge_pools(parts, sequences)
    items = rank(pool, name, seed=seed) if parts else []
    rows = ranking_rows(task_ids, items, failures)
    log.info("project %s: ranked %d tasks by %s (%s)%s", project, len(rows), name,
             f"model {model.version}" if model else "no model",
             f", {len(failures)} failed" if failures else "")
    return rows

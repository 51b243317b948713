"""The labeling order of a Label Studio project: rank its unlabeled tasks with the selectors.

:func:`rank_project` is the one "rank a project and write the order back": the backend's
ranking job runs it after each new model version (:mod:`.jobs`), and ``label-assistant select
--project ID`` runs it on demand. It reads the project's label config and tasks from Label
Studio, ranks the unlabeled ones with :func:`rank_tasks`, writes ``la_rank``, the "Next to
label" tab and our predictions' scores (the order "Label All Tasks" serves: see
:mod:`label_assistant.labelstudio.order`), and asks Label Studio for new pre-labels of the
first tasks (:func:`refresh_prelabels`). :func:`rank_tasks`:

1. each task's image is fetched with the project's :class:`~.fetch.ImageFetcher` (the
   address and token :func:`~.origin.project_origin` resolves; ``data:`` URLs as they are);
2. the serving model version (a :class:`~label_assistant.model.predictor.Predictor`; none:
   only the model-free part of the strategy runs) scores and embeds it with
   :func:`~label_assistant.selectors.pool.score_image`, one image at a time: only per-image
   numbers are kept, so the pool may be any size. With ``LA_DASK_SCHEDULER`` (and a model)
   that step runs on the Dask cluster's workers instead (:func:`score_tasks_on_dask`), each
   fetching its tasks' images and loading the version once;
3. sequence ids come from the task data field ``settings.sequence_field`` (default
   ``sequence``); tasks already labeled (``labeled_tasks``) count in their sequence, so a
   sequence that has a labeled image comes after those that have none;
4. :func:`~label_assistant.selectors.strategies.rank` orders the pool by
   ``settings.strategy`` (default ``sequence+entropy``).

The answer is ``[(task_id, rank, score, reason)]``, rank 1 = label first, as
:meth:`~label_assistant.labelstudio.client.LabelStudioClient.write_ranking` takes it. Tasks
whose image can't be fetched or read are ranked last, each with the reason.

Pure parts (:func:`effective_strategy`, :func:`ranking_rows`) need no
server and no model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from label_assistant.labelstudio.config import LabelConfig
from label_assistant.ml_backend.fetch import FetchError, ImageFetcher
from label_assistant.ml_backend.origin import Origin
from label_assistant.ml_backend.project_prelabels import is_own_version
from label_assistant.ml_backend.protocol import load_label_config
from label_assistant.ml_backend.settings import Settings
from label_assistant.selectors.pool import ImageNumbers
from label_assistant.selectors.strategies import RankedItem, parse_strategy, rank

log = logging.getLogger(__name__)

Ranking = list[tuple[int, int, float, str]]

#: Used when a strategy's only part needs a model and there is none yet.
MODEL_FREE_FALLBACK = "sequence"


class RankingError(ValueError):
    """The project can't be ranked (no label config, a model version that can't be loaded)."""


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


def serving_predictor(settings: Settings, project_id: int | str, config: LabelConfig) -> Any:
    """The project's current model version for this label config, or None (no version yet,
    or one trained for other classes: only the model-free strategies then run)."""
    from label_assistant.model.predictor import Predictor
    from label_assistant.model.registry import RegistryError, VersionMismatchError

    registry = settings.workspace.registry(str(project_id))
    if registry.current_id() is None:
        return None
    try:
        return Predictor.from_registry(registry, "current", expected_classes=list(config.labels),
                                       device=settings.device, default_tile=settings.predict_tile)
    except VersionMismatchError as error:
        log.warning("project %s: %s; ranking without it", project_id, error)
        return None
    except (RegistryError, OSError, RuntimeError) as error:
        raise RankingError(f"project {project_id}: can't load the current model: {error}") \
            from None


def rank_tasks(
    settings: Settings,
    unlabeled_tasks: Iterable[Mapping[str, Any]],
    *,
    config: LabelConfig,
    fetcher: ImageFetcher,
    predictor: Any = None,
    labeled_tasks: Iterable[Mapping[str, Any]] = (),
    strategy: str | None = None,
    seed: int = 0,
    project: str = "?",
) -> Ranking:
    """Rank ``unlabeled_tasks`` (Label Studio task dicts) for labeling; see the module doc.

    With ``settings.dask_scheduler`` and a model, the images are scored on that Dask cluster
    (:func:`score_tasks_on_dask`), else here, one at a time; the ranking is the same."""
    from label_assistant.selectors.pool import PoolError, plan, pool_from_numbers
    from label_assistant.selectors.sequences import sequence_ids

    name = effective_strategy(strategy or settings.strategy, predictor is not None)
    try:
        work = plan(name, has_model=predictor is not None)
    except PoolError as error:
        raise RankingError(f"project {project}: {error}") from None
    entries = [(False, dict(t)) for t in unlabeled_tasks] + [(True, dict(t))
                                                             for t in labeled_tasks]
    # A labeled task counts in its sequence; its image is needed only for diversity.
    wanted = [k for k, (is_labeled, _) in enumerate(entries) if not is_labeled or work.embeddings]
    tasks = [entries[k][1] for k in wanted]
    flags = [entries[k][0] for k in wanted]
    if settings.dask_scheduler and predictor is not None:
        scored = score_tasks_on_dask(settings, tasks, flags, config=config, fetcher=fetcher,
                                     predictor=predictor, work=work, project=project)
    else:
        scored = [_score_task(task, is_labeled, config=config, fetcher=fetcher,
                              predictor=predictor, work=work)
                  for task, is_labeled in zip(tasks, flags, strict=True)]
    numbers = dict(zip(wanted, scored, strict=True))

    task_ids: list[int] = []
    data: list[Mapping[str, Any] | None] = []
    kept: list[ImageNumbers] = []
    labeled: list[bool] = []
    failures: list[tuple[int, str]] = []
    for k, (is_labeled, task) in enumerate(entries):
        task_id = int(task["id"])
        result = numbers.get(k, ImageNumbers({}, None))
        if isinstance(result, str):
            log.warning("project %s task %s: not ranked: %s", project, task_id, result)
            if not is_labeled:
                failures.append((task_id, result))
            continue
        task_ids.append(task_id)
        data.append(task.get("data") if isinstance(task.get("data"), Mapping) else None)
        kept.append(result)
        labeled.append(is_labeled)
    sequences = sequence_ids([str(t) for t in task_ids], data=data,
                             field=settings.sequence_field)
    pool = pool_from_numbers([str(t) for t in task_ids], kept, sequences=sequences,
                             labeled=np.array(labeled, bool))
    items = rank(pool, name, seed=seed) if task_ids else []
    rows = ranking_rows(task_ids, items, failures)
    log.info("project %s: ranked %d tasks by %s (%s)%s", project, len(rows), name,
             f"model {predictor.version}" if predictor is not None else "no model",
             f", {len(failures)} failed" if failures else "")
    return rows


def task_image(fetcher: ImageFetcher, config: LabelConfig, task: Mapping[str, Any]) -> np.ndarray:
    """A task's image as read (what :meth:`.fetch.ImageFetcher.task_image` fetches)."""
    return fetcher.task_image(dict(task), config).image


def _score_task(task: Mapping[str, Any], is_labeled: bool, *, config: LabelConfig,
                fetcher: ImageFetcher, predictor: Any, work: Any) -> ImageNumbers | str:
    """One task's numbers, computed here (:func:`~label_assistant.selectors.pool.score_image`),
    or the one-line reason it can't be scored."""
    from label_assistant.images import ImageError, normalize_for_model
    from label_assistant.selectors.pool import score_image

    try:
        image = task_image(fetcher, config, task)
        if predictor is None:
            return score_image(normalize_for_model(image), work, labeled=is_labeled)
        return score_image(predictor.model_input(image), work, predict=predictor.predict,
                           embed=predictor.embed, labeled=is_labeled)
    except (FetchError, ImageError, ValueError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__


def score_tasks_on_dask(settings: Settings, tasks: Sequence[Mapping[str, Any]],
                        labeled: Sequence[bool], *, config: LabelConfig, fetcher: ImageFetcher,
                        predictor: Any, work: Any, project: str = "?"
                        ) -> list[ImageNumbers | str]:
    """The tasks' numbers from the Dask cluster at ``settings.dask_scheduler``
    (:mod:`label_assistant.model.dask_pool`): each worker fetches its tasks' images with
    ``fetcher`` (its token travels with the tasks) and runs ``predictor``'s version, loaded
    once per worker. :class:`RankingError` when the cluster can't be used."""
    from label_assistant.model.dask_pool import DaskError, VersionRef, connect, score_pool

    registry = settings.workspace.registry(str(project))
    ref = VersionRef(str(registry.root.resolve()), predictor.version,
                     expected_classes=tuple(config.labels), device=settings.device,
                     default_tile=settings.predict_tile)
    load = partial(task_image, fetcher, config)
    try:
        client = connect(settings.dask_scheduler)
        try:
            log.info("project %s: scoring %d tasks on Dask at %s", project, len(tasks),
                     settings.dask_scheduler)
            return score_pool(client, list(tasks), load, ref, work, labeled=labeled)
        finally:
            client.close()
    except DaskError as error:
        raise RankingError(f"project {project}: {error}") from None


@dataclass
class ProjectRanking:
    """What :func:`rank_project` did."""

    ranking: Ranking
    strategy: str
    version: str | None
    unlabeled: int
    view_id: int | None = None
    refreshed: int = 0


def rank_project(
    settings: Settings,
    project_id: int,
    client: Any,
    origin: Origin,
    *,
    strategy: str | None = None,
    seed: int = 0,
    budget: int | None = None,
    write: bool = True,
    prelabel_ahead: int = 0,
    on_start: Any = None,
) -> ProjectRanking:
    """Rank the project's unlabeled tasks with its serving version and write the order back
    (``write``), then ask for new pre-labels of the first ``prelabel_ahead`` tasks.

    ``client`` talks to ``origin`` (:func:`~.origin.project_origin`); tasks already labeled
    count in their sequence. ``on_start(strategy, version, n)`` hears what is about to run.
    """
    config = load_label_config(client.get_project(project_id)["label_config"],
                               settings.background_label)
    predictor = serving_predictor(settings, project_id, config)
    name = effective_strategy(strategy or settings.strategy, predictor is not None)
    version = predictor.version if predictor is not None else None
    unlabeled = client.list_unlabeled_tasks(project_id)
    ids = {int(t["id"]) for t in unlabeled}
    labeled = [t for t in client.list_tasks(project_id) if int(t["id"]) not in ids]
    if on_start is not None:
        on_start(name, version, len(unlabeled))
    ranking = rank_tasks(settings, unlabeled, config=config,
                         fetcher=ImageFetcher.for_origin(settings, origin), predictor=predictor,
                         labeled_tasks=labeled, strategy=name, seed=seed,
                         project=str(project_id))
    if budget is not None:
        ranking = ranking[:budget]
    outcome = ProjectRanking(ranking, name, version, len(unlabeled))
    if write:
        # Our predictions' scores follow the order too: "Label All Tasks" serves it.
        outcome.view_id = client.write_ranking(project_id, ranking, own=is_own_version)
        outcome.refreshed = refresh_prelabels(client, project_id, ranking, prelabel_ahead)
    return outcome


def refresh_prelabels(client: Any, project_id: int, ranking: Ranking, ahead: int,
                      batch: int = 10) -> int:
    """New pre-labels from the serving version for the first ``ahead`` tasks of the ranking
    (the ones annotators get next; the rest keep their older pre-labels, so a large project
    costs no more than this). In batches, each one ``/predict`` that Label Studio waits 100 s
    for. A failure is logged, not raised: the ranking is written. Returns the tasks asked
    for."""
    from label_assistant.labelstudio.client import LabelStudioError

    order = [int(task) for task, *_ in sorted(ranking, key=lambda r: r[1])][: max(0, ahead)]
    for start in range(0, len(order), batch):
        chunk = order[start: start + batch]
        try:
            client.retrieve_predictions(project_id, chunk)
        except LabelStudioError as error:
            log.warning("project %s: pre-labels for tasks %s not refreshed: %s", project_id,
                        chunk, error)
            return start
    return len(order)

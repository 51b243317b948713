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
   sequence that has a labeled image comes after those that have none (also when a labeled
   task's image can't be read for the descriptors diversity needs: it then counts through
   ``Pool.labeled_elsewhere``). When the strategy
   has the ``sequence`` part and *no* task of the project has that field, the sequences are
   clusters of look-alike images instead (``settings.sequence_clusters``, ``auto`` by
   default; ``off``: each image its own sequence): k-means of the tasks' image descriptors
   (:func:`~label_assistant.selectors.sequences.cluster_ids`), computed only then, here or on
   the Dask workers alike; reasons then read ``cluster03 (first pick)``;
4. :func:`~label_assistant.selectors.strategies.rank` orders the pool by
   ``settings.strategy`` (default ``sequence``). The ``class_balance``
   score weighs the classes by the labeled pixels of the admitted annotations the serving
   version was trained and validated on (its manifest: :func:`version_labeled_counts`).

The answer is ``[(task_id, rank, score, reason)]``, rank 1 = label first, as
:meth:`~label_assistant.labelstudio.client.LabelStudioClient.write_ranking` takes it. Tasks
whose image can't be fetched or read are ranked last, each with the reason.

Pure parts (:func:`effective_strategy`, :func:`ranking_rows`, :func:`clusters_wanted`,
:func:`task_sequences`) need no server and no model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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


def clusters_wanted(settings: Settings, strategy: str,
                    data: Sequence[Mapping[str, Any] | None]) -> bool:
    """Whether the sequences of a ``strategy`` ranking of tasks with task ``data`` are
    clusters: the strategy has the ``sequence`` part, clustering is not ``off``, and no task
    holds a value in ``settings.sequence_field``."""
    from label_assistant.selectors.sequences import is_own_sequence, sequence_ids

    if not parse_strategy(strategy).sequence or settings.sequence_clusters == "off":
        return False
    ids = sequence_ids([str(i) for i in range(len(data))], data=data,
                       field=settings.sequence_field)
    return all(is_own_sequence(i) for i in ids)


def task_sequences(settings: Settings, names: Sequence[str],
                   data: Sequence[Mapping[str, Any] | None],
                   numbers: Sequence[ImageNumbers] | None = None, seed: int = 0) -> list[str]:
    """Sequence ids of the tasks: from their data field, or, with ``numbers`` (computed
    with descriptors, :func:`clusters_wanted`), clusters of their image descriptors
    (``settings.sequence_clusters``: ``auto`` or a count, at most one per task)."""
    from label_assistant.selectors.pool import stack_vectors
    from label_assistant.selectors.sequences import cluster_ids, sequence_ids

    if numbers is None or not names:
        return sequence_ids(list(names), data=data, field=settings.sequence_field)
    descriptors = stack_vectors([n.descriptor for n in numbers], "image descriptors")
    k = settings.sequence_clusters
    return cluster_ids(descriptors, None if k == "auto" else min(int(k), len(names)),
                       seed=seed)


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


def version_labeled_counts(settings: Settings, project_id: int | str, version: str,
                           n_classes: int) -> np.ndarray | None:
    """Labeled pixels per class 0..``n_classes`` of the admitted annotations ``version`` was
    trained and validated on (the ``labeled_pixels`` of its manifest's images), or None when
    its record holds none for this many classes. Annotations admitted since it was trained
    are not counted: the ranking job runs right after each new version."""
    from label_assistant.model.registry import RegistryError

    try:
        info = settings.workspace.registry(str(project_id)).get(version)
    except (RegistryError, OSError, ValueError) as error:
        log.warning("project %s: no labeled pixel counts of %s: %s", project_id, version, error)
        return None
    images = info.manifest.get("images") if isinstance(info.manifest, Mapping) else None
    counts = [entry.get("labeled_pixels") for entry in images or ()
              if isinstance(entry, Mapping)]
    counts = [c for c in counts if isinstance(c, list) and len(c) == n_classes + 1]
    return np.sum(np.asarray(counts, dtype=np.int64), axis=0) if counts else None


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
    labeled_counts: np.ndarray | Sequence[int] | None = None,
) -> Ranking:
    """Rank ``unlabeled_tasks`` (Label Studio task dicts) for labeling; see the module doc.
    ``labeled_counts``: labeled pixels per class 0..K, for the ``class_balance`` score (None:
    that score is the predicted foreground share).

    With ``settings.dask_scheduler`` and a model, the images are scored on that Dask cluster
    (:func:`score_tasks_on_dask`), else here, one at a time; the ranking is the same."""
    from label_assistant.selectors.pool import PoolError, plan, pool_from_numbers
    from label_assistant.selectors.sequences import SequencePatternError

    name = effective_strategy(strategy or settings.strategy, predictor is not None)
    try:
        work = plan(name, has_model=predictor is not None)
    except PoolError as error:
        raise RankingError(f"project {project}: {error}") from None
    entries = [(False, dict(t)) for t in unlabeled_tasks] + [(True, dict(t))
                                                             for t in labeled_tasks]
    clusters = clusters_wanted(settings, name, [_data(task) for _, task in entries])
    if clusters:
        work = replace(work, descriptors=True)
    # A labeled task counts in its sequence; its image is needed for diversity and clusters.
    wanted = [k for k, (is_labeled, _) in enumerate(entries)
              if not is_labeled or work.embeddings or work.descriptors]
    tasks = [entries[k][1] for k in wanted]
    flags = [entries[k][0] for k in wanted]
    if settings.dask_scheduler and predictor is not None:
        scored = score_tasks_on_dask(settings, tasks, flags, config=config, fetcher=fetcher,
                                     predictor=predictor, work=work, project=project,
                                     labeled_counts=labeled_counts)
    else:
        scored = [_score_task(task, is_labeled, config=config, fetcher=fetcher,
                              predictor=predictor, work=work, labeled_counts=labeled_counts)
                  for task, is_labeled in zip(tasks, flags, strict=True)]
    numbers = dict(zip(wanted, scored, strict=True))

    task_ids: list[int] = []
    data: list[Mapping[str, Any] | None] = []
    kept: list[ImageNumbers] = []
    labeled: list[bool] = []
    failures: list[tuple[int, str]] = []
    unread: dict[str, int] = {}  # sequence -> labeled tasks whose image could not be read
    for k, (is_labeled, task) in enumerate(entries):
        task_id = int(task["id"])
        result = numbers.get(k, ImageNumbers({}, None))
        if isinstance(result, str):
            log.warning("project %s task %s: not ranked: %s", project, task_id, result)
            if not is_labeled:
                failures.append((task_id, result))
            elif not clusters:  # it still counts in the sequence its data field names
                sequence = _data_sequence(settings, task)
                if sequence is not None:
                    unread[sequence] = unread.get(sequence, 0) + 1
            continue
        task_ids.append(task_id)
        data.append(_data(task))
        kept.append(result)
        labeled.append(is_labeled)
    try:
        sequences = task_sequences(settings, [str(t) for t in task_ids], data,
                                   kept if clusters else None, seed=seed)
        pool = pool_from_numbers([str(t) for t in task_ids], kept, sequences=sequences,
                                 labeled=np.array(labeled, bool), labeled_elsewhere=unread)
    except (PoolError, SequencePatternError) as error:
        raise RankingError(f"project {project}: {error}") from None
    items = rank(pool, name, seed=seed) if task_ids else []
    rows = ranking_rows(task_ids, items, failures)
    log.info("project %s: ranked %d tasks by %s (%s)%s%s", project, len(rows), name,
             f"model {predictor.version}" if predictor is not None else "no model",
             f", sequences: {len(set(sequences))} clusters of look-alikes" if clusters else "",
             f", {len(failures)} failed" if failures else "")
    return rows


def _data(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return task.get("data") if isinstance(task.get("data"), Mapping) else None


def _data_sequence(settings: Settings, task: Mapping[str, Any]) -> str | None:
    """The sequence a task's data field names, as :func:`task_sequences` reads it; None
    when the field is empty or missing."""
    from label_assistant.selectors.sequences import is_own_sequence, sequence_ids

    sequence = sequence_ids([str(task["id"])], data=[_data(task)],
                            field=settings.sequence_field)[0]
    return None if is_own_sequence(sequence) else sequence


def task_image(fetcher: ImageFetcher, config: LabelConfig, task: Mapping[str, Any]) -> np.ndarray:
    """A task's image as read (what :meth:`.fetch.ImageFetcher.task_image` fetches)."""
    return fetcher.task_image(dict(task), config).image


def _score_task(task: Mapping[str, Any], is_labeled: bool, *, config: LabelConfig,
                fetcher: ImageFetcher, predictor: Any, work: Any,
                labeled_counts: np.ndarray | Sequence[int] | None = None
                ) -> ImageNumbers | str:
    """One task's numbers, computed here (:func:`~label_assistant.selectors.pool.score_image`),
    or the one-line reason it can't be scored."""
    from label_assistant.images import ImageError, normalize_for_model
    from label_assistant.selectors.pool import score_image

    try:
        image = task_image(fetcher, config, task)
        if predictor is None:
            return score_image(normalize_for_model(image), work, labeled=is_labeled)
        return score_image(predictor.model_input(image), work, predict=predictor.predict,
                           embed=predictor.embed, labeled=is_labeled,
                           labeled_counts=labeled_counts)
    except (FetchError, ImageError, ValueError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__


def score_tasks_on_dask(settings: Settings, tasks: Sequence[Mapping[str, Any]],
                        labeled: Sequence[bool], *, config: LabelConfig, fetcher: ImageFetcher,
                        predictor: Any, work: Any, project: str = "?",
                        labeled_counts: np.ndarray | Sequence[int] | None = None
                        ) -> list[ImageNumbers | str]:
    """The tasks' numbers from the Dask cluster at ``settings.dask_scheduler``
    (:mod:`label_assistant.model.dask_pool`): each worker fetches its tasks' images with
    ``fetcher`` (its token travels with the tasks) and runs ``predictor``'s version, loaded
    once per worker; the same numbers as :func:`_score_task` (descriptors too when ``work``
    asks for them). :class:`RankingError` when the cluster can't be used."""
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
            return score_pool(client, list(tasks), load, ref, work, labeled=labeled,
                              labeled_counts=labeled_counts)
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
    counts = None
    if predictor is not None and parse_strategy(name).score == "class_balance":
        counts = version_labeled_counts(settings, project_id, predictor.version,
                                        config.n_classes)
    ranking = rank_tasks(settings, unlabeled, config=config,
                         fetcher=ImageFetcher.for_origin(settings, origin), predictor=predictor,
                         labeled_tasks=labeled, strategy=name, seed=seed,
                         project=str(project_id), labeled_counts=counts)
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

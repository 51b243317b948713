"""Ranking a project's unlabeled tasks (ml_backend.ranking), the origin resolver and the
default sink (ml_backend.sinks), without a Label Studio server: data: URLs, a 1x1-conv model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_backend_support import CONFIG, blob_image, data_url, png_bytes

from label_assistant.labelstudio import parse_label_config
from label_assistant.ml_backend.fetch import ImageFetcher
from label_assistant.ml_backend.origin import Origin, project_origin
from label_assistant.ml_backend.ranking import (
    RankingError,
    clusters_wanted,
    effective_strategy,
    rank_project,
    rank_tasks,
    ranking_rows,
    serving_predictor,
    version_labeled_counts,
)
from label_assistant.ml_backend.settings import Settings, SettingsError
from label_assistant.ml_backend.sinks import NullSink, ProjectSinks, load_sink, make_sink
from label_assistant.ml_backend.store import Store
from label_assistant.model.predictor import Predictor, Tiling
from label_assistant.selectors.pool import ImageNumbers, pool_from_numbers
from label_assistant.selectors.strategies import RankedItem


class Tiny(torch.nn.Module):
    """A 1x1 convolution as a Background/Cell model: brighter pixels lean to Cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([[[[-4.0]]], [[[4.0]]]])
            self.conv.bias[:] = torch.tensor([2.0, -2.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _task(task_id: int, image: np.ndarray | None, **data) -> dict:
    url = data_url(png_bytes(image)) if image is not None else "data:image/png;base64,AAAA"
    return {"id": task_id, "data": {"image": url, **data}}


@pytest.fixture
def settings(tmp_path):
    settings = Settings(workdir=tmp_path / "work", device="cpu")
    settings.workdir.mkdir()
    Store.for_workdir(settings.workdir).upsert_project("3", label_config=CONFIG)
    return settings


# --- pure parts ----------------------------------------------------------------------------------


def test_effective_strategy_drops_the_score_part_without_a_model():
    assert effective_strategy("sequence+entropy", has_model=True) == "sequence+entropy"
    assert effective_strategy("sequence+entropy", has_model=False) == "sequence"
    assert effective_strategy("entropy+diversity", has_model=False) == "diversity"
    assert effective_strategy("margin", has_model=False) == "sequence"
    assert effective_strategy("random", has_model=False) == "random"


def test_ranking_rows_put_failures_last_with_their_reason():
    items = [RankedItem(1, "b", "s", 0.7, {}, "why b"), RankedItem(0, "a", "s", float("nan"),
                                                                   {}, "why a")]
    rows = ranking_rows([10, 11], items, [(12, "image refused")])
    assert rows == [(11, 1, 0.7, "why b"), (10, 2, 0.0, "why a"),
                    (12, 3, 0.0, "ranked last: image refused")]


def test_pool_from_numbers_fills_missing_scores_and_keeps_sequences():
    # what rank_tasks assembles from each task's numbers (computed here or on Dask workers)
    a = ImageNumbers({"entropy": 0.5}, None)
    b = ImageNumbers({}, None)  # a labeled task: counted in its sequence, not scored
    pool = pool_from_numbers(["1", "2"], [a, b], sequences=["s1", None], labeled=[1])
    assert pool.names == ["1", "2"]
    assert pool.scores["entropy"].tolist() == [0.5, 0.0]
    assert pool.labeled.tolist() == [False, True]
    assert pool.sequences[0] == "s1" and pool.sequences[1].startswith("#")
    assert pool.embeddings is None
    both = pool_from_numbers(["1", "2"], [a._replace(embedding=np.ones(3)),
                                          b._replace(embedding=np.zeros(3))])
    assert both.embeddings.shape == (2, 3)


def test_settings_strategy_and_sequence_field():
    s = Settings.from_env({"LA_STRATEGY": "Entropy+Sequence", "LA_SEQUENCE_FIELD": "movie"})
    assert (s.strategy, s.sequence_field) == ("sequence+entropy", "movie")
    assert Settings.from_env({}).strategy == "sequence"
    assert s.to_env()["LA_SEQUENCE_FIELD"] == "movie"
    with pytest.raises(SettingsError, match="LA_STRATEGY"):
        Settings.from_env({"LA_STRATEGY": "entropy+nope"})


def test_settings_sequence_clusters():
    assert Settings.from_env({}).sequence_clusters == "auto"
    assert Settings.from_env({"LA_SEQUENCE_CLUSTERS": " OFF "}).sequence_clusters == "off"
    four = Settings.from_env({"LA_SEQUENCE_CLUSTERS": "4"})
    assert four.sequence_clusters == 4 and four.to_env()["LA_SEQUENCE_CLUSTERS"] == "4"
    for bad in ("0", "-1", "many", "2.5"):
        with pytest.raises(SettingsError, match=r"^LA_SEQUENCE_CLUSTERS must be auto, off or a "
                                                r"cluster count >= 1, got '.*'$"):
            Settings.from_env({"LA_SEQUENCE_CLUSTERS": bad})


def test_clusters_only_for_a_sequence_strategy_of_a_project_without_the_field(settings):
    bare = [{"image": "x"}, None, {"sequence": " "}]
    assert clusters_wanted(settings, "sequence+entropy", bare)
    assert not clusters_wanted(settings, "entropy", bare)
    assert not clusters_wanted(settings, "sequence", [*bare, {"sequence": "A"}])
    assert not clusters_wanted(Settings(workdir=settings.workdir, sequence_clusters="off"),
                               "sequence", bare)


# --- rank_tasks ----------------------------------------------------------------------------------


def _rank(settings, tasks, **kwargs):
    return rank_tasks(settings, tasks, config=parse_label_config(CONFIG),
                      fetcher=ImageFetcher.for_origin(settings, None), **kwargs)


def test_without_a_model_one_task_per_sequence_first_and_broken_images_last(settings):
    image, _ = blob_image(64, 64)
    tasks = [_task(1, image, sequence="A"), _task(2, image, sequence="A"),
             _task(3, None, sequence="B"), _task(4, image, sequence="C"),
             _task(5, image, sequence="C")]
    rows = _rank(settings, tasks)
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    order = [r[0] for r in rows]
    assert order[-1] == 3 and "ranked last" in rows[-1][3]
    assert {order[0], order[1]} in ({1, 4}, {1, 5}, {2, 4}, {2, 5})  # one of A, one of C
    assert "sequence A" in dict((r[0], r[3]) for r in rows)[1]


def test_labeled_tasks_count_in_their_sequence(settings):
    image, _ = blob_image(64, 64)
    tasks = [_task(1, image, sequence="A"), _task(2, image, sequence="B")]
    # (no diversity part: the labeled task's image, unreadable here, is not needed)
    rows = _rank(settings, tasks, labeled_tasks=[_task(9, None, sequence="A")],
                 strategy="sequence+entropy")
    assert [r[0] for r in rows] == [2, 1]  # B has nothing labeled yet
    assert "1 already labeled" in rows[1][3]


def test_a_labeled_task_with_an_unreadable_image_still_counts_in_its_sequence(settings):
    """With diversity labeled images are read for their descriptors; one that
    can't be read has none, and still counts in the sequence its data field names."""
    image, _ = blob_image(64, 64)
    other, _ = blob_image(64, 64, seed=3)
    tasks = [_task(1, image, sequence="A"), _task(2, other, sequence="B")]
    rows = _rank(settings, tasks, labeled_tasks=[_task(9, None, sequence="A"),
                                                 _task(8, None)],  # no sequence: no count
                 strategy="sequence+diversity")
    assert [r[0] for r in rows] == [2, 1]  # B has nothing labeled yet
    assert "1 already labeled" in rows[1][3]


def _experiment(name: str, i: int) -> np.ndarray:
    """Images of two "experiments": dark with bright squares (A), a bright noisy ramp (B)."""
    if name == "A":
        return blob_image(64, 64, seed=i)[0]
    rng = np.random.default_rng(i)
    ramp = 120 + np.mgrid[0:64, 0:64][1] * 1.5 + rng.normal(0, 20, (64, 64))
    return np.clip(ramp, 0, 255).astype(np.uint8)


def test_without_a_sequence_field_one_task_per_cluster_first(settings):
    # two experiments, interleaved, and no task says which one it belongs to
    tasks = [_task(10 * (e == "B") + i, _experiment(e, i)) for i in range(3) for e in "AB"]
    experiment = {int(t["id"]): "A" if t["id"] < 10 else "B" for t in tasks}
    for seed in range(3):
        rows = _rank(settings, tasks, seed=seed, strategy="sequence+entropy")
        assert {experiment[rows[0][0]], experiment[rows[1][0]]} == {"A", "B"}, seed
        assert rows[0][3].startswith("cluster0") and "(first pick), random within cluster" \
            in rows[0][3]
        assert "(pick 2, round 2)" in rows[2][3]
    clustered = _rank(Settings(workdir=settings.workdir, sequence_clusters=2), tasks)
    assert {experiment[r[0]] for r in clustered[:2]} == {"A", "B"}
    # off: the old behaviour, every task its own sequence
    off = _rank(Settings(workdir=settings.workdir, sequence_clusters="off"), tasks)
    assert all(r[3].startswith("own sequence (first pick)") for r in off)
    # one task with the field: the field rules, no clusters
    named = _rank(settings, [*tasks[:-1], _task(12, _experiment("B", 2), sequence="B")])
    assert not any("cluster" in r[3] for r in named)


def test_a_labeled_task_counts_in_its_cluster(settings):
    tasks = [_task(10 * (e == "B") + i, _experiment(e, i)) for i in range(3) for e in "AB"]
    labeled = [_task(20, _experiment("A", 5))]
    for seed in range(3):
        rows = _rank(settings, tasks, labeled_tasks=labeled, seed=seed)
        assert rows[0][0] >= 10, seed  # experiment B has nothing labeled yet
        assert "already labeled" in next(r[3] for r in rows if r[0] < 10)


def test_class_balance_with_labeled_counts_prefers_the_rarest_labeled_class(settings):
    dark = np.full((64, 64), 20, np.uint8)  # the model leans to Background
    bright = np.full((64, 64), 235, np.uint8)  # ... and to Cell
    dark[0, 0], bright[0, 0] = 255, 0  # not flat: normalisation keeps the levels apart
    tasks = [_task(1, dark), _task(2, bright)]
    few_cells = _rank(settings, tasks, predictor=_tiny_predictor(), strategy="class_balance",
                      labeled_counts=[50_000, 10])
    assert [r[0] for r in few_cells] == [2, 1] and "class_balance" in few_cells[0][3]
    few_background = _rank(settings, tasks, predictor=_tiny_predictor(),
                           strategy="class_balance", labeled_counts=[10, 50_000])
    assert [r[0] for r in few_background] == [1, 2]


def test_version_labeled_counts_sum_the_manifest(settings):
    registry = settings.workspace.registry("3")
    (registry.root / "v0001").mkdir(parents=True)
    images = [{"name": "a", "split": "train", "labeled_pixels": [100, 5]},
              {"name": "b", "split": "val", "labeled_pixels": [50, 2]},
              {"name": "c", "split": "train", "labeled_pixels": [1, 2, 3]}]  # other classes
    (registry.root / "v0001" / "version.json").write_text(json.dumps({
        "id": "v0001", "created_at": 0, "parent": None, "spec": {"arch": "Unet"},
        "class_names": ["Background", "Cell"], "manifest": {"images": images}}))
    (registry.root / "v0001" / "model.safetensors").write_bytes(b"")
    assert version_labeled_counts(settings, 3, "v0001", 1).tolist() == [150, 7]
    assert version_labeled_counts(settings, 3, "v0001", 3) is None
    assert version_labeled_counts(settings, 3, "v0002", 1) is None


def _tiny_predictor() -> Predictor:
    return Predictor(Tiny().eval(), version="v0001", class_names=["Background", "Cell"],
                     tiling=Tiling(64), device="cpu")


def test_with_a_model_the_most_uncertain_task_comes_first(settings):
    sure = np.full((64, 64), 255, np.uint8)  # the model is certain: Cell
    unsure = np.full((64, 64), 128, np.uint8)  # normalised to ~mid grey: about 50/50
    rng = np.random.default_rng(0)
    unsure = np.clip(unsure + rng.normal(0, 2, unsure.shape), 0, 255).astype(np.uint8)
    sure[:32] = 0
    tasks = [_task(1, sure), _task(2, unsure), _task(3, None)]
    rows = _rank(settings, tasks, predictor=_tiny_predictor(), strategy="entropy")
    assert [r[0] for r in rows] == [2, 1, 3]
    assert rows[0][2] > rows[1][2] and "entropy" in rows[0][3]
    assert _rank(settings, []) == []


def test_serving_predictor_is_none_before_a_version_and_an_error_for_a_broken_one(settings):
    config = parse_label_config(CONFIG)
    assert serving_predictor(settings, 3, config) is None
    registry = settings.workspace.registry("3")
    registry.root.mkdir(parents=True)
    (registry.root / "v0001").mkdir()
    (registry.root / "v0001" / "version.json").write_text(
        '{"id": "v0001", "created_at": 0, "parent": null, "spec": {"arch": "Unet"}, '
        '"class_names": ["Background", "Cell"]}')
    (registry.root / "v0001" / "model.safetensors").write_bytes(b"not weights")
    (registry.root / "current").write_text("v0001\n")
    with pytest.raises(RankingError, match="can't load the current model"):
        serving_predictor(settings, 3, config)


def test_rank_project_writes_the_order_and_asks_for_prelabels_ahead(settings):
    client = FakeClient("http://ls:8080", "tok")
    origin = Origin("http://ls:8080", "tok", "setup")
    outcome = rank_project(settings, 3, client, origin, prelabel_ahead=20)
    # the default: one per sequence, no model needed
    assert (outcome.strategy, outcome.version, outcome.unlabeled) == ("sequence", None, 1)
    assert client.calls == [("ranking", 3, [(2, 1, 0.0, outcome.ranking[0][3])]),
                            ("predictions", 3, [2])]
    client.calls.clear()
    dry = rank_project(settings, 3, client, origin, write=False)
    assert dry.view_id is None and client.calls == []


# --- the origin and the sink ---------------------------------------------------------------------


class FakeClient:
    def __init__(self, url, token):
        self.url, self.token, self.calls = url, token, []
        image, _ = blob_image(64, 64)
        self.tasks = [{"id": 1, "data": {"sequence": "A"}}, _task(2, image)]

    def get_project(self, project):
        return {"label_config": CONFIG}

    def write_inspection(self, project, task, report, annotation_id=None):
        self.calls.append(("inspection", project, task, annotation_id))

    def clear_inspection(self, project, task):
        self.calls.append(("clear", project, task))

    def list_unlabeled_tasks(self, project):
        return [self.tasks[1]]

    def list_tasks(self, project):
        return self.tasks

    def write_ranking(self, project, ranking, own=None):
        assert own is not None and own("v0001") and not own("imported-v1")
        self.calls.append(("ranking", project, list(ranking)))
        return 1

    def retrieve_predictions(self, project, task_ids):
        self.calls.append(("predictions", project, list(task_ids)))


def test_a_token_only_goes_with_the_origin_it_came_with(tmp_path):
    bare = Settings(workdir=tmp_path)
    setup = {"hostname": "http://ls:8080/", "token": "tok1"}
    assert project_origin(bare, setup) == Origin("http://ls:8080", "tok1", "setup")
    assert project_origin(bare, {}) is None
    env = Settings(workdir=tmp_path, label_studio_url="http://env:1/", label_studio_api_key="k")
    assert project_origin(env, {}) == Origin("http://env:1", "k", "settings")
    # /setup named another origin without a token: the configured token stays home.
    assert project_origin(env, {"hostname": "http://other:2", "token": None}) == \
        Origin("http://other:2", None, "setup")
    # ... and the same origin as configured gets the configured token.
    assert project_origin(env, {"hostname": "http://ENV:1", "token": None}).token == "k"
    # An explicit address takes a token only from a pair of its own origin.
    assert project_origin(env, setup, url="http://ls:8080").token == "tok1"
    assert project_origin(env, setup, url="http://third:3").token is None
    assert project_origin(env, setup, url="http://third:3", token="t3").token == "t3"
    assert project_origin(env, setup, token="t4") == Origin("http://ls:8080", "t4", "setup")


def test_sink_writes_to_the_project_origin_and_queues_a_ranking(tmp_path):
    store = Store.for_workdir(tmp_path)
    store.upsert_project("1", label_config=CONFIG)
    store.set_origin("1", "http://ls:8080", "tok1")
    store.upsert_project("2", label_config=CONFIG)
    bare = Settings(workdir=tmp_path)
    sink = ProjectSinks(bare, store, client_factory=FakeClient)
    sink.annotation_inspected(1, 5, 7, {"admitted": True})
    sink.annotation_inspected(2, 5, 7, {"admitted": True})  # no origin: nothing, no error
    sink.annotation_deleted(1, 5)
    sink.version_published(1, "v0001")
    sink.version_published(2, "v0001")  # nowhere to write a ranking: no job
    client = sink.client(1)
    assert (client.url, client.token) == ("http://ls:8080", "tok1")
    assert client.calls == [("inspection", 1, 5, 7), ("clear", 1, 5)]
    (job,) = store.jobs()
    assert (job["project"], job["kind"], job["state"], job["reason"]) == \
        ("1", "rank", "queued", "after v0001")
    assert sink.client(1) is client  # one client per Label Studio


def test_load_sink_defaults_to_the_project_sinks(tmp_path):
    store = Store.for_workdir(tmp_path)
    assert isinstance(load_sink(Settings(workdir=tmp_path), store), ProjectSinks)
    assert isinstance(load_sink(Settings(workdir=tmp_path, sink="none"), store), NullSink)
    named = Settings(workdir=tmp_path, sink="label_assistant.ml_backend.sinks:make_sink")
    assert isinstance(load_sink(named, store), ProjectSinks)
    assert isinstance(make_sink(named, store), ProjectSinks)

"""Ranking a project's unlabeled tasks (ml_backend.ranking) and the default sink
(ml_backend.sink), without a Label Studio server: data: URLs, a 1x1-conv model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_backend_support import CONFIG, blob_image, data_url, png_bytes

from label_assistant.ml_backend.ranking import (
    RankingError,
    RankingModel,
    effective_strategy,
    merge_pools,
    rank_tasks,
    ranking_rows,
)
from label_assistant.ml_backend.settings import Settings, SettingsError
from label_assistant.ml_backend.sink import ProjectSinks, make_sink, project_origin
from label_assistant.ml_backend.store import Store
from label_assistant.ml_backend.worker import NullSink, load_sink
from label_assistant.selectors.strategies import Pool, RankedItem


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


def test_merge_pools_fills_missing_scores_and_keeps_sequences():
    a = Pool(names=["1"], scores={"entropy": np.array([0.5])})
    b = Pool(names=["2"], labeled=[0])
    pool = merge_pools([a, b], ["s1", None])
    assert pool.names == ["1", "2"]
    assert pool.scores["entropy"].tolist() == [0.5, 0.0]
    assert pool.labeled.tolist() == [False, True]
    assert pool.sequences[0] == "s1" and pool.sequences[1].startswith("#")
    assert pool.embeddings is None


def test_settings_strategy_and_sequence_field():
    s = Settings.from_env({"LA_STRATEGY": "Entropy+Sequence", "LA_SEQUENCE_FIELD": "movie"})
    assert (s.strategy, s.sequence_field) == ("sequence+entropy", "movie")
    assert Settings.from_env({}).strategy == "sequence+entropy"
    assert s.to_env()["LA_SEQUENCE_FIELD"] == "movie"
    with pytest.raises(SettingsError, match="LA_STRATEGY"):
        Settings.from_env({"LA_STRATEGY": "entropy+nope"})


# --- rank_tasks ----------------------------------------------------------------------------------


def test_without_a_model_one_task_per_sequence_first_and_broken_images_last(settings):
    image, _ = blob_image(64, 64)
    tasks = [_task(1, image, sequence="A"), _task(2, image, sequence="A"),
             _task(3, None, sequence="B"), _task(4, image, sequence="C"),
             _task(5, image, sequence="C")]
    rows = rank_tasks(settings, 3, None, tasks)
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    order = [r[0] for r in rows]
    assert order[-1] == 3 and "ranked last" in rows[-1][3]
    assert {order[0], order[1]} in ({1, 4}, {1, 5}, {2, 4}, {2, 5})  # one of A, one of C
    assert "sequence A" in dict((r[0], r[3]) for r in rows)[1]


def test_labeled_tasks_count_in_their_sequence(settings):
    image, _ = blob_image(64, 64)
    tasks = [_task(1, image, sequence="A"), _task(2, image, sequence="B")]
    rows = rank_tasks(settings, 3, None, tasks, labeled_tasks=[_task(9, None, sequence="A")])
    assert [r[0] for r in rows] == [2, 1]  # B has nothing labeled yet
    assert "1 already labeled" in rows[1][3]


def test_with_a_model_the_most_uncertain_task_comes_first(settings):
    sure = np.full((64, 64), 255, np.uint8)  # the model is certain: Cell
    unsure = np.full((64, 64), 128, np.uint8)  # normalised to ~mid grey: about 50/50
    rng = np.random.default_rng(0)
    unsure = np.clip(unsure + rng.normal(0, 2, unsure.shape), 0, 255).astype(np.uint8)
    sure[:32] = 0
    model = RankingModel("v0001", Tiny().eval(), tile=64, device="cpu", channels=1)
    tasks = [_task(1, sure), _task(2, unsure), _task(3, None)]
    rows = rank_tasks(settings, 3, "v0001", tasks, model=model, strategy="entropy")
    assert [r[0] for r in rows] == [2, 1, 3]
    assert rows[0][2] > rows[1][2] and "entropy" in rows[0][3]


def test_rank_tasks_needs_a_label_config(settings):
    with pytest.raises(RankingError, match="no label config"):
        rank_tasks(settings, 99, None, [])
    assert rank_tasks(settings, 3, None, []) == []


def test_an_unknown_version_is_an_error(settings):
    with pytest.raises(RankingError, match="can't load model v0042"):
        rank_tasks(settings, 3, "v0042", [_task(1, blob_image()[0])])


# --- the sink ------------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, url, token):
        self.url, self.token, self.calls = url, token, []
        self.tasks = [{"id": 1, "data": {"sequence": "A"}}, {"id": 2, "data": {}}]

    def write_inspection(self, project, task, report, annotation_id=None):
        self.calls.append(("inspection", project, task, annotation_id))

    def clear_inspection(self, project, task):
        self.calls.append(("clear", project, task))

    def list_unlabeled_tasks(self, project):
        return [self.tasks[1]]

    def list_tasks(self, project):
        return self.tasks

    def write_ranking(self, project, ranking):
        self.calls.append(("ranking", project, list(ranking)))

    def retrieve_predictions(self, project, task_ids):
        self.calls.append(("predictions", project, list(task_ids)))


def test_sink_uses_the_setup_origin_then_the_settings_one(tmp_path):
    store = Store.for_workdir(tmp_path)
    store.upsert_project("1", label_config=CONFIG, hostname="http://ls:8080", token="tok1")
    store.upsert_project("2", label_config=CONFIG)
    bare = Settings(workdir=tmp_path)
    assert project_origin(bare, store, 1) == ("http://ls:8080", "tok1")
    assert project_origin(bare, store, 2) is None
    env = Settings(workdir=tmp_path, label_studio_url="http://env:1/", label_studio_api_key="k")
    assert project_origin(env, store, 2) == ("http://env:1", "k")

    seen = {}

    def rank(settings, project, version, unlabeled, **kwargs):
        seen.update(project=project, version=version, unlabeled=unlabeled, **kwargs)
        return [(2, 1, 0.5, "only one")]

    sink = ProjectSinks(bare, store, client_factory=FakeClient, rank=rank)
    sink.annotation_inspected(1, 5, 7, {"admitted": True})
    sink.annotation_inspected(2, 5, 7, {"admitted": True})  # no origin: nothing, no error
    sink.annotation_deleted(1, 5)
    sink.version_published(1, "v0001")
    client = sink.client(1)
    assert client.calls == [("inspection", 1, 5, 7), ("clear", 1, 5),
                            ("ranking", 1, [(2, 1, 0.5, "only one")]),
                            ("predictions", 1, [2])]  # LA_PRELABEL_AHEAD
    assert seen["version"] == "v0001" and [t["id"] for t in seen["unlabeled"]] == [2]
    assert [t["id"] for t in seen["labeled_tasks"]] == [1]
    assert (seen["hostname"], seen["token"]) == ("http://ls:8080", "tok1")
    assert sink.client(1) is client  # one client per Label Studio


def test_load_sink_defaults_to_the_project_sinks(tmp_path):
    store = Store.for_workdir(tmp_path)
    assert isinstance(load_sink(Settings(workdir=tmp_path), store), ProjectSinks)
    assert isinstance(load_sink(Settings(workdir=tmp_path, sink="none"), store), NullSink)
    named = Settings(workdir=tmp_path, sink="label_assistant.ml_backend.sink:make_sink")
    assert isinstance(load_sink(named, store), ProjectSinks)
    assert isinstance(make_sink(named, store), ProjectSinks)

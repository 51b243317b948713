"""The labeling order, proved against a real Label Studio 1.23.2: an annotator labeling
through the "Next to label" tab receives tasks in our ranked order, also after a re-rank;
the main "Label All Tasks" button does not follow the tab, but follows the prediction
scores that ``write_ranking`` sets (Uncertainty sampling), for two annotators at once, who
never get the same task (documented in client.py)."""

from __future__ import annotations

import numpy as np
import pytest
from labelstudio_harness import *  # noqa: F403
from labelstudio_harness import BRUSH_CONFIG, signup

from label_assistant.labelstudio import label_map_to_results, parse_label_config
from label_assistant.labelstudio.client import (
    COLUMN_WIDTHS,
    HIDDEN_COLUMNS,
    NEXT_VIEW_TITLE,
    RANK_FIELD,
    REASON_FIELD,
    STATUS_FIELD,
    UNCERTAINTY_SAMPLING,
    WARNINGS_FIELD,
    LabelStudioClient,
    LabelStudioError,
    format_rank,
    next_to_label_view,
    tab_layout,
)
from label_assistant.labelstudio.order import order_score

pytestmark = pytest.mark.labelstudio

# A 1 x 1 PNG: data URLs are accepted as they are, so no files are needed.
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNg"
         "AAAAAgABSK+kcQAAAABJRU5ErkJggg==")
N_TASKS = 12  # ranks 10..12 exist: a numeric field compared as text would put 10 before 2


def _annotate(ls, task_id: int) -> None:
    """Submit an annotation, as the annotator's "Submit" does."""
    result = label_map_to_results(np.ones((1, 1), np.uint8), parse_label_config(BRUSH_CONFIG))
    ls.sdk.annotations.create(id=task_id, result=result)


def _ranking(task_ids: list[int]) -> list[tuple[int, int, float, str]]:
    return [(t, rank, 1.0 / rank, f"test rank {rank}") for rank, t in enumerate(task_ids, 1)]


def _label_through(ls, project: int, view: int, path: str, count: int) -> list[int]:
    """Ask for the next task ``count`` times through the tab and submit each one."""
    received = []
    for _ in range(count):
        if path == "as_displayed":
            task = ls.client.next_task_as_displayed(project, view)
        else:
            task = ls.client.next_task(project, view_id=view)
        assert task is not None, f"no task after {received}"
        received.append(task["id"])
        _annotate(ls, task["id"])
    return received


@pytest.mark.parametrize("path", ["as_displayed", "next_with_view"])
def test_annotator_receives_tasks_in_ranked_order(labelstudio_module, path):
    ls = labelstudio_module
    project = ls.client.create_project(f"order-{path}", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL, "n": i} for i in range(N_TASKS)])
    rng = np.random.default_rng(3)
    first = [ids[i] for i in rng.permutation(N_TASKS)]
    assert first != sorted(first)

    view = ls.client.write_ranking(project, _ranking(first))

    tab = ls.client.get_view(view)["data"]
    assert tab["title"] == NEXT_VIEW_TITLE
    assert (tab["filters"], tab["ordering"]) == (next_to_label_view()["filters"],
                                                  next_to_label_view()["ordering"])
    for key, value in tab_layout().items():  # bookkeeping columns hidden, rank a number
        assert tab[key] == value
    assert tab["columnsDisplayType"][f"tasks:data.{RANK_FIELD}"] == "Number"
    data = {t["id"]: t["data"] for t in ls.client.list_tasks(project)}
    assert data[first[9]][RANK_FIELD] == format_rank(10)
    assert data[first[9]][REASON_FIELD] == "test rank 10"
    assert [t["id"] for t in ls.client.list_tasks(project, view_id=view)] == first

    received = _label_through(ls, project, view, path, 4)
    assert received == first[:4]

    # A new model version re-ranks the rest; one task is left out and so comes last.
    rest = first[4:]
    second = rest[::-2] + rest[-2::-2]
    left_out = second.pop(3)
    assert ls.client.write_ranking(project, _ranking(second)) == view
    assert RANK_FIELD not in ls.client.get_task(project, left_out)["data"]

    received += _label_through(ls, project, view, path, len(rest))
    assert received == first[:4] + second + [left_out]
    assert ls.client.next_task_as_displayed(project, view) is None
    assert ls.client.next_task(project, view_id=view) is None


def test_label_all_tasks_ignores_the_tab(labelstudio_module):
    """Characterises Label Studio: "Label All Tasks" drops the tab's ordering, and the
    default Sequential sampling serves by task id. If this fails, Label Studio changed and
    the advice in client.py ("Label Tasks As Displayed") should be revisited."""
    ls = labelstudio_module
    project = ls.client.create_project("order-label-all", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL} for _ in range(3)])
    view = ls.client.write_ranking(project, _ranking(ids[::-1]))
    # Label All first: the task it locks for this user would be served again by it.
    assert ls.client.next_task_label_all(project, view)["id"] == ids[0]
    assert ls.client.next_task_as_displayed(project, view)["id"] == ids[-1]


def test_tabs_show_thumbnail_and_our_columns_in_one_window_and_keep_a_changed_layout(
        labelstudio_module):
    """What the Data Manager shows in our tabs, from Label Studio's own column list: it
    cannot order a tab's columns (see ``tab_layout``), so the task columns come first and
    the data fields last, the label config's image first among them and ours after the
    project's own; with the bookkeeping hidden and our widths, the ID, the thumbnail, two
    data fields of the project and our four columns fit in 1440 px."""
    import requests

    ls = labelstudio_module
    project = ls.client.create_project("order-columns", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL, "name": f"img{i}", "sequence": "a"}
                                           for i in range(3)])
    view = ls.client.write_ranking(project, _ranking(ids))
    report = {"admitted": False, "findings": [{"severity": "error", "message": "no Background"}]}
    ls.client.write_inspection(project, ids[0], report, annotation_id=1)
    answer = requests.get(f"{ls.url}/api/dm/columns", params={"project": project},
                          headers={"Authorization": f"Token {ls.token}"}, timeout=30)
    columns = answer.json()["columns"]
    known = {f"tasks:{c['parent'] + '.' if c.get('parent') else ''}{c['id']}" for c in columns}
    layout = ls.client.get_view(view)["data"]
    # Every column we hide or size is one of this Label Studio's.
    assert set(HIDDEN_COLUMNS) <= known and set(COLUMN_WIDTHS) <= known
    assert f"tasks:data.{RANK_FIELD}" in known and "tasks:data.image" in known
    # The table's order (datamanager stores/Tabs/tab.js, fieldsAsColumns): top-level
    # columns as listed, the "data" column replaced by its fields; a tab's hiddenColumns
    # replace Label Studio's defaults (stores/Tabs/store.js), so all others are shown.
    shown = []
    for column in columns:
        if column.get("parent"):
            continue
        if column["id"] == "data":
            shown += [f"tasks:data.{child}" for child in column["children"]]
        else:
            shown.append(f"tasks:{column['id']}")
    shown = [c for c in shown if c not in layout["hiddenColumns"]["explore"]]
    assert shown == ["tasks:id", "tasks:data.image", "tasks:data.name", "tasks:data.sequence",
                     f"tasks:data.{RANK_FIELD}", f"tasks:data.{REASON_FIELD}",
                     f"tasks:data.{STATUS_FIELD}", f"tasks:data.{WARNINGS_FIELD}"]
    # Measured in 1.23.2 with headless Chromium: a column takes its width (150 px by
    # default) + 20, the checkbox 40, the task-source button 44.
    widths = layout["columnsWidth"]
    assert 40 + 44 + sum(widths.get(c, 150) + 20 for c in shown) <= 1440
    # Someone shows a hidden column again: a re-rank keeps their layout.
    layout["hiddenColumns"] = {"explore": ["tasks:inner_id"], "labeling": []}
    ls.sdk.views.update(id=str(view), project=project, data=layout)
    assert ls.client.write_ranking(project, _ranking(ids[::-1])) == view
    assert ls.client.get_view(view)["data"]["hiddenColumns"]["explore"] == ["tasks:inner_id"]


def test_ranking_of_unknown_task_is_refused(labelstudio_module):
    ls = labelstudio_module
    project = ls.client.create_project("order-unknown", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL}])
    with pytest.raises(LabelStudioError, match="not in project"):
        ls.client.write_ranking(project, _ranking([ids[0], 10**6]))


# --- "Label All Tasks": the ranked order through Uncertainty sampling --------------------------


def _predict_all(ls, project: int, task_ids: list[int], version: str) -> None:
    """Predictions of ``version`` as the backend writes them before any ranking (model
    confidence, no rank), and the project's model version set to it (as the model card
    step does)."""
    result = label_map_to_results(np.ones((1, 1), np.uint8), parse_label_config(BRUSH_CONFIG))
    ls.client.create_predictions(project, [
        {"task": t, "result": result, "model_version": version,
         "score": order_score(None, 0.1 * (i % 7))} for i, t in enumerate(task_ids)])
    ls.client.update_project(project, model_version=version)


def test_label_all_tasks_serves_the_ranked_order_to_two_annotators(labelstudio_module):
    """Label All Tasks = ``GET /api/projects/{id}/next`` without a tab: after
    ``write_ranking`` each annotator gets the first ranked task that nobody else holds, in
    rank order; a re-rank is followed at once. Measured, not random: open-source 1.23.2
    counts no project annotators (client.py), so Label Studio takes the first unlocked
    task by score."""
    ls = labelstudio_module
    project = ls.client.create_project("order-main-button", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL, "n": i} for i in range(N_TASKS)])
    _predict_all(ls, project, ids, "v0007")
    first = [ids[i] for i in np.random.default_rng(5).permutation(N_TASKS)]
    ls.client.write_ranking(project, _ranking(first))
    assert ls.client.get_project(project)["sampling"] == UNCERTAINTY_SAMPLING
    scores = {p["task"]: p["score"] for p in ls.client.predictions(project)}
    assert [scores[t] for t in first] == [order_score(r) for r in range(1, N_TASKS + 1)]

    alice, bob = signup(ls, "alice@example.org"), signup(ls, "bob@example.org")
    received: list[tuple[str, int]] = []

    def take(name: str, who: LabelStudioClient) -> int:
        task = who.next_task(project)
        assert task is not None, f"no task for {name} after {received}"
        received.append((name, task["id"]))
        return task["id"]

    # Both ask before either submits: different tasks, the first two of the order.
    a, b = take("alice", alice), take("bob", bob)
    assert (a, b) == (first[0], first[1])
    assert alice.next_task(project)["id"] == a  # asking again: her locked task, not a third
    for who, task in ((alice, a), (bob, b)):
        _annotate_as(who, task)
    # Alice labels two in a row while Bob holds his next task: she skips it.
    b = take("bob", bob)
    a = take("alice", alice)
    _annotate_as(alice, a)
    a2 = take("alice", alice)
    assert (b, a, a2) == (first[2], first[3], first[4])
    for who, task in ((bob, b), (alice, a2)):
        _annotate_as(who, task)

    # A re-rank of the rest (as after a new version) is followed from the next request on.
    rest = first[5:]
    second = rest[::-1]
    ls.client.write_ranking(project, _ranking(second))
    while True:
        before = len(received)
        for name, who in (("alice", alice), ("bob", bob)):
            task = who.next_task(project)
            if task is not None:
                received.append((name, task["id"]))
        if len(received) == before:
            break
        for name, task in received[before:]:
            _annotate_as(alice if name == "alice" else bob, task)
    served = [task for _, task in received]
    assert served == first[:5] + second
    assert sorted(served) == sorted(ids)  # each task once: nobody got a task twice


def _annotate_as(who: LabelStudioClient, task_id: int) -> None:
    result = label_map_to_results(np.ones((1, 1), np.uint8), parse_label_config(BRUSH_CONFIG))
    who.sdk.annotations.create(id=task_id, result=result)


def test_write_ranking_leaves_the_sampling_without_current_predictions(labelstudio_module):
    """Without a prediction of the project's model version Uncertainty sampling would pick
    at random: the sampling stays as it is."""
    ls = labelstudio_module
    project = ls.client.create_project("order-no-predictions", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": PIXEL} for _ in range(3)])
    ls.client.write_ranking(project, _ranking(ids[::-1]))
    assert ls.client.get_project(project)["sampling"] == "Sequential sampling"

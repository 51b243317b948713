"""The Label Studio client: pure helpers, the server's environment, and against a real Label
Studio 1.23.2: inspection status on tasks, the "Quarantined" tab, errors, the warnings header."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from labelstudio_harness import *  # noqa: F403
from labelstudio_harness import BRUSH_CONFIG
from PIL import Image

from label_assistant.devtools.labelstudio_server import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    LabelStudioNotFound,
    LabelStudioServer,
    LabelStudioServerError,
    copy_data_dir,
    find_label_studio,
    server_env,
)
from label_assistant.labelstudio import label_map_to_results, parse_label_config
from label_assistant.labelstudio.client import (
    ANNOTATION_FIELD,
    QUARANTINE_VIEW_TITLE,
    QUARANTINED,
    STATUS_FIELD,
    WARNINGS_FIELD,
    WARNINGS_HEADER,
    LabelStudioClient,
    LabelStudioError,
    format_rank,
    inspection_fields,
    quarantine_view,
    status_filter,
)
from label_assistant.ml_backend.ranking import refresh_prelabels
from label_assistant.ml_backend.sinks import LabelStudioSink

QUARANTINE_REPORT = {
    "admitted": False,
    "reasons": ["Cell: 12 pixels, fewer than the minimum object size"],
    "findings": [
        {"code": "tiny_object", "severity": "error", "bbox": [0, 0, 2, 2], "pixels": 12,
         "message": "Cell: 12 pixels, fewer than the minimum object size"},
        {"code": "no_background", "severity": "warning", "bbox": None, "pixels": None,
         "message": "no background drawn"},
    ],
    "omitted": {"tiny_object": 3},
}
ADMIT_REPORT = {"admitted": True, "reasons": [], "findings": [], "omitted": {}}


# --- pure -------------------------------------------------------------------------------------


def test_format_rank_sorts_as_text_like_numbers():
    ranks = [1, 2, 9, 10, 11, 100, 999_999]
    assert sorted(format_rank(r) for r in ranks) == [format_rank(r) for r in ranks]
    with pytest.raises(ValueError):
        format_rank(0)


def test_inspection_fields_from_report():
    fields = inspection_fields(QUARANTINE_REPORT, annotation_id=7)
    assert fields == {
        STATUS_FIELD: QUARANTINED,
        WARNINGS_FIELD: "ERROR: Cell: 12 pixels, fewer than the minimum object size"
        " | Warning: no background drawn | (+3 more)",
        ANNOTATION_FIELD: 7,
    }
    assert inspection_fields(ADMIT_REPORT) == {STATUS_FIELD: "admitted", WARNINGS_FIELD: ""}
    with pytest.raises(ValueError, match="admitted"):
        inspection_fields({"findings": []})


def test_server_env_leaks_nothing_from_the_shell(tmp_path):
    shell = {"PATH": "/bin", "USERNAME": "me", "PASSWORD": "x", "HOST": "example.org",
             "PORT": "1", "USER_TOKEN": "t", "LABEL_STUDIO_URL": "http://x", "DJANGO_DB": "pg",
             "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    env = server_env(tmp_path, port=1234, token="tok123", document_root=tmp_path, base=shell)
    for name in ("USERNAME", "PASSWORD", "HOST", "PORT", "USER_TOKEN", "LABEL_STUDIO_URL",
                 "DJANGO_DB", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"):
        assert name not in env
    assert env["PATH"] == "/bin"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["ML_BLOCK_LOCAL_IP"] == env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_HOST"] == "http://127.0.0.1:1234"
    assert env["LABEL_STUDIO_USER_TOKEN"] == "tok123"
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path.resolve())


def test_missing_label_studio_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_BIN", str(tmp_path / "nope"))
    with pytest.raises(LabelStudioNotFound, match="LABEL_STUDIO_BIN"):
        find_label_studio()


def test_client_needs_url_and_key():
    with pytest.raises(LabelStudioError, match="URL and API key"):
        LabelStudioClient("http://127.0.0.1:1", "")


# --- against a real Label Studio ----------------------------------------------------------------


def _brush_result(value: int = 1) -> list[dict]:
    label_map = np.full((16, 16), 255, np.uint8)
    label_map[4:12, 4:12] = value
    return label_map_to_results(label_map, parse_label_config(BRUSH_CONFIG))


def _local_storage_project(ls, name: str, n: int) -> tuple[int, list[dict]]:
    """A project whose tasks come from local storage (images under the document root)."""
    folder = ls.document_root / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    project = ls.client.create_project(name, BRUSH_CONFIG)
    storage = ls.sdk.import_storage.local.create(project=project, path=str(folder),
                                                use_blob_urls=True, regex_filter=r".*\.png")
    ls.sdk.import_storage.local.sync(id=storage.id)
    tasks = sorted(ls.client.list_tasks(project), key=lambda t: t["id"])
    assert len(tasks) == n
    return project, tasks


@pytest.mark.labelstudio
def test_inspection_status_written_and_read_back(labelstudio_module):
    ls = labelstudio_module
    project, tasks = _local_storage_project(ls, "inspect-local", 2)
    task = tasks[0]
    annotation = ls.sdk.annotations.create(id=task["id"], result=_brush_result())

    fields = ls.client.write_inspection(project, task["id"], QUARANTINE_REPORT, annotation.id)

    after = ls.client.get_task(project, task["id"])
    assert after["data"] == {**task["data"], **fields}  # image field untouched
    assert after["is_labeled"] and after["total_annotations"] == 1
    kept = ls.sdk.annotations.get(id=annotation.id)
    assert kept.result == annotation.result  # the annotation itself is unchanged
    image = requests.get(after["data"]["image"], headers={"Authorization": f"Token {ls.token}"},
                         timeout=10)
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    # The Data Manager shows the fields as columns (that is how the manager sees them).
    columns = requests.get(f"{ls.url}/api/dm/columns", params={"project": project},
                           headers={"Authorization": f"Token {ls.token}"}, timeout=10).json()
    assert {STATUS_FIELD, WARNINGS_FIELD} <= {c["id"] for c in columns["columns"]}
    # A later storage sync neither duplicates the task nor drops our fields.
    storage = ls.sdk.import_storage.local.list(project=project)[0]
    ls.sdk.import_storage.local.sync(id=storage.id)
    assert len(ls.client.list_tasks(project)) == 2
    assert ls.client.get_task(project, task["id"])["data"][STATUS_FIELD] == QUARANTINED

    # The annotator fixes it: admitted, warnings cleared; a deletion clears the status.
    ls.client.write_inspection(project, task["id"], ADMIT_REPORT, annotation.id)
    data = ls.client.get_task(project, task["id"])["data"]
    assert (data[STATUS_FIELD], data[WARNINGS_FIELD]) == ("admitted", "")
    ls.client.clear_inspection(project, task["id"])
    assert ls.client.get_task(project, task["id"])["data"] == task["data"]


@pytest.mark.labelstudio
def test_quarantined_tab_lists_only_quarantined_tasks(labelstudio_module):
    ls = labelstudio_module
    project = ls.client.create_project("quarantine-tab", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": f"/data/local-files/?d=x{i}.png"}
                                           for i in range(5)])
    quarantined = {ids[1], ids[3]}
    for task_id in ids[:4]:
        annotation = ls.sdk.annotations.create(id=task_id, result=_brush_result())
        report = QUARANTINE_REPORT if task_id in quarantined else ADMIT_REPORT
        ls.client.write_inspection(project, task_id, report, annotation.id)

    views = {v["data"]["title"]: v for v in ls.client.list_views(project)}
    assert set(views) == {"Default", QUARANTINE_VIEW_TITLE}
    tab = views[QUARANTINE_VIEW_TITLE]
    assert tab["data"]["filters"] == status_filter(QUARANTINED)  # read back as written
    assert {t["id"] for t in ls.client.list_tasks(project, view_id=tab["id"])} == quarantined

    # Idempotent, and an update keeps the id and takes effect.
    assert ls.client.ensure_view(project, QUARANTINE_VIEW_TITLE, status_filter(QUARANTINED),
                                 ["-tasks:completed_at"]) == tab["id"]
    assert ls.client.ensure_view(project, QUARANTINE_VIEW_TITLE, status_filter("admitted"),
                                 ["tasks:id"]) == tab["id"]
    admitted = {t["id"] for t in ls.client.list_tasks(project, view_id=tab["id"])}
    assert admitted == set(ids[:4]) - quarantined
    assert ls.client.get_view(tab["id"])["data"]["ordering"] == ["tasks:id"]


@pytest.mark.labelstudio
def test_reads_return_the_servers_json(labelstudio_module):
    """The SDK's models come back as exactly the JSON Label Studio sent: no added keys,
    datetimes as the server's text (what the callers had before the client used the SDK)."""
    ls = labelstudio_module
    project = ls.client.create_project("plain-json", BRUSH_CONFIG)
    ids = ls.client.import_tasks(project, [{"image": "/data/local-files/?d=p.png", "n": 1}])
    view = ls.client.ensure_view(project, **quarantine_view())
    ls.sdk.predictions.create(task=ids[0], result=[], score=0.5, model_version="v1")

    def raw(path: str, **params) -> object:
        return requests.get(f"{ls.url}{path}", params=params, timeout=10,
                            headers={"Authorization": f"Token {ls.token}"}).json()

    assert ls.client.get_project(project) == raw(f"/api/projects/{project}")
    tasks = raw("/api/tasks", project=project, fields="task_only", resolve_uri="false")
    assert ls.client.list_tasks(project) == tasks["tasks"]
    assert ls.client.get_view(view) == raw(f"/api/dm/views/{view}")
    assert ls.client.list_views(project) == raw("/api/dm/views", project=project)
    assert ls.client.predictions(project) == raw("/api/predictions", project=project)


@pytest.mark.labelstudio
def test_warnings_header_shows_the_field_without_requiring_it(labelstudio_module):
    ls = labelstudio_module
    project = ls.client.create_project("warnings-header", BRUSH_CONFIG)
    assert ls.client.ensure_warnings_header(project) is True
    assert ls.client.ensure_warnings_header(project) is False
    config = ls.client.get_project(project)["label_config"]
    assert config.count(WARNINGS_HEADER) == 1
    parse_label_config(config)  # still a config our backend serves
    # Tasks without the field still import: the Header is not a required data key.
    assert len(ls.client.import_tasks(project, [{"image": "/data/local-files/?d=a.png"}])) == 1


@pytest.mark.labelstudio
def test_errors_are_one_line(labelstudio):
    """Also the per-test server fixture, and its ``url, token, sdk`` unpacking."""
    ls = labelstudio
    url, token, sdk = ls
    assert sdk.users.whoami().email == DEFAULT_USERNAME and token == DEFAULT_TOKEN
    with pytest.raises(LabelStudioError, match=r"^GET /api/projects/999999 -> 404: ") as error:
        ls.client.get_project(999999)
    assert "\n" not in str(error.value)
    with pytest.raises(LabelStudioError, match=r"POST /api/projects -> 400"):
        ls.client.create_project("bad-config", "<View><Image name='i' value='$i'/>")
    with pytest.raises(LabelStudioError, match="-> 401"):
        LabelStudioClient(url, "wrong-token").get_project(1)
    with pytest.raises(LabelStudioError, match=r"^GET /api/projects/1: ConnectError: "):
        LabelStudioClient("http://127.0.0.1:9", ls.token).get_project(1)


def test_sink_forwards_to_the_client():
    calls = []

    class FakeClient:
        def write_inspection(self, *args, **kwargs):
            calls.append(("inspection", args, kwargs))

        def clear_inspection(self, *args):
            calls.append(("clear", args))

    sink = LabelStudioSink(FakeClient())
    sink.version_published(1, "v1")  # the ranking is a job of its own: nothing here
    sink.annotation_inspected(1, 5, 9, ADMIT_REPORT)
    sink.annotation_deleted(1, 5)
    assert calls == [("inspection", (1, 5, ADMIT_REPORT), {"annotation_id": 9}),
                     ("clear", (1, 5))]


def test_server_failure_names_the_reason(tmp_path):
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\necho 'boom: no database'\nexit 3\n")
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(LabelStudioServerError, match="not initialised"):
        LabelStudioServer(executable=fake).start(data)
    (data / "label_studio.sqlite3").write_bytes(b"")
    server = LabelStudioServer(executable=fake)
    with pytest.raises(LabelStudioServerError, match=r"exited with 3 .*boom: no database"):
        server.start(data, timeout=20)
    assert not server.running


@pytest.mark.labelstudio
def test_server_starts_with_the_token_and_stops(ls_template, tmp_path):
    data = copy_data_dir(ls_template, tmp_path / "data")
    with LabelStudioServer(token=DEFAULT_TOKEN).start(data) as server:
        pid = server._process.pid
        answer = requests.get(f"{server.url}/api/current-user/whoami", timeout=10,
                              headers={"Authorization": f"Token {DEFAULT_TOKEN}"})
        assert answer.status_code == 200 and answer.json()["email"] == DEFAULT_USERNAME
        assert server.startup_seconds < 60
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=2)


@pytest.mark.labelstudio
def test_connect_backend_is_idempotent(labelstudio_module):
    """Against a stub backend that answers /health and /setup as Label Studio expects."""
    class Stub(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._answer({"status": "UP"})

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer({"model_version": "stub-v1"})

        def log_message(self, *args):
            pass

    ls = labelstudio_module
    stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{stub.server_address[1]}"
        project = ls.client.create_project("backend", BRUSH_CONFIG)
        first = ls.client.connect_backend(project, url)
        assert ls.client.connect_backend(project, url + "/") == first
        backends = ls.sdk.ml.list(project=project)
        assert [(b.id, b.url) for b in backends] == [(first, url)]
    finally:
        stub.shutdown()


def test_prelabels_are_refreshed_for_the_head_of_the_ranking_in_batches():
    asked = []

    class FakeClient:
        fail_after = None

        def retrieve_predictions(self, project_id, task_ids):
            if self.fail_after is not None and len(asked) >= self.fail_after:
                raise LabelStudioError("POST /api/dm/actions -> 500: boom")
            asked.append(list(task_ids))

    ranking = [(t, i, 0.5, "r") for i, t in enumerate(range(34, 9, -1), 1)]  # rank 1 = task 34
    client = FakeClient()
    assert refresh_prelabels(client, 1, ranking, 12, batch=5) == 12
    assert asked == [[34, 33, 32, 31, 30], [29, 28, 27, 26, 25], [24, 23]]
    asked.clear()
    assert refresh_prelabels(client, 1, ranking, 0) == 0 and asked == []
    client.fail_after = 1
    assert refresh_prelabels(client, 1, ranking, 12, batch=5) == 5

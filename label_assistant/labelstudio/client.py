"""How our results reach people in Label Studio (1.23.2): inspection status, saved Data
Manager tabs, and the labeling order. A thin layer over ``label_studio_sdk.LabelStudio``.

Everything we write lives in **task data fields** prefixed ``la_`` (a task update; Label
Studio keeps the annotations, predictions, ``is_labeled`` and the image fields, including
tasks synced from local storage, whose re-sync does not overwrite them; proved in
``tests/test_ls_client.py``). Label Studio turns every data key into a Data Manager column,
so the project manager sees, sorts and filters on them without any setup:

================= ==========================================================================
``la_status``     ``admitted`` or ``quarantined`` (the last inspected annotation)
``la_warnings``   the inspection messages as one line of text ("" when clean)
``la_annotation`` the annotation id the status refers to
``la_rank``       labeling order, ``"000001"`` = label first (zero-padded text, :mod:`.order`)
``la_score``      the selector's score for the task
``la_reason``     a short reason for the rank
================= ==========================================================================

Inspection warnings for the annotator
    Label Studio 1.23.2 (open source) has no comments API (``/api/comments`` is Enterprise),
    and writing into the annotator's own annotation would fire ``ANNOTATION_UPDATED`` back at
    the backend. The annotator sees the warnings (a) in the ``la_warnings`` column and the
    "Quarantined" tab of the Data Manager (open-source Label Studio has no annotator role:
    annotators use the Data Manager), and (b) on the labeling screen when the label config
    holds ``<Header value="$la_warnings"/>``: :meth:`LabelStudioClient.ensure_warnings_header`
    adds it (opt-in, since it edits the user's config; the demo uses it). A ``Header`` has
    no ``name``, so Label Studio does not require the field in imported tasks
    (``extract_data_types`` only counts named tags), and the editor renders a missing field
    as "" (``parseValue`` in ``libs/editor/src/utils/data.js``).

The labeling order
    :meth:`LabelStudioClient.write_ranking` writes ``la_rank`` and ensures the "Next to label"
    tab: unlabeled tasks ordered by ``la_rank`` ascending (unranked tasks last). The
    annotator receives tasks in that order when labeling from the tab with **"Label Tasks
    As Displayed"** (the UI then posts the tab's filters and ordering to
    ``/api/dm/actions?id=next_task``, and Label Studio serves the first unsolved task of
    that queryset). Surprises found in Label Studio's code and proved in
    ``tests/test_ls_order.py``:

    - The main **"Label All Tasks"** button ignores the tab: the UI drops the tab's filters
      and ordering (``dm_queue`` is then false in ``projects/functions/next_task.py``), and
      the project's sampling decides. ``Sequential sampling`` serves tasks by id, so
      :meth:`LabelStudioClient.write_order_scores` (called by ``write_ranking``) switches the
      project to ``Uncertainty sampling`` and gives each ranked task's prediction its rank
      as ``score`` (:func:`~.order.order_score`): ``_try_uncertainty_sampling`` serves the
      unsolved task with the lowest score among those holding a prediction of
      ``project.model_version`` (which :meth:`LabelStudioClient.show_model_version` keeps
      equal to the serving version). Predictions written later carry the same score (the
      backend reads ``la_rank`` from the task, :mod:`label_assistant.ml_backend.prelabels`).
      The prediction's ``cluster`` is left empty: Label Studio would otherwise put tasks of
      clusters this annotator has solved fewer of first (``cluster_num_solved``), a reorder
      our ranking (sequences included) already made. With several annotators Label Studio
      would pick at random when ``project.annotators()`` counts more than one; in open-source
      1.23.2 that count is 0 (``get_member_ids`` is empty without a team, and nothing
      creates ``ProjectMember`` rows), so each annotator gets the first task by score that
      nobody else holds a lock on (``_get_first_unlocked``, ``Task.has_lock``): two
      annotators get ranks 1 and 2, then 3 and 4, and never the same task at once
      (measured, ``tests/test_ls_order.py``). Where that count is above 1 (Enterprise
      teams) the pick is random over the whole candidate list: ``_get_random_unlocked``
      takes ``upper_limit`` and ignores it, ordering by ``'?'``.
      Until a ranked task holds one of our predictions the sampling is left as it is
      (Uncertainty sampling without predictions of ``project.model_version`` picks at
      random).
    - ``/api/projects/{id}/next?view=`` sends no filters in its body either: it follows the
      sampling too (it served the tab's order under ``Sequential sampling`` only because
      the tab's queryset was already ordered).
    - The UI's request carries the tab's ordering but not the column's display type, so
      Label Studio orders a data field by ``KeyTextTransform``: on PostgreSQL that is
      ``data->>'la_rank'``, **text** (rank 10 before rank 2; read from the code, not
      measured), while SQLite's ``JSON_EXTRACT`` keeps numbers numeric (measured: integer
      ranks pass the order test on SQLite). Ranks are therefore stored as zero-padded text,
      which sorts the same on both databases.

Predictions written by the backend itself (whole-project pre-labeling,
:mod:`label_assistant.ml_backend.project_prelabels`)
    :meth:`LabelStudioClient.create_predictions` stores a batch in one
    ``POST /api/projects/{id}/import/predictions`` (``projects.import_predictions``; about 20
    times as many tasks per second as one ``POST /api/predictions`` per task, measured in
    ``benchmarks/bench_prelabel_project.py``); :meth:`LabelStudioClient.tasks_with_model_version`
    finds the tasks that already hold a version with one Data Manager query (the task list's
    ``predictions_model_versions`` column is empty with ``fields=task_only``, so the filter
    is used instead); :meth:`LabelStudioClient.task_predictions` and
    :meth:`LabelStudioClient.delete_prediction` remove stale ones.

Writes are read-modify-write of the whole ``data`` dict (Label Studio replaces it on
update); a lock serialises them within one client, and ``resolve_uri=false`` reads keep
storage URLs as stored. There is no bulk task update in open-source Label Studio: one
``PATCH`` per changed task, about 150 ms each on a busy 2-core machine (about 100 ms with
4 in parallel), so unchanged fields are never rewritten. Two processes writing ``la_``
fields of the same task at the same moment can still lose one update: the backend should
write through one client.

Server errors become :class:`LabelStudioError` with one line: method, path, status, body.

Transport
    Every call goes through ``label_studio_sdk`` 2.1.2 (its models are turned back into the
    server's JSON with :func:`_plain`, so the dicts are what Label Studio sent), except two
    that the SDK lacks, sent raw through :meth:`LabelStudioClient._request`:

    - ``GET /api/projects/{id}/next`` (:meth:`LabelStudioClient.next_task`): no SDK method.
    - the multipart ``POST /api/projects/{id}/import`` (:meth:`LabelStudioClient.upload_files`,
      :meth:`LabelStudioClient.upload_images`):
      ``projects.import_tasks`` only sends a JSON list of tasks, and no SDK method uploads a
      file.

    The Data Manager's ``next_task`` action goes through ``actions.with_raw_response.create``:
    ``actions.create`` returns ``None``, dropping the task that the action answers with.
    The SDK retries a call up to twice (1 s, 2 s) after a connection error or a 408, 409, 429
    or 5xx answer; the calls that create something or run an action are sent once
    (``max_retries=0``), so that a retry never makes a second tab or asks the ML backend
    again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from inspect import signature
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.parse_error import ParsingError
from label_studio_sdk.core.request_options import RequestOptions
from label_studio_sdk.projects.client import ProjectsClient

from label_assistant.labelstudio.config import WARNINGS_FIELD, WARNINGS_HEADER
from label_assistant.labelstudio.order import RANK_FIELD, format_rank, order_score

__all__ = [
    "ADMITTED",
    "ANNOTATION_FIELD",
    "NEXT_VIEW_TITLE",
    "QUARANTINED",
    "QUARANTINE_VIEW_TITLE",
    "RANK_FIELD",
    "REASON_FIELD",
    "SCORE_FIELD",
    "STATUS_FIELD",
    "WARNINGS_FIELD",
    "WARNINGS_HEADER",
    "LabelStudioClient",
    "LabelStudioError",
    "format_rank",
    "format_warnings",
    "inspection_fields",
    "next_to_label_view",
    "quarantine_view",
    "ranking_fields",
    "status_filter",
    "tab_layout",
]

STATUS_FIELD = "la_status"
ANNOTATION_FIELD = "la_annotation"
SCORE_FIELD = "la_score"
REASON_FIELD = "la_reason"
INSPECTION_FIELDS = (STATUS_FIELD, WARNINGS_FIELD, ANNOTATION_FIELD)
RANKING_FIELDS = (RANK_FIELD, SCORE_FIELD, REASON_FIELD)

ADMITTED = "admitted"
QUARANTINED = "quarantined"
QUARANTINE_VIEW_TITLE = "Quarantined"
NEXT_VIEW_TITLE = "Next to label"
DEFAULT_VIEW_TITLE = "Default"

WARNINGS_COLUMN_WIDTH = 370  # px, the la_warnings column of our tabs (COLUMN_WIDTHS)
log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
_SAMPLINGS = ("Sequential sampling", "Uniform sampling", UNCERTAINTY_SAMPLING)
_BODY_CHARS = 200
_PAGE_SIZE = 500
_ONCE: RequestOptions = {"max_retries": 0}  # not idempotent: never retried (module doc)
# The fields ``projects.update`` takes as arguments; any other goes in the body as it is.
_PROJECT_FIELDS = frozenset(signature(ProjectsClient.update).parameters) - {
    "self", "id", "members_limit", "request_options"}

Ranking = Sequence[tuple[int, int, float, str]]


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or could not be reached (one-line message)."""


# --- pure helpers: what we write -------------------------------------------------------------


def format_warnings(report: Mapping[str, Any]) -> str:
    """The findings of an ``InspectionReport.to_dict()`` as one line for people."""
    parts = []
    for finding in report.get("findings", []):
        label = "ERROR" if finding.get("severity") == "error" else "Warning"
        parts.append(f"{label}: {finding.get('message', finding.get('code', '?'))}")
    omitted = sum(int(n) for n in (report.get("omitted") or {}).values())
    if omitted:
        parts.append(f"(+{omitted} more)")
    return " | ".join(parts)


def inspection_fields(report: Mapping[str, Any], annotation_id: int | None = None) -> dict:
    """The ``la_`` task data fields for one inspection report."""
    if "admitted" not in report:
        raise ValueError("inspection report has no 'admitted' key")
    fields: dict[str, Any] = {
        STATUS_FIELD: ADMITTED if report["admitted"] else QUARANTINED,
        WARNINGS_FIELD: format_warnings(report),
    }
    if annotation_id is not None:
        fields[ANNOTATION_FIELD] = int(annotation_id)
    return fields


def ranking_fields(rank: int, score: float, reason: str) -> dict[str, Any]:
    """The ``la_`` task data fields for one ranked task."""
    return {RANK_FIELD: format_rank(rank), SCORE_FIELD: round(float(score), 6),
            REASON_FIELD: str(reason)}


def status_filter(status: str) -> dict[str, Any]:
    """Data Manager filter: tasks whose ``la_status`` equals ``status``."""
    return {
        "conjunction": "and",
        "items": [{"filter": f"filter:tasks:data.{STATUS_FIELD}", "operator": "equal",
                   "type": "String", "value": status}],
    }


#: The columns our tabs hide (ids from ``/api/dm/columns`` of 1.23.2): Label Studio's
#: bookkeeping, which in our tabs says nothing (the "Next to label" tab lists unannotated
#: tasks; the prediction score is the order score rank / 10^6), and ``la_score``, whose value
#: ``la_reason`` already gives in words; the ID stays. Label Studio 1.23.2 cannot order a
#: tab's columns (:func:`tab_layout`), so hiding is what brings the image thumbnail and our
#: ``la_`` fields into view together.
HIDDEN_COLUMNS = tuple(f"tasks:{c}" for c in (
    "inner_id", "completed_at", "total_annotations", "cancelled_annotations",
    "total_predictions", "annotators", "annotations_results", "annotations_ids",
    "predictions_score", "predictions_model_versions", "predictions_results", "file_upload",
    "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time",
    "draft_exists", f"data.{SCORE_FIELD}", f"data.{ANNOTATION_FIELD}"))

#: Column widths (px) of our tabs. A Data Manager cell shows 3 lines and clips the rest; at
#: the default 150 px a missing-Background warning (200 characters) was cut after 70, at
#: 370 px it takes 3 lines, and a ranking reason (up to about 95 characters) 3 lines at 185.
#: With these, the ID, the image thumbnail (``image``: the field our label config reads),
#: two more data fields of the project at the default width (the demo's ``name`` and
#: ``sequence``), la_rank, la_reason, la_status and la_warnings fit in a 1440 px window
#: without scrolling (measured in Label Studio 1.23.2 with headless Chromium: a column takes
#: its width + 20 px, the checkbox 40 and the task-source button 44; 1429 px in all).
COLUMN_WIDTHS = {"tasks:id": 50, "tasks:data.image": 90, f"tasks:data.{RANK_FIELD}": 90,
                 f"tasks:data.{REASON_FIELD}": 185, f"tasks:data.{STATUS_FIELD}": 100,
                 f"tasks:data.{WARNINGS_FIELD}": WARNINGS_COLUMN_WIDTH}


def tab_layout() -> dict[str, Any]:
    """The columns of our tabs: bookkeeping hidden (:data:`HIDDEN_COLUMNS`), widths that
    keep the thumbnail and our ``la_`` columns in one 1440 px window
    (:data:`COLUMN_WIDTHS`), rank and score typed as numbers (shown and, where Label Studio
    reads the tab, sorted as numbers; the zero-padded rank sorts right as text too). Set
    once: people may change it afterwards.

    Label Studio 1.23.2 cannot put columns first: a tab stores ``hiddenColumns``,
    ``columnsWidth`` and ``columnsDisplayType`` but no column order
    (``libs/datamanager/src/stores/Tabs/tab.js``, the Tab model and ``serialize``); the
    table shows Label Studio's columns in ``/api/dm/columns`` order with the task's data
    fields last (``data_manager/functions.py::get_all_columns``: the label config's fields
    first, then the others in the order they first appeared, so ours come after the
    project's own), and a header dragged by hand is remembered only in that browser's
    ``localStorage["dm:columnorder"]``, for all tabs
    (``libs/datamanager/src/components/Common/Table/Table.jsx``)."""
    hidden = list(HIDDEN_COLUMNS)
    return {"hiddenColumns": {"explore": hidden, "labeling": hidden},
            "columnsDisplayType": {f"tasks:data.{RANK_FIELD}": "Number",
                                   f"tasks:data.{SCORE_FIELD}": "Number"},
            "columnsWidth": dict(COLUMN_WIDTHS)}


def quarantine_view() -> dict[str, Any]:
    """Title, filters and ordering of the "Quarantined" tab (its columns: :func:`tab_layout`)."""
    return {"title": QUARANTINE_VIEW_TITLE, "filters": status_filter(QUARANTINED),
            "ordering": ["-tasks:completed_at"]}


def next_to_label_view() -> dict[str, Any]:
    """Title, filters and ordering of the "Next to label" tab: unlabeled, by rank (its
    columns: :func:`tab_layout`)."""
    return {
        "title": NEXT_VIEW_TITLE,
        "filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal",
             "type": "Number", "value": 0},
        ]},
        "ordering": [f"tasks:data.{RANK_FIELD}"],
    }


def _merged(data: Mapping[str, Any], fields: Mapping[str, Any], drop: Iterable[str] = ()) -> dict:
    out = {k: v for k, v in data.items() if k not in set(drop)}
    out.update(fields)
    return out


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` header value of HTTP basic auth."""
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _plain(model: Any) -> dict[str, Any]:
    """An SDK model as the JSON Label Studio sent: the SDK's JSON serialisation keeps only
    the keys the server sent (its models are built unvalidated, recording which) and turns
    datetimes back into the same text; measured equal for projects, tasks, views and
    predictions. (``model_dump()`` adds every other field as ``None``, and datetimes.)"""
    return model.model_dump(mode="json")


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "..."


# --- the client ------------------------------------------------------------------------------


class LabelStudioClient:
    """Label Studio at ``url`` with an API token (legacy token, ``Authorization: Token``)."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if not url or not api_key:
            raise LabelStudioError("a Label Studio URL and API key are both required")
        self.url = url.rstrip("/")
        # Both always passed: the SDK otherwise reads LABEL_STUDIO_API_KEY and port 8000.
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        self.timeout = timeout
        # Only for the two calls the SDK lacks (module doc, "Transport").
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers={"Authorization": f"Token {api_key}"})
        self._lock = threading.RLock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LabelStudioClient:
        """From ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``."""
        env = os.environ if environ is None else environ
        url, key = env.get("LABEL_STUDIO_URL"), env.get("LABEL_STUDIO_API_KEY")
        if not url or not key:
            raise LabelStudioError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        return cls(url, key)

    # -- transport --------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: Mapping | None = None,
                 files: Any = None, missing_ok: bool = False) -> Any:
        """One HTTP call for an endpoint the SDK lacks (module doc, "Transport"); JSON back,
        ``None`` for 404 if allowed. ``files`` makes it a multipart upload (httpx's ``files=``)."""
        try:
            response = self._http.request(method, path, params=params, files=files)
        except httpx.HTTPError as error:
            raise LabelStudioError(f"{method} {path}: {type(error).__name__}: {error}") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise LabelStudioError(
                f"{method} {path} -> {response.status_code}: {_short(response.text)}"
            )
        return response.json() if response.content else None

    def _sdk(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """An SDK call whose failures become one-line :class:`LabelStudioError`."""
        try:
            return call(*args, **kwargs)
        except (ApiError, ParsingError) as error:
            raise LabelStudioError(f"{what} -> {error.status_code}: {_short(error.body)}") from None
        except httpx.HTTPError as error:
            raise LabelStudioError(f"{what}: {type(error).__name__}: {error}") from None

    def _sdk_or_none(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any
                     ) -> Any:
        """:meth:`_sdk`, but ``None`` when Label Studio answers 404."""
        def attempt() -> Any:
            try:
                return call(*args, **kwargs)
            except ApiError as error:
                if error.status_code == 404:
                    return None
                raise
        return self._sdk(what, attempt)

    # -- thin helpers -----------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, **settings: Any) -> int:
        """A new project; ``settings`` go to ``projects.create`` (e.g. ``description``)."""
        project = self._sdk("POST /api/projects", self.sdk.projects.create,
                            title=title, label_config=label_config, **settings)
        return int(project.id)

    def find_projects(self, title: str) -> list[dict[str, Any]]:
        """The projects with exactly this title (``id``, ``title``), oldest first."""
        found = self._sdk("GET /api/projects", self.sdk.projects.list, title=title,
                          include="id,title", page_size=_PAGE_SIZE)
        projects = [{"id": int(p.id), "title": p.title} for p in found or []]
        return sorted((p for p in projects if p["title"] == title), key=lambda p: p["id"])

    def get_project(self, project_id: int) -> dict[str, Any]:
        # The raw-response client: ``projects.get`` rebuilds the model from ``model_dump()``,
        # which adds every field the server did not send (as ``None``).
        response = self._sdk(f"GET /api/projects/{project_id}",
                             self.sdk.projects.with_raw_response.get, project_id)
        return _plain(response.data)

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        known = {k: v for k, v in fields.items() if k in _PROJECT_FIELDS}
        other = {k: v for k, v in fields.items() if k not in _PROJECT_FIELDS}
        options: RequestOptions = {"additional_body_parameters": other} if other else {}
        project = self._sdk(f"PATCH /api/projects/{project_id}", self.sdk.projects.update,
                            id=project_id, **known, request_options=options or None)
        return _plain(project)

    def set_sampling(self, project_id: int, sampling: str) -> None:
        """``Sequential sampling`` (default; what the ranking needs), ``Uniform sampling`` or
        ``Uncertainty sampling``."""
        if sampling not in _SAMPLINGS:
            raise LabelStudioError(f"unknown sampling {sampling!r}; one of {_SAMPLINGS}")
        self.update_project(project_id, sampling=sampling)

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import task dicts (``{"image": ...}`` or ``{"data": {...}, ...}``); their ids."""
        result = self._sdk(f"POST /api/projects/{project_id}/import",
                           self.sdk.projects.import_tasks, id=project_id,
                           request=list(tasks), return_task_ids=True)
        return [int(i) for i in (result.task_ids or [])]

    def upload_files(self, project_id: int, paths: Sequence[str | Path]) -> list[int]:
        """Upload image files as new tasks (the "Import" button: Label Studio stores them and
        the tasks point at ``/data/upload/...``); the new task ids, in the order given."""
        # Raw: the SDK's ``projects.import_tasks`` sends only JSON; it has no file upload.
        ids: list[int] = []
        for path in paths:
            path = Path(path)
            with path.open("rb") as handle:
                body = self._request("POST", f"/api/projects/{project_id}/import",
                                     params={"return_task_ids": "true"},
                                     files={path.name: (path.name, handle)})
            new = [int(i) for i in (body or {}).get("task_ids") or []]
            if len(new) != 1:
                raise LabelStudioError(f"uploading {path.name} made {len(new)} tasks, not 1")
            ids.extend(new)
        return ids

    def upload_images(self, project_id: int, images: Sequence[tuple[str, bytes]]
                      ) -> list[str]:
        """Store image files in the project without making tasks (Label Studio's import
        with ``commit_to_project=false``), to be named by tasks imported afterwards
        (:meth:`import_tasks`); their URLs (``/data/upload/<project>/<prefix>-<name>``), in
        the order given. Names must be unique within a call; at most 100 files (Label
        Studio's ``DATA_UPLOAD_MAX_NUMBER_FILES``)."""
        names = [name for name, _ in images]
        if len(set(names)) != len(names):
            raise LabelStudioError("upload_images: file names repeat within one call")
        if not images:
            return []
        # Raw multipart (module doc, "Transport"); one form field per file, as Label Studio
        # reads one file per field.
        body = self._request("POST", f"/api/projects/{project_id}/import",
                             params={"commit_to_project": "false"},
                             files={name: (name, data, "image/png") for name, data in images})
        ids = [int(i) for i in (body or {}).get("file_upload_ids") or []]
        if len(ids) != len(images):
            raise LabelStudioError(f"uploading {len(images)} images stored {len(ids)} files")
        stored = self._sdk(f"GET /api/projects/{project_id}/file-uploads",
                           self.sdk.files.list, id=project_id, ids=json.dumps(ids))
        by_name: dict[str, str] = {}
        for upload in stored or []:
            path = str(_plain(upload).get("file") or "")
            stem = path.rsplit("/", 1)[-1]
            original = stem.split("-", 1)[1] if "-" in stem else stem
            by_name[original] = "/data/" + path.lstrip("/")
        missing = [n for n in names if n not in by_name]
        if missing:
            raise LabelStudioError(f"uploaded images not found back in Label Studio: "
                                   f"{missing[:3]}")
        return [by_name[n] for n in names]

    def ensure_local_storage(self, project_id: int, path: str | Path, *,
                             title: str = "label-assistant import (never synced)") -> int:
        """A local-files import storage of the project at ``path`` (reused when one exists),
        so that Label Studio serves files under it (``/data/local-files/?d=...``); its id.
        Its file filter matches nothing: a "Sync" in the UI adds no task of its own."""
        path = str(Path(path).resolve())
        found = self._sdk("GET /api/storages/localfiles", self.sdk.import_storage.local.list,
                          project=project_id)
        for storage in found or []:
            if str(getattr(storage, "path", "")).rstrip("/") == path.rstrip("/"):
                return int(storage.id)
        created = self._sdk("POST /api/storages/localfiles",
                            self.sdk.import_storage.local.create, project=project_id,
                            path=path, use_blob_urls=True, regex_filter="^$", title=title,
                            request_options=_ONCE)
        return int(created.id)

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """The ML backends connected to the project."""
        backends = self._sdk("GET /api/ml", self.sdk.ml.list, project=project_id)
        return [_plain(b) for b in backends or []]

    def disconnect_backend(self, backend_id: int) -> None:
        self._sdk_or_none(f"DELETE /api/ml/{backend_id}", self.sdk.ml.delete, id=backend_id)

    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int] | None = None
                             ) -> None:
        """The Data Manager action "Retrieve Predictions" on ``task_ids`` (all tasks when
        ``None``): Label Studio asks the connected ML backend (one ``/predict`` call, which
        it waits up to 100 s for) and stores what it answers as new predictions; the labeling
        screen pre-labels a task from its newest one."""
        selected = ({"all": True, "excluded": []} if task_ids is None
                    else {"all": False, "included": [int(t) for t in task_ids]})
        self._sdk("POST /api/dm/actions", self.sdk.actions.create,
                  id="retrieve_tasks_predictions", project=project_id, selected_items=selected,
                  request_options=_ONCE)

    def predictions(self, project_id: int) -> list[dict[str, Any]]:
        """Every prediction stored in the project."""
        found = self._sdk("GET /api/predictions", self.sdk.predictions.list, project=project_id)
        return [_plain(p) for p in found or []]

    def task_predictions(self, task_id: int) -> list[dict[str, Any]]:
        """The predictions of one task (``GET /api/predictions?task=``)."""
        found = self._sdk("GET /api/predictions", self.sdk.predictions.list, task=int(task_id))
        return [_plain(p) for p in found or []]

    def create_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]]
                           ) -> int:
        """Store predictions (each with ``task``, ``result``, ``model_version``, ``score``) in
        one call, ``POST /api/projects/{id}/import/predictions``; how many Label Studio made.
        Sent once: a retry after a lost answer could store them twice."""
        if not predictions:
            return 0
        answer = self._sdk(f"POST /api/projects/{project_id}/import/predictions",
                           self.sdk.projects.import_predictions, project_id,
                           request=[dict(p) for p in predictions], request_options=_ONCE)
        return int(getattr(answer, "created", None) or 0)

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one prediction (gone already: nothing to do)."""
        self._sdk_or_none(f"DELETE /api/predictions/{prediction_id}",
                          self.sdk.predictions.delete, id=int(prediction_id))

    def tasks_with_model_version(self, project_id: int, model_version: str,
                                 task_ids: Sequence[int] | None = None) -> set[int]:
        """Ids of the tasks (of ``task_ids``, else all) that hold a prediction of
        ``model_version``. A Data Manager filter, so one call per page: Label Studio matches
        the version as a substring of a prediction's ``model_version`` (its ``contains``
        operator; the value must be a list, a string is taken letter by letter), so
        ``v0001`` also finds ``v00012``: version ids of different lengths only after 9999
        versions."""
        query: dict[str, Any] = {
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:predictions_model_versions", "operator": "contains",
                 "type": "List", "value": [str(model_version)]}]},
            "ordering": ["tasks:id"]}
        if task_ids is not None:
            if not task_ids:
                return set()
            query["selectedItems"] = {"all": False, "included": [int(t) for t in task_ids]}
        return {int(task["id"]) for task in self.list_tasks(project_id, query=query)}

    def connect_backend(self, project_id: int, url: str, *, title: str = "label-assistant",
                        is_interactive: bool = False,
                        basic_auth: tuple[str, str] | None = None) -> int:
        """Connect an ML backend (idempotent: an existing one with that URL is reused).

        With ``basic_auth`` (user, password) Label Studio sends them with ``/health``,
        ``/setup``, ``/predict`` and interactive calls, but not with the annotation events:
        those go through the project webhook Label Studio creates for the backend
        (``<url>/webhook``), which carries only its own headers (measured on 1.23.2,
        ``tests/test_backend_e2e.py``). So the webhook gets the ``Authorization`` header too
        (:meth:`ensure_webhook_headers`)."""
        found = next((int(b["id"]) for b in self.ml_backends(project_id)
                      if b.get("url", "").rstrip("/") == url.rstrip("/")), None)
        if found is None:
            auth: dict[str, Any] = {}
            if basic_auth is not None:
                auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0],
                        "basic_auth_pass": basic_auth[1]}
            backend = self._sdk("POST /api/ml", self.sdk.ml.create, url=url, project=project_id,
                                title=title, is_interactive=is_interactive, **auth)
            found = int(backend.id)
        if basic_auth is not None:
            self.ensure_webhook_headers(project_id, url.rstrip("/") + "/webhook",
                                        {"Authorization": basic_auth_header(*basic_auth)})
        return found

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's webhooks."""
        found = self._sdk("GET /api/webhooks", self.sdk.webhooks.list, project=str(project_id))
        return [_plain(w) for w in found or []]

    def ensure_webhook_headers(self, project_id: int, url: str,
                               headers: Mapping[str, str]) -> int | None:
        """Give the project's webhook to ``url`` these headers (kept with its others); its
        id, or None when the project has no webhook to that URL."""
        for hook in self.webhooks(project_id):
            if str(hook.get("url", "")).rstrip("/") != url.rstrip("/"):
                continue
            have = dict(hook.get("headers") or {})
            if any(have.get(k) != v for k, v in headers.items()):
                self._sdk(f"PATCH /api/webhooks/{hook['id']}", self.sdk.webhooks.update,
                          id=int(hook["id"]), headers={**have, **headers})
            return int(hook["id"])
        return None

    def list_tasks(self, project_id: int, *, query: Mapping[str, Any] | None = None,
                   view_id: int | None = None) -> list[dict[str, Any]]:
        """All tasks (``fields=task_only``, storage URLs as stored), optionally through a
        Data Manager query (``filters``, ``ordering``, ``selectedItems``) or a view."""
        # Page by page rather than iterating the SDK's pager: the pager stops only at an
        # empty page, and Label Studio answers a page past the end with 404 (one more call).
        query_text = json.dumps(query) if query is not None else None
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            found = self._sdk_or_none(
                "GET /api/tasks", self.sdk.tasks.list, project=project_id, fields="task_only",
                resolve_uri=False, page=page, page_size=_PAGE_SIZE, query=query_text,
                view=view_id)
            batch = (found.items or []) if found is not None else []
            tasks.extend(_plain(task) for task in batch)
            if not batch or len(tasks) >= int(found.response.total or 0):
                return tasks
            page += 1

    def list_unlabeled_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Tasks without any annotation (``total_annotations = 0``), by id."""
        return self.list_tasks(project_id, query={"filters": next_to_label_view()["filters"],
                                                  "ordering": ["tasks:id"]})

    def get_task(self, project_id: int, task_id: int) -> dict[str, Any]:
        """One task of the project, data as stored. The task list is used, not
        ``GET /api/tasks/{id}``, because the latter asks the ML backend for a prediction."""
        query = {"selectedItems": {"all": False, "included": [int(task_id)]}}
        found = self.list_tasks(project_id, query=query)
        if not found:
            raise LabelStudioError(f"task {task_id} not found in project {project_id}")
        return found[0]

    def update_task_data(self, project_id: int, task_id: int, fields: Mapping[str, Any],
                         drop: Iterable[str] = ()) -> dict[str, Any]:
        """Merge ``fields`` into the task's data (and remove ``drop`` keys); the new data.
        Nothing is written when nothing changes."""
        with self._lock:
            data = self.get_task(project_id, task_id)["data"]
            return self._write_data(task_id, data, _merged(data, fields, drop))

    def _write_data(self, task_id: int, old: dict, new: dict) -> dict:
        if new != old:
            self._sdk(f"PATCH /api/tasks/{task_id}", self.sdk.tasks.update, id=str(task_id),
                      data=new)
        return new

    # -- inspection status ------------------------------------------------------------------

    def write_inspection(self, project_id: int, task_id: int, report: Mapping[str, Any],
                         annotation_id: int | None = None) -> dict[str, Any]:
        """Write ``la_status``/``la_warnings``/``la_annotation`` and ensure the
        "Quarantined" tab; returns the fields written."""
        fields = inspection_fields(report, annotation_id)
        drop = () if annotation_id is not None else (ANNOTATION_FIELD,)
        self.update_task_data(project_id, task_id, fields, drop=drop)
        self.ensure_view(project_id, **quarantine_view())
        return fields

    def clear_inspection(self, project_id: int, task_id: int) -> None:
        """Remove the inspection fields (the annotation they described was deleted)."""
        self.update_task_data(project_id, task_id, {}, drop=INSPECTION_FIELDS)

    def ensure_warnings_header(self, project_id: int) -> bool:
        """Add :data:`WARNINGS_HEADER` at the top of the label config so that the annotator
        sees the warnings on the labeling screen; ``True`` when the config changed."""
        config = self.get_project(project_id)["label_config"]
        if f'"${WARNINGS_FIELD}"' in config:
            return False
        start = config.find("<View")
        end = config.find(">", start)
        if start < 0 or end < 0 or config[end - 1] == "/":
            raise LabelStudioError(f"project {project_id}: label config has no <View> to extend")
        new = config[: end + 1] + "\n  " + WARNINGS_HEADER + config[end + 1:]
        self.update_project(project_id, label_config=new)
        return True

    # -- Data Manager tabs ------------------------------------------------------------------

    def list_views(self, project_id: int) -> list[dict[str, Any]]:
        views = self._sdk("GET /api/dm/views", self.sdk.views.list, project=project_id)
        return [_plain(v) for v in views or []]

    def get_view(self, view_id: int) -> dict[str, Any]:
        return _plain(self._sdk(f"GET /api/dm/views/{view_id}", self.sdk.views.get,
                                id=str(view_id)))

    def ensure_view(self, project_id: int, title: str, filters: Mapping[str, Any] | None = None,
                    ordering: Sequence[str] = ()) -> int:
        """The id of the project's tab named ``title``, created or updated to these filters
        and ordering; its columns get :func:`tab_layout` where the tab has none yet (a
        layout people changed is kept). The first tab we create is preceded by an empty
        "Default" tab: the Data Manager only creates its own default tab for a project
        without any. (Label Studio ignores an empty ordering on update: an existing ordering
        cannot be cleared.)"""
        wanted: dict[str, Any] = {"title": title, "ordering": list(ordering)}
        if filters is not None:
            wanted["filters"] = dict(filters)
        layout = tab_layout()
        with self._lock:
            views = self.list_views(project_id)
            if not views and title != DEFAULT_VIEW_TITLE:
                self._sdk("POST /api/dm/views", self.sdk.views.create, project=project_id,
                          data={"title": DEFAULT_VIEW_TITLE}, request_options=_ONCE)
            for view in views:
                data = view.get("data") or {}
                if data.get("title") != title:
                    continue
                wanted.update({k: v for k, v in layout.items() if k not in data})
                if all(data.get(key) == value for key, value in wanted.items()):
                    return int(view["id"])
                self._sdk(f"PATCH /api/dm/views/{view['id']}", self.sdk.views.update,
                          id=str(view["id"]), project=project_id, data={**data, **wanted})
                return int(view["id"])
            created = self._sdk("POST /api/dm/views", self.sdk.views.create, project=project_id,
                                data={**wanted, **layout}, request_options=_ONCE)
            return int(created.id)

    # -- labeling order ---------------------------------------------------------------------

    def write_ranking(self, project_id: int, ranking: Ranking, *, workers: int = 4,
                      own: Callable[[str | None], bool] | None = None) -> int:
        """Write each task's ``la_rank`` (1 = label first), ``la_score`` and ``la_reason``;
        tasks left out of ``ranking`` lose theirs; then the order behind the main button
        (:meth:`write_order_scores`, on the predictions whose ``model_version`` passes
        ``own``; None: all). Returns the "Next to label" tab's id. ``workers`` task updates
        run at once."""
        wanted = {}
        for task_id, rank, score, reason in ranking:
            if int(task_id) in wanted:
                raise LabelStudioError(f"task {task_id} appears twice in the ranking")
            wanted[int(task_id)] = ranking_fields(int(rank), score, reason)
        with self._lock:
            tasks = {int(t["id"]): t["data"] for t in self.list_tasks(project_id)}
            unknown = sorted(set(wanted) - set(tasks))
            if unknown:
                raise LabelStudioError(
                    f"ranking names tasks not in project {project_id}: {unknown[:5]}"
                )
            changes = [
                (task_id, data, _merged(data, wanted.get(task_id, {}), drop=RANKING_FIELDS))
                for task_id, data in tasks.items()
            ]
            with ThreadPoolExecutor(max(1, workers)) as pool:
                # list(): wait for all, and raise the first failure here.
                list(pool.map(lambda change: self._write_data(*change), changes))
            view = self.ensure_view(project_id, **next_to_label_view())
        ranks = {int(task_id): int(rank) for task_id, rank, *_ in ranking}
        self.write_order_scores(project_id, ranks, own=own, workers=workers)
        return view

    def write_order_scores(self, project_id: int, ranks: Mapping[int, int], *,
                           own: Callable[[str | None], bool] | None = None,
                           workers: int = 4) -> int:
        """Make "Label All Tasks" serve ``ranks`` (task id -> rank, 1 = first): each ranked
        task's predictions (those whose ``model_version`` passes ``own``) get the score
        :func:`~.order.order_score` gives its rank (``PATCH /api/predictions/{id}``, only
        where it differs), and the project's sampling becomes ``Uncertainty sampling`` once
        a ranked task holds such a prediction (before that, Label Studio would pick at
        random: the sampling is left as it is). Label Studio follows the scores of the
        predictions stamped with the project's ``model_version``, which
        :meth:`show_model_version` keeps on our serving version. How many predictions were
        rescored. Reads every prediction of the project once (results included: the API has
        no lighter list)."""
        project = self.get_project(project_id)
        rescore: list[tuple[int, float]] = []
        found = False
        for prediction in self.predictions(project_id):
            task = prediction.get("task")
            version = prediction.get("model_version")
            if task is None or int(task) not in ranks or (own is not None and not own(version)):
                continue
            found = True
            score = order_score(ranks[int(task)])
            if prediction.get("score") != score:
                rescore.append((int(prediction["id"]), score))
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda item: self._sdk(
                f"PATCH /api/predictions/{item[0]}", self.sdk.predictions.update, id=item[0],
                score=item[1]), rescore))
        if found and project.get("sampling") != UNCERTAINTY_SAMPLING:
            self.update_project(project_id, sampling=UNCERTAINTY_SAMPLING)
        return len(rescore)

    # -- the model card ---------------------------------------------------------------------

    def show_model_version(self, project_id: int, version: str,
                           own: Callable[[str | None], bool]) -> bool:
        """Make the project's Model card show ``version``: in Label Studio 1.23.2 the card
        shows the ML backend's ``title`` (and its state), nothing else (``backend-card`` in
        ``web/dist/apps/labelstudio/main.js``); the backend's ``model_version`` field (our
        ``/setup`` answer) is shown nowhere. So each of the project's backends whose
        ``model_version`` passes ``own`` (ours) is renamed ``version``, and the project's
        ``model_version`` becomes ``version`` too: Label Studio then treats it as the live
        model (``Project.ml_backend_in_model_version``: a task without a prediction of it
        asks ``/predict``), shows that prediction on the labeling screen, and
        "Uncertainty sampling" orders by the predictions stamped ``version``
        (``next_task.py``: ``predictions__model_version=project.model_version``).
        False when none of the project's backends is ours (yet)."""
        # The list makes Label Studio ask every backend's /setup: `model_version` is fresh.
        ours = [b for b in self.ml_backends(project_id) if own(b.get("model_version"))]
        for backend in ours:
            if backend.get("title") != version:
                # Label Studio validates an update as a new connection (health check and
                # /setup with the fields sent: url and project are needed, and with basic
                # auth its method, user and an empty password, which keeps the stored one).
                auth: dict[str, Any] = {}
                if backend.get("auth_method") == "BASIC_AUTH":
                    auth = {"auth_method": "BASIC_AUTH", "basic_auth_pass": "",
                            "basic_auth_user": backend.get("basic_auth_user")}
                self._sdk(f"PATCH /api/ml/{backend['id']}", self.sdk.ml.update,
                          id=int(backend["id"]), url=backend["url"], project=int(project_id),
                          title=version, **auth)
        if ours and self.get_project(project_id).get("model_version") != version:
            self.update_project(project_id, model_version=version)
        return bool(ours)

    def next_task(self, project_id: int, view_id: int | None = None) -> dict[str, Any] | None:
        """The task Label Studio gives this user next (``/api/projects/{id}/next``, through
        the tab ``view_id`` if given); ``None`` when nothing is left."""
        # Raw: the SDK has no call for /api/projects/{id}/next.
        params = {"view": view_id} if view_id is not None else None
        return self._request("GET", f"/api/projects/{project_id}/next", params=params,
                             missing_ok=True)

    def next_task_as_displayed(self, project_id: int, view_id: int) -> dict[str, Any] | None:
        """What the labeling screen loads after "Label Tasks As Displayed" on tab
        ``view_id``: the UI posts the tab's filters and ordering to the ``next_task``
        action. ``None`` when nothing is left."""
        data = self.get_view(view_id).get("data") or {}
        return self._next_task_action(
            project_id, view_id, ordering=data.get("ordering", []),
            filters=data.get("filters") or {"conjunction": "and", "items": []})

    def next_task_label_all(self, project_id: int, view_id: int | None = None
                            ) -> dict[str, Any] | None:
        """What "Label All Tasks" loads: the UI sends no filters or ordering (see module)."""
        return self._next_task_action(project_id, view_id)

    def _next_task_action(self, project_id: int, view_id: int | None, **body: Any
                          ) -> dict[str, Any] | None:
        """``POST /api/dm/actions?id=next_task`` with ``body`` (``filters``, ``ordering``), as
        the UI sends it, ``tabID`` included, which Label Studio 1.23.2 reads nowhere (the
        SDK's ``view=`` would make it use the tab's stored filters, ordering and selection
        instead of the posted ones). The raw-response client because ``actions.create``
        returns ``None``, not the task."""
        extra: RequestOptions = {"max_retries": 0}
        if view_id is not None:
            extra["additional_query_parameters"] = {"tabID": view_id}
        response = self._sdk_or_none("POST /api/dm/actions",
                                     self.sdk.actions.with_raw_response.create, id="next_task",
                                     project=project_id, request_options=extra, **body)
        return response.response.json() if response is not None else None

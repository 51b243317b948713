"""The backend's default sink: results go back to each project's own Label Studio.

:func:`make_sink` (``LA_SINK`` unset, or ``LA_SINK=label_assistant.ml_backend.sink:make_sink``)
builds a :class:`ProjectSinks`: per Label Studio project, a
:class:`~label_assistant.labelstudio.client.LabelStudioSink` whose client talks to the
``hostname`` and ``access_token`` that project's ``/setup`` sent (kept in the store), else to
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``. A project with neither is told nothing (as
:class:`~label_assistant.ml_backend.worker.NullSink`), with one log line.

After each new version the sink re-ranks the project's unlabeled tasks with
:func:`~label_assistant.ml_backend.ranking.rank_tasks` (tasks already labeled count in their
sequence), writes the ranking (``la_rank`` and the "Next to label" tab) and asks Label
Studio to retrieve new pre-labels for the first ``LA_PRELABEL_AHEAD`` tasks of it. This runs in the
worker; a failure is retried by the worker (the version stays unnotified).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from label_assistant.ml_backend.settings import Settings

log = logging.getLogger(__name__)


def project_origin(settings: Settings, store: Any, project_id: int | str
                   ) -> tuple[str, str] | None:
    """``(url, token)`` of the project's Label Studio: ``/setup``'s, else the settings'."""
    row = store.get_project(str(project_id)) or {}
    url = row.get("hostname") or settings.label_studio_url
    token = row.get("token") or settings.label_studio_api_key
    if not url or not token:
        return None
    return str(url).rstrip("/"), str(token)


class ProjectSinks:
    """The worker's sink: dispatches each call to the project's :class:`LabelStudioSink`."""

    def __init__(self, settings: Settings, store: Any,
                 client_factory: Callable[[str, str], Any] | None = None,
                 rank: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.store = store
        self._client_factory = client_factory
        self._rank = rank
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._unknown_logged: set[str] = set()

    def client(self, project_id: int | str) -> Any | None:
        """The project's :class:`LabelStudioClient` (one per Label Studio and token)."""
        origin = project_origin(self.settings, self.store, project_id)
        if origin is None:
            if str(project_id) not in self._unknown_logged:
                self._unknown_logged.add(str(project_id))
                log.info("project %s: no Label Studio URL/token known (from /setup or "
                         "LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY): results stay here", project_id)
            return None
        with self._lock:
            client = self._clients.get(origin)
            if client is None:
                factory = self._client_factory
                if factory is None:
                    from label_assistant.labelstudio.client import LabelStudioClient

                    factory = LabelStudioClient
                client = self._clients[origin] = factory(*origin)
            return client

    def sink(self, project_id: int | str) -> Any | None:
        from label_assistant.labelstudio.client import LabelStudioSink

        client = self.client(project_id)
        if client is None:
            return None
        origin = project_origin(self.settings, self.store, project_id)

        def rank_tasks(project: int, version: str, unlabeled: list[dict[str, Any]]) -> Any:
            return self.rank_tasks(client, origin, project, version, unlabeled)

        return LabelStudioSink(client, rank_tasks=rank_tasks,
                               prelabel_ahead=self.settings.prelabel_ahead)

    def rank_tasks(self, client: Any, origin: tuple[str, str] | None, project_id: int,
                   version_id: str, unlabeled: list[dict[str, Any]]) -> Any:
        """Rank ``unlabeled``; the project's other tasks count as labeled in their sequence."""
        ids = {int(t["id"]) for t in unlabeled}
        labeled = [t for t in client.list_tasks(project_id) if int(t["id"]) not in ids]
        rank = self._rank
        if rank is None:
            from label_assistant.ml_backend.ranking import rank_tasks as rank
        hostname, token = origin if origin else (None, None)
        return rank(self.settings, project_id, version_id, unlabeled, labeled_tasks=labeled,
                    store=self.store, hostname=hostname, token=token)

    # --- the sink protocol ---------------------------------------------------------------------

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        sink = self.sink(project_id)
        if sink is not None:
            sink.annotation_inspected(project_id, task_id, annotation_id, report)

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        sink = self.sink(project_id)
        if sink is not None:
            sink.annotation_deleted(project_id, task_id)

    def version_published(self, project_id: int, version_id: str) -> None:
        sink = self.sink(project_id)
        if sink is not None:
            sink.version_published(project_id, version_id)


def make_sink(settings: Settings, store: Any) -> ProjectSinks:
    """The ``LA_SINK`` factory: see the module doc."""
    return ProjectSinks(settings, store)

"""Where the worker's news goes: the sink family, in one module.

The worker tells a :class:`Sink` four things: an annotation revision was inspected (the
report), the task's inspected annotation was deleted, a new model version serves, and which
version the project's Model card should show (``show_version``: Otsu's id before any
model, the serving one after each promotion or rollback). A call that raises is tried again
later (the worker keeps the notification pending), so a Label Studio that is down loses
nothing.

- :class:`NullSink`: tells nobody (``LA_SINK=none``);
- :class:`RecordingSink`: remembers every call (tests), or fails like a server that is down;
- :class:`LabelStudioSink`: one Label Studio through a
  :class:`~label_assistant.labelstudio.client.LabelStudioClient`: inspection fields and the
  "Quarantined" tab;
- :class:`ProjectSinks`, the default: each project's own Label Studio (the address and token
  :func:`~label_assistant.ml_backend.origin.project_origin` resolves), one client per origin;
  a new version queues a **ranking job** (:mod:`.jobs`, :func:`.ranking.rank_project`), which
  re-ranks the unlabeled tasks outside the worker's loop, writes the order back and asks
  Label Studio for new pre-labels at the head of it; the Model card is renamed to the
  serving version (:meth:`~label_assistant.labelstudio.client.LabelStudioClient.
  show_model_version`).

:func:`load_sink` picks one from ``LA_SINK`` (``module:callable(settings, store)`` for your
own).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from label_assistant.ml_backend.origin import Origin, project_origin
from label_assistant.ml_backend.settings import Settings

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What the worker tells Label Studio. Project ids are Label Studio's project numbers."""

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        """An annotation revision was inspected; ``report`` as the gate wrote it."""

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        """The task's inspected annotation is gone and the task has no other one."""

    def version_published(self, project_id: int, version_id: str) -> None:
        """A new model version serves the project."""

    def show_version(self, project_id: int, version: str) -> bool:
        """Make the project's Model card show ``version`` (the id its predictions carry);
        False when it can't yet (no Label Studio known, our backend not connected)."""


class NullSink:
    """Tells nobody (no Label Studio configured); logs at debug level."""

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        log.debug("project %s annotation %s: %s", project_id, annotation_id,
                  "admitted" if report.get("admitted") else "quarantined")

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        log.debug("project %s task %s: annotation deleted", project_id, task_id)

    def version_published(self, project_id: int, version_id: str) -> None:
        log.debug("project %s: version %s published", project_id, version_id)

    def show_version(self, project_id: int, version: str) -> bool:
        return True  # nobody to show it to: done


@dataclass
class RecordingSink:
    """Remembers every call (tests); ``fail`` makes calls raise, as a Label Studio that is down."""

    calls: list[tuple[str, tuple]] = field(default_factory=list)
    fail: bool = False

    def _record(self, name: str, *args: Any) -> None:
        if self.fail:
            raise ConnectionError("Label Studio is down")
        self.calls.append((name, args))

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        self._record("annotation_inspected", project_id, task_id, annotation_id, report)

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        self._record("annotation_deleted", project_id, task_id)

    def version_published(self, project_id: int, version_id: str) -> None:
        self._record("version_published", project_id, version_id)

    def show_version(self, project_id: int, version: str) -> bool:
        self._record("show_version", project_id, version)
        return True


class LabelStudioSink:
    """One Label Studio: inspection results become task fields and the "Quarantined" tab."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        self.client.write_inspection(project_id, task_id, report, annotation_id=annotation_id)

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        self.client.clear_inspection(project_id, task_id)

    def version_published(self, project_id: int, version_id: str) -> None:
        """Nothing to write for a version itself: :class:`ProjectSinks` queues the ranking."""

    def show_version(self, project_id: int, version: str) -> bool:
        from label_assistant.ml_backend.project_prelabels import is_own_version

        return bool(self.client.show_model_version(project_id, version, own=is_own_version))


class ProjectSinks:
    """The default sink: every project's own Label Studio (see the module doc)."""

    def __init__(self, settings: Settings, store: Any,
                 client_factory: Callable[[str, str], Any] | None = None) -> None:
        self.settings = settings
        self.store = store
        self._client_factory = client_factory
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._unknown_logged: set[str] = set()

    def origin(self, project_id: int | str) -> Origin | None:
        """The project's Label Studio with its token, or None (one log line)."""
        origin = project_origin(self.settings, self.store.get_project(str(project_id)))
        if origin is None or not origin.token:
            if str(project_id) not in self._unknown_logged:
                self._unknown_logged.add(str(project_id))
                log.info("project %s: no Label Studio address with its token known (from "
                         "/setup or LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY): results stay here",
                         project_id)
            return None
        return origin

    def client(self, project_id: int | str) -> Any | None:
        """The project's :class:`LabelStudioClient` (one per Label Studio and token)."""
        origin = self.origin(project_id)
        if origin is None:
            return None
        key = (origin.url, str(origin.token))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                factory = self._client_factory
                if factory is None:
                    from label_assistant.labelstudio.client import LabelStudioClient

                    factory = LabelStudioClient
                client = self._clients[key] = factory(*key)
            return client

    def annotation_inspected(self, project_id: int, task_id: int, annotation_id: int,
                             report: Mapping[str, Any]) -> None:
        client = self.client(project_id)
        if client is not None:
            LabelStudioSink(client).annotation_inspected(project_id, task_id, annotation_id,
                                                         report)

    def annotation_deleted(self, project_id: int, task_id: int) -> None:
        client = self.client(project_id)
        if client is not None:
            LabelStudioSink(client).annotation_deleted(project_id, task_id)

    def show_version(self, project_id: int, version: str) -> bool:
        client = self.client(project_id)
        return client is not None and LabelStudioSink(client).show_version(project_id, version)

    def version_published(self, project_id: int, version_id: str) -> None:
        """Queue a ranking job for the project (when its Label Studio is known)."""
        if self.origin(project_id) is None:
            return
        outcome, job = self.store.request_job(str(project_id), "rank", f"after {version_id}")
        log.info("project %s: ranking after %s -> job %d %s", project_id, version_id, job,
                 outcome)


def authorize_webhook(settings: Settings, store: Any, project_id: int | str, backend_url: str,
                      authorization: str, client_factory: Callable[..., Any] | None = None
                      ) -> int | None:
    """Give the project's webhook to this backend (``<backend_url>/webhook``) the
    ``Authorization`` header Label Studio sends with ``/setup``: Label Studio 1.23.2 sends the
    basic-auth credentials of "Connect Model" with ``/setup``, ``/predict`` and interactive
    calls, but not with the annotation events, which go through that webhook (measured,
    ``tests/test_backend_e2e.py``). Runs after an authenticated ``/setup``, off the request
    path; the webhook's id, or None (no Label Studio known, or no such webhook)."""
    origin = project_origin(settings, store.get_project(str(project_id)))
    if origin is None or not origin.token:
        return None
    if client_factory is None:
        from label_assistant.labelstudio.client import LabelStudioClient

        client_factory = LabelStudioClient
    client = client_factory(origin.url, origin.token)
    hook = client.ensure_webhook_headers(int(project_id), backend_url.rstrip("/") + "/webhook",
                                         {"Authorization": authorization})
    if hook is None:
        log.warning("project %s: no webhook to %s/webhook in Label Studio: annotation events "
                    "will not reach this backend", project_id, backend_url.rstrip("/"))
    return hook


def load_sink(settings: Settings, store: Any) -> Sink:
    """The sink named by ``settings.sink`` (``module:callable(settings, store)``); unset: each
    project's Label Studio (:class:`ProjectSinks`); ``none``: :class:`NullSink`."""
    if settings.sink and settings.sink.strip().lower() in ("none", "null"):
        return NullSink()
    if not settings.sink:
        return ProjectSinks(settings, store)
    module_name, _, name = settings.sink.partition(":")
    factory = getattr(importlib.import_module(module_name), name or "make_sink")
    return factory(settings, store)


def make_sink(settings: Settings, store: Any) -> ProjectSinks:
    """The ``LA_SINK`` factory of the default sink (``label_assistant.ml_backend.sinks``)."""
    return ProjectSinks(settings, store)

"""The Flask application: Label Studio's ML backend protocol, parsed, called and formatted.

Routes (see ``docs/label-studio.md`` for what Label Studio 1.23.2 sends and expects):

- ``GET /health`` -> ``{"status": "UP", ...}``
- ``POST /setup`` -> ``{"model_version": ...}``: registers the project (label config, host,
  token); no model loading on the request path (Label Studio gives it 3 s); the project's
  model is loaded by a background thread.
- ``POST /predict`` -> ``{"results": [...]}``: one per task, in order (:mod:`.prelabels`).
- ``POST /webhook``: annotation events and ``START_TRAINING`` are stored durably, then
  answered (Label Studio waits at most 1 s); other actions are acknowledged and ignored.
- ``POST /train``: the older training call, handled as ``START_TRAINING``.
- ``GET /metrics``: Prometheus text (:mod:`.metrics`).
- ``GET /versions`` -> ``{"versions": [...]}``: Otsu's version name and every published
  model version (Label Studio asks for it when its ML settings list versions).

Bad requests get a 4xx with ``{"error": "<one line>"}``; no route answers a 500 for bad input.
With credentials configured, every route but ``/health`` asks for them (:mod:`.auth`).

Production: ``gunicorn 'label_assistant.ml_backend.app:create_app()'`` (``label-assistant
serve`` does this and starts the worker process); settings come from the environment.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from label_assistant import __version__
from label_assistant.labelstudio.config import LabelConfig, LabelConfigError
from label_assistant.ml_backend import auth, metrics
from label_assistant.ml_backend.fetch import ImageFetcher
from label_assistant.ml_backend.jobs import JobStarter
from label_assistant.ml_backend.origin import project_origin
from label_assistant.ml_backend.prelabels import Prelabels
from label_assistant.ml_backend.protocol import load_label_config, project_key
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import Sink
from label_assistant.ml_backend.store import Store
from label_assistant.ml_backend.worker import HANDLED_ACTIONS, Worker

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request this backend can't serve; answered with ``status`` and a one-line error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _body() -> dict[str, Any]:
    """The request's JSON object, or :class:`BadRequest`."""
    data = request.get_json(silent=True, force=True)
    if data is None:
        raw = request.get_data(cache=True)
        raise BadRequest("the request body is empty" if not raw else
                         "the request body is not valid JSON")
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _config(xml: Any, settings: Settings) -> LabelConfig:
    if not isinstance(xml, str) or not xml.strip():
        raise BadRequest("the label config is missing or empty")
    try:
        return load_label_config(xml, settings.background_label)
    except LabelConfigError as error:
        raise BadRequest(f"label config not usable: {error}", 422) from None


def _project(value: Any, what: str = "project") -> str:
    try:
        return project_key(value)
    except ValueError as error:
        raise BadRequest(f"{what}: {error}") from None


def create_app(settings: Settings | None = None, *, start_worker: bool = False,
               sink: Sink | None = None, job_starter: JobStarter | None = None) -> Flask:
    """The backend application; ``start_worker`` runs the background worker in a thread."""
    settings = settings or Settings.from_env()
    auth.check_settings(settings)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    store = Store.for_workdir(settings.workdir)
    predictor = Prelabels(settings.workspace, device=settings.device,
                          default_tile=settings.predict_tile,
                          include_background=settings.predict_background)
    requests_seen = metrics.RequestMetrics()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["label_assistant"] = ext = {
        "settings": settings, "store": store, "predictor": predictor, "worker": None,
    }
    if start_worker:
        worker = Worker(settings, store=store, sink=sink, job_starter=job_starter)
        thread, stop = worker.start_thread()
        ext.update(worker=worker, worker_thread=thread, worker_stop=stop)
    warmed: set[tuple[str, str]] = set()
    warm_lock = threading.Lock()

    # --- plumbing ------------------------------------------------------------------------------

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.before_request
    def _authenticate() -> tuple[Response, int] | None:
        challenge = auth.refusal(settings, request.path, request.headers.get("Authorization"))
        if challenge is None:
            return None
        response = jsonify(error="authentication required: this backend is configured with "
                                 "credentials (LA_BASIC_AUTH_USER / LA_METRICS_TOKEN)")
        response.headers["WWW-Authenticate"] = challenge
        return response, 401

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        requests_seen.observe(route, request.method, response.status_code,
                              time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(BadRequest)
    def _bad_request(error: BadRequest) -> tuple[Response, int]:
        log.info("%s %s: %d %s", request.method, request.path, error.status, error)
        return jsonify(error=str(error)), error.status

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error=f"{error.code} {error.name}: {error.description}"), error.code or 500

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error=f"internal error: {type(error).__name__}"), 500

    # --- routes --------------------------------------------------------------------------------

    @app.get("/health")
    @app.get("/")
    def health() -> Response:
        return jsonify(status="UP", model_class="label-assistant", version=__version__)

    @app.post("/setup")
    def setup() -> Response:
        body = _body()
        if "project" not in body:
            raise BadRequest("missing field 'project' (Label Studio sends '<id>.<timestamp>')")
        project = _project(body["project"])
        config = _config(body.get("schema") or body.get("label_config"), settings)
        hostname = body.get("hostname") if isinstance(body.get("hostname"), str) else None
        token = body.get("access_token") if isinstance(body.get("access_token"), str) else None
        store.upsert_project(project, label_config=config.xml)
        if hostname:  # the origin and its token are stored together, or not at all
            store.set_origin(project, hostname.strip().rstrip("/"), token or None)
        with warm_lock:
            key = (project, config.config_hash)
            if key not in warmed:  # load the model off the request path, once per process
                warmed.add(key)
                threading.Thread(target=predictor.warm_up, args=(project, config),
                                 name=f"warm-up-{project}", daemon=True).start()
        return jsonify(model_version=predictor.version_hint(project, config))

    @app.post("/predict")
    def predict() -> Response:
        body = _body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("missing field 'tasks' (a list of Label Studio tasks)")
        if not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("every task must be a JSON object")
        project = _project(body["project"]) if body.get("project") is not None else None
        row = store.get_project(project) if project else None
        xml = body.get("label_config") or (row or {}).get("label_config")
        if not xml:
            raise BadRequest(f"unknown project {project or '(none given)'}: send its "
                             "label_config or connect it through /setup first", 404)
        config = _config(xml, settings)
        if config.brush_control is None:
            raise BadRequest("label config not usable: pre-labels are brush masks and it has "
                             "no <BrushLabels> control", 422)
        fetcher = ImageFetcher.for_origin(settings, project_origin(settings, row))
        errors: list[dict[str, Any]] = []
        results = predictor.predict(tasks, config, fetcher, project, errors)
        version = results[0]["model_version"] if results else \
            predictor.version_hint(project, config)
        if errors:  # Label Studio reads only "results"; this is for people and logs
            return jsonify(results=results, model_version=version, errors=errors)
        return jsonify(results=results, model_version=version)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int] | Response:
        body = _body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("missing field 'action'")
        if action not in HANDLED_ACTIONS:
            return jsonify(status="ignored", action=action)
        project = _project(body.get("project"), "field 'project'")
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            annotation = body.get("annotation")
            if not isinstance(annotation, dict) or annotation.get("id") is None:
                raise BadRequest(f"{action}: missing field 'annotation' with an 'id'")
            if not isinstance(annotation.get("result", []), list):
                raise BadRequest(f"{action}: 'annotation.result' must be a list")
            if not isinstance(body.get("task"), dict) or "data" not in body["task"]:
                raise BadRequest(f"{action}: missing field 'task' with its 'data'")
        elif action == "ANNOTATIONS_DELETED":
            items = body.get("annotations")
            if not isinstance(items, list) or not all(
                    isinstance(a, dict) and a.get("id") is not None for a in items):
                raise BadRequest("ANNOTATIONS_DELETED: missing field 'annotations' "
                                 "(a list of {id})")
        # The raw body is stored as sent: committed (fsynced) before the answer.
        event_id = store.record_event(project, action, request.get_data(cache=True))
        if ext["worker"] is not None:
            ext["worker"].wake.set()
        return jsonify(status="accepted", event=event_id), 200

    @app.post("/train")
    def train() -> tuple[Response, int]:
        body = _body()
        if body.get("project") is None:
            raise BadRequest("missing field 'project'")
        project = _project(body["project"])
        if isinstance(body.get("label_config"), str) and body["label_config"].strip():
            config = _config(body["label_config"], settings)
            store.upsert_project(project, label_config=config.xml)
        event_id = store.record_event(project, "START_TRAINING",
                                      '{"action": "START_TRAINING", "source": "/train"}')
        if ext["worker"] is not None:
            ext["worker"].wake.set()
        return jsonify(status="accepted", event=event_id), 200

    @app.get("/versions")
    def versions() -> Response:
        workspace = settings.workspace
        found = sorted({v.id for p in workspace.project_ids_with_models()
                        for v in workspace.registry(p).list()})
        return jsonify(versions=[predictor.otsu_version, *found])

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(requests_seen, store, settings.workdir),
                        content_type=metrics.CONTENT_TYPE)

    return app

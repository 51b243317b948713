"""The Flask application: Label Studio's ML backend protocol, parsed, called and formatted.

Routes (see ``docs/label-studio.md`` for what Label Studio 1.23.2 sends and expects):

- ``GET /health`` -> ``{"status": "UP", ...}``
- ``POST /setup`` -> ``{"model_version": ...}``: registers the project (label config, host,
  token); no model loading on the request path (Label Studio gives it 3 s); the project's
  model is loaded by a background thread.
- ``POST /predict`` -> ``{"results": [...]}``: one per task, in order (:mod:`.prelabels`);
  with ``params.context`` (Label Studio's smart tools), one task's interactive answer: one
  object's brush mask (:mod:`.interactive`).
- ``POST /webhook``: annotation events and ``START_TRAINING`` are stored durably, then
  answered (Label Studio waits at most 1 s); other actions are acknowledged and ignored.
- ``POST /train``: the older training call, handled as ``START_TRAINING``.
- ``GET /metrics``: Prometheus text (:mod:`.metrics`).
- ``GET /versions`` -> ``{"versions": [...]}``: Otsu's version name and every published
  model version (Label Studio asks for it when its ML settings list versions).

Bad requests get a 4xx with ``{"error": "<one line>"}``; no route answers a 500 for bad input.
What is checked at the door (so that an event answered 200 can always be processed):

- the body: at most ``LA_MAX_WEBHOOK_BYTES`` on ``/webhook`` and ``/train`` (they are
  stored), ``LA_MAX_REQUEST_BYTES`` on ``/predict`` and ``/setup`` (413 past it, from
  ``Content-Length`` or while reading a chunked body); UTF-8, with an optional byte order
  mark (other encodings: 400); a JSON object (no ``NaN``/``Infinity``), nested at most
  :data:`MAX_JSON_DEPTH` deep, whose strings are all valid Unicode (a ``\\ud800`` escape
  alone is not);
- ids: a project is a positive integer of at most 12 digits, annotation and task ids are
  JSON integers in 0..2**63-1 (:mod:`.protocol`);
- label configs parse (:func:`~.protocol.load_label_config`, 422 if not) before anything is
  stored; a webhook's ``project.label_config`` too, and an annotation event needs a config
  (its own or the project's);
- ``/setup``'s ``hostname`` is an ``http(s)`` URL with a host and ``access_token`` printable
  ASCII.

With credentials configured, every route but ``/health`` asks for them (:mod:`.auth`).

Production: ``gunicorn 'label_assistant.ml_backend.app:create_app()'`` (``label-assistant
serve`` does this and starts the worker process); settings come from the environment.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from label_assistant import __version__
from label_assistant.labelstudio.config import LabelConfig, LabelConfigError
from label_assistant.ml_backend import auth, metrics
from label_assistant.ml_backend.fetch import ImageFetcher
from label_assistant.ml_backend.interactive import ContextError, Interactive
from label_assistant.ml_backend.jobs import JobStarter
from label_assistant.ml_backend.origin import project_origin
from label_assistant.ml_backend.prelabels import Prelabels
from label_assistant.ml_backend.protocol import (
    load_label_config,
    object_id,
    project_key,
    setup_hostname,
    setup_token,
)
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import Sink, authorize_webhook
from label_assistant.ml_backend.store import Store
from label_assistant.ml_backend.worker import HANDLED_ACTIONS, Worker

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request this backend can't serve; answered with ``status`` and a one-line error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


#: How deeply a request's JSON may nest (Label Studio's payloads: under 10 levels).
MAX_JSON_DEPTH = 100
#: A JSON escape of a UTF-16 surrogate: the only way a JSON text can hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]")


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _raw_body(limit: int, variable: str) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it: ``Content-Length`` is checked
    before reading, a chunked body while reading)."""
    too_large = BadRequest(f"the request body is larger than {limit} bytes ({variable})", 413)
    # One byte more than the limit: werkzeug stops a stream without a length (chunked,
    # de-chunked by gunicorn) at its maximum silently, so a body cut there would look whole.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    except HTTPException:
        raise
    except Exception as error:  # a broken chunked encoding, a client gone: not our fault
        raise BadRequest(f"the request body can't be read ({type(error).__name__}: "
                         f"{_one_line(error)})") from None
    if len(raw) > limit:
        raise too_large
    return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_tree(data: Any, raw: bytes, text: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` and strings that are not valid
    Unicode (lone surrogates); the tree is walked (iteratively) only when the text says that
    it may have either."""
    check_strings = _SURROGATE_ESCAPE.search(text) is not None
    if not check_strings and raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        items = [*node, *node.values()] if isinstance(node, dict) else node
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
            elif check_strings and isinstance(item, str) and not _encodes(item):
                raise BadRequest("the request body has a string that is not valid Unicode "
                                 "(a lone surrogate such as \\ud800)")


def _encodes(text: str) -> bool:
    """Whether ``text`` is valid Unicode (encodes as UTF-8: no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _body(limit: int, variable: str = "LA_MAX_REQUEST_BYTES") -> dict[str, Any]:
    """The request's JSON object, or :class:`BadRequest`. ``g.body_text`` keeps its text
    (UTF-8 decoded, without a byte order mark): what a webhook stores."""
    raw = _raw_body(limit, variable)
    if not raw:
        raise BadRequest("the request body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 (JSON is sent as UTF-8; UTF-16, UTF-32 "
                         "and other encodings are refused)") from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise BadRequest("the request body is not UTF-8 JSON (it has NUL bytes: UTF-16 or "
                         "UTF-32 are refused)")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise BadRequest(f"the request body is not valid JSON ({_one_line(error)})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(data).__name__}")
    _check_tree(data, raw, text)
    g.body_text = text
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


def _id(value: Any, what: str) -> int:
    try:
        return object_id(value, what)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def create_app(settings: Settings | None = None, *, start_worker: bool = False,
               sink: Sink | None = None, job_starter: JobStarter | None = None) -> Flask:
    """The backend application; ``start_worker`` runs the background worker in a thread."""
    settings = settings or Settings.from_env()
    auth.check_settings(settings)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    store = Store.for_workdir(settings.workdir)
    predictor = Prelabels(settings.workspace, device=settings.device,
                          default_tile=settings.predict_tile,
                          include_background=settings.predict_background,
                          inference_slots=settings.inference_slots)
    interactive = Interactive(predictor, cache_bytes=settings.interactive_cache_bytes,
                              ttl=settings.image_cache_ttl)
    requests_seen = metrics.RequestMetrics()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["label_assistant"] = ext = {
        "settings": settings, "store": store, "predictor": predictor, "worker": None,
        "interactive": interactive,
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
        body = _body(settings.max_request_bytes)
        if "project" not in body:
            raise BadRequest("missing field 'project' (Label Studio sends '<id>.<timestamp>')")
        project = _project(body["project"])
        config = _config(body.get("schema") or body.get("label_config"), settings)
        try:
            hostname = setup_hostname(body.get("hostname"))
        except ValueError as error:
            raise BadRequest(f"field 'hostname' {error}") from None
        try:
            token = setup_token(body.get("access_token"))
        except ValueError as error:
            raise BadRequest(f"field 'access_token' {error}") from None
        store.upsert_project(project, label_config=config.xml)
        if hostname:  # the origin and its token are stored together, or not at all
            store.set_origin(project, hostname, token)
        with warm_lock:
            key = (project, config.config_hash)
            if key not in warmed:  # load the model off the request path, once per process
                warmed.add(key)
                threading.Thread(target=predictor.warm_up, args=(project, config),
                                 name=f"warm-up-{project}", daemon=True).start()
        if settings.basic_auth_user and request.headers.get("Authorization"):
            # Label Studio does not send the credentials with annotation events: its webhook
            # to us gets them (sinks.authorize_webhook), off the request path (3 s budget).
            threading.Thread(target=_authorize_webhook, daemon=True, name=f"webhook-{project}",
                             args=(project, request.host_url,
                                   request.headers["Authorization"])).start()
        return jsonify(model_version=predictor.version_hint(project, config))

    def _authorize_webhook(project: str, backend_url: str, authorization: str) -> None:
        try:
            authorize_webhook(settings, store, project, backend_url, authorization)
        except Exception as error:  # Label Studio down: the next /setup tries again
            log.warning("project %s: can't give the webhook its credentials: %s", project,
                        error)

    @app.post("/predict")
    def predict() -> Response:
        body = _body(settings.max_request_bytes)
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
        params = body.get("params")
        context = params.get("context") if isinstance(params, dict) else None
        if context is not None:  # a smart tool: one task, one object
            return _interactive(tasks, context, config, fetcher, project, errors)
        results = predictor.predict(tasks, config, fetcher, project, errors)
        version = results[0]["model_version"] if results else \
            predictor.version_hint(project, config)
        if errors:  # Label Studio reads only "results"; this is for people and logs
            return jsonify(results=results, model_version=version, errors=errors)
        return jsonify(results=results, model_version=version)

    def _interactive(tasks: list[dict[str, Any]], context: Any, config: LabelConfig,
                     fetcher: ImageFetcher, project: str | None,
                     errors: list[dict[str, Any]]) -> Response:
        if len(tasks) != 1:
            raise BadRequest(f"an interactive request (params.context) is for one task, got "
                             f"{len(tasks)}")
        try:
            answer = interactive.answer(tasks[0], context, config, fetcher, project, errors)
        except ContextError as error:
            raise BadRequest(f"params.context: {_one_line(error)}", error.status) from None
        extra = {"reason": answer["reason"]} if answer.get("reason") else {}
        if errors:
            extra["errors"] = errors
        return jsonify(results=[answer], model_version=answer["model_version"], **extra)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int] | Response:
        body = _body(settings.max_webhook_bytes, "LA_MAX_WEBHOOK_BYTES")
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("missing field 'action'")
        if action not in HANDLED_ACTIONS:
            return jsonify(status="ignored", action=action[:100])
        project = _project(body.get("project"), "field 'project'")
        # A config sent with the event must parse before anything is stored (the worker
        # stores it as the project's); an annotation needs one, sent or known.
        sent = body["project"].get("label_config") if isinstance(body["project"], dict) \
            else None
        if sent is not None and not isinstance(sent, str):
            raise BadRequest(f"field 'project.label_config' must be a string, got "
                             f"{type(sent).__name__}")
        if sent and sent.strip():
            _config(sent, settings)
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            annotation = body.get("annotation")
            if not isinstance(annotation, dict) or annotation.get("id") is None:
                raise BadRequest(f"{action}: missing field 'annotation' with an 'id'")
            _id(annotation["id"], f"{action}: 'annotation.id'")
            if not isinstance(annotation.get("result", []), list):
                raise BadRequest(f"{action}: 'annotation.result' must be a list")
            task = body.get("task")
            if not isinstance(task, dict) or "data" not in task:
                raise BadRequest(f"{action}: missing field 'task' with its 'data'")
            # The worker takes the task's id, else the annotation's 'task'.
            if task.get("id") is not None:
                _id(task["id"], f"{action}: 'task.id'")
            elif annotation.get("task") is not None:
                _id(annotation["task"], f"{action}: 'annotation.task'")
            if not (sent and sent.strip()) and not (store.get_project(project) or {}).get(
                    "label_config"):
                raise BadRequest(f"{action}: no label config known for project {project}: "
                                 "send 'project.label_config' or connect the project through "
                                 "/setup first", 422)
        elif action == "ANNOTATIONS_DELETED":
            items = body.get("annotations")
            if not isinstance(items, list) or not all(
                    isinstance(a, dict) and a.get("id") is not None for a in items):
                raise BadRequest("ANNOTATIONS_DELETED: missing field 'annotations' "
                                 "(a list of {id})")
            for item in items:
                _id(item["id"], "ANNOTATIONS_DELETED: 'annotations[].id'")
        # The body is stored as sent (its UTF-8 text, without a byte order mark): committed
        # (fsynced) before the answer.
        event_id = store.record_event(project, action, g.body_text)
        if ext["worker"] is not None:
            ext["worker"].wake.set()
        return jsonify(status="accepted", event=event_id), 200

    @app.post("/train")
    def train() -> tuple[Response, int]:
        body = _body(settings.max_webhook_bytes, "LA_MAX_WEBHOOK_BYTES")
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

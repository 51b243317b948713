"""Whose token goes where: probes of the real backend against local listeners.

Each test runs the app (Flask test client), the worker and the sink against two or three
``ImageServer`` listeners on 127.0.0.1 that record every request with its headers, and checks
that a Label Studio token only ever reaches the origin it came with:

1. a ``/setup`` naming another host without a token (from anyone) must not inherit the
   project's earlier token, nor the configured ``LABEL_STUDIO_API_KEY``: not in ``/predict``,
   not in the worker's image fetch, not in the sink;
2. a URL whose host two URL parsers read differently (``http://C\\@A/``: ``urllib.parse``
   says A, urllib3/requests connect to C) is refused: as a task image, as a redirect
   ``Location`` and as a ``/setup`` hostname; C receives nothing.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from test_backend_support import (
    CONFIG,
    FIXTURES,
    ImageServer,
    annotation_event,
    blob_image,
    labeled,
)

from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.fetch import FetchRefused, ImageFetcher
from label_assistant.ml_backend.origin import origin_of, project_origin
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import ProjectSinks, RecordingSink
from label_assistant.ml_backend.worker import Worker

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="Label Studio fixtures not found")

SECRET_A = "SECRET-A-0123456789abcdef0123456789abcdef"
CONFIGURED_KEY = "CONFIGURED-K-0123456789abcdef0123456789ab"
IMAGE_PATH = "/data/upload/7/img.png"
WORKER_IMAGE = "/data/upload/7/img2.png"  # another image: the worker can't use the cache


@pytest.fixture
def listeners():
    """Three recording listeners: ``a`` (the real Label Studio), ``b`` and ``c``."""
    servers = {name: ImageServer() for name in "abc"}
    image, _ = blob_image()
    for server in servers.values():
        server.add_png(IMAGE_PATH, image)
        server.add_png(WORKER_IMAGE, image)
    yield servers
    for server in servers.values():
        server.close()


def _port(server: ImageServer) -> int:
    return int(urlsplit(server.origin).port)


def _sent(server: ImageServer, secret: str) -> list[str]:
    """The paths of requests to ``server`` that carried ``secret`` anywhere in a header."""
    return [path for path, headers in server.requests
            if any(secret in str(v) for v in headers.values())]


def _setup(client, project: str, hostname: str, token: str | None = None) -> None:
    body = {"project": project, "schema": CONFIG, "hostname": hostname}
    if token is not None:
        body["access_token"] = token
    response = client.post("/setup", json=body)
    assert response.status_code == 200, response.json


def _predict(client, project: str, image: str) -> dict:
    response = client.post("/predict", json={"project": project, "tasks": [
        {"id": 1, "data": {"image": image}}]})
    assert response.status_code == 200, response.json
    return response.json


def _webhook(client, project_id: int, image: str) -> None:
    _, mask = blob_image()
    body = annotation_event("ANNOTATION_CREATED", annotation_id=11, task_id=1, image=image,
                            label_map=labeled(mask))
    body["project"]["id"] = project_id
    response = client.post("/webhook", data=json.dumps(body),
                           content_type="application/json")
    assert response.status_code == 200, response.json


class Clients:
    """A ``ProjectSinks`` client factory that records which (url, token) it was asked for."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []

    def __call__(self, url: str, token: str) -> RecordingSink:
        self.made.append((url, token))
        return RecordingSink()


def _worker_round(settings: Settings) -> tuple[Worker, Clients]:
    """Run the worker once over the stored events, with the default sink (ProjectSinks)."""
    clients = Clients()
    worker = Worker(settings, sink=None, job_starter=lambda job_dir: None)
    worker.sink = ProjectSinks(settings, worker.store, client_factory=clients)
    worker.tick()
    return worker, clients


# --- 1. a /setup without a token gets none ----------------------------------------------------


def test_a_second_setup_naming_another_host_does_not_take_the_first_token(tmp_path, listeners):
    a, b, c = listeners["a"], listeners["b"], listeners["c"]
    settings = Settings(workdir=tmp_path / "work", fetch_timeout=5, train_after=0)
    client = create_app(settings).test_client()

    _setup(client, "7.1", a.origin, SECRET_A)
    assert _predict(client, "7.1", IMAGE_PATH)["results"][0]["result"]
    assert _sent(a, SECRET_A) == [IMAGE_PATH]  # the control: A's own token goes to A

    _setup(client, "7.1", b.origin)  # anyone, no token
    answer = _predict(client, "7.1", IMAGE_PATH)
    assert answer["results"][0]["result"]  # B's image, fetched ...
    assert [p for p, _ in b.requests] == [IMAGE_PATH]
    assert "Authorization" not in b.requests[0][1]  # ... without any token
    assert len(a.requests) == 1  # nothing more went to A

    _webhook(client, 7, WORKER_IMAGE)  # the worker fetches the task image too
    worker, clients = _worker_round(settings)
    (row,) = worker.store.annotations("7")
    assert row["image_path"]  # it did fetch (from B) ...
    assert b.requests[1][0] == WORKER_IMAGE and "Authorization" not in b.requests[1][1]
    assert clients.made == []  # ... and the sink made no Label Studio client for B
    assert worker.sink.origin(7) is None
    for server in (b, c):
        assert _sent(server, SECRET_A) == []
    store_row = worker.store.get_project("7")
    assert (store_row["hostname"], store_row["token"]) == (b.origin, None)


def test_the_configured_token_does_not_go_to_a_host_a_setup_names(tmp_path, listeners):
    a, b = listeners["a"], listeners["b"]
    settings = Settings(workdir=tmp_path / "work", fetch_timeout=5, train_after=0,
                        label_studio_url=a.origin, label_studio_api_key=CONFIGURED_KEY)
    client = create_app(settings).test_client()

    _setup(client, "8.1", b.origin)  # a new project naming B, no token
    assert _predict(client, "8.1", IMAGE_PATH)["results"][0]["result"]
    assert [p for p, _ in b.requests] == [IMAGE_PATH]
    assert "Authorization" not in b.requests[0][1]

    _webhook(client, 8, WORKER_IMAGE)
    worker, clients = _worker_round(settings)
    assert worker.store.annotations("8")[0]["image_path"]
    assert b.requests[1][0] == WORKER_IMAGE and _sent(b, CONFIGURED_KEY) == []
    assert a.requests == [] and clients.made == []
    assert worker.sink.origin(8) is None
    assert project_origin(settings, worker.store.get_project("8")).token is None

    # The control: a project whose /setup names the configured host gets the configured key.
    _setup(client, "9.1", a.origin)
    assert _predict(client, "9.1", IMAGE_PATH)["results"][0]["result"]
    assert _sent(a, CONFIGURED_KEY) == [IMAGE_PATH]
    assert worker.sink.origin(9).token == CONFIGURED_KEY


# --- 2. URLs whose host the parsers read differently ------------------------------------------


def _confused(decoy: ImageServer, real: ImageServer, path: str = "/data/x.png") -> str:
    """``http://127.0.0.1:<decoy>\\@127.0.0.1:<real>/...``: urllib.parse reads ``real``,
    urllib3 (what requests connects to) reads ``decoy``."""
    return f"http://127.0.0.1:{_port(decoy)}\\@127.0.0.1:{_port(real)}{path}"


def test_the_backslash_url_really_is_read_two_ways(listeners):
    """The premise of the tests below: without the check, the token would go to C."""
    from urllib3.util import parse_url

    a, c = listeners["a"], listeners["c"]
    url = _confused(c, a)
    assert urlsplit(url).port == _port(a)
    assert parse_url(url).port == _port(c)
    assert origin_of(url) == ""  # no origin: never paired with a token, never allowed


def test_a_backslash_image_url_is_refused_and_c_gets_nothing(tmp_path, listeners):
    a, c = listeners["a"], listeners["c"]
    fetcher = ImageFetcher(label_studio_url=a.origin, token=SECRET_A, timeout=5,
                           cache_dir=tmp_path / "cache")
    for url in (_confused(c, a), _confused(c, a, IMAGE_PATH),
                f"http://127.0.0.1:{_port(c)}\\\\@127.0.0.1:{_port(a)}/x.png",
                f"http://127.0.0.1:{_port(c)}\\127.0.0.1:{_port(a)}/x.png"):
        with pytest.raises(FetchRefused, match="refused, .*backslash"):
            fetcher.fetch_image(url)
    assert c.requests == [] and a.requests == []


def test_a_backslash_redirect_location_is_refused_and_c_gets_nothing(tmp_path, listeners):
    a, c = listeners["a"], listeners["c"]
    a.routes["/data/upload/1/r.png"] = (302, {"Location": _confused(c, a)}, b"")
    a.routes["/data/upload/1/r2.png"] = (
        302, {"Location": f"//127.0.0.1:{_port(c)}\\@127.0.0.1:{_port(a)}/x.png"}, b"")
    fetcher = ImageFetcher(label_studio_url=a.origin, token=SECRET_A, timeout=5)
    for path in ("/data/upload/1/r.png", "/data/upload/1/r2.png"):
        with pytest.raises(FetchRefused, match="redirect from .* refused, .*backslash"):
            fetcher.fetch_image(path)
    assert c.requests == []
    assert len(a.requests) == 2


def test_a_backslash_task_image_in_predict_reaches_nobody(tmp_path, listeners):
    a, c = listeners["a"], listeners["c"]
    client = create_app(Settings(workdir=tmp_path / "work", fetch_timeout=5)).test_client()
    _setup(client, "7.1", a.origin, SECRET_A)
    answer = _predict(client, "7.1", _confused(c, a, IMAGE_PATH))
    assert answer["results"][0]["result"] == []
    assert "backslash" in answer["errors"][0]["error"]
    assert c.requests == [] and a.requests == []


def test_a_backslash_setup_hostname_gets_no_configured_token(tmp_path, listeners):
    """The old pairing read this hostname's origin as the configured one (A) and paired the
    configured key with it; the relative image URL then went to C with the key."""
    a, c = listeners["a"], listeners["c"]
    settings = Settings(workdir=tmp_path / "work", fetch_timeout=5,
                        label_studio_url=a.origin, label_studio_api_key=CONFIGURED_KEY)
    app = create_app(settings)
    client, store = app.test_client(), app.extensions["label_assistant"]["store"]
    hostname = f"http://127.0.0.1:{_port(c)}\\@127.0.0.1:{_port(a)}"
    # /setup may refuse it itself; either way, a stored one (from an older version, say)
    # must not get the configured key.
    body = {"project": "7.1", "schema": CONFIG, "hostname": hostname}
    assert client.post("/setup", json=body).status_code in (200, 400)
    store.upsert_project("7", label_config=CONFIG)
    store.set_origin("7", hostname, None)
    assert project_origin(settings, store.get_project("7")).token is None
    answer = _predict(client, "7.1", IMAGE_PATH)
    assert answer["results"][0]["result"] == []
    assert "backslash" in answer["errors"][0]["error"]
    assert c.requests == [] and a.requests == []


@pytest.mark.parametrize("url", [
    "http://user:pw@127.0.0.1:{a}/x.png",          # user info, even when parsers agree
    "http://127.0.0.1:{c}@127.0.0.1:{a}/x.png",
    "http://127.0.0.1:{a}/da\tta/x.png",            # control characters anywhere
    "http://127.0.0.1:{a}/x.png\r\nX-Injected: 1",
    "http://127.0.0.1:{a}\x00/x.png",
    "http://127.0.0.1 :{a}/x.png",                  # whitespace in the host part
    "http://127.0.0.1:{a}\u3000/x.png",
    "http://127\u30020\u30020\u30021:{a}/x.png",     # non-ASCII host (IDNA maps these dots)
    "http://%31%32%37.0.0.1:{a}/x.png",             # percent-encoding in the host
    "http://127.0.0.1:{a}:{c}/x.png",               # two ports
    "http:\\\\127.0.0.1:{c}/x.png",
])
def test_ambiguous_urls_are_refused_before_any_request(tmp_path, listeners, url):
    a, c = listeners["a"], listeners["c"]
    fetcher = ImageFetcher(label_studio_url=a.origin, token=SECRET_A, timeout=5)
    url = url.format(a=_port(a), c=_port(c))
    with pytest.raises(FetchRefused) as error:
        fetcher.fetch_image(url)
    assert "\n" not in str(error.value) and "refused" in str(error.value)
    assert a.requests == [] and c.requests == []

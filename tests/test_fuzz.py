"""Fuzzing every route with malformed requests (:mod:`fuzz_strategies`): no 5xx ever, every
event answered 200 is processed by the worker to a state other than ``failed``, and the
service still admits a good annotation afterwards.

A bounded run for CI (about 2,300 requests, derandomized: the same ones every run);
``benchmarks/bench_fuzz.py`` is the long one, with a seed to explore further.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from fuzz_strategies import (
    CONFIG,
    GOOD_IMAGE,
    SMART_CONFIG,
    Req,
    annotation_body,
    context_results,
    dumps,
    encoded,
    requests,
    send,
    setup_bodies,
    webhook_bodies,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from label_assistant.ml_backend.app import create_app
from label_assistant.ml_backend.settings import Settings
from label_assistant.ml_backend.sinks import RecordingSink
from label_assistant.ml_backend.worker import Worker

pytestmark = pytest.mark.slow

FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


class _Ended:
    """A job process that has already ended (training never runs in the fuzz)."""

    pid = os.getpid()

    def poll(self) -> int:
        return 0


class Harness:
    """One app and its worker on a fresh work directory, shared by a test's examples."""

    def __init__(self) -> None:
        # In memory where there is a tmpfs: the store fsyncs every event (that is tested
        # elsewhere); here it would be most of the time.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else None
        self.tmp = tempfile.TemporaryDirectory(prefix="la-fuzz-", dir=shm)
        self.settings = Settings(workdir=Path(self.tmp.name) / "work", train_after=0,
                                 fetch_timeout=2, max_webhook_bytes=1024 * 1024)
        self.app = create_app(self.settings)
        self.client = self.app.test_client()
        self.worker = Worker(self.settings, store=self.app.extensions["label_assistant"]["store"],
                             sink=RecordingSink(), job_starter=lambda job_dir: _Ended())
        self.sent = 0

    def request(self, req: Req) -> int:
        """Send, check the answer, and process what was acknowledged; the status."""
        response = send(self.client, req)
        self.sent += 1
        status = response.status_code
        assert status < 500, (status, response.get_data(as_text=True)[:500], req)
        if req.method == "HEAD" or (req.path == "/metrics" and status == 200):
            return status
        if req.method == "OPTIONS" and status == 200:  # HTTP's answer: the Allow header
            assert response.headers.get("Allow"), req
            return status
        data = response.get_json(silent=True)
        assert isinstance(data, dict), (status, response.get_data()[:200], req)
        if status >= 400:  # a one-line error
            error = data.get("error")
            assert isinstance(error, str) and error and "\n" not in error, (data, req)
        elif status == 200 and data.get("event") is not None:
            self.process(data["event"], req)
        return status

    def process(self, event_id: int, req: Req) -> None:
        """Tick the worker until the event is no longer pending; it must not have failed."""
        store = self.worker.store
        for _ in range(5):
            self.worker.tick()
            row = store.get_event(event_id)
            if row["state"] not in ("pending", "processing"):
                break
        row = store.get_event(event_id)
        assert row["state"] != "failed", (row["error"], req)

    def still_works(self) -> None:
        """A good annotation event is admitted after all that."""
        body = annotation_body(annotation_id=987_654_321, task_id=987_654_321, project=3)
        response = self.client.post("/webhook", json=body)
        assert response.status_code == 200, response.json
        self.process(response.json["event"], Req("POST", "/webhook"))
        (row,) = self.worker.store.annotations("3", annotation_id=987_654_321)
        assert row["state"] == "admitted", row["findings"]
        assert self.client.get("/metrics").status_code == 200

    def close(self) -> None:
        self.app.extensions["label_assistant"]["store"].close()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def harness():
    logging.disable(logging.CRITICAL)  # thousands of expected refusals
    h = Harness()
    yield h
    logging.disable(logging.NOTSET)
    h.close()


@settings(FUZZ, max_examples=1200)
@given(req=requests())
def test_any_route_any_request(harness, req):
    harness.request(req)


@settings(FUZZ, max_examples=500)
@given(body=webhook_bodies(), data=st.data())
def test_webhooks(harness, body, data):
    harness.request(Req("POST", "/webhook", data.draw(encoded(body)),
                        headers={"Content-Type": "application/json"}))


@settings(FUZZ, max_examples=200)
@given(body=setup_bodies(), data=st.data())
def test_setup_then_an_event(harness, body, data):
    """Whatever /setup stored, a later event of that project is processable."""
    harness.request(Req("POST", "/setup", data.draw(encoded(body)),
                        headers={"Content-Type": "application/json"}))
    event = annotation_body(annotation_id=5, task_id=5, project=1,
                            image=data.draw(st.sampled_from(
                                [GOOD_IMAGE, "/data/local-files/?d=images/img0.png"])),
                            config=data.draw(st.sampled_from([CONFIG, ""])))
    harness.request(Req("POST", "/webhook", dumps(event).encode(),
                        headers={"Content-Type": "application/json"}))
    harness.request(Req("POST", "/predict", dumps(
        {"project": "1.1", "tasks": [{"id": 1, "data": {"image": GOOD_IMAGE}}]}).encode()))


def test_the_service_still_works_after_the_fuzz(harness):
    """Run last (file order): after everything above, a good annotation is admitted."""
    harness.still_works()


@settings(FUZZ, max_examples=300)
@given(results=st.lists(context_results(), max_size=6), image=st.sampled_from(
    [GOOD_IMAGE] * 3 + ["http://elsewhere.invalid/x.png"]), data=st.data())
def test_smart_tool_contexts(harness, results, image, data):
    """Label Studio's interactive calls, mostly well formed, often broken somewhere: a 4xx
    or an answer, never a 5xx."""
    body = {"project": "1.1795273793", "label_config": SMART_CONFIG,
            "tasks": [{"id": 7, "data": {"image": image}}],
            "params": {"login": None, "password": None, "context": {"result": results}}}
    harness.request(Req("POST", "/predict", data.draw(encoded(body)),
                        headers={"Content-Type": "application/json"}))

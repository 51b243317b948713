"""``GET /metrics``: Prometheus text exposition through ``prometheus_client``.

Request metrics are counted by the process that answers the request:

- ``la_http_requests_total{route,method,status}`` (counter) and
  ``la_http_request_seconds{route}`` (histogram, buckets :data:`BUCKETS`).

Under ``label-assistant serve`` they add up over all gunicorn workers: serve sets
``PROMETHEUS_MULTIPROC_DIR`` (``W/metrics``, emptied at each start) in gunicorn's environment,
so prometheus_client, imported after it in every worker, keeps each worker's values in
``<type>_<pid>.db`` files there, and every scrape merges all the files
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`) whichever worker answers.
The counts of a worker that exited stay in the sum; gunicorn's ``child_exit`` hook
(:mod:`.gunicorn_conf`) calls ``mark_process_dead``. Without the variable (one process, the
Flask test client) they are plain in-process metrics.

Everything else is read from the store and the model registry at scrape time by
:class:`StoreCollector`, and is the same whichever worker answers:

- ``la_events{state}``, ``la_queue_depth`` (pending and processing events);
- ``la_annotations{project,state}`` (revisions: admitted, quarantined, superseded, deleted);
- ``la_admitted_since_job{project}``: admitted annotations not yet in a training job;
- ``la_training_jobs{project,kind,state}`` (``kind``: ``train``, ``rank``; ``state`` as
  :func:`~.store.job_state` reads it: with ``LA_QUEUE`` a job no worker has taken yet is
  ``queued``); ``la_worker_jobs{worker,kind,state}``: the same jobs by the worker that ran
  them (``local`` for local processes) and their state;
  ``la_training_running{project}``, ``la_training_progress{project}`` (0..1 of the running
  training job, from its status file), ``la_training_followup{project}`` (a follow-up
  training job is asked for): these three are about ``train`` jobs only;
- ``la_candidates{project,outcome}``: trained candidates, ``promoted`` (they beat what
  served) or ``kept`` (they did not, or could not be validated);
- ``la_model_version{project,version}`` = 1 for the serving model version, and
  ``la_model_version_number{project}`` (``v0003`` -> 3; 0 while Otsu serves).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from label_assistant.ml_backend.store import (
    ANNOTATION_STATES,
    EVENT_STATES,
    JOB_KINDS,
    JOB_STATES,
    Store,
    job_state,
)
from label_assistant.workspace import Workspace

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Upper bounds (seconds) of the request latency histogram's buckets (``+Inf`` is added).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)
#: prometheus_client's multiprocess-mode variable: a folder shared by the processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class RequestMetrics:
    """Request counts and latencies: this process's, or (in multiprocess mode) every
    process's that shares ``PROMETHEUS_MULTIPROC_DIR``."""

    def __init__(self) -> None:
        #: The multiprocess folder, or None: read here, after prometheus_client chose its
        #: value storage at import from the same variable.
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        # Not registered anywhere: each scrape builds its registry (:func:`render`).
        self.requests = Counter("la_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=None)
        self.seconds = Histogram("la_http_request_seconds", "Request latency in seconds.",
                                 ["route"], buckets=BUCKETS, registry=None)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.seconds.labels(route=route).observe(seconds)

    def register(self, registry: CollectorRegistry) -> None:
        """Add the request metrics to ``registry``: all processes' files in multiprocess
        mode, else this process's metrics."""
        if self.multiproc_dir:
            MultiProcessCollector(registry, path=self.multiproc_dir)
        else:
            registry.register(self.requests)
            registry.register(self.seconds)


class StoreCollector:
    """The gauges read from the store and the model registry at each scrape."""

    def __init__(self, store: Store, workdir: Path) -> None:
        self.store = store
        self.workdir = Path(workdir)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from label_assistant.model.job import read_status

        store = self.store
        events = store.event_counts()
        gauge = GaugeMetricFamily("la_events", "Webhook events by state.", labels=["state"])
        for state in EVENT_STATES:
            gauge.add_metric([state], events.get(state, 0))
        yield gauge
        yield GaugeMetricFamily("la_queue_depth", "Events waiting to be processed.",
                                value=events.get("pending", 0) + events.get("processing", 0))

        projects = store.project_ids()
        counts = store.annotation_counts()
        gauge = GaugeMetricFamily("la_annotations", "Annotation revisions by state.",
                                  labels=["project", "state"])
        for p in projects:
            for state in ANNOTATION_STATES:
                gauge.add_metric([p, state], counts.get((p, state), 0))
        yield gauge
        gauge = GaugeMetricFamily("la_admitted_since_job",
                                  "Admitted annotations not yet in a training job.",
                                  labels=["project"])
        for p in projects:
            gauge.add_metric([p], store.admitted_since_job(p))
        yield gauge

        jobs = store.jobs()
        by_state = collections.Counter((j["project"], j["kind"], job_state(j)) for j in jobs)
        running = {j["project"]: j for j in jobs if j["kind"] == "train"
                   and job_state(j) == "running"}
        gauge = GaugeMetricFamily("la_training_jobs", "Background jobs by kind and state.",
                                  labels=["project", "kind", "state"])
        for p in projects:
            for kind in JOB_KINDS:
                for state in JOB_STATES:
                    gauge.add_metric([p, kind, state], by_state[(p, kind, state)])
        yield gauge
        by_worker = collections.Counter(
            (j["worker"] or ("local" if j["pid"] else "none"), j["kind"], job_state(j))
            for j in jobs if j["worker"] or j["pid"])
        gauge = GaugeMetricFamily("la_worker_jobs", "Jobs by the worker that ran them (local: "
                                  "a local process) and state.",
                                  labels=["worker", "kind", "state"])
        for (worker, kind, state), n in sorted(by_worker.items()):
            gauge.add_metric([worker, kind, state], n)
        yield gauge
        running_gauge = GaugeMetricFamily("la_training_running", "1 while a training job runs.",
                                          labels=["project"])
        progress = GaugeMetricFamily("la_training_progress",
                                     "Progress of the running training job, 0 to 1.",
                                     labels=["project"])
        followup = GaugeMetricFamily("la_training_followup",
                                     "1 when a follow-up training job is asked for.",
                                     labels=["project"])
        for p in projects:
            job = running.get(p)
            running_gauge.add_metric([p], int(job is not None))
            value = 0.0
            if job is not None and job["job_dir"]:
                try:  # a status that can't be read (or a folder that can't be named) is 0
                    value = float(read_status(Path(job["job_dir"])).progress or 0.0)
                except (OSError, ValueError, TypeError):
                    value = 0.0
            progress.add_metric([p], value)
            followup.add_metric([p], int(bool(job and job["followup"])))
        yield from (running_gauge, progress, followup)
        outcomes = collections.Counter(
            (j["project"], "promoted" if j["promoted"] else "kept") for j in jobs
            if j["kind"] == "train" and j["state"] == "done" and j["promoted"] is not None)
        candidates = GaugeMetricFamily(
            "la_candidates", "Trained candidates by outcome: promoted (it beat what served) "
            "or kept (it did not, or could not be validated).", labels=["project", "outcome"])
        for p in projects:
            for outcome in ("promoted", "kept"):
                candidates.add_metric([p, outcome], outcomes[(p, outcome)])
        yield candidates

        versions = GaugeMetricFamily("la_model_version",
                                     "The current model version of each project (value 1).",
                                     labels=["project", "version"])
        numbers = GaugeMetricFamily("la_model_version_number",
                                    "The current version's number (0: none yet).",
                                    labels=["project"])
        workspace = Workspace(self.workdir)
        for p in projects:
            try:  # one project's unreadable registry must not take the page down
                version = workspace.registry(p).current_id()
            except (OSError, ValueError):
                version = None
            if version:
                versions.add_metric([p, version], 1)
            digits = (version or "").lstrip("v")
            numbers.add_metric([p], int(digits) if digits.isdigit() else 0)
        yield from (versions, numbers)


def render(requests: RequestMetrics, store: Store, workdir: Path) -> bytes:
    """The whole ``/metrics`` page (content type :data:`CONTENT_TYPE`), from a registry
    built for this scrape: the request metrics and a :class:`StoreCollector`."""
    registry = CollectorRegistry()
    requests.register(registry)
    registry.register(StoreCollector(store, workdir))
    return generate_latest(registry)

"""``GET /metrics`` in the Prometheus text format (version 0.0.4).

Request counts and latencies are counted per process (each gunicorn worker has its own;
Prometheus sums them across scrapes of the same target only if each worker is scraped, so
read them as "this worker"). Everything else is read from the store and the model registry
at scrape time, and is the same whichever worker answers:

- ``la_http_requests_total{route,method,status}``, ``la_http_request_seconds{route}``
  (histogram);
- ``la_events{state}``, ``la_queue_depth`` (pending events);
- ``la_annotations{project,state}`` (revisions: admitted, quarantined, superseded, deleted);
- ``la_admitted_since_job{project}``: admitted annotations not yet in a training job;
- ``la_training_jobs{project,state}``, ``la_training_running{project}``,
  ``la_training_progress{project}`` (0..1 of the running job, from its status file),
  ``la_training_followup{project}`` (a follow-up job is asked for);
- ``la_model_version{project,version}`` = 1 for the current version, and
  ``la_model_version_number{project}`` (``v0003`` -> 3; 0 before the first version).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from label_assistant.ml_backend.predict import current_version_id
from label_assistant.ml_backend.store import EVENT_STATES, JOB_STATES, Store
from label_assistant.workdir import models_dir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class RequestMetrics:
    """Thread-safe request counters and latency histograms of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.totals: dict[str, int] = defaultdict(int)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.counts[(route, method, status)] += 1
            bucket = self.buckets.setdefault(route, [0] * len(BUCKETS))
            index = bisect.bisect_left(BUCKETS, seconds)
            if index < len(BUCKETS):
                bucket[index] += 1
            self.sums[route] += seconds
            self.totals[route] += 1

    def lines(self) -> list[str]:
        with self._lock:
            out = ["# HELP la_http_requests_total HTTP requests answered by this process.",
                   "# TYPE la_http_requests_total counter"]
            for (route, method, status), n in sorted(self.counts.items()):
                labels = _labels(route=route, method=method, status=status)
                out.append(f"la_http_requests_total{labels} {n}")
            out += ["# HELP la_http_request_seconds Request latency in this process.",
                    "# TYPE la_http_request_seconds histogram"]
            for route in sorted(self.buckets):
                running = 0
                for bound, n in zip(BUCKETS, self.buckets[route], strict=True):
                    running += n
                    out.append(f"la_http_request_seconds_bucket"
                               f"{_labels(route=route, le=_number(bound))} {running}")
                out.append(f"la_http_request_seconds_bucket{_labels(route=route, le='+Inf')} "
                           f"{self.totals[route]}")
                out.append(f"la_http_request_seconds_sum{_labels(route=route)} "
                           f"{self.sums[route]:.6f}")
                out.append(f"la_http_request_seconds_count{_labels(route=route)} "
                           f"{self.totals[route]}")
        return out


def _gauge(out: list[str], name: str, help_text: str,
           samples: list[tuple[dict[str, Any], float]]) -> None:
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    out += [f"{name}{_labels(**labels)} {_number(value)}" for labels, value in samples]


def render(requests: RequestMetrics, store: Store, workdir: Path) -> str:
    """The whole ``/metrics`` page."""
    from label_assistant.model.job import read_status

    out = requests.lines()
    events = store.event_counts()
    _gauge(out, "la_events", "Webhook events by state.",
           [({"state": s}, events.get(s, 0)) for s in EVENT_STATES])
    _gauge(out, "la_queue_depth", "Events waiting to be processed.",
           [({}, events.get("pending", 0) + events.get("processing", 0))])

    projects = store.project_ids()
    counts = store.annotation_counts()
    _gauge(out, "la_annotations", "Annotation revisions by state.",
           [({"project": p, "state": s}, counts.get((p, s), 0)) for p in projects
            for s in ("admitted", "quarantined", "superseded", "deleted")])
    _gauge(out, "la_admitted_since_job", "Admitted annotations not yet in a training job.",
           [({"project": p}, store.admitted_since_job(p)) for p in projects])

    jobs = store.jobs()
    by_state: dict[tuple[str, str], int] = defaultdict(int)
    running: dict[str, dict[str, Any]] = {}
    followup: dict[str, int] = defaultdict(int)
    for job in jobs:
        by_state[(job["project"], job["state"])] += 1
        if job["state"] == "running":
            running[job["project"]] = job
            followup[job["project"]] = max(followup[job["project"]], job["followup"])
    _gauge(out, "la_training_jobs", "Training jobs by state.",
           [({"project": p, "state": s}, by_state.get((p, s), 0)) for p in projects
            for s in JOB_STATES])
    _gauge(out, "la_training_running", "1 while a training job runs.",
           [({"project": p}, int(p in running)) for p in projects])
    progress = []
    for p in projects:
        value = 0.0
        if p in running and running[p]["job_dir"]:
            status = read_status(Path(running[p]["job_dir"]))
            value = float(status.get("progress") or 0.0)
        progress.append(({"project": p}, value))
    _gauge(out, "la_training_progress", "Progress of the running training job, 0 to 1.",
           progress)
    _gauge(out, "la_training_followup", "1 when a follow-up job is asked for.",
           [({"project": p}, followup.get(p, 0)) for p in projects])

    versions, numbers = [], []
    for p in projects:
        version = current_version_id(models_dir(workdir, p))
        if version:
            versions.append(({"project": p, "version": version}, 1))
        digits = (version or "").lstrip("v")
        numbers.append(({"project": p}, int(digits) if digits.isdigit() else 0))
    _gauge(out, "la_model_version", "The current model version of each project (value 1).",
           versions)
    _gauge(out, "la_model_version_number", "The current version's number (0: none yet).",
           numbers)
    return "\n".join(out) + "\n"

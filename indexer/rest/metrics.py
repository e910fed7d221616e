"""/metrics in Prometheus' text format, with prometheus_client: requests,
suggestion latency, documents, each backend's time inside ensembles, learning,
the models on disk, projects by status and memory.

With several worker processes the client's multiprocess mode adds up what
each worker counted: indexer/rest/server.py points PROMETHEUS_MULTIPROC_DIR at
a fresh directory before anything imports the client (it reads the variable
on import), and tells it when a worker ends. prometheus_client is imported
only here, when the app is made with metrics on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from http import HTTPStatus

from indexer.rest.served import STATES, ServedProjects, model_version

METRICS_ACCESS = ("public", "key", "off")
#: /metrics names every project, private ones too: the API key opens it
DEFAULT_METRICS = "key"
ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MEMORY_INTERVAL = 1.0  # seconds between readings of a worker's memory


#: the methods a label names; any other is "other" (labels come from closed
#: sets, so that no caller can add series)
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
OTHER = "other"
UNMATCHED = "unmatched"


def method_label(method: str) -> str:
    """The request method, or "other" for one HTTP does not define."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """The status code where HTTP defines it, else its class ("5xx")."""
    try:
        HTTPStatus(status)
    except ValueError:
        return f"{status // 100}xx" if 100 <= status < 600 else OTHER
    return str(status)


@dataclass
class Finished:
    """What the metrics and the request log say of one answered request."""

    endpoint: str | None  # the route (/v1/projects/<project_id>/suggest)
    method: str  # a method HTTP defines, else "other"
    project: str | None  # a configured project's id, else None
    status: int
    seconds: float
    suggest: bool = False  # a suggest or suggest-batch request
    documents: int = 0
    document_bytes: int | None = None
    learned: int = 0
    backends: dict[str, float] = field(default_factory=dict)  # project -> s


def process_dead(pid: int) -> None:
    """Drop the per-process gauges of the worker `pid` that ended (the
    client's multiprocess bookkeeping); nothing when metrics are off."""
    if os.environ.get(ENV_MULTIPROC_DIR) and "prometheus_client" in sys.modules:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def resident_memory() -> int | None:
    """This process's resident memory in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class Metrics:
    """The app's metrics; `record` takes each finished request."""

    def __init__(self, served: ServedProjects, access: str = DEFAULT_METRICS):
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            values,
        )

        if access not in METRICS_ACCESS or access == "off":
            raise ValueError(f"metrics access must be public or key, not {access!r}")
        self.served, self.access = served, access
        # the client chose its mode on import, from the environment then
        self.multiprocess = getattr(values.ValueClass, "_multiprocess", False)
        # in multiprocess mode the values live in files that the scrape reads
        # back: registering them too would count them twice
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "indexer_http_requests",
            "HTTP requests by endpoint (the route, not the path; unmatched "
            "where none), method (other for one HTTP does not define), project "
            "(empty where none) and status",
            ["endpoint", "method", "project", "status"],
            registry=registry,
        )
        self.suggest_seconds = Histogram(
            "indexer_suggest_duration_seconds",
            "Time the app took to answer a successful suggest or suggest-batch request",
            ["project"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.documents = Counter(
            "indexer_documents_suggested",
            "Documents given suggestions (one per suggest, each of a batch)",
            ["project"],
            registry=registry,
        )
        self.backend_seconds = Histogram(
            "indexer_backend_suggest_duration_seconds",
            "Time the backend of each project took in a suggest request: the "
            "requested project's own (source = project) and, in an ensemble, "
            "each source's",
            ["project", "source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.learn_calls = Counter(
            "indexer_learn_calls",
            "learn requests that updated a model",
            ["project"],
            registry=registry,
        )
        self.learned = Counter(
            "indexer_documents_learned",
            "Documents learned from",
            ["project"],
            registry=registry,
        )
        self.memory = Gauge(
            "indexer_worker_resident_memory_bytes",
            "Resident memory of each worker process (pages shared between "
            "workers count in each)",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self._memory_at = float("-inf")
        self.state = _StateCollector(served)
        if registry is not None:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=registry)
            registry.register(self.state)

    def record(self, done: Finished) -> None:
        """Count one answered request."""
        project = done.project or ""
        self.requests.labels(
            done.endpoint or UNMATCHED,
            method_label(done.method),
            project,
            status_label(done.status),
        ).inc()
        if done.suggest and done.status < 300:
            self.suggest_seconds.labels(project).observe(done.seconds)
            self.documents.labels(project).inc(done.documents)
        for source, seconds in done.backends.items():
            self.backend_seconds.labels(project, source).observe(seconds)
        if done.learned:
            self.learn_calls.labels(project).inc()
            self.learned.labels(project).inc(done.learned)
        now = time.monotonic()
        if now - self._memory_at >= MEMORY_INTERVAL:
            self.worker_started(now)

    def worker_started(self, now: float | None = None) -> None:
        """Read this process's memory (a worker calls this when it starts)."""
        self._memory_at = time.monotonic() if now is None else now
        rss = resident_memory()
        if rss is not None:
            self.memory.set(rss)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of a scrape: every worker's counts added up."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = self.registry
        if registry is None:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(self.state)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _StateCollector:
    """Read at each scrape: projects by status (as the answering worker sees
    them) and each trained project's model on disk, its version and age."""

    def __init__(self, served: ServedProjects):
        self.served = served

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        counts = Tally(state for state, _ in self.served.states().values())
        by_status = GaugeMetricFamily(
            "indexer_projects",
            "Configured projects by status: " + ", ".join(STATES),
            labels=["status"],
        )
        for state in STATES:
            by_status.add_metric([state], counts.get(state, 0))
        yield by_status
        info = InfoMetricFamily(
            "indexer_model",
            "The saved model of each trained project: its version (the id of "
            "its model directory)",
            labels=["project"],
        )
        age = GaugeMetricFamily(
            "indexer_model_age_seconds",
            "Seconds since each trained project's model manifest was written",
            labels=["project"],
        )
        now = time.time_ns()
        projects = self.served.projects
        for project_id in projects.ids():
            target, written, _ = model_version(projects.get(project_id))
            if written is None:
                continue
            version = target.rsplit(".", 1)[-1] if target else ""
            info.add_metric([project_id], {"version": version})
            age.add_metric([project_id], max(0.0, (now - written) / 1e9))
        yield info
        yield age

"""What the server notes of each request: its id (X-Request-ID, echoed), its
latency, each backend's suggest time, the metrics and the request log line.

The views leave what only they know in `g`: `documents` and
`document_bytes` (suggest, learn) and `learned` (documents a learn used).
"""

from __future__ import annotations

import time
from collections import defaultdict

from flask import Flask, Response, current_app, g, request

from indexer.backend import SUGGEST_TIMES
from indexer.rest.logs import REQUEST_ID, request_id, requests_log
from indexer.rest.metrics import Finished, Metrics, method_label

SUGGEST_ENDPOINTS = ("v1.suggest", "v1.suggest_batch")


def observe(app: Flask, metrics: Metrics | None, log_requests: bool) -> None:
    """Install the request hooks: call before any other before_request."""
    app.extensions["indexer_metrics"] = metrics
    app.config["INDEXER_LOG_REQUESTS"] = log_requests
    app.before_request(_begin)
    app.after_request(_end)
    app.teardown_request(_teardown)


def _begin() -> None:
    g.started = time.perf_counter()
    g.request_id = request_id(request.headers.get("X-Request-ID"))
    g.observing = (REQUEST_ID.set(g.request_id), SUGGEST_TIMES.set([]))


def _end(response: Response) -> Response:
    if "request_id" not in g:
        return response
    response.headers["X-Request-ID"] = g.request_id
    done = finished(response.status_code)
    metrics = current_app.extensions.get("indexer_metrics")
    if metrics is not None:
        metrics.record(done)
    if current_app.config.get("INDEXER_LOG_REQUESTS"):
        _log(done)
    return response


def _teardown(_exc: BaseException | None = None) -> None:
    tokens = g.pop("observing", None)
    if tokens is not None:
        REQUEST_ID.reset(tokens[0])
        SUGGEST_TIMES.reset(tokens[1])


def finished(status: int) -> Finished:
    """The request being answered, as the metrics and the log see it."""
    served = current_app.extensions["indexer"]
    project = (request.view_args or {}).get("project_id")
    backends: dict[str, float] = defaultdict(float)
    for source, seconds in SUGGEST_TIMES.get() or ():
        backends[source] += seconds
    return Finished(
        endpoint=request.url_rule.rule if request.url_rule else None,
        method=method_label(request.method),
        project=project if project in served.access else None,
        status=status,
        seconds=time.perf_counter() - g.started,
        suggest=request.endpoint in SUGGEST_ENDPOINTS,
        documents=g.get("documents", 0),
        document_bytes=g.get("document_bytes"),
        learned=g.get("learned", 0),
        backends=dict(backends),
    )


def _log(done: Finished) -> None:
    """One line per request; never the key or a text, only sizes and times."""
    fields = {
        "method": done.method,
        "endpoint": done.endpoint,
        "project": done.project,
        "status": done.status,
        "latency_ms": round(1000 * done.seconds, 2),
        "document_bytes": done.document_bytes,
        "backends_ms": {p: round(1000 * s, 2) for p, s in done.backends.items()}
        or None,
    }
    # the route, not the path: a path may be anything a caller sent
    route = done.endpoint or "(no route)"
    requests_log.info(
        "%s %s %d", done.method, route, done.status, extra={"fields": fields}
    )

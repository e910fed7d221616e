"""The Flask app: problem+json errors, headers, the API key, the web page
and CORS; the endpoints are in indexer/rest/api.py."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from flask import Flask, Response, current_app, g, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from indexer.errors import (
    BusyError,
    ConfigError,
    IndexerError,
    NotFoundError,
    ServiceError,
)
from indexer.project import Projects
from indexer.rest.api import v1
from indexer.rest.metrics import DEFAULT_METRICS, METRICS_ACCESS, Metrics
from indexer.rest.observe import observe
from indexer.rest.openapi import PROBLEM, openapi_document
from indexer.rest.served import Forbidden, ServedProjects

ENV_API_KEY = "INDEXER_API_KEY"
ENV_CORS_ORIGINS = "INDEXER_CORS_ORIGINS"
DEFAULT_MAX_CONTENT_LENGTH = 5 * 1024 * 1024
DEFAULT_MAX_BATCH = 32
#: seconds an HTTP client is asked to wait before retrying on a busy project
BUSY_RETRY_AFTER = 30
#: seconds a learn waits for a project that another learn or training holds
#: (a learn holds it for a moment) before it answers 503
DEFAULT_LEARN_WAIT = 5.0


def _find_web_dir() -> Path:
    """The web page's files: installed as package data in indexer/web (a wheel),
    or web/ at the top of a source checkout (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed, checkout = package / "web", package.parent / "web"
    return installed if (installed / "index.html").is_file() else checkout


WEB_DIR = _find_web_dir()
WEB_FILES = ("index.html", "app.js", "style.css", "favicon.svg")
# the page loads only its own files and calls only this server
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PROBLEM_TYPES = {
    "NotFoundError": "not-found",
    "NotTrainedError": "not-trained",
    "InputError": "invalid-input",
    "UsageError": "bad-request",
    "DependencyError": "missing-dependency",
    "BackendError": "backend-error",
    "Unauthorized": "unauthorized",
    "Forbidden": "forbidden",
    "Unavailable": "unavailable",
}
PRELOAD_IN_BACKGROUND = "background"

log = logging.getLogger("indexer.rest")


def create_app(
    projects_path: str | os.PathLike | None = None,
    *,
    projects: Projects | None = None,
    api_key: str | None = None,
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
    max_batch: int = DEFAULT_MAX_BATCH,
    cors_origins: str | list[str] | None = None,
    preload: bool | str = False,
    check_interval: float | None = 2.0,
    web_dir: str | os.PathLike | None = WEB_DIR,
    metrics: str = DEFAULT_METRICS,
    log_requests: bool = False,
    learn_wait: float = DEFAULT_LEARN_WAIT,
) -> Flask:
    """The WSGI app serving the projects of `projects_path` (see load_config).

    api_key (default: $INDEXER_API_KEY) opens private projects and reloads;
    cors_origins (default: $INDEXER_CORS_ORIGINS) is "*" or a comma-separated
    list of origins allowed to call /v1 from a browser; check_interval is how
    often (seconds) a project's model is checked for a newer training (None:
    never); preload loads every model now instead of on first use, or with
    "background" in a thread while the app answers (/v1/ready says when it
    is done). metrics: /metrics for anyone ("public"), for the API key
    ("key") or not at all ("off"); log_requests logs a line per request;
    learn_wait is how long (seconds) a learn waits for a busy project.
    """
    if metrics not in METRICS_ACCESS:
        raise ValueError(f"metrics must be one of {', '.join(METRICS_ACCESS)}")
    app = Flask("indexer", static_folder=None)
    projects = projects or Projects.from_path(projects_path)
    if api_key is None:
        api_key = os.environ.get(ENV_API_KEY)
    served = ServedProjects(projects, api_key, check_interval)
    app.config.update(
        MAX_CONTENT_LENGTH=max_content_length,
        MAX_FORM_MEMORY_SIZE=max_content_length,
        INDEXER_MAX_BATCH=max_batch,
        INDEXER_LEARN_WAIT=learn_wait,
    )
    app.extensions["indexer"] = served
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.register_blueprint(v1)
    app.config["INDEXER_OPENAPI"] = openapi_document(app, max_batch, max_content_length)
    app.register_error_handler(IndexerError, _indexer_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    observe(app, None if metrics == "off" else Metrics(served, metrics), log_requests)
    app.before_request(_check_request)
    app.after_request(_add_headers)
    if metrics != "off":
        app.add_url_rule("/metrics", "metrics", _metrics)
    if web_dir is not None:
        _add_web(app, Path(web_dir))
    if cors_origins is None:
        cors_origins = os.environ.get(ENV_CORS_ORIGINS)
    if cors_origins:
        _add_cors(app, cors_origins)
    if preload == PRELOAD_IN_BACKGROUND:
        served.preload_in_background()
    elif preload:
        served.preload()  # it logs what did not load
    return app


# -- errors ------------------------------------------------------------------


def problem(
    status: int,
    title: str,
    detail: str,
    kind: str | None = None,
    headers=None,
    **members,
) -> Response:
    """An application/problem+json response (RFC 9457); `members` are its
    extension members."""
    body = {
        "type": f"urn:indexer:problem:{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **members,
    }
    return Response(
        json.dumps(body),  # ASCII: details may quote what the caller sent
        status=status,
        mimetype=PROBLEM,
        headers=headers,
    )


def _indexer_error(exc: IndexerError) -> Response:
    if isinstance(exc, ConfigError):
        # the operator's problem, not the caller's; the details stay in the log
        log.error("Configuration error on %s: %s", request.path, exc.message)
        return problem(
            503,
            "Service unavailable",
            "The server is misconfigured (the server log says how)",
            "unavailable",
        )
    if isinstance(exc, BusyError):
        return _busy(exc)
    if isinstance(exc, ServiceError):
        # the model server's address is the operator's, not the caller's
        log.error("Model server failed on %s: %s", request.path, exc.message)
        return problem(
            503,
            exc.title,
            "The project's model server did not answer (the server log says why)",
            "model-server-unavailable",
        )
    status = exc.status
    kind = next(
        (
            PROBLEM_TYPES[c.__name__]
            for c in type(exc).__mro__
            if c.__name__ in PROBLEM_TYPES
        ),
        "error",
    )
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.message)
    return problem(status, exc.title, exc.message, kind)


def _busy(exc: BusyError) -> Response:
    """A project another process is changing: the client should retry later.
    503 with Retry-After, which HTTP clients and their retry logic understand;
    the holder (process, command line) goes to the server log only."""
    log.warning("%s on %s", exc.message, request.path)
    return problem(
        503,
        "Service unavailable",
        f"{exc.resource} is busy: another process is training, updating or clearing "
        f"it. Retry later (in {BUSY_RETRY_AFTER} s, as Retry-After says)",
        "busy",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
    )


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description or exc.name
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        detail = f"The body is larger than the {limit} bytes this server accepts"
    headers = {}
    if getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return problem(status, exc.name, detail, headers=headers)


def _unexpected_error(exc: Exception) -> Response:
    log.exception("Unexpected error on %s %s", request.method, request.path)
    return problem(
        500,
        "Internal Server Error",
        "An unexpected error: it is a bug, and the server log has the details",
    )


def _check_request() -> None:
    # a wrong key is refused on every path, also where none is needed
    current_app.extensions["indexer"].authorised(request.headers.get("X-API-Key"))
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


def _add_headers(response: Response) -> Response:
    started = g.get("started")
    if started is not None:  # time spent in the app, for load tests and proxies
        elapsed = 1000 * (time.perf_counter() - started)
        response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _metrics() -> Response:
    """Prometheus' text format; with access "key" only for the API key."""
    served = current_app.extensions["indexer"]
    metrics: Metrics = current_app.extensions["indexer_metrics"]
    if metrics.access == "key" and served.api_key is None:
        raise Forbidden(
            "/metrics needs the API key and this server has none: start it with "
            "INDEXER_API_KEY set, or with --metrics public"
        )
    if metrics.access == "key":
        served.require_key(request.headers.get("X-API-Key"))
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


# -- the web demo and CORS --------------------------------------------------


def _add_web(app: Flask, web_dir: Path) -> None:
    def page(name: str = "index.html"):
        if name not in WEB_FILES or not (web_dir / name).is_file():
            raise NotFoundError(f"No page '/{name}'")
        return send_from_directory(web_dir, name, max_age=0)

    app.add_url_rule("/", "web_index", page)
    app.add_url_rule("/<name>", "web_file", page)


def _add_cors(app: Flask, origins: str | list[str]) -> None:
    from flask_cors import CORS

    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    CORS(
        app,
        resources={r"/v1/*": {"origins": "*" if "*" in origins else origins}},
        allow_headers=["Content-Type", "X-API-Key"],
        methods=["GET", "POST"],
        max_age=600,
    )

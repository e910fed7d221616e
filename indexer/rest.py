"""The REST API, versioned under /v1, and the web demo at /, as a Flask app.

    from indexer.rest import create_app
    app = create_app("projects.cfg", api_key="secret")

`indexer serve` runs it under waitress. Endpoints, parameters and errors are
described by the OpenAPI document at /v1/openapi.json (indexer/openapi.py).
Here: the app, problem+json errors, headers, the web page, CORS and serving;
the endpoints are in indexer/rest_api.py, request parsing in
indexer/rest_input.py, access control and model (re)loading in
indexer/rest_models.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from flask import Flask, Response, current_app, g, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from indexer.errors import ConfigError, IndexerError, NotFoundError, UsageError
from indexer.openapi import PROBLEM, openapi_document
from indexer.project import Projects
from indexer.rest_api import v1
from indexer.rest_models import ServedProjects

ENV_API_KEY = "INDEXER_API_KEY"
ENV_CORS_ORIGINS = "INDEXER_CORS_ORIGINS"
DEFAULT_MAX_CONTENT_LENGTH = 5 * 1024 * 1024
DEFAULT_MAX_BATCH = 32
WEB_DIR = Path(__file__).resolve().parents[1] / "web"
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
    "ConfigError": "configuration",
    "DependencyError": "missing-dependency",
    "Unauthorized": "unauthorized",
    "Forbidden": "forbidden",
}

log = logging.getLogger("indexer.rest")


def create_app(
    projects_path: str | os.PathLike | None = None,
    *,
    projects: Projects | None = None,
    api_key: str | None = None,
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
    max_batch: int = DEFAULT_MAX_BATCH,
    cors_origins: str | list[str] | None = None,
    preload: bool = False,
    check_interval: float | None = 2.0,
    web_dir: str | os.PathLike | None = WEB_DIR,
) -> Flask:
    """The WSGI app serving the projects of `projects_path` (see load_config).

    api_key (default: $INDEXER_API_KEY) opens private projects and reloads;
    cors_origins (default: $INDEXER_CORS_ORIGINS) is "*" or a comma-separated
    list of origins allowed to call /v1 from a browser; check_interval is how
    often (seconds) a project's model is checked for a newer training (None:
    never); preload loads every model now instead of on first use.
    """
    app = Flask("indexer", static_folder=None)
    projects = projects or Projects.from_path(projects_path)
    if api_key is None:
        api_key = os.environ.get(ENV_API_KEY)
    served = ServedProjects(projects, api_key, check_interval)
    app.config.update(
        MAX_CONTENT_LENGTH=max_content_length,
        MAX_FORM_MEMORY_SIZE=max_content_length,
        INDEXER_MAX_BATCH=max_batch,
        INDEXER_OPENAPI=openapi_document(max_batch, max_content_length),
    )
    app.extensions["indexer"] = served
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.register_blueprint(v1)
    app.register_error_handler(IndexerError, _indexer_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_check_length)
    app.after_request(_add_headers)
    if web_dir is not None:
        _add_web(app, Path(web_dir))
    if cors_origins is None:
        cors_origins = os.environ.get(ENV_CORS_ORIGINS)
    if cors_origins:
        _add_cors(app, cors_origins)
    if preload:
        for line in served.preload():
            log.warning("Not ready: %s", line)
    return app


# -- errors ------------------------------------------------------------------


def problem(
    status: int, title: str, detail: str, kind: str | None = None, headers=None
) -> Response:
    """An application/problem+json response (RFC 9457)."""
    body = {
        "type": f"urn:indexer:problem:{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return Response(
        json.dumps(body),  # ASCII: details may quote what the caller sent
        status=status,
        mimetype=PROBLEM,
        headers=headers,
    )


def _indexer_error(exc: IndexerError) -> Response:
    # a misconfigured project is the operator's problem, not the caller's
    status = 500 if isinstance(exc, ConfigError) else exc.status
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


def _check_length() -> None:
    g.started = time.perf_counter()
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


# -- serving ------------------------------------------------------------------


def make_server(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 5000,
    threads: int = 4,
    **options,
):
    """A waitress server for `app` (port 0: any free port; see .effective_port);
    `options` are further waitress settings."""
    from waitress import create_server

    limit = app.config["MAX_CONTENT_LENGTH"]
    # bodies somewhat over the limit reach the app, which answers with a
    # problem+json 413; far larger ones waitress refuses by itself
    options.setdefault("max_request_body_size", max(4 * limit, 64 * 1024 * 1024))
    return create_server(
        app, host=host, port=port, threads=threads, ident="indexer", **options
    )


def run(
    projects: Projects,
    host: str = "127.0.0.1",
    port: int = 5000,
    threads: int = 4,
    workers: int = 1,
    dev: bool = False,
    preload: bool = True,
    **settings,
) -> None:
    """Serve until interrupted: waitress (in `workers` processes), or Flask's
    development server."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.get("check_interval") == 0:
        settings["check_interval"] = None
    public = sum(c.access == "public" for c in projects.config.projects.values())
    if workers > 1 and not dev:
        _run_workers(projects, host, port, threads, workers, public, preload, settings)
        return
    app = create_app(projects=projects, preload=preload, **settings)
    if dev:
        _announce(f"http://{host}:{port}/", public, "Flask's development server")
        app.run(host=host, port=port, threaded=True)
        return
    server = make_server(app, host=host, port=port, threads=threads)
    url = f"http://{server.effective_host}:{server.effective_port}/"
    _announce(url, public, f"waitress, {threads} threads")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _announce(url: str, public: int, how: str) -> None:
    print(f"Serving {public} public projects on {url} ({how})", file=sys.stderr)
    sys.stderr.flush()


def _run_workers(
    projects: Projects,
    host: str,
    port: int,
    threads: int,
    workers: int,
    public: int,
    preload: bool,
    settings: dict,
) -> None:
    """Fork `workers` processes that accept on one socket, each with its own
    models (Python runs one thread at a time: more cores need processes).

    The workers start one after another, so the first one alone writes what
    loading may write (a vocabulary, an index) and the others read it; nothing
    heavy is loaded before the fork, which thread pools do not survive.
    """
    import signal
    import socket

    if not hasattr(os, "fork"):
        raise UsageError("--workers needs fork(): use one worker with --threads")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{url_host}:{sock.getsockname()[1]}/"
    children: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for _ in range(workers):
            ready, tell = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(ready)
                _worker(projects, sock, threads, preload, settings, tell)
            os.close(tell)
            children.append(pid)
            with os.fdopen(ready, "rb") as pipe:
                if pipe.read(1) != b"1":
                    raise IndexerError(f"A worker could not start (see above): {url}")
        sock.close()
        _announce(url, public, f"waitress, {workers} processes x {threads} threads")
        pid, status = os.wait()  # one worker ending ends the server
        log.error("Worker %d ended (status %d): stopping the others", pid, status)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)


def _worker(projects, sock, threads: int, preload: bool, settings, tell: int):
    """A forked worker: load, tell the parent, serve; never returns."""
    import signal
    import traceback

    from waitress import create_server

    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        app = create_app(projects=projects, preload=preload, **settings)
        limit = app.config["MAX_CONTENT_LENGTH"]
        server = create_server(
            app,
            sockets=[sock],
            threads=threads,
            ident="indexer",
            max_request_body_size=max(4 * limit, 64 * 1024 * 1024),
        )
        os.write(tell, b"1")
        os.close(tell)
        server.run()
        code = 0
    except BaseException:  # noqa: BLE001 - a worker must never return
        traceback.print_exc()
    finally:
        os._exit(code)

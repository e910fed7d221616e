"""Serving the REST app: waitress in one process or several forked workers,
or Flask's development server."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from flask import Flask

from indexer.errors import IndexerError, UsageError
from indexer.project import Projects
from indexer.rest.app import create_app

log = logging.getLogger("indexer.rest")
QUEUE_LOG_INTERVAL = 60.0


class EveryInterval(logging.Filter):
    """Lets one record through per `interval` seconds and counts the others:
    under load waitress warns "Task queue depth is N" for every request."""

    def __init__(self, interval: float = QUEUE_LOG_INTERVAL):
        super().__init__()
        self.interval = interval
        self.last = float("-inf")
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} such warnings not shown)"
        self.last, self.dropped = now, 0
        return True


def quiet_queue_warnings(interval: float = QUEUE_LOG_INTERVAL) -> None:
    """At most one waitress queue-depth warning per `interval` seconds."""
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, EveryInterval) for f in queue_log.filters):
        queue_log.addFilter(EveryInterval(interval))


def _waitress_options(app: Flask) -> dict:
    limit = app.config["MAX_CONTENT_LENGTH"]
    # bodies somewhat over the limit reach the app, which answers with a
    # problem+json 413; far larger ones waitress refuses by itself
    return {"ident": "indexer", "max_request_body_size": max(4 * limit, 64 << 20)}


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

    quiet_queue_warnings()
    options = {**_waitress_options(app), **options}
    return create_server(app, host=host, port=port, threads=threads, **options)


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
        quiet_queue_warnings()
        server = create_server(
            app, sockets=[sock], threads=threads, **_waitress_options(app)
        )
        os.write(tell, b"1")
        os.close(tell)
        server.run()
        code = 0
    except BaseException:  # noqa: BLE001 - a worker must never return
        traceback.print_exc()
    finally:
        os._exit(code)

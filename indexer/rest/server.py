"""Serving the REST app: waitress in one process, gunicorn with several
(indexer/rest/prefork.py; waitress in forked workers where gunicorn is not
installed), or Flask's development server.

With several processes /metrics adds up every worker's counts through
prometheus_client's multiprocess mode, in a fresh directory per server.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib.util import find_spec

from flask import Flask

from indexer.errors import IndexerError, UsageError
from indexer.project import Projects
from indexer.rest.app import PRELOAD_IN_BACKGROUND, create_app
from indexer.rest.logs import configure_logging
from indexer.rest.metrics import ENV_MULTIPROC_DIR, process_dead

log = logging.getLogger("indexer.rest")
QUEUE_LOG_INTERVAL = 60.0
SERVERS = ("auto", "waitress", "gunicorn")


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


def problem_errors() -> None:
    """waitress's own error answers (a malformed request, headers too large:
    the app never sees those) as problem+json, like the app's, rather than
    waitress's plain text; waitress has no hook for them, so its error class
    gets this method for good."""
    import json

    from waitress.utilities import Error

    def to_response(self, ident=None):
        body = {
            "type": "about:blank",
            "title": self.reason,
            "status": self.code,
            "detail": self.body or self.reason,
        }
        headers = [
            ("Content-Type", "application/problem+json"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return f"{self.code} {self.reason}", headers, json.dumps(body).encode()

    Error.to_response = to_response


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
    problem_errors()
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
    server: str = "auto",
    log_format: str = "text",
    **settings,
) -> None:
    """Serve until interrupted: waitress in one process, gunicorn in `workers`
    (server "auto"; "waitress" or "gunicorn" to choose), or Flask's
    development server. One process answers while its models load (see
    /v1/ready); gunicorn's master loads them before it forks the workers."""
    configure_logging(log_format)
    if settings.get("check_interval") == 0:
        settings["check_interval"] = None
    settings["log_requests"] = log_format == "json"
    public = sum(c.access == "public" for c in projects.config.projects.values())
    announce = _announcer(public, log_format)
    chosen = "dev" if dev else _choose_server(server, workers)
    check_address(host, port)
    several = chosen == "gunicorn" or (chosen == "waitress" and workers > 1)
    args = (projects, host, port, threads, workers, announce, preload, settings)
    with _metrics_directory(several):
        if chosen == "gunicorn":
            _run_gunicorn(*args)
        elif several:
            _run_workers(*args)
        else:
            _run_one(*args, dev=dev)


def check_address(host: str, port: int) -> None:
    """Fail now, in words, where the server could not listen on (host, port):
    a port in use (exit 1), an address not of this machine (exit 2)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as the servers bind: a port in TIME_WAIT is free to them
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise _address_error(host, port, exc) from None


def _address_error(host: str, port: int, exc: OSError) -> IndexerError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return IndexerError(
            f"Port {port} on {host} is in use by another program: stop it, or "
            "choose another --port"
        )
    if exc.errno == errno.EACCES:
        return IndexerError(
            f"No permission to listen on {where}: ports below 1024 need "
            "privileges; choose a --port from 1024 up"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(
            f"--host {host} is not an address of this machine: use one of its "
            "addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        )
    return IndexerError(f"Cannot listen on {where}: {exc.strerror or exc}")


def _choose_server(server: str, workers: int) -> str:
    """waitress for one process; gunicorn for several where it can run."""
    if server not in SERVERS:
        raise UsageError(f"--server must be one of {', '.join(SERVERS)}")
    if server == "waitress" or (server == "auto" and workers == 1):
        return "waitress"
    if not hasattr(os, "fork"):
        if server == "gunicorn":
            raise UsageError("gunicorn needs fork(): use --server waitress")
        raise UsageError("--workers needs fork(): use one worker with --threads")
    if find_spec("gunicorn") is None:
        if server == "gunicorn":
            raise UsageError("gunicorn is not installed: pip install gunicorn")
        log.warning("gunicorn is not installed: serving with waitress workers")
        return "waitress"
    return "gunicorn"


@contextlib.contextmanager
def _metrics_directory(several: bool) -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for several processes (set before
    prometheus_client is imported, which reads it then), removed at the end;
    none for one, whose own counts are the server's."""
    if not several:
        os.environ.pop(ENV_MULTIPROC_DIR, None)
        yield
        return
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client was imported early: /metrics shows one worker")
    owner, path = os.getpid(), tempfile.mkdtemp(prefix="indexer-metrics-")
    os.environ[ENV_MULTIPROC_DIR] = path
    try:
        yield
    finally:
        # a forked worker unwinds through here too: only the server cleans up
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def _run_gunicorn(
    projects: Projects,
    host: str,
    port: int,
    threads: int,
    workers: int,
    announce: Callable[[str, str], None],
    preload: bool,
    settings: dict,
) -> None:
    """gunicorn's pre-fork workers, the models loaded first in the master."""
    from indexer.rest import prefork

    # tokenizers would warn in every worker that parallelism was used before
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = create_app(projects=projects, preload=preload, **settings)
    processes = f"{workers} process" + ("es" if workers > 1 else "")
    how = f"gunicorn, {processes} x {threads} threads"
    prefork.serve(app, host, port, workers, threads, lambda url: announce(url, how))


def _run_one(
    projects: Projects,
    host: str,
    port: int,
    threads: int,
    workers: int,
    announce: Callable[[str, str], None],
    preload: bool,
    settings: dict,
    dev: bool = False,
) -> None:
    """One process (`workers` is 1): it answers (health, readiness) while its
    models load."""
    preload = PRELOAD_IN_BACKGROUND if preload else False
    app = create_app(projects=projects, preload=preload, **settings)
    if dev:
        announce(_http_url(host, port), "Flask's development server")
        app.run(host=host, port=port, threaded=True)
        return
    try:
        server = make_server(app, host=host, port=port, threads=threads)
    except OSError as exc:  # taken since check_address
        raise _address_error(host, port, exc) from None
    url = _http_url(server.effective_host, server.effective_port)
    announce(url, f"waitress, {threads} threads")
    # SIGTERM (how a service manager or Kubernetes stops it) ends it cleanly
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _http_url(host: str, port: int) -> str:
    """The URL of a server at `host`, an IPv6 address in brackets
    (http://[::1]:5000/), so that it can be opened as printed."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _announcer(public: int, log_format: str) -> Callable[[str, str], None]:
    """Says where the server listens: a line on stderr, or a JSON log record
    where every line must be JSON."""

    def announce(url: str, how: str) -> None:
        line = f"Serving {public} public projects on {url} ({how})"
        if log_format == "json":
            log.info(line)
        else:
            print(line, file=sys.stderr)
            sys.stderr.flush()

    return announce


def _run_workers(
    projects: Projects,
    host: str,
    port: int,
    threads: int,
    workers: int,
    announce: Callable[[str, str], None],
    preload: bool,
    settings: dict,
) -> None:
    """Fork `workers` processes that accept on one socket, each with its own
    models (Python runs one thread at a time: more cores need processes).

    The workers start one after another, so the first one alone writes what
    loading may write (a vocabulary, an index) and the others read it; nothing
    heavy is loaded before the fork, which thread pools do not survive.
    """
    import socket

    if not hasattr(os, "fork"):
        raise UsageError("--workers needs fork(): use one worker with --threads")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:  # taken since check_address
        raise _address_error(host, port, exc) from None
    url = _http_url(host, sock.getsockname()[1])
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
        announce(url, f"waitress, {workers} processes x {threads} threads")
        pid, status = os.wait()  # one worker ending ends the server
        children.remove(pid)
        process_dead(pid)
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited ({code})"
        log.error("Worker %d %s: stopping the others", pid, how)
        # a failure, so that a service manager (Restart=on-failure) restarts it
        raise IndexerError(f"Worker process {pid} {how}, so the server stopped")
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
            process_dead(child)


def _worker(projects, sock, threads: int, preload: bool, settings, tell: int):
    """A forked worker: load, tell the parent, serve; never returns."""
    from waitress import create_server

    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        app = create_app(projects=projects, preload=preload, **settings)
        metrics = app.extensions.get("indexer_metrics")
        if metrics is not None:
            metrics.worker_started()
        quiet_queue_warnings()
        problem_errors()
        server = create_server(
            app, sockets=[sock], threads=threads, **_waitress_options(app)
        )
        os.write(tell, b"1")
        os.close(tell)
        server.run()
        code = 0
    except BaseException:  # noqa: BLE001 - a worker must never return
        log.exception("Worker %d failed", os.getpid())
    finally:
        os._exit(code)

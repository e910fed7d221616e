"""Several worker processes with gunicorn: the app and its models are made once
in the master, before the fork, so that the workers share those pages.

Fork safety with torch: OpenMP keeps a thread pool per thread that ran a
parallel operation. The master runs torch while loading (an `embed`
project's concept index is encoded then), and in a forked worker the copy of
that thread, the worker's main thread, hangs on its next parallel operation
with more than one thread; any other thread starts a pool of its own and is
safe. gunicorn's gthread workers answer requests on pool threads, never on
the main one, so sharing the master's loaded models is safe; each worker
gets its share of the cores for torch and faiss, so that the processes do
not oversubscribe them. Imported only when gunicorn serves.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from flask import Flask
from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication

from indexer.rest.metrics import process_dead

log = logging.getLogger("indexer.rest")


class _Logger(glogging.Logger):
    """gunicorn's own messages through the root logger's handler, so that they
    come out as the server's others do (text or JSON)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


class _Server(BaseApplication):
    """gunicorn serving an app made already (preload_app: before the fork)."""

    def __init__(self, app: Flask, options: dict):
        self.app, self.options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # a setting older versions lack
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answers (a malformed request line, headers too
    large: the app never sees those) as problem+json, like the app's, rather
    than gunicorn's HTML page."""
    import json

    body = json.dumps(
        {
            "type": "about:blank",
            "title": reason,
            "status": status_int,
            "detail": mesg or reason,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def share_cores(workers: int) -> None:
    """torch and faiss in this worker on its share of the cores, also where
    they are imported only later."""
    from indexer.parallel import available_cores

    threads = max(1, available_cores() // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_serving_master: int | None = None
_holding = False  # the stop signals are blocked over a fork of the master


def stop_booting_workers_at_once(master: int) -> None:
    """Make the workers that `master` forks end at once on a stop signal
    until gunicorn installs their own handlers. A forked worker inherits the
    master's handlers, which queue the signal in the master's queue, a copy
    nobody reads: a stop that came while a worker booted was lost, and the
    master waited its whole graceful timeout (30 s) to kill it. The master
    holds the stop signals over each fork, so that one sent to the new worker
    before its handler is set waits for it rather than being dropped.
    Nothing is in flight before the worker's own handlers are set."""
    global _serving_master
    if _serving_master is None:
        os.register_at_fork(
            before=_hold_stops,
            after_in_parent=_release_stops,
            after_in_child=_end_on_stops,
        )
    _serving_master = master


def _hold_stops() -> None:
    global _holding
    if os.getpid() == _serving_master:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        _holding = True


def _release_stops() -> None:
    global _holding
    if _holding:
        _holding = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _end_on_stops() -> None:
    global _holding
    if _holding:  # a fork of the master: the signals are still held here
        _holding = False
        for stop in _STOP_SIGNALS:
            signal.signal(stop, lambda *_: os._exit(0))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def serve(
    app: Flask,
    host: str,
    port: int,
    workers: int,
    threads: int,
    announce: Callable[[str], None],
) -> None:
    """Serve `app` with gunicorn until stopped (SIGTERM, SIGINT): `workers`
    processes with `threads` threads each; `announce(url)` once it listens."""
    # gunicorn has no hook for its error pages: its workers call this
    # function of its util module, which this server replaces for good
    util.write_error = write_problem
    master = os.getpid()
    stop_booting_workers_at_once(master)
    metrics = app.extensions.get("indexer_metrics")

    def when_ready(arbiter) -> None:
        bound_host, bound_port = arbiter.LISTENERS[0].sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        announce(f"http://{url_host}:{bound_port}/")
        process_dead(master)  # whatever the master wrote is no worker's

    def post_fork(arbiter, worker) -> None:
        share_cores(workers)
        if metrics is not None:
            metrics.worker_started()

    def child_exit(arbiter, worker) -> None:
        process_dead(worker.pid)

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        # requests on pool threads, never the main one (see above); its main
        # thread heartbeats meanwhile, so a long suggestion (an LLM's) is not
        # taken for a hung worker
        "worker_class": "gthread",
        "preload_app": True,
        "backlog": 2048,
        "keepalive": 5,
        "proc_name": "indexer",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": _Logger,
        # a runtime control socket in $HOME is not ours to open
        "control_socket_disable": True,
        "when_ready": when_ready,
        "post_fork": post_fork,
        "child_exit": child_exit,
    }
    _Server(app, options).run()

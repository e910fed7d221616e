"""Model servers for the tests: `transformers serve` started for real on a
free loopback port, and a small HTTP server that fails on purpose (an error
status, a malformed answer, no answer in time, a connection cut mid-request)
in the ways a real server fails."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SERVE = "from transformers.cli.transformers import main; main()"


def serving_available() -> bool:
    """`transformers serve` with the System One endpoint can run here."""
    needed = ("fastapi", "uvicorn", "openai", "transformers.decision")
    try:
        return all(importlib.util.find_spec(m) is not None for m in needed)
    except ModuleNotFoundError:
        return False


needs_serving = pytest.mark.skipif(
    not serving_available(),
    reason="transformers serve is not installed: pip install 'transformers[serving]'",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(
    model: Path,
    decision_config: Path | None = None,
    timeout: float = 120,
    device: str = "cpu",
) -> Iterator[str]:
    """`transformers serve MODEL` on a free port (on the CPU in float32, or on
    `device` in the model's dtype); yields its root URL once /health answers,
    and stops it (its whole process group) at the end."""
    port = free_port()
    dtype = "float32" if device == "cpu" else "auto"
    command = [
        sys.executable, "-c", SERVE, "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--device", device, "--dtype", dtype, "--log-level", "warning",
    ]  # fmt: skip
    if decision_config is not None:
        command += ["--decision-config", str(decision_config)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_for_health(url, process, log, timeout)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def _wait_for_health(url: str, process, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"transformers serve exited: {log.read()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"transformers serve did not answer /health in {timeout} s")


class FaultyServer:
    """A loopback HTTP server whose answers a test sets: `status` and `body`,
    `delay` seconds before answering, or `cut` (read the request, then close
    the connection without a word, as a server killed mid-request does).
    `requests` counts what arrived."""

    def __init__(self):
        self.status, self.body, self.delay, self.cut = 200, b"{}", 0.0, False
        self.requests = 0
        faulty = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                faulty.requests += 1
                if faulty.cut:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                time.sleep(faulty.delay)
                with contextlib.suppress(OSError):  # the client may have gone
                    self.send_response(faulty.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(faulty.body)))
                    self.end_headers()
                    self.wfile.write(faulty.body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, status: int = 200, body=None, delay: float = 0.0, cut=False):
        self.status, self.delay, self.cut = status, delay, cut
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()

    def __enter__(self) -> FaultyServer:
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class HostileServer:
    """A loopback HTTP server that answers every request with `respond(handler)`,
    which writes what a test wants to the raw connection: a redirect, an
    answer dripped one byte at a time, an endless body. `requests` counts what
    arrived, `headers` keeps each request's headers, `most_at_once` the most
    requests it handled at the same time, and `hung_up` is set when the
    client closed the connection while the server was still writing."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler], None]):
        self.requests, self.headers = 0, []
        self.hung_up = threading.Event()
        self.most_at_once, self._at_once = 0, 0
        self._lock = threading.Lock()
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hostile._lock:
                    hostile.requests += 1
                    hostile.headers.append(dict(self.headers))
                    hostile._at_once += 1
                    hostile.most_at_once = max(hostile.most_at_once, hostile._at_once)
                try:
                    respond(self)
                except OSError:  # the client went away mid-answer
                    hostile.hung_up.set()
                finally:
                    with hostile._lock:
                        hostile._at_once -= 1
                self.close_connection = True

            do_GET = do_POST  # a client that follows a redirect may switch to GET

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_idle(self, timeout: float) -> bool:
        """Whether every request it took has been answered (or abandoned)
        within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._at_once and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._at_once

    def __enter__(self) -> HostileServer:
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

"""JSON over HTTP to a model server (System One decisions, chat completions)
that cannot hang a caller, flood a busy server or leak its key: a server
that is down, slow, dripping, redirecting, restarting or answering nonsense
ends in one `ServiceError` that names the server and what it answered,
never in a traceback or a hang.

    server = ModelServer("http://localhost:8000", api_key="", timeout=30)
    answer = server.post("/v1/systemone", body, parse=read_answers)

What one call may cost is bounded:

- time: `timeout` is the deadline of a whole request (connect, send, every
  read), enforced by closing the connection when it passes, so a server that
  drips one byte at a time cannot keep the caller; waiting for a free slot
  (below) is not counted;
- size: an answer longer than `max_answer_bytes` is refused while it streams
  in, and one nested deeper than `MAX_DEPTH` is refused before it is parsed;
- retries: at most `MAX_RETRIES`, after a wait that doubles from `backoff` up
  to `MAX_BACKOFF` seconds (a server's Retry-After within that cap). A
  request that ran out of time is not repeated: its connection is closed (the
  server may cancel it), and repeating it would queue the same work behind
  the abandoned one on a server that is already too slow;
- load: all clients of one server (the same root URL) in this process share
  one gate of `concurrency` requests in flight (the smallest that any of them
  asks for), so retries and parallel documents never queue extra work there;
- failures: they also share one `CircuitBreaker`. Once a call has failed
  (its retries spent), further calls fail at once, without asking the
  server, for `cooldown` seconds; then one trial call is let through, and its
  success closes the breaker again. A backend that survives a failing server
  (`on_error = retrieval`) thus pays the retry budget once, not per document.

Redirects are never followed: a 3xx is a ServiceError that names where it
pointed, so the API key is only ever sent to the URL that was configured.
A URL with a user name, password, query or fragment is refused.

A backend whose model may run on a server declares its parameters by
inheriting `ModelServerParams`, and `configured_server(params, where)` turns
them into a `ModelServer`.
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from indexer.errors import ConfigError, ServiceError
from indexer.params import param

#: statuses worth another try: the server is overloaded, restarting or broken
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}
MAX_RETRIES = 5  # further attempts after a failed one, at most
MAX_BACKOFF = 10.0  # seconds: the longest wait before a retry, Retry-After included
MAX_ANSWER_BYTES = 4 * 2**20  # a decision or a chat answer is a few KiB
MAX_DEPTH = 64  # levels of nested JSON arrays and objects in an answer
COOLDOWN = 30.0  # seconds a failed server is left alone before a trial call
_CHUNK = 64 * 2**10


class _Failed(Exception):
    """A failed attempt; `retry` says whether another attempt may fare better."""

    def __init__(
        self, message: str, retry: bool = True, retry_after=None, late: bool = False
    ):
        super().__init__(message)
        self.retry, self.retry_after, self.late = retry, retry_after, late


class _Refused(Exception):
    """The server answered, and said no: asking again gets the same answer."""


@dataclass(frozen=True)
class ModelServer:
    """An HTTP model server at `url` (its root, with or without `/v1`); see the
    module's docstring for what bounds each call. The key never shows in a
    repr."""

    url: str
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0  # seconds for one whole request
    retries: int = 2
    backoff: float = 0.5  # seconds before the first retry, doubled after each
    concurrency: int = 4  # requests in flight to this server, process-wide
    max_answer_bytes: int = MAX_ANSWER_BYTES
    cooldown: float = COOLDOWN  # seconds a failed server is left alone

    def __post_init__(self):
        object.__setattr__(self, "url", server_root(self.url))
        if not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be 0 to {MAX_RETRIES}, not {self.retries}")
        if not self.timeout > 0 or self.concurrency < 1 or self.max_answer_bytes < 1:
            raise ValueError("timeout, concurrency and max_answer_bytes must be > 0")

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker that every client of this server's URL shares."""
        return _shared(self).breaker

    def post(
        self, path: str, body: dict, parse: Callable[[Any], Any] = lambda answer: answer
    ) -> Any:
        """`parse` of the JSON answer to `body`; `parse` raises ValueError on an
        answer of the wrong shape, which counts as a failed attempt."""
        shared = _shared(self)
        where = self.url + path
        data = json.dumps(body).encode()
        trial = shared.breaker.admit()
        attempts = 1 if trial else self.retries + 1
        made, wait = 0, 0.0
        try:
            for attempt in range(attempts):
                if attempt:
                    time.sleep(wait)
                    shared.breaker.admit(retrying=True)  # another call saw it fail
                made += 1
                try:
                    with shared.gate:
                        answer = self._post_once(path, data, parse)
                except _Refused as exc:
                    shared.breaker.answered(trial)
                    raise ServiceError(
                        f"The model server {where} refused the request: "
                        + self._unkeyed(str(exc))
                    ) from None
                except _Failed as exc:
                    last = exc
                    if exc.late:
                        shared.gate.slow_down()
                    if not exc.retry:
                        break
                    wait = min(MAX_BACKOFF, self.backoff * 2**attempt)
                    if exc.retry_after is not None:
                        wait = min(MAX_BACKOFF, max(wait, exc.retry_after))
                    continue
                shared.gate.answered()
                shared.breaker.answered(trial)
                return answer
            tries = "once" if made == 1 else f"{made} times"
            message = (
                f"The model server {where} failed (tried {tries}): "
                + self._unkeyed(str(last))
            )
            shared.breaker.failed(message, trial)
            raise ServiceError(message)
        finally:
            shared.breaker.release(trial)

    def _unkeyed(self, text: str) -> str:
        """`text` quoted from the server without the API key: a server or a
        proxy that echoes the Authorization header in an error would put the
        key into a message, a log or a REST answer."""
        if not self.api_key:
            return text
        key = clean_text(self.api_key, limit=len(self.api_key))
        for secret in {self.api_key, key}:
            text = text.replace(secret, "(the API key)")
        # quoted text cut to its length limit: no 4 or more of the key's first
        # characters before the cut either
        head = text.removesuffix("...")
        for n in range(min(len(key), len(head)) - 1, 3, -1):
            if head.endswith(key[:n]):  # the cut went through the key
                return head[:-n] + "(the API key)..."
        return text

    def _post_once(self, path: str, data: bytes, parse) -> Any:
        from urllib3.connection import HTTPConnection, HTTPSConnection

        parts = urlsplit(self.url)
        connection_class = (
            HTTPSConnection if parts.scheme == "https" else HTTPConnection
        )
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        deadline = _Deadline(self.timeout)
        connected, response = False, None
        try:
            connection.connect()
            connected = True
            deadline.watch(connection.sock)
            connection.request(
                "POST",
                parts.path + path,
                body=data,
                headers=headers,
                preload_content=False,
                decode_content=False,
            )
            response = connection.getresponse()
            _check_status(response)
            raw = _read_at_most(response, self.max_answer_bytes)
        except (_Failed, _Refused):
            raise
        except Exception as exc:  # noqa: BLE001 - every way a socket or HTTP breaks
            raise self._broken(exc, deadline.passed(), connected) from None
        finally:
            deadline.cancel()
            if response is not None:
                response.close()  # it holds the socket open, even past close()
            connection.close()
        if deadline.passed():  # the last byte came in late
            raise self._broken(TimeoutError(), True, True)
        try:
            return parse(decode_json(raw))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Failed(
                f"a malformed answer ({clean_text(str(exc))}): {clean_text(raw)}"
            ) from None

    def _broken(self, exc: Exception, late: bool, connected: bool) -> _Failed:
        """The failed attempt that `exc`, raised while connecting or talking
        to the server, amounts to."""
        from urllib3.exceptions import NewConnectionError
        from urllib3.exceptions import TimeoutError as Urllib3Timeout

        timed_out = isinstance(exc, TimeoutError | socket.timeout | Urllib3Timeout)
        if (late or timed_out) and not isinstance(exc, NewConnectionError):
            return _Failed(
                f"no answer within {self.timeout:g} s (abandoned, and not asked "
                "again: it may still be busy with it; a server that is slow "
                "rather than down needs a larger timeout or a smaller concurrency)",
                retry=False,
                late=True,
            )
        if not connected:
            cause = exc.__cause__ or exc.__context__ or exc
            reason = getattr(cause, "strerror", None) or type(cause).__name__
            return _Failed(f"not reachable ({clean_text(reason)})")
        detail = clean_text(str(exc)) or type(exc).__name__
        return _Failed(f"the connection broke ({detail})")


def _check_status(response) -> None:
    """Raise for an answer that is not a 2xx, with what the server said."""
    status = response.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = response.headers.get("Location")
        where = f"to {shown_url(location)}" if location else "without a Location"
        raise _Refused(
            f"it answered HTTP {status}, a redirect {where}; redirects are not "
            "followed (the API key goes to the configured URL alone): set url to "
            "the address that answers"
        )
    detail = clean_text(response.read(2048))
    message = f"it answered HTTP {status}" + (f": {detail}" if detail else "")
    if status not in RETRIED_STATUSES:
        raise _Refused(message)
    raise _Failed(message, retry_after=retry_after(response.headers.get("Retry-After")))


def _read_at_most(response, limit: int) -> bytes:
    """The answer's body, refused (without reading it all) past `limit` bytes."""
    length = response.headers.get("Content-Length", "")
    too_long = _Failed(
        f"an answer longer than {limit} bytes (max_answer_bytes): not read",
        retry=False,
    )
    if length.strip().isdigit() and int(length) > limit:
        raise too_long
    chunks, size = [], 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


class _Deadline:
    """Shuts a connection's socket down once `seconds` have passed, which ends
    whatever blocking send or read is under way: a per-read timeout alone
    never ends an answer that comes in one byte at a time. (Connecting has
    its own timeout, the same `seconds`.)"""

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._over = self._done = False
        self._socket = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock) -> None:
        """Shut `sock` down when the time is up (at once if it is already)."""
        with self._lock:
            self._socket = sock
            if self._over:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            if not self._done:
                self._over = True
                self._shut()

    def _shut(self) -> None:
        # the socket itself: http.client drops the connection's reference to
        # it once the answer is to be read until the server closes
        if self._socket is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def passed(self) -> bool:
        """Whether the time ran out."""
        with self._lock:
            return self._over

    def cancel(self) -> None:
        """Stop watching (before the connection is closed)."""
        with self._lock:
            self._done = True
        self._timer.cancel()


class CircuitBreaker:
    """Remembers that a server failed, so that calls in the next `cooldown`
    seconds fail at once instead of each paying the retry budget again; then
    lets one trial call through (half-open), whose answer closes the breaker
    and whose failure opens it for another cool-down."""

    def __init__(self, cooldown: float = COOLDOWN):
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._until: float | None = None  # monotonic time; None while closed
        self._since = 0.0
        self._reason = ""
        self._trial = False

    @property
    def is_open(self) -> bool:
        """Whether calls now fail at once (a trial call may be under way)."""
        with self._lock:
            return self._until is not None

    def admit(self, retrying: bool = False) -> bool:
        """Whether this call is the trial of a half-open breaker; ServiceError
        while the breaker is open (or, for a retry, when it opened meanwhile)."""
        with self._lock:
            if self._until is None:
                return False
            now = time.monotonic()
            if now >= self._until and not self._trial and not retrying:
                self._trial = True
                return True
            raise ServiceError(self._message(now))

    def answered(self, trial: bool) -> None:
        """The server answered (even a refusal): it is up."""
        with self._lock:
            self._until = None
            if trial:
                self._trial = False

    def failed(self, reason: str, trial: bool) -> None:
        """A call failed with its retries spent: open for a cool-down."""
        with self._lock:
            now = time.monotonic()
            self._since, self._until, self._reason = now, now + self.cooldown, reason
            if trial:
                self._trial = False

    def release(self, trial: bool) -> None:
        """The end of a call, however it ended: a trial no longer runs."""
        if trial:
            with self._lock:
                self._trial = False

    def reset(self) -> None:
        """Forget every failure."""
        with self._lock:
            self._until, self._trial = None, False

    def _message(self, now: float) -> str:
        ago = now - self._since
        if now >= self._until:
            when = "a trial request is under way"
        else:
            left = self._until - now
            clock = time.strftime("%H:%M:%S", time.gmtime(time.time() + left))
            when = f"it is asked again after {clock} UTC (in {left:.0f} s)"
        return (
            f"{self._reason} -- {ago:.0f} s ago, so this request was not sent; {when}"
        )


class Gate:
    """At most `limit` requests in flight to one server from this process. The
    limit starts at `ceiling`, the smallest `concurrency` that any client of
    the server asked for. A request that ran out of time cuts it to 1, so
    that a server too slow for its load gets one request at a time from here
    (the next waits until nothing else is in flight); then each `limit`
    answers in a row raise it by one, back up to the ceiling."""

    def __init__(self, ceiling: int):
        self.ceiling = self.limit = ceiling
        self.in_flight = self._answered = 0
        self._free = threading.Condition()

    def lower(self, ceiling: int) -> None:
        """A client asks for at most `ceiling` in flight."""
        with self._free:
            self.ceiling = min(self.ceiling, ceiling)
            self.limit = min(self.limit, self.ceiling)

    def slow_down(self) -> None:
        """A request ran out of time: one at a time from now on."""
        with self._free:
            self.limit, self._answered = 1, 0

    def answered(self) -> None:
        """A request was answered in time."""
        with self._free:
            if self.limit < self.ceiling:
                self._answered += 1
                if self._answered >= self.limit:
                    self.limit, self._answered = self.limit + 1, 0
                    self._free.notify_all()

    def __enter__(self) -> None:
        with self._free:
            self._free.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    def __exit__(self, *exc) -> None:
        with self._free:
            self.in_flight -= 1
            self._free.notify_all()


@dataclass
class _Shared:
    gate: Gate
    breaker: CircuitBreaker


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _shared(server: ModelServer) -> _Shared:
    """The gate and breaker of `server`'s URL, the same for every client."""
    with _SHARED_LOCK:
        shared = _SHARED.get(server.url)
        if shared is None:
            shared = _SHARED[server.url] = _Shared(
                Gate(server.concurrency), CircuitBreaker(server.cooldown)
            )
        else:
            shared.gate.lower(server.concurrency)
        return shared


def forget_model_servers() -> None:
    """Forget the gates and breakers of every server (for tests and reloads)."""
    with _SHARED_LOCK:
        _SHARED.clear()


def server_root(url: str) -> str:
    """`url` as a server's root (http[s]://host[:port][/path], no `/v1`);
    ValueError, which never repeats a password or a query, for anything else."""
    text = url.strip()
    if " " in text or _CONTROLS.search(text):  # bidi overrides would disguise it
        raise ValueError(
            "the URL holds spaces, control or invisible formatting characters"
        )
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ValueError(
            "the URL holds a user name or password (user:password@), which is "
            "never sent: put the server's key in an environment variable and "
            "name it in api_key_env"
        )
    if "?" in text or "#" in text:
        raise ValueError(
            "the URL holds a query or a fragment (?... or #...): give the "
            "server's root, http://HOST:PORT"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{text}' is not an http:// or https:// URL")
    try:
        port = parts.port  # raises for a port that is no number or too large
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"'{text}' has a port that is not a number from 1 to 65535")
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}"


def shown_url(url: str) -> str:
    """`url` fit for a message: no user, password, query or control characters."""
    parts = urlsplit(clean_text(url, limit=300))
    host = parts.netloc.rpartition("@")[2]
    return (f"{parts.scheme}://{host}" if host else "") + parts.path


_ESCAPES = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])?"
)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")


def clean_text(text: str | bytes, limit: int = 200) -> str:
    """Text from a server, fit to quote in a message or a log: terminal escape
    sequences dropped, control characters (newlines, carriage returns, bidi
    overrides) as spaces, cut to `limit` characters."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    text = _CONTROLS.sub(" ", _ESCAPES.sub("", text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STRINGS = re.compile(r'"[^"]*"')


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of the JSON `text` nest, in one
    linear scan that recursion cannot exhaust (brackets inside strings do
    not count)."""
    # escapes first, so that every quote left delimits a string
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", unescaped))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def decode_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `raw` (UTF-8); ValueError for anything else,
    including a value nested deeper than `max_depth`."""
    text = raw.decode("utf-8")
    opened = text.count("[") + text.count("{")
    if opened > max_depth and json_depth(text) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    return json.loads(text)


def retry_after(value: str | None) -> float | None:
    """The seconds a Retry-After header asks for (a number or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class ModelServerParams:
    """The parameters of a backend whose model runs in this process
    (`engine = local`) or on a model server (any other engine), one
    definition for every such backend. A backend's Params inherit them and
    redeclare `model` and `engine` with their own help and choices; a
    redeclared field keeps its place, so every listing of parameters reads
    model, engine, then the server's settings, then the backend's own."""

    model: str = param(
        "auto",
        "the model: a packaged model, a local directory or a hub id; on a "
        "server, the model's name there",
    )
    engine: str = param(
        "local", "who runs the model: local (this process) or a model server"
    )
    url: str = param("", "server engines: the server's root URL (http://host:port)")
    api_key_env: str = param(
        "",
        "server engines: the environment variable that holds the server's API key",
    )
    timeout: float = param(
        60.0,
        "server engines: seconds for one whole request (connect, send, answer); "
        "one that runs out of time is abandoned and not repeated",
        min=0.1,
    )
    concurrency: int = param(
        4,
        "server engines: requests to the server in flight at once, across the "
        "whole process",
        min=1,
    )
    retries: int = param(
        2,
        "server engines: further attempts after a failed request (with backoff); "
        f"after the last, the server is left alone for {COOLDOWN:g} s",
        min=0,
        max=MAX_RETRIES,
    )


#: the settings of ModelServerParams that name the server (not the model)
SERVER_SETTINGS = ("url", "api_key_env", "timeout", "concurrency", "retries")


def configured_server(params: ModelServerParams, where: str) -> ModelServer:
    """The server that a backend's `url`, `api_key_env`, `timeout`,
    `concurrency` and `retries` name for its `engine` and `model`;
    ConfigError for a missing URL or model name, an unset key variable or a
    URL that is none."""
    engine = params.engine
    if not params.url:
        raise ConfigError(f"{where}: engine = {engine} needs url = http://HOST:PORT")
    if params.model == "auto":
        raise ConfigError(
            f"{where}: engine = {engine} needs model = the model's name on the server"
        )
    key = ""
    if params.api_key_env:
        key = os.environ.get(params.api_key_env, "")
        if not key:
            raise ConfigError(
                f"{where}: the environment variable {params.api_key_env} "
                "(api_key_env) that should hold the server's API key is not set"
            )
    try:
        return ModelServer(
            params.url,
            key,
            timeout=params.timeout,
            retries=params.retries,
            concurrency=params.concurrency,
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: url: {exc}") from None

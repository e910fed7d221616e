"""JSON over HTTP to a model server (System One decisions, chat completions),
with a timeout on every request and bounded retries with backoff: a server
that is down, slow, restarting or answering nonsense ends in one
`ServiceError` that names the server and what it answered, never in a
traceback or a hang. Only the standard library: no client package needed.

    server = ModelServer("http://localhost:8000", api_key="", timeout=30)
    answer = server.post("/v1/systemone", body, parse=read_answers)

A backend whose model may run on a server declares its parameters by
inheriting `ModelServerParams`, and `configured_server(params, where)` turns
them into a `ModelServer`.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from indexer.errors import ConfigError, ServiceError
from indexer.params import param

#: statuses worth another try: the server is overloaded, restarting or broken
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure that another attempt may not see."""


@dataclass(frozen=True)
class ModelServer:
    """An HTTP model server at `url` (its root, with or without `/v1`)."""

    url: str
    api_key: str = ""
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 0.5  # seconds before the first retry, doubled after each

    def __post_init__(self):
        root = self.url.strip().rstrip("/")
        if not root.startswith(("http://", "https://")):
            raise ValueError(f"'{self.url}' is not an http:// or https:// URL")
        object.__setattr__(self, "url", root.removesuffix("/v1"))

    def post(
        self, path: str, body: dict, parse: Callable[[Any], Any] = lambda answer: answer
    ) -> Any:
        """`parse` of the JSON answer to `body`; `parse` raises ValueError on an
        answer of the wrong shape, which counts as a failed attempt."""
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return self._post_once(path, body, parse)
            except _Transient as exc:
                last = str(exc)
                if attempt + 1 < attempts:
                    time.sleep(self.backoff * 2**attempt)
        tries = "once" if attempts == 1 else f"{attempts} times"
        raise ServiceError(
            f"The model server {self.url}{path} failed (tried {tries}): {last}"
        )

    def _post_once(self, path: str, body: dict, parse) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _short(exc.read())
            message = f"it answered HTTP {exc.code}: {detail}"
            if exc.code in RETRIED_STATUSES:
                raise _Transient(message) from None
            raise ServiceError(
                f"The model server {self.url}{path} refused the request: {message}"
            ) from None
        except TimeoutError:
            raise _Transient(f"no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _Transient(f"no answer within {self.timeout:g} s") from None
            raise _Transient(f"not reachable ({reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Transient(
                f"the connection broke ({exc or type(exc).__name__})"
            ) from None
        try:
            return parse(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise _Transient(f"a malformed answer ({exc}): {_short(raw)}") from None


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
        60.0, "server engines: seconds to wait for one answer", min=0.1
    )
    concurrency: int = param(
        4, "server engines: requests to the server in flight at once", min=1
    )
    retries: int = param(
        2,
        "server engines: further attempts after a failed request (with backoff)",
        min=0,
    )


#: the settings of ModelServerParams that name the server (not the model)
SERVER_SETTINGS = ("url", "api_key_env", "timeout", "concurrency", "retries")


def configured_server(params: ModelServerParams, where: str) -> ModelServer:
    """The server that a backend's `url`, `api_key_env`, `timeout` and
    `retries` name for its `engine` and `model`; ConfigError for a missing
    URL or model name, an unset key variable or a URL that is none."""
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
        return ModelServer(params.url, key, params.timeout, params.retries)
    except ValueError as exc:
        raise ConfigError(f"{where}: url: {exc}") from None


def _short(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."

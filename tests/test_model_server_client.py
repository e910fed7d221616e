"""The model-server client (`indexer.neural.http`) against real loopback
servers that misbehave on purpose: it follows no redirect (the API key stays
home), keeps to a deadline and a size cap, refuses deep nesting, shares one
gate and one circuit breaker per server, and never prints a secret or a
server's terminal escapes."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import tracemalloc

import pytest

from indexer.errors import ConfigError, ServiceError
from indexer.neural import http as model_http
from indexer.neural.chat import ChatClient
from indexer.neural.http import (
    ModelServer,
    ModelServerParams,
    configured_server,
    decode_json,
    forget_model_servers,
    json_depth,
)
from indexer.neural.systemone import SystemOneClient

from .model_servers import FaultyServer, HostileServer, free_port

DECISION = {"answers": {"q0": {"noul": 0.25}}}
CHAT = {"choices": [{"message": {"role": "assistant", "content": "astronomy"}}]}


def answer(handler, status: int = 200, body: bytes = b"{}", **headers) -> None:
    """Write a whole HTTP answer."""
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def ask(url: str, **settings):
    """One System One question to `url`, as llm_rank asks it."""
    server = ModelServer(url, api_key="TOPSECRETKEY", **settings)
    return SystemOneClient(server, "m", concurrency=1).noul("A text.", ["Is it?"])


# -- redirects -----------------------------------------------------------------
@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("client", ["systemone", "chat"])
def test_a_redirect_is_not_followed_and_the_key_stays_home(status, client):
    with HostileServer(lambda h: answer(h, 200, json.dumps(CHAT).encode())) as other:
        target = f"{other.url}/steal?token=abc"
        with HostileServer(lambda h: answer(h, status, Location=target)) as server:
            configured = ModelServer(server.url, api_key="TOPSECRETKEY", retries=2)
            with pytest.raises(ServiceError) as caught:
                if client == "chat":
                    ChatClient(configured, "m").complete([[]], max_tokens=8)
                else:
                    SystemOneClient(configured, "m").noul("A text.", ["Is it?"])
    message = caught.value.message
    assert f"HTTP {status}, a redirect to {other.url}/steal" in message
    assert "token" not in message and "TOPSECRETKEY" not in message
    assert other.requests == 0  # nothing, and no key, went to the other host
    assert server.requests == 1  # a refusal: not retried


# -- time ----------------------------------------------------------------------
def drip_body(handler) -> None:
    """A valid header, then the body one byte every 0.2 s."""
    body = json.dumps(DECISION).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


def drip_header(handler) -> None:
    """The status line and headers themselves one byte every 0.2 s."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


@pytest.mark.parametrize("drip", [drip_body, drip_header], ids=["body", "header"])
def test_a_dripping_server_ends_at_the_deadline_and_is_hung_up_on(drip):
    with HostileServer(drip) as server:
        started = time.monotonic()
        with pytest.raises(ServiceError, match=r"tried once\): no answer within 1 s"):
            ask(server.url, timeout=1, retries=2)
        took = time.monotonic() - started
        assert server.hung_up.wait(2)  # the connection was closed, not left open
    assert server.requests == 1  # a timed-out request is not repeated
    # one deadline for the whole answer: dripped to the end, it takes 7-23 s
    assert 1 <= took < 5


# -- size ----------------------------------------------------------------------
FIFTY_MIB = 50 * 2**20
BLOCK = b" " * 2**20  # allocated once, before any measuring


def endless(handler, declared: bool) -> None:
    """A 50 MiB answer, its length declared or not."""
    handler.send_response(200)
    if declared:
        handler.send_header("Content-Length", str(FIFTY_MIB))
    handler.end_headers()
    for _ in range(FIFTY_MIB // len(BLOCK)):
        handler.wfile.write(BLOCK)


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "streamed"])
def test_a_huge_answer_is_refused_without_being_read(declared):
    with HostileServer(lambda h: endless(h, declared)) as server:
        tracemalloc.start()
        try:
            with pytest.raises(ServiceError, match="longer than 4194304 bytes"):
                ask(server.url, timeout=20, retries=2)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.hung_up.wait(5)  # the client stopped reading and hung up
    assert peak < 12 * 2**20
    assert server.requests == 1  # too long once is too long again


# -- nesting -------------------------------------------------------------------
def test_a_deeply_nested_answer_is_a_malformed_answer_for_both_clients():
    deep = b"[" * 100000
    with HostileServer(lambda h: answer(h, 200, deep)) as server:
        configured = ModelServer(server.url, retries=0)
        with pytest.raises(ServiceError, match="malformed answer.*nested deeper"):
            SystemOneClient(configured, "m").noul("A text.", ["Is it?"])
        forget_model_servers()
        with pytest.raises(ServiceError, match="malformed answer.*nested deeper"):
            ChatClient(configured, "m").complete([[]], max_tokens=8)


def test_json_depth_counts_structure_not_brackets_in_strings():
    assert json_depth('{"a": [[1], {"b": "[[[{{{"}]}') == 3
    assert json_depth(r'["\\", "\"[[[", [[]]]') == 3
    nested = "[" * 65 + "]" * 65
    assert json_depth(nested) == 65
    with pytest.raises(ValueError, match="nested deeper than 64"):
        decode_json(nested.encode())
    assert decode_json(("[" * 64 + "]" * 64).encode()) == json.loads(
        "[" * 64 + "]" * 64
    )


# -- the circuit breaker -------------------------------------------------------
def test_after_a_failure_calls_fail_at_once_until_the_cooldown_ends():
    with FaultyServer() as server:
        server.answer(status=500, body={"error": "CUDA out of memory"})
        settings = {"retries": 1, "backoff": 0.01, "cooldown": 2.0}
        with pytest.raises(ServiceError, match="tried 2 times"):
            ask(server.url, **settings)
        assert server.requests == 2
        with pytest.raises(ServiceError) as caught:
            ask(server.url, **settings)
        assert server.requests == 2  # not asked
        message = caught.value.message
        assert "CUDA out of memory" in message and server.url in message
        assert "not sent" in message and "asked again after" in message
        time.sleep(2.0)
        server.answer(body=DECISION)  # the server recovered: one trial, answered
        assert ask(server.url, **settings).tolist() == [0.25]
        assert server.requests == 3
        assert ask(server.url, **settings).tolist() == [0.25]  # closed again


def test_a_failed_trial_opens_the_breaker_again_without_retries():
    with FaultyServer() as server:
        server.answer(status=503, body={"error": "loading"})
        settings = {"retries": 2, "backoff": 0.01, "cooldown": 1.5}
        with pytest.raises(ServiceError):
            ask(server.url, **settings)
        assert server.requests == 3
        time.sleep(1.5)
        with pytest.raises(ServiceError, match="tried once"):
            ask(server.url, **settings)  # the half-open trial: one request
        assert server.requests == 4
        with pytest.raises(ServiceError, match="not sent"):
            ask(server.url, **settings)
        assert server.requests == 4


def test_clients_of_one_url_share_the_breaker():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match="not reachable"):
        ask(url, retries=0)
    chat = ChatClient(ModelServer(url + "/v1", retries=3), "m")
    with pytest.raises(ServiceError, match="not sent"):  # no try, no back-off
        chat.complete([[]], max_tokens=8)
    assert ModelServer(url).breaker.is_open


# -- load ----------------------------------------------------------------------
def test_requests_in_flight_to_one_server_are_bounded_process_wide():
    every = {"answers": {f"q{i}": {"noul": 0.25} for i in range(64)}}

    def slow(handler):
        time.sleep(0.2)
        answer(handler, 200, json.dumps(every).encode())

    with HostileServer(slow) as server:
        clients = [
            SystemOneClient(ModelServer(server.url, concurrency=2), "m", 4)
            for _ in range(2)
        ]  # two backends, each with a pool of 4, one server
        threads = [
            threading.Thread(target=c.noul, args=("A text.", ["Is it?"] * 200))
            for c in clients
        ]  # 4 requests of 64 questions each
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert server.requests == 8
    assert server.most_at_once == 2


def test_retry_after_is_honoured_within_the_cap(monkeypatch):
    def busy(handler):
        body = json.dumps({"error": "busy"}).encode()
        retry = "1" if server.requests == 1 else "3600"
        answer(handler, 503, body, **{"Retry-After": retry})

    with HostileServer(busy) as server:
        started = time.monotonic()
        with pytest.raises(ServiceError, match="HTTP 503"):
            ask(server.url, retries=1, backoff=0.01)
        assert time.monotonic() - started >= 1  # the server asked for 1 s
    monkeypatch.setattr(model_http, "MAX_BACKOFF", 0.2)
    forget_model_servers()
    with HostileServer(busy) as server:
        server.requests = 1
        started = time.monotonic()
        with pytest.raises(ServiceError, match="tried 2 times"):
            ask(server.url, retries=1, backoff=0.01)
        assert time.monotonic() - started < 1  # not an hour


def test_retries_are_bounded():
    with pytest.raises(ValueError, match="retries must be 0 to 5"):
        ModelServer("http://127.0.0.1:1", retries=6)
    retries = {f.name: f for f in dataclasses.fields(ModelServerParams)}["retries"]
    assert retries.metadata["max"] == model_http.MAX_RETRIES == 5


# -- secrets and what a server says --------------------------------------------
def test_the_key_is_not_in_the_repr():
    server = ModelServer("http://127.0.0.1:1", api_key="sk-TOPSECRET")
    assert "sk-TOPSECRET" not in repr(server)


def configured(url: str) -> ModelServer:
    params = ModelServerParams(model="m", engine="systemone", url=url)
    return configured_server(params, "Project 'p'")


def test_a_url_with_a_password_is_refused_without_repeating_it():
    with pytest.raises(ConfigError) as caught:
        configured("http://alice:hunter2@127.0.0.1:8000")
    message = caught.value.message
    assert "user:password@" in message and "api_key_env" in message
    assert "hunter2" not in message and "alice" not in message


def test_a_url_with_a_query_is_refused_without_repeating_it():
    with pytest.raises(ConfigError, match="query") as caught:
        configured("http://127.0.0.1:8000/?token=abc")
    assert "abc" not in caught.value.message
    assert configured("http://127.0.0.1:8000/v1/").url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:99999", "not a number from 1 to 65535"),
        ("http://127.0.0.1:0", "not a number from 1 to 65535"),
        ("http://127.0.0.1:8000:1", "not a number from 1 to 65535"),
        ("http://127.0.0.1:8000/\u202egnp.exe", "invisible formatting"),
        ("http://127.0.0.1\u200b:8000", "invisible formatting"),
        ("http://127.0.0.1:8000/a b", "spaces"),
    ],
)
def test_a_url_with_a_bad_port_or_hidden_characters_is_refused(url, says):
    with pytest.raises(ConfigError, match=says):
        configured(url)


def test_terminal_escapes_and_control_characters_from_a_server_are_dropped():
    with FaultyServer() as server:
        server.answer(
            status=422, body=b"\x1b[31mbad\r\nmodel\x1b[0m\x07 \x1b]0;pwned\x07"
        )
        with pytest.raises(ServiceError) as caught:
            ask(server.url)
    message = caught.value.message
    assert message.endswith("it answered HTTP 422: bad model")
    assert not any(ord(c) < 32 for c in message)


@pytest.mark.parametrize("status", [401, 503])
def test_a_server_that_echoes_the_key_does_not_put_it_in_a_message(status):
    def echo(handler):
        said = handler.headers.get("Authorization", "")
        answer(handler, status, f"invalid credentials: {said}".encode())

    with HostileServer(echo) as server:
        with pytest.raises(ServiceError) as caught:
            ask(server.url, retries=0)
        assert server.requests == 1
        with pytest.raises(ServiceError) as again:  # 503: the open breaker says it
            ask(server.url, retries=0)
    for message in (caught.value.message, again.value.message):
        assert "TOPSECRETKEY" not in message
    assert f"HTTP {status}: invalid credentials: Bearer (the API key)" in (
        caught.value.message
    )


def test_a_key_cut_by_the_quoting_limit_shows_no_part_of_it():
    def echo(handler):  # the key straddles the 200 characters quoted
        said = handler.headers.get("Authorization", "")
        answer(handler, 401, ("x" * 186 + said).encode())

    with HostileServer(echo) as server, pytest.raises(ServiceError) as caught:
        ask(server.url, retries=0)
    message = caught.value.message
    assert "TOPS" not in message and message.endswith("(the API key)...")


def test_an_empty_refusal_reads_well():
    with FaultyServer() as server:
        server.answer(status=404, body=b"")
        with pytest.raises(ServiceError) as caught:
            ask(server.url)
    assert caught.value.message.endswith("refused the request: it answered HTTP 404")


def test_after_a_timeout_the_server_gets_one_request_at_a_time_again():
    def first_slow(handler):
        time.sleep(1.5 if server.requests == 1 else 0.3)
        answer(handler, 200, json.dumps(DECISION).encode())

    with HostileServer(first_slow) as server:
        with pytest.raises(ServiceError, match="no answer within 0.5 s"):
            ask(server.url, timeout=0.5, concurrency=4)
        assert server.wait_idle(10)  # the server is done with the abandoned request
        ModelServer(server.url).breaker.reset()  # this test is about the gate
        server.most_at_once = 0
        threads = [
            threading.Thread(target=ask, args=(server.url,), kwargs={"concurrency": 4})
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert server.requests == 5
    # one, then two at a time (one answer in time raises the limit by one),
    # where four would have gone out at once
    assert server.most_at_once == 2

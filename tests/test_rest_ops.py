"""Operating the server: /metrics summed over gunicorn's worker processes,
/v1/ready while models load, JSON request logs with request ids, access to
/metrics, and learning in one worker served by the others. Every test talks
HTTP to a real server: `indexer serve` in a subprocess, or waitress in a
thread for the in-process ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.test_rest import running_server

pytest.importorskip("flask")
pytest.importorskip("prometheus_client")

API_KEY = "ops-secret-key"
MUSIC = "http://example.org/t/music"
OPS_CFG = f"""
[vocab:tiny]
source = {DATA}/tiny.ttl

[tfidf-en]
language = en
vocab = tiny
backend = tfidf
ngram = 1

[dummy-en]
language = en
vocab = tiny
backend = dummy
uri = http://example.org/t/physics

[untrained-en]
language = en
vocab = tiny
backend = tfidf
"""
BROKEN_CFG = """
[broken-en]
language = en
vocab = tiny
backend = lexical
candidats = 5
"""
PHYSICS = "Quantum physics and the motion of particles, with some astronomy."
# words the tiny training corpus lacks: only learning can tie them to a subject
MARSUPIALS = "quokka wallaby marsupial outback"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers fork")


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def ops_config(tmp_path: Path) -> Path:
    """A workspace with tfidf-en trained (so its vocabulary is loaded)."""
    from indexer.project import Projects

    config = tmp_path / "projects.cfg"
    config.write_text(OPS_CFG)
    Projects.from_path(config).get("tfidf-en").train([DATA / "tiny.tsv"])
    return config


class Server:
    """`indexer serve ARGS` in a subprocess on a free port; a thread collects
    its stderr, so the test can read the log while it runs."""

    def __init__(self, config: Path, *args: str, env: dict | None = None):
        command = [
            sys.executable,
            "-c",
            "from indexer.cli import main; main()",
            "--projects",
            str(config),
            "serve",
            "--port",
            "0",
            *args,
        ]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        self.base: str | None = None
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._started.wait(120) or self.base is None:
            self.stop()
            pytest.fail("The server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/ \(", line)
            if found and self.base is None:
                self.base = found.group(1)
                self._started.set()
        self._started.set()  # it ended before it listened

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        finally:
            self.process.stderr.close()

    def records(self) -> list[dict]:
        """The JSON log records so far."""
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def request_record(self, request_id: str, timeout: float = 10) -> dict:
        """The request line of `request_id` (written just after the answer)."""
        found: list[dict] = []

        def logged() -> bool:
            found[:] = [
                r
                for r in self.records()
                if r["logger"] == "indexer.rest.requests"
                and r.get("request_id") == request_id
            ]
            return bool(found)

        wait_until(logged, timeout, f"no request line for {request_id}")
        return found[0]


def call(method: str, url: str, body=None, headers: dict | None = None):
    """(status, headers, body) of one request on a new connection."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.05)


def readiness(base: str) -> dict:
    return json.loads(
        call("GET", f"{base}/v1/ready", headers={"X-API-Key": API_KEY})[2]
    )


def wait_ready(base: str, timeout: float = 60) -> None:
    wait_until(
        lambda: call("GET", f"{base}/v1/ready")[0] == 200,
        timeout,
        "the server never became ready",
    )


def scrape(base: str) -> dict[str, list]:
    """The samples of /metrics by metric family: [(name, labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = call(
        "GET", f"{base}/metrics", headers={"X-API-Key": API_KEY}
    )
    assert status == 200, body
    assert headers.get_content_type() == "text/plain"
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(body.decode())
    }


def value(samples: dict, name: str, **labels) -> float:
    """The one sample `name` whose labels include `labels` (0 where none)."""
    family = re.sub(r"_(total|count|sum|bucket)$", "", name)
    found = [
        v
        for n, sample_labels, v in samples.get(family, [])
        if n == name and labels.items() <= sample_labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


SUGGEST = "/v1/projects/<project_id>/suggest"
LEARN = "/v1/projects/<project_id>/learn"


def suggest(base: str, project: str, text: str, request_id: str | None = None):
    headers = {"X-Request-ID": request_id} if request_id else {}
    return call(
        "POST", f"{base}/v1/projects/{project}/suggest", {"text": text}, headers
    )


def uris(body: bytes) -> list[str]:
    return [r["uri"] for r in json.loads(body)["results"]]


def gunicorn(config: Path, *args: str) -> Server:
    return Server(
        config,
        "--workers",
        "2",
        "--threads",
        "2",
        "--api-key",
        API_KEY,
        "--log-format",
        "json",
        "--check-interval",
        "0.1",
        *args,
    )


# -- metrics over worker processes ---------------------------------------------


@needs_fork
def test_metrics_add_up_every_worker(ops_config):
    server = gunicorn(ops_config)
    try:
        base = server.base
        wait_ready(base)
        # suggestions on new connections until both workers have answered some
        pids: dict[str, int] = {}
        k = 0
        while len(set(pids.values())) < 2:
            assert k < 200, "one worker answered every request"
            request_id = f"suggest-{k}"
            status, _, body = suggest(base, "tfidf-en", PHYSICS, request_id)
            assert status == 200, body
            pids[request_id] = server.request_record(request_id)["pid"]
            k += 1
        assert call("POST", f"{base}/v1/projects/nope/suggest", {"text": "x"})[0] == 404
        documents = [
            {"text": MARSUPIALS, "subjects": [{"uri": MUSIC}]},
            {"text": f"{MARSUPIALS} again", "subjects": [{"uri": MUSIC}]},
        ]
        learn = call(
            "POST",
            f"{base}/v1/projects/tfidf-en/learn",
            documents,
            {"X-API-Key": API_KEY},
        )
        assert learn[0] == 204, learn[2]
        samples = scrape(base)
    finally:
        assert server.stop() == 0

    requests = "indexer_http_requests_total"
    assert value(samples, requests, endpoint=SUGGEST, project="tfidf-en") == k
    assert value(samples, requests, endpoint=SUGGEST, status="200") == k
    assert value(samples, requests, endpoint=SUGGEST, project="", status="404") == 1
    assert value(samples, requests, endpoint=LEARN, project="tfidf-en") == 1
    assert value(samples, requests, endpoint=LEARN, status="204") == 1
    assert value(samples, "indexer_documents_suggested_total", project="tfidf-en") == k
    latency = "indexer_suggest_duration_seconds_count"
    assert value(samples, latency, project="tfidf-en") == k
    backend = "indexer_backend_suggest_duration_seconds_count"
    assert value(samples, backend, project="tfidf-en", source="tfidf-en") == k
    assert value(samples, "indexer_learn_calls_total", project="tfidf-en") == 1
    assert value(samples, "indexer_documents_learned_total", project="tfidf-en") == 2

    memory = samples["indexer_worker_resident_memory_bytes"]
    assert {labels["pid"] for _, labels, _ in memory} == {str(p) for p in pids.values()}
    assert all(v > 10e6 for _, _, v in memory)
    projects = "indexer_projects"
    assert value(samples, projects, status="loaded") == 2
    assert value(samples, projects, status="not_trained") == 1
    assert value(samples, projects, status="loading") == 0
    [(_, info, _)] = samples["indexer_model_info"]
    link = os.readlink(ops_config.parent / "data" / "projects" / "tfidf-en" / "model")
    assert info == {"project": "tfidf-en", "version": link.rsplit(".", 1)[-1]}
    assert 0 <= value(samples, "indexer_model_age_seconds", project="tfidf-en") < 60


@needs_fork
def test_a_model_learned_in_one_worker_is_served_by_every_worker(ops_config):
    server = gunicorn(ops_config)
    try:
        base = server.base
        wait_ready(base)
        status, _, body = suggest(base, "tfidf-en", MARSUPIALS)
        assert status == 200 and MUSIC not in uris(body)
        learn = call(
            "POST",
            f"{base}/v1/projects/tfidf-en/learn",
            [{"text": MARSUPIALS, "subjects": [{"uri": MUSIC}]}],
            {"X-API-Key": API_KEY, "X-Request-ID": "the-learn"},
        )
        assert learn[0] == 204, learn[2]
        learner = server.request_record("the-learn")["pid"]
        # the others notice the new model on disk within --check-interval
        answers: dict[int, list[str]] = {}
        for attempt in range(400):
            request_id = f"after-{attempt}"
            status, _, body = suggest(base, "tfidf-en", MARSUPIALS, request_id)
            assert status == 200, body
            answers[server.request_record(request_id)["pid"]] = uris(body)
            if len(answers) == 2 and all(MUSIC in a for a in answers.values()):
                break
            time.sleep(0.01)
        assert len(answers) == 2, "one worker answered every request"
        assert [p for p in answers if p != learner], answers
        assert all(MUSIC in a for a in answers.values()), answers
    finally:
        assert server.stop() == 0


def hold_now_and_then(config: Path, done: threading.Event) -> None:
    """Hold the project's lock for 50 ms out of every 100 ms until `done`,
    from a file description of its own, as another process does."""
    import fcntl

    from indexer.project import Projects

    path = Projects.from_path(config).get("tfidf-en").lock.path
    path.parent.mkdir(parents=True, exist_ok=True)
    while not done.is_set():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            holder = {"pid": 4242, "command": "indexer learn", "since": "2026"}
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            time.sleep(0.05)
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        time.sleep(0.05)


@needs_fork
def test_concurrent_learns_in_several_workers_wait_for_each_other(ops_config):
    from concurrent.futures import ThreadPoolExecutor

    server = gunicorn(ops_config)
    try:
        base = server.base
        wait_ready(base)

        def learn(k: int):
            documents = [{"text": f"{MARSUPIALS} {k}", "subjects": [{"uri": MUSIC}]}]
            url = f"{base}/v1/projects/tfidf-en/learn"
            return call("POST", url, documents, {"X-API-Key": API_KEY})

        # meanwhile another process (a learn on the command line) takes the
        # project's lock for moments, as the other worker's learns do
        done = threading.Event()
        holder = threading.Thread(target=hold_now_and_then, args=(ops_config, done))
        holder.start()
        try:
            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(learn, range(20)))
        finally:
            done.set()
            holder.join()
        # each learn holds the project's lock for a moment: the others wait
        assert [status for status, _, _ in answers] == [204] * 20, answers
        samples = scrape(base)
    finally:
        assert server.stop() == 0
    assert value(samples, "indexer_documents_learned_total", project="tfidf-en") == 20
    assert API_KEY not in "".join(server.lines)


@pytest.fixture
def encoder(request) -> Path:
    pytest.importorskip("transformers")
    return request.getfixturevalue("tiny_encoder")


@needs_fork
def test_torch_projects_answer_in_forked_workers(ops_config, encoder):
    """The master runs torch while loading (the concept index is encoded
    then); the workers it forks must still answer, not hang."""
    config = ops_config.read_text() + textwrap.dedent(
        f"""
        [embed-en]
        language = en
        vocab = tiny
        backend = embed
        model = {encoder}
        """
    )
    ops_config.write_text(config)
    server = gunicorn(ops_config)
    try:
        wait_ready(server.base)
        # the first worker may answer many requests before the second forks
        seen, attempt, deadline = set(), 0, time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            attempt += 1
            request_id = f"embed-{attempt}"
            status, _, body = suggest(server.base, "embed-en", PHYSICS, request_id)
            assert status == 200, body
            assert uris(body)
            seen.add(server.request_record(request_id)["pid"])
        assert len(seen) == 2, f"one worker answered all {attempt} requests"
    finally:
        assert server.stop() == 0


# -- readiness -----------------------------------------------------------------

SLOW_BACKEND = '''
"""A backend whose loading lasts until a file exists (the test's gate)."""

import os
import time
from dataclasses import dataclass

from backends.dummy import DummyBackend, DummyParams
from indexer.params import param


@dataclass
class SlowParams(DummyParams):
    gate: str = param("", "loading ends when this file exists")


class SlowBackend(DummyBackend):
    name = "slow"
    Params = SlowParams

    def _load(self, directory, manifest):
        deadline = time.monotonic() + 120
        while not os.path.exists(self.params.gate) and time.monotonic() < deadline:
            time.sleep(0.02)


class FlakyBackend(SlowBackend):
    """Its model server (the gate) is down until the file exists."""

    name = "flaky"

    def _load(self, directory, manifest):
        from indexer.errors import ServiceError

        if not os.path.exists(self.params.gate):
            raise ServiceError("The model server at http://127.0.0.1:48999 is down")
'''


def _slow_plugin(root: Path) -> Path:
    """A directory holding a `slow` backend, registered by entry point as a
    third-party backend is (a dist-info beside the module)."""
    plugin = root / "plugin"
    info = plugin / "slow_backend-0.1.dist-info"
    info.mkdir(parents=True)
    (plugin / "slow_backend.py").write_text(SLOW_BACKEND)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: slow-backend\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[indexer.backends]\nslow = slow_backend:SlowBackend\n"
        "flaky = slow_backend:FlakyBackend\n"
    )
    return plugin


def test_ready_is_503_while_a_project_loads_and_200_after(ops_config):
    root = ops_config.parent
    gate = root / "gate"
    ops_config.write_text(
        ops_config.read_text()
        + f"\n[slow-en]\nlanguage = en\nvocab = tiny\nbackend = slow\ngate = {gate}\n"
    )
    env = dict(os.environ)
    paths = [str(_slow_plugin(root)), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    server = Server(ops_config, "--api-key", API_KEY, env=env)
    try:
        base = server.base
        # the others load at once; slow-en waits for the gate
        wait_until(lambda: readiness(base)["loading"] == ["slow-en"], 30, "loading")
        status, headers, body = call("GET", f"{base}/v1/ready")
        assert status == 503, body
        assert headers.get_content_type() == "application/problem+json"
        loading = json.loads(body)
        assert loading["loading"] == ["slow-en"]
        assert loading["failed"] == []
        assert loading["projects"]["loading"] == 1
        assert call("GET", f"{base}/v1/health")[0] == 200  # alive all along
        gate.touch()
        wait_ready(base, timeout=30)
        status, headers, body = call("GET", f"{base}/v1/ready")
        ready = json.loads(body)
        assert headers.get_content_type() == "application/json"
        assert ready["status"] == "ready" and ready["loading"] == []
        # a project without a model is named, and does not hold the others
        assert [p["project_id"] for p in ready["not_trained"]] == ["untrained-en"]
        assert "indexer train untrained-en" in ready["not_trained"][0]["reason"]
        assert ready["projects"] == {
            "loading": 0,
            "loaded": 3,
            "not_trained": 1,
            "unavailable": 0,
            "unloaded": 0,
        }
    finally:
        assert server.stop() == 0


def test_ready_follows_a_project_whose_model_server_comes_up_later(ops_config):
    root = ops_config.parent
    gate = root / "gate"
    ops_config.write_text(
        ops_config.read_text()
        + f"\n[flaky-en]\nlanguage = en\nvocab = tiny\nbackend = flaky\ngate = {gate}\n"
    )
    env = dict(os.environ)
    paths = [str(_slow_plugin(root)), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    server = Server(
        ops_config,
        "--api-key",
        API_KEY,
        "--check-interval",
        "0.1",
        "--metrics",
        "public",
        env=env,
    )
    try:
        base = server.base
        wait_until(lambda: not readiness(base)["loading"], 30, "still loading")
        failed = readiness(base)["failed"]
        assert [f["project_id"] for f in failed] == ["flaky-en"]
        assert call("GET", f"{base}/v1/ready")[0] == 503
        gate.touch()  # the model server is up
        wait_ready(base, timeout=30)
        assert readiness(base)["failed"] == []
        samples = scrape(base)
        assert value(samples, "indexer_projects", status="unavailable") == 0
        assert value(samples, "indexer_projects", status="loaded") == 3
        assert suggest(base, "flaky-en", PHYSICS)[0] == 200
    finally:
        assert server.stop() == 0
    log = "".join(server.lines)
    assert "Loaded the model of project 'flaky-en'" in log


def test_ready_names_a_failed_project_without_its_paths(tmp_path):
    from indexer.rest import create_app

    missing = tmp_path / "nowhere" / "gone.ttl"
    config = tmp_path / "projects.cfg"
    config.write_text(
        OPS_CFG.replace("[tfidf-en]", f"[vocab:gone]\nsource = {missing}\n\n[tfidf-en]")
        + "\n[gone-en]\nlanguage = en\nvocab = gone\nbackend = lexical\n"
        + "access = private\n"
    )
    app = create_app(config, api_key=API_KEY, preload=True)
    with running_server(app) as base:
        status, headers, body = call("GET", f"{base}/v1/ready")
        assert status == 503
        assert headers.get_content_type() == "application/problem+json"
        anonymous = json.loads(body)
        # a private project is not named without the key; it is counted
        assert anonymous["failed"] == [] and anonymous["projects"]["unavailable"] == 1
        assert b"gone-en" not in body
        status, _, body = call(
            "GET", f"{base}/v1/ready", headers={"X-API-Key": API_KEY}
        )
        assert status == 503
        [failed] = json.loads(body)["failed"]
        assert failed["project_id"] == "gone-en"
        assert "misconfigured on the server" in failed["reason"]
        assert str(tmp_path) not in body.decode()


# -- the request log -------------------------------------------------------------


def test_json_log_has_one_line_per_request_with_its_id(ops_config):
    ops_config.write_text(ops_config.read_text() + BROKEN_CFG)
    server = Server(ops_config, "--api-key", API_KEY, "--log-format", "json")
    try:
        base = server.base
        wait_until(lambda: not readiness(base)["loading"], 30, "still loading")
        assert readiness(base)["failed"][0]["project_id"] == "broken-en"
        secret_text = "Orchestras play symphonies of solar physics"
        status, headers, _ = suggest(base, "tfidf-en", secret_text, "catalogue-42")
        assert status == 200 and headers["X-Request-ID"] == "catalogue-42"
        status, headers, _ = suggest(base, "tfidf-en", secret_text, "bad id\t" * 3)
        generated = headers["X-Request-ID"]
        assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", generated)
        status, headers, _ = suggest(base, "tfidf-en", secret_text, "x" * 129)
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        status, headers, _ = call(
            "POST",
            f"{base}/v1/projects/broken-en/suggest",
            {"text": secret_text},
            {"X-API-Key": API_KEY, "X-Request-ID": "broken-1"},
        )
        assert status == 503 and headers["X-Request-ID"] == "broken-1"
        line = server.request_record("catalogue-42")
        server.request_record(generated)
        server.request_record("broken-1")
    finally:
        assert server.stop() == 0

    assert all(json.loads(x) for x in server.lines if x.strip())  # all JSON
    assert line["method"] == "POST" and line["endpoint"] == SUGGEST
    assert line["project"] == "tfidf-en" and line["status"] == 200
    assert line["document_bytes"] == len(secret_text.encode())
    assert line["latency_ms"] > 0
    assert set(line["backends_ms"]) == {"tfidf-en"}
    records = server.records()
    requests = [r for r in records if r["logger"] == "indexer.rest.requests"]
    by_id = {}
    for record in requests:
        by_id.setdefault(record["request_id"], []).append(record)
    assert all(len(lines) == 1 for lines in by_id.values())  # one line each
    # what went wrong in a request is logged with the request's id
    errors = [r for r in records if r["level"] == "ERROR"]
    assert errors and all(r.get("request_id") == "broken-1" for r in errors)
    assert "broken-en" in errors[0]["message"]
    log = "".join(server.lines)
    assert API_KEY not in log and secret_text not in log


# -- access to /metrics ----------------------------------------------------------


def test_metrics_access(ops_config):
    from indexer.rest import create_app

    def metrics(base: str, key: str | None = None) -> int:
        headers = {"X-API-Key": key} if key else {}
        return call("GET", f"{base}/metrics", headers=headers)[0]

    with running_server(create_app(ops_config, api_key=API_KEY)) as base:
        assert metrics(base) == 401  # the default: the key opens it
        assert metrics(base, "wrong") == 401
        assert metrics(base, API_KEY) == 200
    with running_server(create_app(ops_config, api_key=API_KEY, metrics="off")) as base:
        status, headers, _ = call(
            "GET", f"{base}/metrics", headers={"X-API-Key": API_KEY}
        )
        assert status == 404
        assert headers.get_content_type() == "application/problem+json"
    with running_server(create_app(ops_config, metrics="public")) as base:
        assert metrics(base) == 200
    with running_server(create_app(ops_config, api_key="")) as base:
        status, _, body = call("GET", f"{base}/metrics")
        assert status == 403 and b"--metrics public" in body


def test_metrics_of_one_process_include_its_memory_and_ensemble_sources(workspace):
    from indexer.project import Projects
    from indexer.rest import create_app

    config = workspace / "projects.cfg"
    Projects.from_path(config).get("tfidf-en").train([DATA / "tiny.tsv"])
    app = create_app(config, metrics="public", check_interval=None)
    with running_server(app) as base:
        assert suggest(base, "ensemble-en", PHYSICS)[0] == 200
        from prometheus_client.parser import text_string_to_metric_families

        body = call("GET", f"{base}/metrics")[2].decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["process_resident_memory_bytes"].samples[0].value > 10e6
    backend = [
        s.labels
        for s in families["indexer_backend_suggest_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert sorted(b["source"] for b in backend) == [
        "ensemble-en",
        "lexical-en",
        "tfidf-en",
    ]
    assert {b["project"] for b in backend} == {"ensemble-en"}


def series(base: str) -> set[tuple]:
    """Every sample's name and labels on /metrics (values left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = call("GET", f"{base}/metrics")[2].decode()
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def odd_requests(base: str, n: int, seed: int, every: bool = False) -> None:
    """`n` requests no client should send: made-up methods, random paths and
    project ids, odd headers; one connection, without a key. `every`: each
    kind of method on each kind of path (n = 30 tries them all)."""
    import http.client
    import random
    import string

    rng = random.Random(seed)
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    words = string.ascii_letters + string.digits
    for k in range(n):
        word = "".join(rng.choices(words, k=rng.randint(1, 12)))
        methods = ["GET", "POST", f"X{word.upper()}", "BREW", "get"]
        paths = [
            f"/{word}",
            f"/v1/{word}",
            f"/v1/projects/{word}",
            f"/v1/projects/{word}/suggest",
            f"/v1/vocabs/{word}/concepts",
            f"/v1/projects/tfidf-en/{word}",
        ]
        if every:  # each method on each kind of path, in turn
            method, path = methods[k % 5], paths[k // 5 % 6]
        else:
            method, path = rng.choice(methods), rng.choice(paths)
        headers = {f"X-{word}": word, "X-Request-ID": word * 20, "Accept": word}
        if k % 3 == 0:
            headers["Content-Type"] = f"application/{word}"
        connection.request(method, path, body=word if k % 2 else None, headers=headers)
        response = connection.getresponse()
        response.read()
        assert 400 <= response.status < 500, (method, path, response.status)
        if response.will_close:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.close()


def test_odd_requests_add_no_metric_series(ops_config):
    from indexer.rest import create_app

    app = create_app(ops_config, metrics="public", check_interval=None)
    with running_server(app) as base:
        odd_requests(base, 60, seed=1, every=True)  # the series they may use
        series(base)  # the scrape itself is counted once it is answered
        before = series(base)
        odd_requests(base, 1000, seed=2)
        after = series(base)
    assert after - before == set()
    requests = {labels for name, labels in after if name.startswith("indexer_http")}
    methods = {dict(labels)["method"] for labels in requests}
    assert methods <= {"GET", "POST", "other"}, methods


# -- what the log says at start, and what callers cannot write into it ----------

FORGED = "2026-01-01 00:00:00,000 ERROR indexer.rest: the disk is full"


def test_a_caller_cannot_forge_a_line_of_the_text_log(ops_config):
    server = Server(ops_config, "--api-key", API_KEY)
    try:
        base = server.base
        wait_ready(base)
        documents = [
            {
                "text": MARSUPIALS,
                "subjects": [{"uri": MUSIC}, {"uri": f"http://x.org/a\n{FORGED}\r"}],
            }
        ]
        status, _, body = call(
            "POST",
            f"{base}/v1/projects/tfidf-en/learn",
            documents,
            {"X-API-Key": API_KEY},
        )
        assert status == 204, body
        wait_until(
            lambda: "the disk is full" in "".join(server.lines), 10, "not logged"
        )
    finally:
        assert server.stop() == 0
    [logged] = [line for line in server.lines if "the disk is full" in line]
    assert "WARNING indexer.rest: Learning project 'tfidf-en'" in logged
    assert f"http://x.org/a\\n{FORGED}\\r" in logged
    assert not any(line.startswith(FORGED) for line in server.lines)


def test_every_line_of_a_json_log_is_json_from_the_start(tmp_path):
    config = tmp_path / "projects.cfg"
    config.write_text(OPS_CFG)  # the vocabulary is loaded as the server starts
    server = Server(config, "--log-format", "json")
    try:
        wait_ready(server.base)
        concepts = f"{server.base}/v1/vocabs/tiny/concepts?label=music"
        assert call("GET", concepts)[0] == 200  # loads the vocabulary
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.strip()]
    messages = [r["message"] for r in records]
    assert f"Loading vocabulary 'tiny' from {DATA / 'tiny.ttl'}" in messages
    # a project without a model yet is said so plainly, not as an error
    [untrained] = [r for r in records if "untrained-en" in r["message"]]
    assert untrained["level"] == "INFO"
    assert untrained["message"] == (
        "Project 'untrained-en' is not trained: run `indexer train untrained-en "
        "CORPUS` (until then it has nothing to serve)"
    )
    assert not any("Not ready" in m for m in messages)


def test_faiss_says_nothing_of_its_loader_in_the_server_log():
    pytest.importorskip("faiss")
    code = (
        "from indexer.rest.logs import configure_logging\n"
        "configure_logging('text')\n"
        "import faiss\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    assert "faiss.loader" not in result.stderr


def test_a_json_log_has_the_refusal_to_start_as_json_too(ops_config):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from indexer.cli import main; main()"]
            + ["--projects", str(ops_config), "serve", "--port", str(port)]
            + ["--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    [record] = [json.loads(line) for line in result.stderr.splitlines()]
    assert record["level"] == "ERROR"
    assert record["message"].startswith(f"Error: Port {port} on 127.0.0.1 is in use")


@needs_fork
def test_gunicorn_replaces_a_killed_worker(ops_config):
    import signal

    server = gunicorn(ops_config)
    try:
        wait_ready(server.base)
        children = Path(
            f"/proc/{server.process.pid}/task/{server.process.pid}/children"
        )
        if not children.exists():
            pytest.skip("needs Linux's /proc/PID/task/TID/children")

        def workers() -> set[int]:
            return {int(pid) for pid in children.read_text().split()}

        # a ready server answers from its first worker; the second may still fork
        wait_until(lambda: len(workers()) == 2, 30, "two workers never ran")
        victim = min(workers())
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers()) == 2 and victim not in workers(), 30, "not replaced"
        )
        assert server.process.poll() is None
        for _ in range(4):
            assert suggest(server.base, "tfidf-en", PHYSICS)[0] == 200
    finally:
        assert server.stop() == 0


@needs_fork
def test_a_worker_stopped_while_it_boots_ends_at_once():
    """A fork of the serving master ends on SIGTERM before gunicorn sets the
    worker's handlers; with the master's handlers inherited, it ignored it."""
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from indexer.rest import prefork
        signal.signal(signal.SIGTERM, lambda *_: None)  # as gunicorn's master does
        prefork.stop_booting_workers_at_once(os.getpid())
        child = os.fork()
        if child == 0:
            time.sleep(20)
            os._exit(3)
        started = time.monotonic()
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        print(os.waitstatus_to_exitcode(status), time.monotonic() - started < 5)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["0", "True"], done.stderr


@needs_fork
def test_a_server_stopped_as_its_workers_boot_stops_at_once(ops_config):
    # stopped the moment it listens, while its four workers fork and boot:
    # before, a worker in that window missed the stop and the master waited
    # its graceful timeout (30 s) for it, one run in four here
    for _ in range(3):
        server = Server(ops_config, "--workers", "4", "--threads", "1")
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 15


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_serve_on_an_ipv6_address_prints_a_url_that_opens(ops_config):
    command = [
        sys.executable,
        "-c",
        "from indexer.cli import main; main()",
        "--projects",
        str(ops_config),
        "serve",
        "--host",
        "::1",
        "--port",
        "0",
        "--no-preload",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "public projects on" in line:
                break
        url = re.search(r"on (\S+) \(", line).group(1)
        assert re.fullmatch(r"http://\[::1\]:\d+/", url), line
        status, _, _ = call("GET", url + "v1/")
        assert status == 200
    finally:
        process.terminate()
        process.wait(30)
        process.stderr.close()


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nab\r\n0\r\n\r\n", b"2\r\nabXX0\r\n\r\n"],
    ids=["bad-size", "no-terminator"],
)
def test_gunicorn_a_malformed_chunked_body_is_a_400_not_a_bug(ops_config, chunks):
    import socket

    server = gunicorn(ops_config)
    try:
        host, port = server.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/projects/tfidf-en/suggest HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n"
                b"Content-Type: application/json\r\n\r\n" + chunks
            )
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer
        assert b"application/problem+json" in head
        assert b"could not be read" in body and b"bug" not in body
    finally:
        server.stop()

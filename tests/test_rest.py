"""The REST API: every endpoint and error case with Flask's test client, every
response checked against /v1/openapi.json, concurrent requests during model
reloads, and the real waitress server over HTTP on a loopback port."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import DATA

pytest.importorskip("flask")

API_KEY = "s3cret-key"
EXTRA_CFG = f"""
[vocab:secret-vocab]
source = {DATA}/tiny.ttl

[hidden-en]
language = en
vocab = tiny
backend = lexical
access = hidden

[private-en]
language = en
vocab = secret-vocab
backend = lexical
access = private

[broken-en]
language = en
vocab = tiny
backend = lexical
candidats = 5
"""
PHYSICS = "Quantum physics and the motion of particles, with some astronomy."
PHYSICS_URI = "http://example.org/t/physics"


# -- OpenAPI checking of every response -------------------------------------


def _schema_validator(spec: dict, pointer: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"urn:spec#{pointer}"}, registry=registry)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def check_response(spec: dict, method: str, path: str, response) -> None:
    """Assert that `response` is one the OpenAPI document promises."""
    path = path.split("?")[0]
    status = str(response.status_code)
    template = next(
        (
            t
            for t in spec["paths"]
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)
        ),
        None,
    )
    operation = spec["paths"].get(template, {}).get(method.lower())
    if operation is None:  # an unknown route or method: a problem document
        if path.startswith("/v1") or response.status_code >= 400:
            assert response.mimetype == "application/problem+json", path
            pointer = "/components/schemas/Problem"
            _schema_validator(spec, pointer).validate(response.get_json(force=True))
        return
    assert status in operation["responses"], (
        f"{method} {template} answered {status}, which the OpenAPI document does "
        f"not list: {response.get_data(as_text=True)[:300]}"
    )
    pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{status}"
    documented = operation["responses"][status]
    if "$ref" in documented:
        pointer = documented["$ref"][1:]
        documented = spec["components"]["responses"][pointer.rsplit("/", 1)[1]]
    assert "content" not in documented or response.mimetype in documented["content"], (
        f"{method} {template} {status} sent {response.mimetype}"
    )
    if "content" not in documented:  # 204: no body
        assert not response.get_data(), f"{method} {template} {status} has a body"
        return
    pointer += f"/content/{_escape(response.mimetype)}/schema"
    _schema_validator(spec, pointer).validate(json.loads(response.get_data()))


class CheckedClient:
    """Flask's test client, checking every response against the OpenAPI document."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.spec = app.config["INDEXER_OPENAPI"]

    def open(self, method: str, path: str, **kwargs):
        response = self.client.open(path, method=method.upper(), **kwargs)
        check_response(self.spec, method, path, response)
        return response

    def get(self, path: str, **kwargs):
        return self.open("get", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.open("post", path, **kwargs)


# -- fixtures ---------------------------------------------------------------


@pytest.fixture
def config_path(workspace: Path) -> Path:
    path = workspace / "projects.cfg"
    path.write_text(path.read_text() + EXTRA_CFG)
    return path


@pytest.fixture
def make_client(config_path: Path):
    from indexer.rest import create_app

    def make(**settings) -> CheckedClient:
        settings.setdefault("api_key", API_KEY)
        settings.setdefault("check_interval", 0)
        return CheckedClient(create_app(config_path, **settings))

    return make


@pytest.fixture
def client(make_client) -> CheckedClient:
    return make_client()


@pytest.fixture
def trained(config_path: Path, tiny_corpus: Path) -> Path:
    """The workspace with tfidf-en trained (in a separate Projects, like the CLI)."""
    from indexer.project import Projects

    Projects.from_path(config_path).get("tfidf-en").train([tiny_corpus])
    return config_path


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    return body


def suggest(client, project: str = "lexical-en", **kwargs):
    return client.post(f"/v1/projects/{project}/suggest", **kwargs)


# -- the document ---------------------------------------------------------------


def test_openapi_document_is_valid(client):
    from openapi_spec_validator import validate

    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    validate(response.get_json())


def test_every_route_is_documented_and_every_documented_route_exists(client):
    spec = client.spec
    routes = {
        (re.sub(r"<([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in client.app.url_map.iter_rules()
        if rule.rule.startswith("/v1")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path, method) for path, ops in spec["paths"].items() for method in ops
    }
    assert routes == documented


def test_limits_in_the_document_are_the_servers(make_client):
    spec = make_client(max_batch=7, max_content_length=1234).spec
    description = spec["paths"]["/v1/projects/{project_id}/suggest-batch"]["post"]
    assert "At most 7 documents and 1234 bytes" in description["description"]


# -- service ---------------------------------------------------------------------


def test_health(client):
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_preload_loads_every_ready_model(make_client):
    health = make_client(preload=True).get("/v1/health").get_json()
    assert health["models_loaded"] >= 3  # dummy, lexical, hidden, private, ...


# -- projects ------------------------------------------------------------------------


def test_list_projects_shows_only_public_ones(client):
    projects = client.get("/v1/projects").get_json()["projects"]
    ids = [p["project_id"] for p in projects]
    assert "lexical-en" in ids and "tfidf-en" in ids
    assert "hidden-en" not in ids and "private-en" not in ids
    lexical = next(p for p in projects if p["project_id"] == "lexical-en")
    assert lexical["status"] == "ready" and lexical["explain"] is True
    assert lexical["kind"] == lexical["backend"]["backend_id"] == "lexical"
    assert lexical["vocab"]["vocab_id"] == "tiny" and lexical["vocab"]["size"] == 8
    tfidf = next(p for p in projects if p["project_id"] == "tfidf-en")
    assert tfidf["status"] == "not_trained" and tfidf["explain"] is False
    assert tfidf["is_trained"] is False and tfidf["modification_time"] is None


def test_list_projects_with_the_key_shows_all(client):
    response = client.get("/v1/projects", headers={"X-API-Key": API_KEY})
    ids = [p["project_id"] for p in response.get_json()["projects"]]
    assert {"hidden-en", "private-en", "lexical-en"} <= set(ids)


def test_a_wrong_key_is_refused(client):
    response = client.get("/v1/projects", headers={"X-API-Key": "wrong"})
    assert "wrong" in problem(response, 401)["detail"]


def test_a_misconfigured_project_is_listed_unavailable_without_details(client):
    projects = client.get("/v1/projects").get_json()["projects"]
    broken = next(p for p in projects if p["project_id"] == "broken-en")
    assert broken["status"] == "unavailable" and "candidat" not in broken["error"]
    assert broken["error"] == "misconfigured on the server (the server log says how)"
    keyed = client.get("/v1/projects/broken-en", headers={"X-API-Key": API_KEY})
    assert "Did you mean 'candidates'?" in keyed.get_json()["error"]


def test_get_project(client, trained):
    detail = client.get("/v1/projects/tfidf-en").get_json()
    assert detail["status"] == "ready" and detail["params"]["ngram"] == 1
    assert detail["model"]["documents"] == 10 and detail["modification_time"]
    assert detail["is_trained"] is True
    lexical = client.get("/v1/projects/lexical-en").get_json()
    assert lexical["model"] is None and "candidates" in lexical["params"]


def test_unknown_project_is_404_listing_only_visible_ids(client):
    body = problem(client.get("/v1/projects/nope"), 404)
    assert body["detail"] == "Project 'nope' not found"  # Annif's wording
    assert body["type"].endswith("not-found")


def test_hidden_project_is_usable_by_id(client):
    assert client.get("/v1/projects/hidden-en").status_code == 200
    response = suggest(client, "hidden-en", json={"text": PHYSICS})
    assert response.status_code == 200


def test_private_project_looks_absent_without_the_key(client):
    problem(client.get("/v1/projects/private-en"), 404)
    problem(suggest(client, "private-en", json={"text": PHYSICS}), 404)
    key = {"X-API-Key": API_KEY}
    assert client.get("/v1/projects/private-en", headers=key).status_code == 200
    response = suggest(client, "private-en", json={"text": PHYSICS}, headers=key)
    assert response.status_code == 200


def test_private_project_is_unreachable_when_the_server_has_no_key(make_client):
    client = make_client(api_key="")
    response = suggest(
        client, "private-en", json={"text": PHYSICS}, headers={"X-API-Key": "x"}
    )
    problem(response, 404)


# -- suggest ---------------------------------------------------------------------------


def test_suggest_json(client):
    response = suggest(client, json={"text": PHYSICS})
    assert response.status_code == 200
    body = response.get_json()
    assert body["project_id"] == "lexical-en" and body["language"] == "en"
    uris = [s["uri"] for s in body["results"]]
    assert uris[0] == PHYSICS_URI
    assert body["results"][0]["label"] == "physics"
    assert body["results"][0]["notation"] == "1.1"
    scores = [s["score"] for s in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "explanation" not in body["results"][0]


def test_suggest_limit_threshold_language_explain(client):
    body = suggest(
        client,
        json={"text": PHYSICS, "limit": 1, "language": "fi", "explain": True},
    ).get_json()
    assert len(body["results"]) == 1 and body["language"] == "fi"
    top = body["results"][0]
    assert top["label"] == "fysiikka"
    assert top["explanation"]["source"] == "label match"
    assert top["explanation"]["exact"] is True
    high = suggest(client, json={"text": PHYSICS, "threshold": 0.99}).get_json()
    assert high["results"] == []


def test_suggest_empty_text_gives_no_suggestions(client):
    body = suggest(client, json={"text": "   "}).get_json()
    assert body["results"] == []


def test_suggest_form(client):
    response = suggest(client, data={"text": PHYSICS, "limit": "2", "explain": "true"})
    body = response.get_json()
    assert response.status_code == 200 and len(body["results"]) == 2
    assert body["results"][0]["explanation"]


def test_suggest_multipart_upload(client):
    upload = (io.BytesIO(PHYSICS.encode()), "doc.txt")
    response = suggest(
        client, data={"text": upload, "limit": "1"}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    assert response.get_json()["results"][0]["uri"] == PHYSICS_URI


def test_suggest_plain_text_with_options_in_the_query(client):
    response = client.post(
        "/v1/projects/lexical-en/suggest?limit=1&language=fi",
        data=PHYSICS.encode(),
        content_type="text/plain; charset=utf-8",
    )
    body = response.get_json()
    assert [s["label"] for s in body["results"]] == ["fysiikka"]


def test_suggest_body_wins_over_the_query(client):
    response = client.post(
        "/v1/projects/lexical-en/suggest?limit=1", json={"text": PHYSICS, "limit": 2}
    )
    assert len(response.get_json()["results"]) == 2


def test_an_invalid_query_value_is_refused_even_where_the_body_wins(client):
    response = client.post(
        "/v1/projects/lexical-en/suggest?limit=ten", json={"text": PHYSICS, "limit": 2}
    )
    assert "'limit'" in problem(response, 400)["detail"]
    batch = client.post(
        "/v1/projects/lexical-en/suggest-batch?explain=maybe",
        json={"documents": [], "explain": True},
    )
    assert "'explain'" in problem(batch, 400)["detail"]


def test_suggest_trained_tfidf_and_ensemble(client, trained):
    text = "Stars, planets and telescopes"
    tfidf = suggest(client, "tfidf-en", json={"text": text}).get_json()
    assert tfidf["results"][0]["uri"] == "http://example.org/t/astronomy"
    ensemble = suggest(client, "ensemble-en", json={"text": text}).get_json()
    assert ensemble["results"][0]["uri"] == "http://example.org/t/astronomy"


def test_suggest_matches_the_python_api(client, projects):
    body = suggest(client, json={"text": PHYSICS, "limit": 3}).get_json()
    batch = projects.get("lexical-en").suggest([PHYSICS], limit=3)
    vocab = projects.get("lexical-en").vocab
    expected = [(vocab.uris[s.subject], round(s.score, 4)) for s in batch.row(0)]
    assert [(s["uri"], s["score"]) for s in body["results"]] == expected


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"json": {}}, 400, "The field 'text' is missing"),
        ({"json": {"text": 5}}, 400, "'text': Input should be a valid string"),
        ({"json": {"text": "x", "limit": -1}}, 400, "greater than or equal to 1"),
        ({"json": {"text": "x", "limit": 0}}, 400, "greater than or equal to 1"),
        ({"json": {"text": "x", "limit": 1001}}, 400, "less than or equal to 1000"),
        ({"json": {"text": "x", "limit": 2.5}}, 400, "'limit': Input should be a"),
        ({"json": {"text": "x", "limit": True}}, 400, "a boolean is not a number"),
        ({"data": {"text": "x", "limit": "-1"}}, 400, "greater than or equal to 1"),
        ({"data": {"text": "x", "limit": "ten"}}, 400, "'limit': Input should be"),
        ({"json": {"text": "x", "threshold": 1.5}}, 400, "'threshold': Input"),
        ({"json": {"text": "x", "threshold": "NaN"}}, 400, "finite number"),
        ({"json": {"text": "x", "explain": "maybe"}}, 400, "valid boolean"),
        ({"json": {"text": "x", "language": "de"}}, 400, "not supported by vocab"),
        ({"json": {"text": "x", "language": ""}}, 400, "'language': String should"),
        (
            {"data": b'{"text": "x", "text": "y"}', "content_type": "application/json"},
            400,
            "'text' is given twice in the JSON body",
        ),
        ({"json": {"text": "x", "limt": 3}}, 400, "Did you mean 'limit'?"),
        ({"json": ["text"]}, 400, "The body must be an object"),
        (
            {"data": b'{"text": "x"', "content_type": "application/json"},
            400,
            "not valid JSON",
        ),
        (
            {"data": b'{"text": "caf\xe9"}', "content_type": "application/json"},
            400,
            "not UTF-8",
        ),
        (
            {
                "data": b"text=caf%E9",
                "content_type": "application/x-www-form-urlencoded",
            },
            400,
            "not UTF-8",
        ),
        (
            {"data": b"caf\xe9 \xff", "content_type": "text/plain"},
            400,
            "not UTF-8",
        ),
        (
            {
                "data": {"text": (io.BytesIO(b"\xff\xfe\x00x"), "latin.txt")},
                "content_type": "multipart/form-data",
            },
            400,
            "not UTF-8",
        ),
        (
            {
                "data": b"text=a&text=b",
                "content_type": "application/x-www-form-urlencoded",
            },
            400,
            "'text' is given twice in the form",
        ),
        (
            {"data": b'{"text": "\\ud800"}', "content_type": "application/json"},
            400,
            "lone surrogate",
        ),
        (
            {
                "data": b"[" * 100_000 + b"]" * 100_000,
                "content_type": "application/json",
            },
            400,
            "not valid JSON",
        ),
        (
            {
                "data": b'{"limit": ' + b"9" * 5000 + b"}",
                "content_type": "application/json",
            },
            400,
            "not valid JSON",
        ),
        ({"data": b"\x89PNG", "content_type": "image/png"}, 415, "Send application"),
    ],
)
def test_suggest_bad_requests(client, kwargs, status, fragment):
    body = problem(suggest(client, **kwargs), status)
    assert fragment in body["detail"]


def test_non_utf8_multipart_field_is_refused(client):
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
        ).encode()
        + b"caf\xe9\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    response = suggest(
        client, data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert "not UTF-8" in problem(response, 400)["detail"]


def test_untrained_project_is_409(client):
    body = problem(suggest(client, "tfidf-en", json={"text": PHYSICS}), 409)
    assert "indexer train tfidf-en" in body["detail"]
    assert body["title"] == "Project not trained"


def test_unknown_project_is_404_before_the_body_is_read(client):
    response = suggest(client, "nope", data=b"\xff", content_type="text/plain")
    problem(response, 404)


def test_misconfigured_project_is_503_without_details(client, caplog):
    body = problem(suggest(client, "broken-en", json={"text": PHYSICS}), 503)
    assert body["detail"] == (
        "Project 'broken-en' is unavailable: it is misconfigured on the server "
        "(the server log says how)"
    )
    assert "unknown parameter 'candidats'" in caplog.text


def test_missing_vocabulary_file_is_503_and_listed_unavailable(
    workspace, make_client, caplog
):
    config = workspace / "projects.cfg"
    config.write_text(
        config.read_text()
        + "\n[vocab:gone]\nsource = /no/such/dir/gone.ttl\n"
        + "\n[gone-en]\nlanguage = en\nvocab = gone\nbackend = lexical\n"
    )
    client = make_client()
    body = problem(suggest(client, "gone-en", json={"text": PHYSICS}), 503)
    assert "/no/such" not in body["detail"]
    listed = client.get("/v1/projects").get_json()["projects"]
    gone = next(p for p in listed if p["project_id"] == "gone-en")
    assert gone["status"] == "unavailable" and "/no/such" not in gone["error"]
    concepts = client.get("/v1/vocabs/gone/concepts?label=x")
    assert "/no/such" not in problem(concepts, 503)["detail"]
    assert "/no/such/dir/gone.ttl" in caplog.text


def test_body_over_the_limit_is_413(make_client):
    client = make_client(max_content_length=1000)
    body = problem(suggest(client, json={"text": "x" * 2000}), 413)
    assert "1000 bytes" in body["detail"]


def test_fifty_megabyte_body_is_413_and_the_server_goes_on(client):
    big = b"a" * (50 * 1024 * 1024)
    problem(suggest(client, data=big, content_type="text/plain"), 413)
    assert suggest(client, json={"text": PHYSICS}).status_code == 200


def test_method_not_allowed_and_unknown_route(client):
    response = client.get("/v1/projects/lexical-en/suggest")
    problem(response, 405)
    assert "POST" in response.headers["Allow"]
    problem(client.get("/v1/nothing-here"), 404)


# -- batch -----------------------------------------------------------------------------


def test_suggest_batch(client):
    documents = [
        {"document_id": "a", "text": PHYSICS},
        {"text": ""},
        {"document_id": "7", "text": "Orchestras and music", "metadata": {"x": "y"}},
    ]
    response = client.post(
        "/v1/projects/lexical-en/suggest-batch?limit=2",
        json={"documents": documents, "explain": True},
    )
    body = response.get_json()
    assert response.status_code == 200
    assert [r["document_id"] for r in body] == ["a", None, "7"]
    assert body[0]["results"][0]["uri"] == PHYSICS_URI
    assert body[0]["results"][0]["explanation"]
    assert body[1]["results"] == []
    assert body[2]["results"][0]["label"] == "music"
    assert len(body[0]["results"]) == 2 and len(body[2]["results"]) <= 2


def test_suggest_batch_empty(client):
    response = client.post(
        "/v1/projects/lexical-en/suggest-batch", json={"documents": []}
    )
    assert response.get_json() == []


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({}, "The field 'documents' is missing"),
        ({"documents": "text"}, "'documents': Input should be a valid list"),
        ({"documents": [{"text": "x"}] * 4}, "At most 3 documents"),
        ({"documents": ["plain"]}, "'documents[0]': Input should be a valid dict"),
        (
            {"documents": [{"text": "x", "txt": "x"}]},
            "field 'documents[0].txt'. Did you mean 'text'? Fields: text, "
            "document_id, metadata",
        ),
        ({"documents": [{"document_id": "1"}]}, "'documents[0].text' is missing"),
        ({"documents": [{"text": "x", "document_id": [1]}]}, "valid string"),
        ({"documents": [], "limit": -1}, "greater than or equal to 1"),
    ],
)
def test_suggest_batch_bad_requests(make_client, payload, fragment):
    client = make_client(max_batch=3)
    response = client.post("/v1/projects/lexical-en/suggest-batch", json=payload)
    assert fragment in problem(response, 400)["detail"]


def test_suggest_batch_needs_json(client):
    response = client.post(
        "/v1/projects/lexical-en/suggest-batch", data={"documents": "x"}
    )
    problem(response, 415)


# -- learn and detect-language ------------------------------------------------------

LEARN_DOCS = [{"text": PHYSICS, "subjects": [{"uri": PHYSICS_URI}]}]


def learn(client, project: str, **kwargs):
    return client.post(f"/v1/projects/{project}/learn", **kwargs)


def test_learn_needs_the_project_to_allow_it_or_the_key(client):
    body = problem(learn(client, "tfidf-en", json=LEARN_DOCS), 403)
    assert "not configured to allow learning via API" in body["detail"]
    key = {"X-API-Key": API_KEY}
    untrained = problem(learn(client, "tfidf-en", json=LEARN_DOCS, headers=key), 409)
    assert "indexer train tfidf-en" in untrained["detail"]
    problem(learn(client, "private-en", json=LEARN_DOCS), 404)
    assert problem(learn(client, "nope", json=[]), 404)["detail"] == (
        "Project 'nope' not found"
    )


def test_learn_with_a_backend_that_cannot_learn_is_503(client, projects, caplog):
    projects.get("xmc-en").train([DATA / "tiny.tsv"])
    response = learn(client, "xmc-en", json=LEARN_DOCS, headers={"X-API-Key": API_KEY})
    body = problem(response, 503)
    assert body["detail"] == (
        "Backend 'xmc' of project 'xmc-en' does not learn online; retrain it with "
        "`indexer train xmc-en CORPUS`"
    )


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"json": {"text": "x"}}, 400, "The body must be an array"),
        ({"json": [{"text": 5}]}, 400, "The field '[0].text': Input should be"),
        ({"json": [{"text": "x", "subjects": [{}]}]}, 400, "'[0].subjects[0].uri'"),
        (
            {"json": [{"text": "x", "subject": []}]},
            400,
            "Unknown field '[0].subject'. Did you mean 'subjects'? Fields: text, "
            "subjects, metadata",
        ),
        (
            {"json": [{"text": "x", "subjects": [{"uri": "u", "lable": "x"}]}]},
            400,
            "Unknown field '[0].subjects[0].lable'. Did you mean 'label'? Fields: "
            "uri, label",
        ),
        ({"data": {"text": "x"}}, 415, "Send application/json"),
        ({"json": [], "query_string": {"limit": "1"}}, 400, "query parameter 'limit'"),
    ],
)
def test_learn_bad_requests(client, kwargs, status, fragment):
    response = learn(client, "tfidf-en", headers={"X-API-Key": API_KEY}, **kwargs)
    assert fragment in problem(response, status)["detail"]


def test_learn_skips_documents_with_a_blank_text(client, trained):
    from indexer.project import Projects

    def manifest():
        return Projects.from_path(trained).get("tfidf-en").backend.manifest

    before = manifest()["documents"]
    key = {"X-API-Key": API_KEY}
    blank = [
        {"text": text, "subjects": [{"uri": PHYSICS_URI}]} for text in ("", " \n\t")
    ]
    response = learn(client, "tfidf-en", json=blank, headers=key)
    assert response.status_code == 204 and not response.get_data()
    assert manifest()["documents"] == before and "learned" not in manifest()
    response = learn(client, "tfidf-en", json=blank + LEARN_DOCS, headers=key)
    assert response.status_code == 204
    assert manifest()["documents"] == before + 1
    assert [x["documents"] for x in manifest()["learned"]] == [1]


def test_learn_on_a_busy_project_asks_the_client_to_retry_later(make_client, trained):
    import fcntl

    from indexer.project import Projects

    client = make_client(learn_wait=0.3)

    lock = Projects.from_path(trained).get("tfidf-en").lock.path
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a training in another process holds it
        os.pwrite(
            fd,
            b'{"pid": 4242, "command": "indexer train tfidf-en /srv/x.tsv", '
            b'"since": "2026-01-01T00:00:00"}',
            0,
        )
        started = time.monotonic()
        response = learn(
            client, "tfidf-en", json=LEARN_DOCS, headers={"X-API-Key": API_KEY}
        )
        waited = time.monotonic() - started
    finally:
        os.close(fd)
    assert 0.3 <= waited < 5  # it waited its while for the lock, no longer
    body = problem(response, 503)
    assert response.headers["Retry-After"] == "30"
    assert body["type"] == "urn:indexer:problem:busy"
    assert body["detail"] == (
        "Project 'tfidf-en' is busy: another process is training, updating or "
        "clearing it. Retry later (in 30 s, as Retry-After says)"
    )
    # the holder's command line (paths) stays in the server log
    assert "--wait" not in body["detail"] and "4242" not in body["detail"]
    retried = learn(client, "tfidf-en", json=LEARN_DOCS, headers={"X-API-Key": API_KEY})
    assert retried.status_code == 204


def test_learn_waits_for_a_lock_held_briefly(make_client, trained):
    import fcntl

    from indexer.project import Projects

    client = make_client(learn_wait=5)
    lock = Projects.from_path(trained).get("tfidf-en").lock.path
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another worker's learn holds it
    threading.Timer(0.3, os.close, [fd]).start()
    started = time.monotonic()
    response = learn(
        client, "tfidf-en", json=LEARN_DOCS, headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 204, response.get_data()
    assert time.monotonic() - started >= 0.3


def test_a_project_shows_its_model_server_only_with_the_key(config_path, make_client):
    config_path.write_text(
        config_path.read_text()
        + "\n[ranker-en]\nlanguage = en\nvocab = tiny\nbackend = llm_rank\n"
        "engine = systemone\nurl = http://127.0.0.1:48999\nmodel = served-model\n"
        "api_key_env = RANKER_KEY\ntemplate_file = /srv/indexer/templates.json\n"
    )
    client = make_client()
    anonymous = client.get("/v1/projects/ranker-en")
    assert anonymous.status_code == 200, anonymous.get_data()
    body = anonymous.get_data(as_text=True)
    for private in ("127.0.0.1:48999", "RANKER_KEY", "/srv/indexer"):
        assert private not in body
    params = anonymous.get_json()["params"]
    assert params["url"] is None and params["api_key_env"] is None
    assert params["template_file"] is None
    assert params["engine"] == "systemone" and params["model"] == "served-model"
    keyed = client.get("/v1/projects/ranker-en", headers={"X-API-Key": API_KEY})
    params = keyed.get_json()["params"]
    assert params["url"] == "http://127.0.0.1:48999"
    assert params["api_key_env"] == "RANKER_KEY"
    assert params["template_file"] == "/srv/indexer/templates.json"


def test_detect_language(client):
    response = client.post(
        "/v1/detect-language",
        json={"text": "Tämä teksti on kirjoitettu suomeksi", "languages": ["en", "fi"]},
    )
    results = response.get_json()["results"]
    assert [r["language"] for r in results] == ["fi", "en"]
    assert results[0]["score"] > 0.9 and sum(r["score"] for r in results) == (
        pytest.approx(1.0, abs=1e-3)
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"text": "x", "languages": []}, "'languages': List should have at least 1"),
        ({"text": "x"}, "The field 'languages' is missing"),
        ({"text": "x", "languages": ["en", "qq"]}, "Unsupported candidate languages"),
        ({"text": "x", "languages": [""]}, "'languages[0]': String should match"),
    ],
)
def test_detect_language_bad_requests(client, payload, fragment):
    response = client.post("/v1/detect-language", json=payload)
    assert fragment in problem(response, 400)["detail"]


# -- reload ---------------------------------------------------------------------


def test_reload_needs_the_key(client, make_client):
    url = "/v1/projects/lexical-en/reload"
    problem(client.post(url), 401)
    problem(client.post(url, headers={"X-API-Key": "wrong"}), 401)
    response = client.post(url, headers={"X-API-Key": API_KEY})
    assert response.get_json() == {
        "project_id": "lexical-en",
        "status": "ready",
        "modification_time": None,
    }
    no_key = make_client(api_key="")
    assert "INDEXER_API_KEY" in problem(no_key.post(url), 403)["detail"]


def test_reload_of_an_untrained_project_is_409(client):
    response = client.post(
        "/v1/projects/tfidf-en/reload", headers={"X-API-Key": API_KEY}
    )
    problem(response, 409)


def _retrain(config_path: Path, corpus: Path) -> None:
    from indexer.project import Projects

    Projects.from_path(config_path).get("tfidf-en").train([corpus])


def test_a_retrained_model_is_served_after_reload(make_client, trained, tmp_path):
    client = make_client(check_interval=None)  # no automatic checks
    text = {"text": "The history of music and orchestras"}
    before = suggest(client, "tfidf-en", json=text).get_json()["results"]
    subset = tmp_path / "subset.tsv"
    subset.write_text("".join((DATA / "tiny.tsv").read_text().splitlines(True)[3:6]))
    _retrain(trained, subset)
    assert suggest(client, "tfidf-en", json=text).get_json()["results"] == before
    response = client.post(
        "/v1/projects/tfidf-en/reload", headers={"X-API-Key": API_KEY}
    )
    assert response.get_json()["status"] == "ready"
    after = suggest(client, "tfidf-en", json=text).get_json()["results"]
    assert after != before


def test_concurrent_suggestions_during_model_reloads(make_client, trained, tmp_path):
    """Requests racing with retrainings get the answer of one model or the other,
    never an error or a mixture, and the newest model wins in the end."""
    client = make_client()  # checks for a new model on every request
    corpus_a = DATA / "tiny.tsv"
    corpus_b = tmp_path / "b.tsv"
    corpus_b.write_text("".join(corpus_a.read_text().splitlines(True)[2:8]))
    text = {"text": "Stars and the history of music, physics and biology"}

    def answer(c) -> tuple:
        response = c.post("/v1/projects/tfidf-en/suggest", json=text)
        assert response.status_code == 200, response.get_data(as_text=True)
        return tuple((s["uri"], s["score"]) for s in response.get_json()["results"])

    answer_a = answer(client)
    _retrain(trained, corpus_b)
    answer_b = answer(client)
    assert answer_a != answer_b

    seen: Counter = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer() -> None:
        c = client.app.test_client()
        while not stop.is_set():
            try:
                result = answer(c)
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)
                return
            with lock:
                seen[result] += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for corpus in (corpus_a, corpus_b) * 3:
            _retrain(trained, corpus)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors[0]
    assert set(seen) <= {answer_a, answer_b}, "an answer from no single model"
    assert seen[answer_a] and seen[answer_b]
    assert answer(client) == answer_b  # the last training was on corpus b


def test_concurrent_requests_agree_with_sequential_ones(client, trained):
    texts = [
        line.split("\t")[0] for line in (DATA / "tiny.tsv").read_text().splitlines()
    ]
    projects = ("tfidf-en", "lexical-en", "ensemble-en")

    def answers(c) -> dict:
        out = {}
        for project in projects:
            for text in texts:
                r = c.post(f"/v1/projects/{project}/suggest", json={"text": text})
                out[project, text] = r.get_json()["results"]
        return out

    expected = answers(client.app.test_client())
    results: list = []

    def work() -> None:
        results.append(answers(client.app.test_client()))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 6 and all(r == expected for r in results)


def test_stemming_is_safe_in_threads():
    """Request threads share one analyzer per language; the pure-Python Snowball
    stemmers keep per-word state, so each thread must stem with its own."""
    finnish = pytest.importorskip("snowballstemmer.finnish_stemmer")
    from indexer.analyzer import Analyzer

    endings = ("", "ssa", "sta", "lla", "ksi", "iden", "ineen", "illaan")
    stems = ("kirja", "talo", "musiikki", "tähti", "historia", "kieli", "sota")
    words = [f"{s}{e}{'x' * k}" for s in stems for e in endings for k in range(40)]
    expected = [finnish.FinnishStemmer().stemWord(w) for w in words]
    analyzer = Analyzer("fi")
    analyzer._trim = False  # compare with plain Snowball stems
    results: dict[int, str] = {}
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(offset, len(words), 4):
                results[i] = analyzer.stem(words[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[0]
    assert [results[i] for i in range(len(words))] == expected


# -- vocabularies and concepts ----------------------------------------------------


def test_list_vocabs(client):
    vocabs = client.get("/v1/vocabs").get_json()["vocabs"]
    assert [v["vocab_id"] for v in vocabs] == ["tiny"]  # secret-vocab: private
    with_key = client.get("/v1/vocabs", headers={"X-API-Key": API_KEY}).get_json()
    assert {v["vocab_id"] for v in with_key["vocabs"]} == {"tiny", "secret-vocab"}


def test_get_vocab(client):
    suggest(client, json={"text": PHYSICS})  # loads the vocabulary
    vocab = client.get("/v1/vocabs/tiny").get_json()
    assert vocab["loaded"] and vocab["size"] == 8 and vocab["languages"] == ["en", "fi"]
    problem(client.get("/v1/vocabs/secret-vocab"), 404)
    problem(client.get("/v1/vocabs/nope"), 404)


def test_concept_by_uri(client):
    body = client.get(f"/v1/vocabs/tiny/concepts?uri={PHYSICS_URI}").get_json()
    assert body["language"] == "en"
    (concept,) = body["concepts"]
    assert concept["label"] == "physics" and concept["alt_labels"] == [
        "physical sciences"
    ]
    assert concept["broader"] == [
        {"uri": "http://example.org/t/science", "label": "science"}
    ]
    assert concept["related"][0]["label"] == "astronomy"
    fi = client.get(f"/v1/vocabs/tiny/concepts?uri=<{PHYSICS_URI}>&language=fi")
    assert fi.get_json()["concepts"][0]["label"] == "fysiikka"


def test_concept_label_search(client):
    body = client.get("/v1/vocabs/tiny/concepts?label=SCIENCE").get_json()
    labels = [c["label"] for c in body["concepts"]]
    assert labels[0] == "science" and "physics" in labels  # exact match first
    limited = client.get("/v1/vocabs/tiny/concepts?label=science&limit=1").get_json()
    assert len(limited["concepts"]) == 1
    fi = client.get("/v1/vocabs/tiny/concepts?label=tiede&language=fi").get_json()
    assert {c["label"] for c in fi["concepts"]} == {"tiede", "tähtitiede"}


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("", 400, "Give either uri"),
        (f"?uri={PHYSICS_URI}&label=x", 400, "Give either uri"),
        ("?uri=http://example.org/t/none", 404, "No concept"),
        ("?label=x&language=sv", 400, 'Language "sv" not supported'),
        ("?label=x&limit=0", 400, "greater than or equal to 1"),
        ("?label=", 400, "'label': String should match"),
        ("?label=x&language=", 400, "'language': String should match"),
        ("?label=x&label=y", 400, "'label' is given twice in the query string"),
        ("?lable=x", 400, "Did you mean 'label'?"),
    ],
)
def test_concept_bad_requests(client, query, status, fragment):
    body = problem(client.get(f"/v1/vocabs/tiny/concepts{query}"), status)
    assert fragment in body["detail"]


# -- the API key, ensembles and the log -------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/health", "/v1/openapi.json", "/v1/", "/", "/v1/projects"]
)
def test_a_wrong_key_is_refused_on_every_path(client, path):
    problem(client.get(path, headers={"X-API-Key": "wrong"}), 401)
    assert client.client.get(path, headers={"X-API-Key": API_KEY}).status_code == 200


def test_an_ensemble_is_no_more_visible_than_its_sources(workspace, caplog):
    from indexer.rest import create_app

    config = workspace / "projects.cfg"
    text = config.read_text().replace(
        "[lexical-en]\n", "[lexical-en]\naccess = private\n"
    )
    config.write_text(text)
    client = CheckedClient(create_app(config, api_key=API_KEY))
    ids = [p["project_id"] for p in client.get("/v1/projects").get_json()["projects"]]
    assert "ensemble-en" not in ids and "calibrated-en" not in ids
    problem(suggest(client, "ensemble-en", json={"text": PHYSICS}), 404)
    keyed = client.get("/v1/projects/ensemble-en", headers={"X-API-Key": API_KEY})
    assert keyed.get_json()["access"] == "private"
    assert "Project 'ensemble-en' is served as private" in caplog.text


def test_waitress_queue_warnings_are_rate_limited(caplog):
    import logging

    from indexer.rest.server import quiet_queue_warnings

    quiet_queue_warnings(interval=3600)
    queue_log = logging.getLogger("waitress.queue")
    with caplog.at_level(logging.WARNING, logger="waitress.queue"):
        for depth in range(500):
            queue_log.warning("Task queue depth is %d", depth)
    assert len(caplog.records) <= 1


# -- CORS and the web page --------------------------------------------------------


def test_cors_is_off_by_default(client):
    response = client.get("/v1/health", headers={"Origin": "https://example.org"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_for_configured_origins(make_client):
    client = make_client(cors_origins="https://a.example, https://b.example")
    response = client.client.options(
        "/v1/projects/lexical-en/suggest",
        headers={
            "Origin": "https://b.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, X-API-Key",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"].lower()
    other = client.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_web_page_is_served(client):
    with client.client.get("/") as page:
        assert page.status_code == 200 and b"Subject indexer" in page.data
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    with client.client.get("/app.js") as script:
        assert script.status_code == 200
    with client.client.get("/style.css") as style:
        assert style.mimetype == "text/css"
    problem(client.get("/secrets.txt"), 404)


# -- the real server ------------------------------------------------------------


@contextmanager
def running_server(app, threads: int = 4):
    """Serve `app` with waitress on a free loopback port; yields the base URL."""
    from waitress import wasyncore

    from indexer.rest import make_server

    sockets: dict = {}
    server = make_server(app, host="127.0.0.1", port=0, threads=threads, map=sockets)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        try:  # closing every socket in the server's own thread ends its loop
            server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
        except OSError:
            # its wake-up pipe was closed already (seen once, in teardown,
            # after every request was answered): close them from here
            wasyncore.close_all(sockets)
        thread.join(10)


def http(method: str, url: str, body: bytes | None = None, content_type=None):
    """(status, content type, parsed JSON body) of one request over HTTP."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                response.headers.get_content_type(),
                json.load(response),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), json.loads(exc.read())


def test_real_server_over_http(config_path):
    from indexer.rest import create_app

    app = create_app(config_path, api_key=API_KEY)
    with running_server(app) as base:
        status, _, health = http("GET", f"{base}/v1/health")
        assert status == 200 and health["status"] == "ok"
        url = f"{base}/v1/projects/lexical-en/suggest"
        payload = json.dumps({"text": PHYSICS, "limit": 3}).encode()
        status, _, body = http("POST", url, payload, "application/json")
        assert status == 200 and body["results"][0]["uri"] == PHYSICS_URI
        status, kind, body = http("POST", url, b"\xff\xfe", "text/plain")
        assert (status, kind) == (400, "application/problem+json")
        status, kind, _ = http("POST", url, b"a" * (50 * 1024 * 1024), "text/plain")
        assert (status, kind) == (413, "application/problem+json")
        status, _, _ = http("POST", f"{base}/v1/projects/nope/suggest", payload)
        assert status == 404
        # waitress's own answers to what the app never sees
        for raw, expected in (
            (b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ):
            status, kind, detail = raw_request(base, raw)
            assert (status, kind) == (expected, "application/problem+json")
            assert detail["status"] == status and detail["title"], detail

        # concurrent clients over real sockets agree with each other
        results: list = []

        def client() -> None:
            for _ in range(5):
                results.append(http("POST", url, payload, "application/json")[2])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 20 and all(r == results[0] for r in results)
        assert http("GET", f"{base}/v1/health")[0] == 200  # still up


def raw_request(base: str, raw: bytes) -> tuple[int, str, dict]:
    """(status, content type, JSON body) of bytes sent as they are."""
    import http.client
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    return response.status, response.headers.get_content_type(), json.loads(body)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes need fork()")
@pytest.mark.parametrize("kind", ["gunicorn", "waitress"])
def test_serve_with_worker_processes(config_path, kind):
    command = [
        sys.executable,
        "-c",
        "from indexer.cli import main; main()",
        "--projects",
        str(config_path),
        "serve",
        "--port",
        "0",
        "--workers",
        "2",
        "--threads",
        "1",
        "--server",
        kind,
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for line in server.stderr:
            found = re.search(rf"on (http://127\.0\.0\.1:\d+)/ \({kind}, 2 proc", line)
            if found:
                base = found.group(1)
                break
        assert base, "the server did not start"
        if kind == "gunicorn":  # its own answers to what the app never sees
            for raw in (
                b"NOT A REQUEST LINE\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + (b"X-Big: " + b"a" * 9000 + b"\r\n") + b"\r\n",
            ):
                status, kind_of, detail = raw_request(base, raw)
                assert status in (400, 431), (status, detail)
                assert kind_of == "application/problem+json", detail
                assert detail["status"] == status and detail["title"]
        payload = json.dumps({"text": PHYSICS}).encode()
        for _ in range(6):  # new connections: both workers answer some
            status, _, body = http(
                "POST",
                f"{base}/v1/projects/lexical-en/suggest",
                payload,
                "application/json",
            )
            assert status == 200 and body["results"][0]["uri"] == PHYSICS_URI
    finally:
        server.terminate()
        server.wait(30)
        server.stderr.close()
    assert server.returncode == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes need fork()")
def test_a_killed_waitress_worker_stops_the_server_with_a_failure(config_path):
    import signal

    command = [sys.executable, "-c", "from indexer.cli import main; main()"]
    command += ["--projects", str(config_path), "serve", "--port", "0"]
    command += ["--workers", "2", "--threads", "1", "--server", "waitress"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if "(waitress, 2 processes" in line:
                break
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        if not children.exists():
            pytest.skip("needs Linux's /proc/PID/task/TID/children")
        workers = [int(pid) for pid in children.read_text().split()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert server.wait(30) == 1  # a failure: Restart=on-failure restarts it
        rest = server.stderr.read()
    finally:
        server.kill()
        server.stderr.close()
    assert rest.rstrip().endswith(
        f"Error: Worker process {workers[0]} was killed by signal 9, so the "
        "server stopped"
    )
    assert "Traceback" not in rest
    with pytest.raises(ProcessLookupError):  # the other worker stopped too
        os.kill(workers[1], 0)


# -- the command line ---------------------------------------------------------------


def test_serve_commands_are_listed_without_importing_flask():
    code = (
        "import sys; from indexer.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('FLASK LOADED' if 'flask' in sys.modules else 'NO FLASK')"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in output and "run-dev" in output
    assert "NO FLASK" in output


def test_serve_help(run_cli):
    result = run_cli("serve", "--help")
    assert result.exit_code == 0
    options = ("--host", "--port", "--threads", "--workers", "--api-key", "--cors")
    for option in (*options, "--dev", "--check-interval", "--max-content-length"):
        assert option in result.output


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--port", "-1", "-1 is not in the range 0<=x<=65535"),
        ("--port", "70000", "70000 is not in the range 0<=x<=65535"),
        ("--host", "999.1.1.1", "'999.1.1.1' is not an IPv4 address"),
    ],
)
def test_serve_refuses_a_bad_address_before_it_loads(run_cli, option, value, says):
    result = run_cli("serve", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert says in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_says_so(config_path, workers):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from indexer.cli import main; main()"]
            + ["--projects", str(config_path), "serve", "--port", str(port)]
            + ["--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: Port {port} on 127.0.0.1 is in use by another program: stop it, "
        "or choose another --port"
    )
    assert "Traceback" not in result.stderr


def test_serve_on_an_address_of_another_machine_is_a_usage_error(run_cli):
    result = run_cli("serve", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1
    assert result.exit_code == 2, result.output
    assert "--host 192.0.2.1 is not an address of this machine" in result.output


def test_a_vocabulary_loaded_elsewhere_is_served_without_a_restart(
    make_client, config_path, tmp_path
):
    """`load-vocab` in another process is noticed as a training is: the next
    check reads the new version, and label matching finds the new concept."""
    from indexer.project import Projects

    client = make_client(check_interval=None)  # only on reload
    text = {"text": "A handbook of zymurgy for home brewers"}
    before = suggest(client, "lexical-en", json=text).get_json()["results"]
    assert "zymurgy" not in [r["label"] for r in before]
    grown = tmp_path / "grown.ttl"
    grown.write_text(
        (DATA / "tiny.ttl").read_text()
        + '\nex:zymurgy a skos:Concept ; skos:prefLabel "zymurgy"@en .\n'
    )
    Projects.from_path(config_path).vocab("tiny", autoload=False).load_file(grown)
    response = client.post(
        "/v1/projects/lexical-en/reload", headers={"X-API-Key": API_KEY}
    )
    assert response.get_json()["status"] == "ready"
    after = suggest(client, "lexical-en", json=text).get_json()["results"]
    assert after[0]["label"] == "zymurgy"
    assert after[0]["uri"] == "http://example.org/t/zymurgy"

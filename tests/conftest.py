"""Shared fixtures: a workspace with the tiny vocabulary and one project per backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHARED = Path(os.environ.get("INDEXER_DATASETS", SHARED))

PROJECTS_CFG = """
[vocab:tiny]
source = {data}/tiny.ttl

[dummy-en]
language = en
vocab = tiny
backend = dummy
uri = http://example.org/t/physics

[tfidf-en]
language = en
vocab = tiny
backend = tfidf
ngram = 1

[lexical-en]
language = en
vocab = tiny
backend = lexical

[ensemble-en]
language = en
vocab = tiny
backend = ensemble
sources = tfidf-en:2, lexical-en:1
"""


def shared_dataset(name: str) -> Path:
    """Path of a real dataset, skipping the test when it is not available."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"dataset {name} not available in {SHARED}")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A directory with projects.cfg (tiny vocabulary) and an empty data dir."""
    (tmp_path / "projects.cfg").write_text(PROJECTS_CFG.format(data=DATA))
    return tmp_path


@pytest.fixture
def projects(workspace: Path):
    from indexer.project import Projects

    return Projects.from_path(workspace / "projects.cfg")


@pytest.fixture
def run_cli(workspace: Path):
    """Invoke the CLI against the workspace; returns click's Result."""
    from indexer.cli import cli

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(
            cli, ["--projects", str(workspace / "projects.cfg"), *args], input=input
        )

    return run


@pytest.fixture
def tiny_corpus() -> Path:
    return DATA / "tiny.tsv"

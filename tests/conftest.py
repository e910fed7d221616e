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


WORDS = [
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "for",
    "on",
    "with",
    "stars",
    "star",
    "telescope",
    "telescopes",
    "galaxies",
    "galaxy",
    "astronomy",
    "physics",
    "particles",
    "quantum",
    "motion",
    "cells",
    "genes",
    "gene",
    "biology",
    "evolution",
    "history",
    "roman",
    "empire",
    "medieval",
    "towns",
    "music",
    "orchestras",
    "symphonies",
    "classical",
    "solar",
    "panels",
    "energy",
    "photovoltaics",
    "rooftop",
    "homes",
    "semiconductors",
    "proteins",
    "living",
    "science",
    "life",
    "natural",
    "world",
    "study",
    "past",
    "musical",
    "arts",
    "power",
    "stargazing",
    "physical",
    "sciences",
    "systematic",
]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT, word-level vocabulary (no download)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(
        vocab_file=str(path / "vocab.txt"), do_lower_case=True
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def dense_workspace(workspace: Path, tiny_encoder: Path) -> Path:
    """The workspace plus knn and embed projects on the tiny encoder."""
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + f"""
[knn-en]
language = en
vocab = tiny
backend = knn
model = {tiny_encoder}
k = 5

[embed-en]
language = en
vocab = tiny
backend = embed
model = {tiny_encoder}
"""
    )
    return workspace

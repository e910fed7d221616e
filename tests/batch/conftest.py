"""Corpora for batch indexing: many short documents from the test vocabulary."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import DATA, WORDS

ROOT = Path(__file__).resolve().parents[2]


def write_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """JSONL records `{"id": "d<N>", "text": ...}` of 12 words each."""
    rng = random.Random(seed)
    words = [w for w in WORDS if len(w) > 3]
    with open(path, "w", encoding="utf-8") as f:
        for n in range(documents):
            text = " ".join(rng.choice(words) for _ in range(12))
            f.write(json.dumps({"id": f"d{n}", "text": text}) + "\n")
    return path


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def documents_written(rows: list[dict]) -> Counter:
    """How many times each document's suggestion list was written."""
    return Counter(row["id"] for row in rows if row["rank"] == 1)


def indexer_process(workspace: Path, *args: str, **kwargs) -> subprocess.Popen:
    """`python -m indexer` in its own process, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indexer",
            "--projects",
            str(workspace / "projects.cfg"),
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture
def trained(run_cli):
    """The workspace with tfidf-en and xmc-en trained on the tiny corpus."""
    for project in ("tfidf-en", "xmc-en"):
        result = run_cli("train", project, str(DATA / "tiny.tsv"))
        assert result.exit_code == 0, result.output
    return run_cli

"""Hostile and careless input: each case asserts the exact refusal (exit code and
message) and that nothing was lost or written outside the data directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from indexer.storage import read_manifest

from .conftest import DATA

# A training that stops inside `_train` until the file named by argv[3] exists.
PAUSED_TRAIN = """
import sys, time
from pathlib import Path
from backends.tfidf import TfidfBackend
from indexer.project import Projects

original = TfidfBackend._train
def paused_train(self, corpus, directory, jobs):
    info = original(self, corpus, directory, jobs)
    print("training", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    return info
TfidfBackend._train = paused_train
Projects.from_path(sys.argv[1]).get("tfidf-en").train([sys.argv[2]])
print("trained", flush=True)
"""


ROOT = Path(__file__).resolve().parents[1]
# child processes import this checkout, not another installed copy
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def indexer_cli(workspace: Path, *args: str, timeout: float = 120):
    """Run `python -m indexer` in a real process against the workspace."""
    return subprocess.run(
        [sys.executable, "-m", "indexer.cli", "--projects", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=CHILD_ENV,
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def start_paused_training(workspace: Path, corpus: Path) -> subprocess.Popen:
    script = workspace / "paused.py"
    script.write_text(textwrap.dedent(PAUSED_TRAIN))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(workspace / "projects.cfg"),
            str(corpus),
            str(workspace / "go"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=CHILD_ENV,
    )
    assert proc.stdout.readline().strip() == "training"
    return proc


# -- 1. concurrent training, clear and load-vocab --------------------------


def test_second_training_is_refused_and_the_first_finishes(workspace, projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    before = project.suggest(["telescopes"]).matrix.toarray()
    first = start_paused_training(workspace, DATA / "fulltext")
    try:
        second = indexer_cli(workspace, "train", "tfidf-en", str(DATA / "tiny.tsv"))
        assert second.returncode == 1
        assert second.stderr.startswith(
            f"Error: Project 'tfidf-en' is busy: process {first.pid} (paused.py "
        )
        assert "has held it since 20" in second.stderr
        assert second.stderr.rstrip().endswith(
            "Wait for it to finish, or run again with --wait"
        )
        cleared = indexer_cli(workspace, "clear", "tfidf-en")
        assert cleared.returncode == 1 and "is busy: process" in cleared.stderr
        # the previous model stays usable throughout, also for a fresh reader
        project.__dict__.pop("backend")
        np.testing.assert_array_equal(
            project.suggest(["telescopes"]).matrix.toarray(), before
        )
        assert read_manifest(project.model_dir)["documents"] == 10
    finally:
        (workspace / "go").touch()
        first.wait(timeout=60)
    assert first.returncode == 0 and first.stdout.read().strip() == "trained"
    assert read_manifest(project.model_dir)["documents"] == 2  # the fulltext dir
    versions = [p.name for p in project.model_dir.parent.iterdir()]
    assert sorted(versions)[1:] == ["model"] and len(versions) == 2


def test_wait_runs_after_the_holder_finishes(workspace, projects):
    first = start_paused_training(workspace, DATA / "fulltext")
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indexer.cli",
            "--projects",
            str(workspace),
            "train",
            "tfidf-en",
            str(DATA / "tiny.tsv"),
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=CHILD_ENV,
    )
    line = waiting.stderr.readline()
    assert line.startswith(
        f"Waiting: Project 'tfidf-en' is busy: process {first.pid} (paused.py"
    )
    time.sleep(0.3)
    assert waiting.poll() is None  # still waiting
    (workspace / "go").touch()
    out, _ = waiting.communicate(timeout=120)
    first.wait(timeout=60)
    assert waiting.returncode == 0 and out.startswith("Trained 'tfidf-en' on 10 ")
    assert read_manifest(projects.get("tfidf-en").model_dir)["documents"] == 10


def test_a_killed_holder_releases_the_lock_and_leftovers_are_cleaned(
    workspace, projects
):
    first = start_paused_training(workspace, DATA / "fulltext")
    first.kill()
    first.wait()
    leftovers = list((workspace / "data" / "projects" / "tfidf-en").glob(".model.*"))
    assert leftovers, "the killed training left its work directory"
    info = projects.get("tfidf-en").train([DATA / "tiny.tsv"])
    assert info["documents"] == 10
    assert [p.name for p in projects.get("tfidf-en").model_dir.parent.iterdir()]
    assert not any(p.exists() for p in leftovers)


def test_load_vocab_during_a_load_is_refused(workspace, projects):
    vocab = projects.vocab("tiny")
    size = len(vocab)
    with vocab.lock.hold():
        result = indexer_cli(workspace, "load-vocab", "tiny", str(DATA / "tiny.ttl"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"Error: Vocabulary 'tiny' is busy: process {os.getpid()} (pytest "
    )
    assert len(vocab) == size and vocab.info["size"] == size

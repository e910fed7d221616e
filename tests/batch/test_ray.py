"""`indexer index --engine ray` against a real local Ray cluster with 2 CPUs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.batch.conftest import ROOT, documents_written, read_rows, write_corpus
from tests.batch.ray_hooks import KILLER, SLOW, SLOW_SECONDS
from tests.batch.test_local import (
    PROJECTS,
    assert_same_suggestions,
    expected_suggestions,
)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module; its workers import this checkout, and
    a record with the text `ray_hooks.KILLER` kills the worker that indexes it."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(ROOT)},
            "worker_process_setup_hook": "tests.batch.ray_hooks.install",
        },
    )
    yield
    ray.shutdown()


@pytest.mark.parametrize("project_id", PROJECTS)
def test_ray_local_and_suggest_agree(trained, projects, workspace, project_id):
    corpus = write_corpus(workspace / "corpus.jsonl", 120)
    outputs = {}
    for engine in ("ray", "local"):
        out = workspace / f"{engine}.jsonl"
        result = trained(
            "index", project_id, str(corpus), "--output", str(out),
            "--engine", engine, "--workers", "2", "--block-size", "25",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[engine] = read_rows(out)
    assert_same_suggestions(
        outputs["ray"], expected_suggestions(projects, project_id, corpus)
    )
    assert outputs["ray"] == outputs["local"]


def test_parquet_row_groups_on_ray_give_the_rows_of_the_local_engine(
    trained, workspace
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = write_corpus(workspace / "corpus.jsonl", 100)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    parquet = workspace / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=30)
    outputs = {}
    for engine in ("ray", "local"):
        out = workspace / f"{engine}.jsonl"
        result = trained(
            "index", "tfidf-en", str(parquet), "--output", str(out),
            "--engine", engine, "--workers", "2", "--block-size", "20",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[engine] = read_rows(out)
    assert outputs["ray"] == outputs["local"]
    assert list(documents_written(outputs["ray"])) == [r["id"] for r in records]


def test_a_project_missing_on_the_workers_is_named(trained, workspace):
    from indexer.batch.records import RayOptions
    from indexer.batch.runner import BatchJob, IndexingStopped, run
    from indexer.batch.work import ProjectRef
    from indexer.project import Projects

    corpus = write_corpus(workspace / "corpus.jsonl", 40)
    project = Projects.from_path(workspace / "projects.cfg").get("tfidf-en")
    # what a node sees when the shared filesystem holding the models is not mounted
    elsewhere = ProjectRef("tfidf-en", str(workspace / "projects.cfg"),
                           str(workspace / "unmounted"))  # fmt: skip
    out = workspace / "out.jsonl"
    job = BatchJob(project, elsewhere, [corpus], out, engine="ray", block_size=10,
                   ray=RayOptions(workers=1))  # fmt: skip
    with pytest.raises(IndexingStopped) as error:
        run(job, progress=False)
    message = error.value.message
    assert "the project could not be loaded on worker node" in message
    assert "Project 'tfidf-en' is not trained" in message
    assert "Traceback" not in message
    assert not out.exists() and not list(Path(f"{out}.parts").glob("block-*"))


def _kill_an_actor_once_output_appears(out: Path, killed: list) -> None:
    import psutil

    parts = Path(f"{out}.parts")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not killed:
        if parts.is_dir() and any(parts.glob("block-*.jsonl")):
            for process in psutil.process_iter(["cmdline"]):
                if "MapBatches(RayIndexer)" in " ".join(process.info["cmdline"] or []):
                    os.kill(process.pid, signal.SIGKILL)
                    killed.append(process.pid)
                    return
        time.sleep(0.01)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(trained, workspace):
    documents = 4000
    corpus = write_corpus(workspace / "corpus.jsonl", documents)
    out = workspace / "out.jsonl"
    killed: list = []
    killer = threading.Thread(
        target=_kill_an_actor_once_output_appears, args=(out, killed)
    )
    killer.start()
    result = trained(
        "index", "tfidf-en", str(corpus), "--output", str(out), "--engine", "ray",
        "--workers", "2", "--block-size", "20",
    )  # fmt: skip
    killer.join()
    assert killed, "no actor was killed"
    assert result.exit_code == 0, result.output
    written = documents_written(read_rows(out))
    assert len(written) == documents and set(written.values()) == {1}


def _index_in_a_thread(run_cli, args, seconds: float):
    """The command's result, or None if it was still running after `seconds`."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(run_cli(*args)))
    thread.daemon = True
    thread.start()
    thread.join(seconds)
    return results[0] if results else None


def test_a_block_that_kills_its_worker_stops_the_run_naming_it(trained, workspace):
    corpus = write_corpus(workspace / "corpus.jsonl", 200)
    lines = corpus.read_text().splitlines()
    crash = workspace / "crash"
    crash.touch()
    lines[110] = json.dumps({"id": "killer", "text": f"stars {KILLER} {crash}"})
    corpus.write_text("\n".join(lines) + "\n")
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out),
            "--engine", "ray", "--workers", "2", "--block-size", "20")  # fmt: skip
    result = _index_in_a_thread(trained, args, 240)
    assert result is not None, "the block was retried for ever"
    assert result.exit_code == 1, result.output
    assert (
        "block 5 (corpus.jsonl, lines 101-120) killed its Ray worker while "
        "indexing it, 3 times" in result.output
    )
    assert "rerun the same command to resume" in result.output
    assert "Traceback" not in result.output
    # the blocks that finished are kept, in order; one still in flight when
    # the run stopped (queued behind block 5 on its actor) is done on resume
    done = {int(p.name[6:14]) for p in Path(f"{out}.parts").glob("block-*.jsonl")}
    assert done == set(range(len(done))) and 5 not in done
    crash.unlink()  # the crash mended: the same command resumes
    resumed = trained(*args)
    assert resumed.exit_code == 0, resumed.output
    written = documents_written(read_rows(out))
    assert len(written) == 200 and set(written.values()) == {1}


def test_blocks_after_a_slow_first_block_are_not_held_here(trained, workspace):
    """While block 0 takes long, the blocks after it finish: they wait in Ray
    (within its memory budget), not in this process, which before held every
    one of them until block 0 came."""
    from indexer.batch.ray_engine import run_ray
    from indexer.batch.readers import scan
    from indexer.batch.records import Options, RayOptions
    from indexer.batch.runner import BatchJob, run
    from indexer.batch.work import ProjectRef
    from indexer.project import Projects

    corpus = write_corpus(workspace / "corpus.jsonl", 150)
    lines = corpus.read_text().splitlines()
    lines[0] = json.dumps({"id": "d0", "text": f"stars {SLOW}"})
    corpus.write_text("\n".join(lines) + "\n")
    project = Projects.from_path(workspace / "projects.cfg").get("tfidf-en")
    ref = ProjectRef.of(project, str(workspace / "projects.cfg"))
    specs = list(scan(corpus, 5, 0))
    handed_on: list[int] = []
    started = time.monotonic()
    held = run_ray(
        ref, Options(), specs, RayOptions(workers=2),
        lambda spec, results: handed_on.append(spec.number),
    )  # fmt: skip
    assert time.monotonic() - started > SLOW_SECONDS  # block 0 was slow
    assert handed_on == list(range(30))
    assert held <= 1, f"{held} blocks were held here waiting for block 0"
    # and the whole run writes what it wrote before
    out = workspace / "out.jsonl"
    job = BatchJob(project, ref, [corpus], out, engine="ray", block_size=5,
                   ray=RayOptions(workers=2))  # fmt: skip
    assert run(job, progress=False).documents == 150
    assert list(documents_written(read_rows(out))) == [f"d{n}" for n in range(150)]


TEXTS = ["stars and telescopes", "music of orchestras", "cells and genes"]


def suggestions(projects, project_id: str) -> list[list[tuple[str, float]]]:
    project = projects.get(project_id)
    return [
        [(project.vocab.uris[s.subject], s.score) for s in found]
        for found in project.suggest(TEXTS)
    ]


@pytest.mark.parametrize("project_id", ["knn-en", "embed-en", "llm_head-en"])
def test_training_encodes_on_ray_into_the_same_model(dense_workspace, project_id):
    from click.testing import CliRunner

    from indexer.cli import cli
    from indexer.project import Projects
    from tests.conftest import DATA

    cfg = dense_workspace / "projects.cfg"
    local = Projects.from_path(cfg)
    local.get(project_id).train([DATA / "tiny.tsv"])
    # a data directory of its own: no embedding cache, no concept index yet
    on_ray = dense_workspace / "ray.cfg"
    on_ray.write_text("[indexer]\ndata_dir = ray-data\n" + cfg.read_text())
    result = CliRunner().invoke(
        cli,
        ["--projects", str(on_ray), "train", project_id, str(DATA / "tiny.tsv"),
         "--engine", "ray", "--workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    encoded = int(
        result.output.split(" texts encoded on the Ray cluster")[0].split()[-1]
    )
    assert encoded >= 9  # the training documents, or the concepts
    ours = suggestions(Projects.from_path(on_ray), project_id)
    theirs = suggestions(local, project_id)
    assert [[u for u, _ in doc] for doc in ours] == [[u for u, _ in d] for d in theirs]
    for doc, other in zip(ours, theirs, strict=True):
        assert [s for _, s in doc] == pytest.approx([s for _, s in other], abs=1e-5)

"""`indexer index` with the local engine: same answers as `suggest`, resumable,
bad records reported with their id."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.batch.conftest import (
    documents_written,
    indexer_process,
    read_rows,
    write_corpus,
)

PROJECTS = ["tfidf-en", "xmc-en", "lexical-en", "ensemble-en"]


def suggestions_by_id(rows: list[dict]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for row in rows:
        out.setdefault(row["id"], []).append((row["rank"], row["uri"], row["score"]))
    return out


def assert_same_suggestions(rows: list[dict], expected: dict[str, list]) -> None:
    found = suggestions_by_id(rows)
    expected = {k: v for k, v in expected.items() if v}  # no rows for no subjects
    assert list(found) == list(expected)
    for doc_id, suggestions in expected.items():
        assert [uri for _, uri, _ in found[doc_id]] == [u for u, _ in suggestions]
        assert [rank for rank, _, _ in found[doc_id]] == list(
            range(1, len(suggestions) + 1)
        )
        for (_, _, score), (_, want) in zip(found[doc_id], suggestions, strict=True):
            assert score == pytest.approx(want, abs=1e-6)


def expected_suggestions(projects, project_id: str, corpus) -> dict[str, list]:
    """What `indexer suggest` computes, one document at a time."""
    project = projects.get(project_id)
    out = {}
    for line in corpus.read_text("utf-8").splitlines():
        record = json.loads(line)
        (found,) = project.suggest([record["text"]])
        out[record["id"]] = [(project.vocab.uris[s.subject], s.score) for s in found]
    return out


@pytest.mark.parametrize("project_id", PROJECTS)
def test_local_engine_matches_suggest(trained, projects, workspace, project_id):
    corpus = write_corpus(workspace / "corpus.jsonl", 150)
    out = workspace / "out.jsonl"
    result = trained(
        "index", project_id, str(corpus), "--output", str(out), "-j", "2",
        "--block-size", "40",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Indexed 150 documents" in result.output
    expected = expected_suggestions(projects, project_id, corpus)
    assert_same_suggestions(read_rows(out), expected)
    assert not out.with_name("out.jsonl.parts").exists()


def test_suggest_cli_prints_the_same_first_suggestion(trained, workspace):
    pytest.importorskip("pyarrow")
    corpus = write_corpus(workspace / "corpus.jsonl", 3)
    out = workspace / "out.parquet"
    assert (
        trained("index", "tfidf-en", str(corpus), "--output", str(out)).exit_code == 0
    )
    first = json.loads(corpus.read_text().splitlines()[0])
    shown = json.loads(trained("suggest", "tfidf-en", "--format", "json",
                               input=first["text"]).output)  # fmt: skip
    rows = [r for r in read_rows(out) if r["id"] == "d0"]
    assert [r["uri"] for r in rows] == [s["uri"] for s in shown["suggestions"]]
    assert [round(r["score"], 4) for r in rows] == [
        s["score"] for s in shown["suggestions"]
    ]


def test_bad_records_fail_with_their_id_or_go_to_a_rejects_file(trained, workspace):
    corpus = workspace / "corpus.jsonl"
    write_corpus(corpus, 30)
    with open(corpus, "ab") as f:
        f.write(b'{"id": "latin", "text": "caf\xe9"}\n{"id": "empty", "text": ""}\n')
        f.write(b'{"id": "tail", "text": "stars and music"}\n')
    out = workspace / "out.jsonl"
    args = ["index", "tfidf-en", str(corpus), "--output", str(out),
            "--block-size", "10"]  # fmt: skip
    result = trained(*args)
    assert result.exit_code == 1
    assert "record 'latin' (corpus.jsonl:31): not UTF-8 text" in result.output
    assert "--on-error skip" in result.output and "rerun" in result.output
    assert not out.exists()
    # the blocks before the bad one were written and are kept for the rerun
    result = trained(*args, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "3 blocks done before were kept" in result.output
    assert "2 rejected records" in result.output
    rejects = [json.loads(x) for x in out.with_name("out.jsonl.rejects.jsonl")
               .read_text().splitlines()]  # fmt: skip
    assert [(r["id"], r["where"]) for r in rejects] == [
        ("latin", "corpus.jsonl:31"),
        ("empty", "corpus.jsonl:32"),
    ]
    written = documents_written(read_rows(out))
    assert len(written) == 31 and set(written.values()) == {1}
    assert "tail" in written


def test_binary_file_in_a_directory_is_rejected_by_name(trained, workspace):
    docs = workspace / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("stars and telescopes")
    (docs / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = trained("index", "tfidf-en", str(docs))
    assert result.exit_code == 1
    assert "File 'image.txt' looks binary" in result.output
    assert not (docs / "image.suggestions.tsv").exists()
    result = trained("index", "tfidf-en", str(docs), "--on-error", "skip")
    assert result.exit_code == 0
    assert (docs / "a.suggestions.tsv").read_text().startswith("<http://")
    assert not (docs / "image.suggestions.tsv").exists()
    assert "image.txt" in (docs / "rejects.jsonl").read_text()


def test_usage_errors(trained, workspace):
    corpus = write_corpus(workspace / "corpus.jsonl", 3)
    cases = [
        (("index", "tfidf-en", str(corpus)), "Give --output"),
        (("index", "tfidf-en", str(corpus), "--output", "x.csv"), "end it in .jsonl"),
        (("index", "tfidf-en", "nothing.jsonl", "--output", "x.jsonl"), "not exist"),
    ]
    for args, message in cases:
        result = trained(*args)
        assert result.exit_code == 2 and message in result.output, result.output
    out = workspace / "out.jsonl"
    result = trained("index", "calibrated-en", str(corpus), "--output", str(out))
    assert result.exit_code == 1
    assert "Project 'calibrated-en' is not trained" in result.output
    assert not out.with_name("out.jsonl.parts").exists()
    assert (
        trained("index", "tfidf-en", str(corpus), "--output", str(out)).exit_code == 0
    )
    result = trained("index", "tfidf-en", str(corpus), "--output", str(out))
    assert result.exit_code == 2 and "--force" in result.output


def _parts(out):
    return list(out.with_name(out.name + ".parts").glob("block-*.jsonl"))


def test_a_run_killed_halfway_resumes_and_writes_each_document_once(trained, workspace):
    documents, block = 20_000, 100
    corpus = write_corpus(workspace / "corpus.jsonl", documents)
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out),
            "--block-size", str(block))  # fmt: skip
    process = indexer_process(workspace, *args)
    while len(_parts(out)) < documents // block // 2 and process.poll() is None:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(_parts(out))
    assert 0 < done < documents // block, "the kill came too late to test a resume"
    rerun = indexer_process(workspace, *args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"({done} blocks done before were kept)" in err
    written = documents_written(read_rows(out))
    assert len(written) == documents and set(written.values()) == {1}


def test_a_killed_worker_stops_the_run_cleanly_and_a_rerun_completes(
    trained, workspace
):
    import psutil

    corpus = write_corpus(workspace / "corpus.jsonl", 6000)
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out), "-j", "2",
            "--block-size", "50")  # fmt: skip
    process = indexer_process(workspace, *args)
    while not _parts(out) and process.poll() is None:
        time.sleep(0.005)
    workers = psutil.Process(process.pid).children()
    workers = [w for w in workers if "spawn_main" in " ".join(w.cmdline())]
    assert workers, "no worker process found"
    workers[0].kill()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "a worker process died" in err and "Traceback" not in err
    assert "rerun the same command to resume" in err
    rerun = indexer_process(workspace, *args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    written = documents_written(read_rows(out))
    assert len(written) == 6000 and set(written.values()) == {1}


def test_several_inputs_of_several_formats_into_one_output(trained, workspace):
    docs = workspace / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("stars and telescopes")
    tsv = workspace / "short.tsv"
    tsv.write_text("music and orchestras\t<http://example.org/t/music>\n")
    corpus = write_corpus(workspace / "corpus.jsonl", 3)
    out = workspace / "out.jsonl"
    args = ["index", "tfidf-en", str(docs), str(tsv), str(corpus), "--output",
            str(out), "--block-size", "2"]  # fmt: skip
    assert trained(*args).exit_code == 0
    assert list(documents_written(read_rows(out))) == [
        "a", "short.tsv:1", "d0", "d1", "d2",
    ]  # fmt: skip
    # an unfinished run is resumed only with the same inputs and settings
    out.with_name("out.jsonl.parts").mkdir()
    plan = {"project": "tfidf-en", "inputs": [], "block_size": 2, "options": {}}
    (out.with_name("out.jsonl.parts") / "plan.json").write_text(json.dumps(plan))
    result = trained(*args)
    assert result.exit_code == 2 and "unfinished run with other inputs" in result.output
    assert trained(*args, "--force").exit_code == 0


def test_the_workers_of_a_killed_run_end_with_it(trained, workspace):
    import psutil

    corpus = write_corpus(workspace / "corpus.jsonl", 20_000)
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out), "-j", "2",
            "--block-size", "50")  # fmt: skip
    process = indexer_process(workspace, *args)
    while not _parts(out) and process.poll() is None:
        time.sleep(0.005)
    children = psutil.Process(process.pid).children(recursive=True)
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2, children
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    for left in alive:  # not to leave them running if this fails
        left.kill()
    assert not alive, f"still running after the run was killed: {alive}"


def test_parquet_input_with_workers_gives_the_rows_of_one_process(trained, workspace):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    corpus = write_corpus(workspace / "corpus.jsonl", 120)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    parquet = workspace / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=50)
    outputs = []
    for jobs in ("1", "2"):
        out = workspace / f"out-{jobs}.jsonl"
        result = trained("index", "tfidf-en", str(parquet), "--output", str(out),
                         "-j", jobs, "--block-size", "20")  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs.append(read_rows(out))
    assert outputs[0] == outputs[1]
    assert list(documents_written(outputs[0])) == [r["id"] for r in records]

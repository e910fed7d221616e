"""`indexer index` outputs: never an input, one run at a time, errors in one
line, durable writes, no stale rejects, each id indexed once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.batch.conftest import (
    documents_written,
    indexer_process,
    read_rows,
    write_corpus,
)


def assert_one_line_error(result, code: int, *phrases: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output


# -- an output is never an input ----------------------------------------------


def test_an_output_that_is_an_input_is_refused_even_with_force(trained, workspace):
    corpus = write_corpus(workspace / "docs.jsonl", 5)
    original = corpus.read_bytes()
    (workspace / "link.jsonl").symlink_to(corpus)
    (workspace / "sub").mkdir()
    for output in (corpus, workspace / "link.jsonl", workspace / "sub/../docs.jsonl"):
        for force in ((), ("--force",)):
            result = trained("index", "tfidf-en", str(corpus), "--output",
                             str(output), *force)  # fmt: skip
            assert_one_line_error(result, 2, "is the input", "would replace")
    # nor may its rejects file be one
    rejects = workspace / "out.jsonl.rejects.jsonl"
    rejects.write_bytes(original)
    result = trained("index", "tfidf-en", str(rejects), "--output",
                     str(workspace / "out.jsonl"), "--force")  # fmt: skip
    assert_one_line_error(result, 2, "is the input")
    assert corpus.read_bytes() == original == rejects.read_bytes()


def test_per_document_files_that_would_be_documents_are_refused(trained, workspace):
    docs = workspace / "ds"
    docs.mkdir()
    (docs / "a.txt").write_text("stars and telescopes")
    for force in ((), ("--force",)):
        for suffix in (".txt", ".x.TXT"):
            result = trained("index", "tfidf-en", str(docs), "--suffix", suffix,
                             *force)  # fmt: skip
            assert_one_line_error(result, 2, "ends in .txt", "read as documents")
    assert (docs / "a.txt").read_text() == "stars and telescopes"
    assert sorted(p.name for p in docs.iterdir()) == ["a.txt"]


def test_per_document_files_that_are_subject_files_are_refused(trained, workspace):
    """ID.tsv and ID.key beside ID.txt hold the corpus's gold subjects."""
    docs = workspace / "ds"
    docs.mkdir()
    (docs / "doc1.txt").write_text("stars and telescopes")
    (docs / "doc1.tsv").write_text("<http://example.org/t/music>\tmusic\n")
    (docs / "doc2.txt").write_text("poems and novels")
    for force in ((), ("--force",)):
        for suffix in (".tsv", ".key", ".TSV"):
            result = trained("index", "tfidf-en", str(docs), "--suffix", suffix,
                             *force)  # fmt: skip
            assert_one_line_error(result, 2, "gold subjects", "would replace")
    assert (docs / "doc1.tsv").read_text() == "<http://example.org/t/music>\tmusic\n"
    names = sorted(p.name for p in docs.iterdir())
    assert names == ["doc1.tsv", "doc1.txt", "doc2.txt"]


def test_a_suffix_with_a_path_is_refused(trained, workspace):
    docs = workspace / "ds"
    docs.mkdir()
    (docs / "a.txt").write_text("stars")
    for suffix in ("/../../../x.tsv", ""):
        result = trained("index", "tfidf-en", str(docs), "--suffix", suffix)
        assert_one_line_error(result, 2, "not a plain file-name suffix")
    assert not list(workspace.rglob("x.tsv"))


# -- errors in one line ---------------------------------------------------------


def test_an_output_in_no_directory_is_a_usage_error(trained, workspace):
    corpus = write_corpus(workspace / "docs.jsonl", 3)
    (workspace / "docs.tsv").write_text("stars\n")
    for output, state in (
        (workspace / "docs.tsv" / "out.jsonl", "is not a directory"),
        (workspace / "nowhere" / "out.jsonl", "does not exist"),
    ):
        result = trained("index", "tfidf-en", str(corpus), "--output", str(output))
        assert_one_line_error(result, 2, f"Cannot write '{output}'", state)


def test_an_output_that_cannot_be_written_is_one_line(trained, workspace):
    corpus = write_corpus(workspace / "docs.jsonl", 3)
    try:  # even root may not create files in /sys
        (Path("/sys") / ".indexer-probe").touch()
    except OSError:
        pass
    else:
        pytest.skip("/sys is writable here")
    result = trained("index", "tfidf-en", str(corpus), "--output", "/sys/out.jsonl")
    assert_one_line_error(result, 1, "/sys/", "Permission denied")


def test_a_second_run_on_the_same_output_is_refused(trained, workspace):
    corpus = write_corpus(workspace / "corpus.jsonl", 6000)
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out),
            "--block-size", "50")  # fmt: skip
    first = indexer_process(workspace, *args)
    parts = Path(f"{out}.parts")
    while not (parts.is_dir() and any(parts.glob("block-*"))):
        assert first.poll() is None, first.communicate()
        time.sleep(0.01)
    second = trained(*args)
    assert_one_line_error(
        second, 1, f"Output '{out}' is busy: process {first.pid} (indexer ",
        "has held it since",
    )  # fmt: skip
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    written = documents_written(read_rows(out))
    assert len(written) == 6000 and set(written.values()) == {1}


def test_with_wait_a_second_run_waits_for_the_first(trained, workspace):
    import subprocess
    import sys

    corpus = write_corpus(workspace / "corpus.jsonl", 5)
    out = workspace / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from indexer.batch.writers import BlockStore\n"
         "with BlockStore(__import__('pathlib').Path(sys.argv[1]), {}).lock().hold():\n"
         "    print('held', flush=True); time.sleep(2)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    started = time.monotonic()
    result = trained("index", "tfidf-en", str(corpus), "--output", str(out), "--wait")
    assert time.monotonic() - started > 1, "it did not wait"
    assert holder.wait() == 0
    assert result.exit_code == 0, result.output
    assert f"Waiting: Output '{out}' is busy" in result.output
    assert len(documents_written(read_rows(out))) == 5


# -- what is written ------------------------------------------------------------


def test_a_forced_run_without_rejects_removes_the_old_rejects(trained, workspace):
    corpus = write_corpus(workspace / "corpus.jsonl", 10)
    good = corpus.read_bytes()
    corpus.write_bytes(good + b'{"id": "empty", "text": ""}\n')
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out))
    assert trained(*args, "--on-error", "skip").exit_code == 0
    rejects = workspace / "out.jsonl.rejects.jsonl"
    assert "empty" in rejects.read_text()
    corpus.write_bytes(good)
    result = trained(*args, "--force")
    assert result.exit_code == 0 and "rejected" not in result.output
    assert not rejects.exists()
    docs = workspace / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("stars")
    (docs / "b.txt").write_text("")
    assert trained("index", "tfidf-en", str(docs), "--on-error", "skip").exit_code == 0
    assert (docs / "rejects.jsonl").is_file()
    (docs / "b.txt").write_text("music")
    assert trained("index", "tfidf-en", str(docs), "--force").exit_code == 0
    assert not (docs / "rejects.jsonl").exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_file_is_on_disk_before_its_rename_and_the_rename_after(
    trained, workspace, monkeypatch, fmt
):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    corpus = write_corpus(workspace / "corpus.jsonl", 30)
    with open(corpus, "ab") as f:
        f.write(b'{"id": "empty", "text": ""}\n')
    events: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def spied_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spied_replace(src, dst, **kwargs):
        replace(src, dst, **kwargs)
        events.append(("replace", str(Path(src).resolve()), str(Path(dst).resolve())))

    monkeypatch.setattr(os, "fsync", spied_fsync)
    monkeypatch.setattr(os, "replace", spied_replace)
    out = workspace / f"out.{fmt}"
    result = trained("index", "tfidf-en", str(corpus), "--output", str(out),
                     "--block-size", "10", "--on-error", "skip")  # fmt: skip
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    renames = [(i, e) for i, e in enumerate(events) if e[0] == "replace"]
    renamed = {Path(dst).name for _, (_, _, dst) in renames}
    assert {f"block-00000000.{fmt}", "block-00000003.rejects.jsonl", "plan.json",
            f"out.{fmt}", f"out.{fmt}.rejects.jsonl"} <= renamed  # fmt: skip
    for i, (_, src, dst) in renames:
        assert ("fsync", src) in events[:i], f"{dst} renamed before it was on disk"
        assert ("fsync", str(Path(dst).parent)) in events[i:], f"{dst} not flushed"


# -- each id once -----------------------------------------------------------------


def _with_duplicates(path: Path) -> Path:
    write_corpus(path, 30)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "d3", "text": "music and orchestras"}) + "\n")
        f.write(json.dumps({"id": "d31", "text": "cells and genes"}) + "\n")
        f.write(json.dumps({"id": "d31", "text": "stars"}) + "\n")
    return path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_duplicate_id_is_indexed_once_and_the_others_rejected(
    trained, projects, workspace, jobs
):
    corpus = _with_duplicates(workspace / "corpus.jsonl")
    out = workspace / "out.jsonl"
    result = trained("index", "tfidf-en", str(corpus), "--output", str(out),
                     "--block-size", "10", "-j", jobs)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Warning: 2 records have the id of an earlier record" in result.output
    assert "Indexed 31 documents" in result.output
    rows = read_rows(out)
    written = documents_written(rows)
    assert len(written) == 31 and set(written.values()) == {1}
    # the first record of an id is the one indexed
    first = json.loads(corpus.read_text().splitlines()[3])
    project = projects.get("tfidf-en")
    (found,) = project.suggest([first["text"]])
    assert [r["uri"] for r in rows if r["id"] == "d3"] == [
        project.vocab.uris[s.subject] for s in found
    ]
    rejects_file = workspace / "out.jsonl.rejects.jsonl"
    rejects = [json.loads(x) for x in rejects_file.read_text().splitlines()]
    assert [(r["id"], r["where"]) for r in rejects] == [
        ("d3", "corpus.jsonl:31"),
        ("d31", "corpus.jsonl:33"),
    ]
    assert all(r["error"].startswith("duplicate id") for r in rejects)


def test_blocks_that_come_early_wait_for_those_before_them():
    from indexer.batch.ray_engine import InOrder
    from indexer.batch.records import BlockSpec

    specs = [BlockSpec(n, "x.jsonl", "jsonl", 1) for n in (4, 5, 6, 7)]
    handed: list[int] = []
    in_order = InOrder(specs, lambda spec, results: handed.append(spec.number))
    for number in (6, 4, 7, 7):
        in_order.add(number, [])
    assert handed == [4]
    in_order.add(5, [])
    assert handed == [4, 5, 6, 7]

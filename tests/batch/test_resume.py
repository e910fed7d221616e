"""A batch run killed between any two of its writes is finished by rerunning
it, every record exactly once; a rerun against another model is refused."""

from __future__ import annotations

import json
import os
import pathlib
from pathlib import Path

import pytest

from tests.batch.conftest import documents_written, read_rows, write_corpus
from tests.conftest import DATA


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even `except Exception`)."""


def _job(workspace: Path, corpus: Path, out: Path, **settings):
    from indexer.batch.runner import BatchJob
    from indexer.batch.work import ProjectRef
    from indexer.project import Projects

    config = workspace / "projects.cfg"
    project = Projects.from_path(config).get("tfidf-en")
    return BatchJob(project, ProjectRef.of(project, str(config)), [corpus], out,
                    block_size=10, on_error="skip", **settings)  # fmt: skip


def _crash_on_rename(monkeypatch, name: str, after: bool) -> None:
    """Die just before (or just after) a file called `name` gets its final name."""
    replace = os.replace

    def dying_replace(src, dst, **kwargs):
        if Path(dst).name == name and not after:
            raise Crash(name)
        replace(src, dst, **kwargs)
        if Path(dst).name == name and after:
            raise Crash(name)

    monkeypatch.setattr(os, "replace", dying_replace)


def _crash_while_removing_parts(monkeypatch) -> None:
    """Die after the first files of `OUT.parts/` were removed."""
    unlink = pathlib.Path.unlink
    removed = []

    def dying_unlink(self, missing_ok=False):
        unlink(self, missing_ok=missing_ok)
        if self.parent.name.endswith(".parts"):
            removed.append(self)
            if len(removed) == 3:
                raise Crash("removing the parts")

    monkeypatch.setattr(pathlib.Path, "unlink", dying_unlink)


def _corpus(path: Path) -> Path:
    """45 records, two of them bad (block 1 and block 4 of 10 records)."""
    write_corpus(path, 43)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(14, b'{"id": "latin", "text": "caf\xe9"}\n')
    lines.insert(42, b'{"id": "empty", "text": ""}\n')
    path.write_bytes(b"".join(lines))
    return path


WRITES = [  # (what is written, crash before or after it)
    *((name, after) for name in ["plan.json", "block-00000001.rejects.jsonl",
                                 "block-00000001.{fmt}", "block-00000004.{fmt}",
                                 "out.{fmt}", "out.{fmt}.rejects.jsonl"]
      for after in (False, True)),
    ("the parts' removal", True),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize(("write", "after"), WRITES)
def test_a_crash_at_any_write_is_resumed_with_every_record_once(
    trained, workspace, monkeypatch, fmt, write, after
):
    from indexer.batch.runner import run

    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    corpus = _corpus(workspace / "corpus.jsonl")
    out = workspace / f"out.{fmt}"
    with monkeypatch.context() as patch:
        if write == "the parts' removal":
            _crash_while_removing_parts(patch)
        else:
            _crash_on_rename(patch, write.format(fmt=fmt), after)
        with pytest.raises(Crash):
            run(_job(workspace, corpus, out), progress=False)
    summary = run(_job(workspace, corpus, out), progress=False)  # the same again
    written = documents_written(read_rows(out))
    assert len(written) == 43 and set(written.values()) == {1}
    rejects = Path(f"{out}.rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rejects] == ["latin", "empty"]
    assert summary.rejected == 2
    assert not Path(f"{out}.parts").exists()
    assert not list(workspace.glob(".*.tmp"))


def test_a_rejects_part_alone_does_not_mark_its_block_done(
    trained, workspace, monkeypatch
):
    corpus = _corpus(workspace / "corpus.jsonl")
    out = workspace / "out.jsonl"
    args = ("index", "tfidf-en", str(corpus), "--output", str(out),
            "--block-size", "10", "--on-error", "skip")  # fmt: skip
    with monkeypatch.context() as patch:  # killed after block 1's rejects part
        _crash_on_rename(patch, "block-00000001.rejects.jsonl", after=True)
        with pytest.raises(Crash):
            trained(*args)
    assert Path(f"{out}.parts/block-00000001.rejects.jsonl").is_file()
    result = trained(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "(1 blocks done before were kept)" in result.output
    written = documents_written(read_rows(out))
    assert len(written) == 43 and set(written.values()) == {1}


def test_duplicates_of_records_done_before_a_crash_are_still_rejected(
    trained, workspace, monkeypatch
):
    from indexer.batch.runner import run

    corpus = write_corpus(workspace / "corpus.jsonl", 30)
    with open(corpus, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "d3", "text": "music and orchestras"}) + "\n")
    out = workspace / "out.jsonl"
    with monkeypatch.context() as patch:
        _crash_on_rename(patch, "block-00000003.jsonl", after=False)
        with pytest.raises(Crash):
            run(_job(workspace, corpus, out), progress=False)
    summary = run(_job(workspace, corpus, out), progress=False)
    assert summary.resumed_blocks == 3 and summary.duplicates == 1
    written = documents_written(read_rows(out))
    assert len(written) == 30 and set(written.values()) == {1}
    (reject,) = Path(f"{out}.rejects.jsonl").read_text().splitlines()
    assert json.loads(reject)["where"] == "corpus.jsonl:31"


def _interrupted_run(run_cli, project_id: str, workspace: Path):
    """An `index` run stopped by a bad record, its first blocks kept; the
    command that resumes it."""
    corpus = write_corpus(workspace / "corpus.jsonl", 30)
    with open(corpus, "ab") as f:
        f.write(b'{"id": "latin", "text": "caf\xe9"}\n')
    args = ["index", project_id, str(corpus), "--output",
            str(workspace / "out.jsonl"), "--block-size", "10"]  # fmt: skip
    result = run_cli(*args)
    assert result.exit_code == 1 and "rerun the same command" in result.output
    return [*args, "--on-error", "skip"]


@pytest.mark.parametrize("project_id", ["tfidf-en", "ensemble-en"])
def test_a_rerun_against_another_model_is_refused_naming_both(
    trained, projects, workspace, project_id
):
    resume = _interrupted_run(trained, project_id, workspace)
    model = projects.get("tfidf-en").model_dir
    before = os.readlink(model)
    assert trained("train", "tfidf-en", str(DATA / "tiny.tsv")).exit_code == 0
    now = os.readlink(model)
    assert now != before
    result = trained(*resume)
    assert result.exit_code == 2, result.output
    assert "made with another model of project 'tfidf-en'" in result.output
    assert "that run: trained " in result.output and before in result.output
    assert now in result.output and "--force" in result.output
    result = trained(*resume, "--force")
    assert result.exit_code == 0, result.output
    assert "blocks done before" not in result.output


def test_a_rerun_with_other_project_settings_is_refused(trained, workspace):
    resume = _interrupted_run(trained, "tfidf-en", workspace)
    config = workspace / "projects.cfg"
    config.write_text(
        config.read_text().replace("ngram = 1\n", "ngram = 1\nlimit = 3\n")
    )
    result = trained(*resume)
    assert result.exit_code == 2, result.output
    assert "other settings of project 'tfidf-en' (limit 10, now 3)" in result.output
    assert trained(*resume, "--force").exit_code == 0


def test_an_output_inside_its_input_directory_resumes(trained, workspace):
    docs = workspace / "docs"
    docs.mkdir()
    for n in range(25):
        (docs / f"d{n:02d}.txt").write_text("stars and telescopes")
    (docs / "d20.txt").write_bytes(b"caf\xe9")
    args = ["index", "tfidf-en", str(docs), "--output", str(docs / "out.jsonl"),
            "--block-size", "10"]  # fmt: skip
    assert trained(*args).exit_code == 1  # stopped at d20, two blocks kept
    result = trained(*args, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "(2 blocks done before were kept)" in result.output

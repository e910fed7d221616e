from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from indexer.project import Projects

from .conftest import DATA


def test_version_and_help(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0 and "indexer, version" in result.output
    assert "suggest" in run_cli("--help").output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from indexer.cli import cli; heavy = "
        "('torch', 'transformers', 'faiss', 'sklearn', 'rdflib'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_list_projects_and_show_project(run_cli):
    result = run_cli("list-projects")
    assert result.exit_code == 0
    assert "tfidf-en" in result.output and "not trained" in result.output
    result = run_cli("show-project", "lexical-en")
    assert result.exit_code == 0 and "lexical (lexical)" in result.output


def test_load_vocab_and_list_vocabs(run_cli):
    result = run_cli("load-vocab", "tiny")
    assert result.exit_code == 0, result.output
    assert "8 concepts" in result.output
    result = run_cli("load-vocab", "other", str(DATA / "tiny-columns.csv"))
    assert result.exit_code == 0
    listing = run_cli("list-vocabs").output
    assert "tiny" in listing and "other" in listing


@pytest.mark.parametrize(
    ("options", "expected"),
    [((), 3), (("-j", "1"), 1), (("--engine", "ray"), 1)],
)
def test_training_uses_the_cores_unless_told(run_cli, monkeypatch, options, expected):
    """Without -j a training splits its work over the cores available (as
    Annif's does); a Ray task takes one unless -j says more."""
    import contextlib

    import indexer.parallel
    from indexer.cli import documents
    from indexer.project import Project

    monkeypatch.setattr(indexer.parallel, "available_cores", lambda: 3)
    seen = []

    def train(self, paths, jobs=1, wait=False):
        seen.append(jobs)
        return {"documents": 0, "seconds": 0.0}

    monkeypatch.setattr(Project, "train", train)
    monkeypatch.setattr(  # no Ray cluster needed to see the jobs
        documents, "_training_on", lambda *args: contextlib.nullcontext()
    )
    result = run_cli("train", "tfidf-en", str(DATA / "tiny.tsv"), *options)
    assert result.exit_code == 0, result.output
    assert seen == [expected]


def test_train_suggest_eval_optimize_clear(run_cli, workspace):
    assert (
        run_cli("train", "tfidf-en", str(DATA / "tiny.tsv"), "-j", "2").exit_code == 0
    )
    result = run_cli(
        "suggest",
        "tfidf-en",
        "--limit",
        "2",
        input="Stars and galaxies through a telescope",
    )
    assert result.exit_code == 0
    first = result.stdout.splitlines()[0].split("\t")
    assert first[0] == "<http://example.org/t/astronomy>" and first[1] == "astronomy"
    projects = Projects.from_path(workspace / "projects.cfg")
    batch = projects.get("tfidf-en").suggest(["Stars and galaxies through a telescope"])
    assert float(first[2]) == pytest.approx(batch.row(0)[0].score, abs=1e-4)
    result = run_cli(
        "suggest",
        "tfidf-en",
        "--format",
        "json",
        "--language",
        "fi",
        input="telescope stars",
    )
    data = json.loads(result.stdout)
    assert data["suggestions"][0]["label"] == "tähtitiede"
    metrics_file = workspace / "m.json"
    results_file = workspace / "r.tsv"
    result = run_cli(
        "eval",
        "tfidf-en",
        str(DATA / "tiny.tsv"),
        "--metrics-file",
        str(metrics_file),
        "--results-file",
        str(results_file),
    )
    assert result.exit_code == 0 and "f1@5" in result.output
    assert json.loads(metrics_file.read_text())["precision@1"] == 1.0
    assert results_file.read_text().startswith("uri\tlabel\tsupport")
    result = run_cli("optimize", "tfidf-en", str(DATA / "tiny.tsv"), "--max-limit", "3")
    assert result.exit_code == 0 and "Best: limit =" in result.output
    assert run_cli("clear", "tfidf-en").exit_code == 0
    assert run_cli("suggest", "tfidf-en", input="stars").exit_code == 1


def test_suggest_files_and_index_directory(run_cli, workspace):
    docs = workspace / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("music and history")
    (docs / "b.txt").write_text("stargazing")
    result = run_cli("suggest", "lexical-en", str(docs / "a.txt"), str(docs / "b.txt"))
    assert result.exit_code == 0 and "# " in result.output
    assert run_cli("index", "lexical-en", str(docs)).exit_code == 0
    assert "astronomy" in (docs / "b.suggestions.tsv").read_text()
    result = run_cli(
        "index", "lexical-en", str(docs), "--output", str(workspace / "out.jsonl")
    )
    rows = [json.loads(x) for x in (workspace / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["rank"]) for r in rows][-1] == ("b", 1)
    assert {r["id"] for r in rows} == {"a", "b"}


def test_explain(run_cli):
    result = run_cli(
        "suggest", "lexical-en", "--explain", "--format", "json", input="music history"
    )
    assert (
        json.loads(result.stdout)["suggestions"][0]["explanation"]["source"]
        == "label match"
    )


def test_bad_input_gives_one_line_errors_and_exit_codes(run_cli, workspace):
    cases = [
        (("suggest", "nope"), "x", 2, "No project 'nope'"),
        (("suggest", "lexical-en"), "", 1, "empty"),
        (("suggest", "lexical-en"), b"\x00\x01binary", 1, "binary"),
        (("suggest", "lexical-en", "--limit", "-1"), "x", 2, "-1"),
        (
            ("suggest", "tfidf-en"),
            "text",
            1,
            "not trained: run `indexer train tfidf-en CORPUS`",
        ),
        (("load-vocab", "bad", str(DATA / "bad.ttl")), None, 1, "Cannot parse"),
        (
            ("train", "tfidf-en", str(workspace / "missing.tsv")),
            None,
            1,
            "does not exist",
        ),
        (
            ("train", "tfidf-en", str(DATA / "nosubjects.tsv")),
            None,
            1,
            "No document of the training corpus has a subject",
        ),
    ]
    for args, stdin, code, message in cases:
        result = run_cli(*args, input=stdin)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_misspelt_parameter_exit_code(workspace, run_cli):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[typo]\nlanguage=en\nvocab=tiny\nbackend=tfidf\nmin_dff=2\n"
    )
    result = run_cli("suggest", "typo", input="x")
    assert result.exit_code == 2
    assert "unknown parameter 'min_dff'. Did you mean 'min_df'?" in result.output


def test_console_script_errors_are_one_line(workspace):
    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer.cli",
            "--projects",
            str(workspace / "projects.cfg"),
            "suggest",
            "nope",
        ],
        input="text",
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith(
        "Error: No project 'nope'"
    )
    assert time.perf_counter() - started < 10


def test_ctrl_c_says_what_is_kept(workspace, monkeypatch, capsys):
    """click turns Ctrl-C inside a command into its own "Aborted."; the
    command line says instead that nothing saved before was touched."""
    from indexer.cli.app import main
    from indexer.project import Project

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Project, "train", interrupted)
    cfg, corpus = str(workspace / "projects.cfg"), str(DATA / "tiny.tsv")
    monkeypatch.setattr(
        sys, "argv", ["indexer", "--projects", cfg, "train", "tfidf-en", corpus]
    )
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "Interrupted: models and vocabularies are replaced only when complete" in err
    assert "Aborted" not in err and "Traceback" not in err

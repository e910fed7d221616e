from __future__ import annotations

import pytest

from indexer.config import load_config
from indexer.errors import ConfigError, NotFoundError, UsageError


def write(tmp_path, text):
    (tmp_path / "projects.cfg").write_text(text)
    return tmp_path / "projects.cfg"


def test_projects_and_vocab_sections(workspace):
    config = load_config(workspace / "projects.cfg")
    assert list(config.projects)[:4] == [
        "dummy-en",
        "tfidf-en",
        "lexical-en",
        "ensemble-en",
    ]
    tfidf = config.projects["tfidf-en"]
    assert (tfidf.backend, tfidf.language, tfidf.vocab, tfidf.limit) == (
        "tfidf",
        "en",
        "tiny",
        10,
    )
    assert tfidf.params == {"ngram": "1"}
    assert config.vocabs["tiny"].source.name == "tiny.ttl"
    assert config.data_dir == workspace / "data"


def test_projects_d_directory_and_environment(tmp_path, monkeypatch):
    folder = tmp_path / "projects.d"
    folder.mkdir()
    (folder / "a.cfg").write_text("[a]\nlanguage=en\nvocab=v\nbackend=dummy\n")
    (folder / "b.cfg").write_text("[b]\nlanguage=fi\nvocab=v\nbackend=tfidf\n")
    monkeypatch.setenv("INDEXER_PROJECTS", str(tmp_path))
    assert list(load_config().projects) == ["a", "b"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INDEXER_PROJECTS")
    assert list(load_config().projects) == ["a", "b"]


def test_missing_required_setting(tmp_path):
    path = write(tmp_path, "[p]\nlanguage = en\nbackend = tfidf\n")
    with pytest.raises(ConfigError, match="Project 'p': the required setting 'vocab'"):
        load_config(path)


def test_bad_limit_and_access(tmp_path):
    with pytest.raises(ConfigError, match="limit"):
        load_config(
            write(tmp_path, "[p]\nlanguage=en\nvocab=v\nbackend=dummy\nlimit=x\n")
        )
    with pytest.raises(ConfigError, match="public, hidden, private"):
        load_config(
            write(tmp_path, "[p]\nlanguage=en\nvocab=v\nbackend=dummy\naccess=secret\n")
        )


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.cfg")


def test_unknown_project_lists_the_valid_ones(projects):
    with pytest.raises(
        NotFoundError, match="No project 'x'. Projects: dummy-en, tfidf-en"
    ):
        projects.get("x")


def test_misspelt_parameter_names_project_key_and_choices(tmp_path):
    from indexer.project import Projects

    path = write(tmp_path, "[p]\nlanguage=en\nvocab=v\nbackend=tfidf\nngrams=2\n")
    with pytest.raises(
        ConfigError,
        match=r"Project 'p': unknown parameter 'ngrams'. Did you mean 'ngram'\? Valid",
    ):
        _ = Projects.from_path(path).get("p").backend


def test_bad_parameter_value(tmp_path):
    from indexer.project import Projects

    path = write(
        tmp_path,
        "[p]\nlanguage=en\nvocab=v\nbackend=tfidf\nngram=3\n[q]\nlanguage=en\nvocab=v\nbackend=tfidf\nmin_df=many\n",
    )
    projects = Projects.from_path(path)
    with pytest.raises(
        ConfigError, match="parameter 'ngram' is '3'; valid choices: 1, 2"
    ):
        _ = projects.get("p").backend
    with pytest.raises(
        ConfigError, match="parameter 'min_df' must be an integer, got 'many'"
    ):
        _ = projects.get("q").backend


def test_unknown_backend(tmp_path):
    from indexer.project import Projects

    path = write(tmp_path, "[p]\nlanguage=en\nvocab=v\nbackend=omikuji\n")
    with pytest.raises(
        ConfigError, match="Unknown backend 'omikuji'. Available backends: .*dummy"
    ):
        _ = Projects.from_path(path).get("p").backend


def test_missing_optional_dependency_names_the_extra(tmp_path, monkeypatch):
    from indexer import registry
    from indexer.errors import DependencyError
    from indexer.project import Projects

    monkeypatch.setitem(registry.EXTRAS, "xmc", ("omikuji", "not_installed_module"))
    path = write(tmp_path, "[p]\nlanguage=en\nvocab=v\nbackend=xmc\n")
    with pytest.raises(
        DependencyError,
        match=r"Backend 'xmc' needs the Python package\(s\) not_installed_module, "
        r"which are not installed: pip install 'subject-indexer\[xmc\]'",
    ):
        _ = Projects.from_path(path).get("p").backend


def test_every_backend_extra_is_declared_in_pyproject():
    import tomllib
    from pathlib import Path

    from indexer import registry

    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(registry.BACKEND_EXTRAS) <= set(registry.BUILTIN)
    assert set(registry.EXTRAS) <= set(extras)
    assert project["name"] == registry.DISTRIBUTION
    core = " ".join(project["dependencies"])
    for heavy in ("torch", "transformers", "faiss", "omikuji", "peft"):
        assert heavy not in core


def test_configured_vocabulary_reloads_when_its_file_changes(tmp_path):
    import os

    from indexer.project import Projects

    source = tmp_path / "v.tsv"
    source.write_text("uri,label_en\nhttp://x/a,apples\n".replace(",", "\t"))
    (tmp_path / "projects.cfg").write_text(
        f"[vocab:v]\nsource = {source}\n[p]\nlanguage=en\nvocab=v\nbackend=lexical\n"
    )
    assert len(Projects.from_path(tmp_path / "projects.cfg").get("p").vocab) == 1
    source.write_text("uri\tlabel_en\nhttp://x/a\tapples\nhttp://x/b\tpears\n")
    os.utime(source, (1, 1))
    vocab = Projects.from_path(tmp_path / "projects.cfg").get("p").vocab
    assert len(vocab) == 2 and vocab.id_of("http://x/a") == 0

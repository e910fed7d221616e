"""The `analyzer` project setting: Snowball by default, lemmatizers as extras."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from indexer.analyzer import (
    Analyzer,
    analyzer_for,
    build_analyzer,
    default_analyzer,
    parse_analyzer,
)
from indexer.config import load_config
from indexer.errors import ConfigError, DependencyError, NotTrainedError
from indexer.project import Projects

from .conftest import DATA

FINNISH = "Tähtitieteen historiaa ja aurinkovoimaloiden fysiikkaa kirjastoissa"
CFG = """
[vocab:tiny]
source = {data}/tiny.ttl

[tfidf-fi]
language = fi
vocab = tiny
backend = tfidf
ngram = 1
{analyzer}

[lexical-fi]
language = fi
vocab = tiny
backend = lexical
fuzzy = no
{analyzer}
"""
FI_CORPUS = (
    "Tähtitieteen historiaa: tähdet ja kaukoputket\t<http://example.org/t/astronomy>\n"
    "Aurinkovoimalat ja aurinkopaneelit kodeissa\t<http://example.org/t/solar-power>\n"
    "Biologian perusteet: solut ja geenit\t<http://example.org/t/biology>\n"
    "Musiikin historia ja sinfoniat\t<http://example.org/t/music>\n"
)


def workspace_with(tmp_path, analyzer: str = "") -> Projects:
    """Finnish tfidf and lexical projects over the tiny vocabulary."""
    setting = f"analyzer = {analyzer}" if analyzer else ""
    cfg = tmp_path / "projects.cfg"
    cfg.write_text(CFG.format(data=DATA, analyzer=setting))
    (tmp_path / "fi.tsv").write_text(FI_CORPUS)
    return Projects.from_path(cfg)


def voikko_or_skip() -> Analyzer:
    """The Finnish Voikko analyzer; skips where its package, C library
    (libvoikko1) or dictionary (voikko-fi) is missing."""
    pytest.importorskip("libvoikko")
    try:
        return analyzer_for("voikko(fi)")
    except DependencyError as exc:
        pytest.skip(exc.message)


def uris(project, text: str) -> list[str]:
    batch = project.suggest([text], limit=5)
    return [project.vocab.uris[s.subject].rsplit("/", 1)[1] for s in batch.row(0)]


# -- the setting -------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "canonical"),
    [
        ("snowball(finnish)", "snowball(fi)"),
        ("snowball(fi)", "snowball(fi)"),
        ("Snowball( english )", "snowball(en)"),
        ("simplemma(fi)", "simplemma(fi)"),
        ("simplemma(fi,token_min_length=2)", "simplemma(fi)"),
        ("simplemma(fi, token_min_length=3)", "simplemma(fi,token_min_length=3)"),
        ("voikko(fi, cache_size=10)", "voikko(fi)"),
        ("spacy(en_core_web_sm, lowercase=true)", "spacy(en_core_web_sm)"),
    ],
)
def test_settings_are_parsed_as_annif_writes_them(setting, canonical):
    assert str(parse_analyzer(setting)) == canonical


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("stemmer(fi)", "analyzer 'stemmer' is unknown. Analyzers: snowball"),
        ("voikko", "is not NAME"),
        ("simplemma(fi, min=2)", "unknown option 'min=2'. Options: token_min_length"),
        ("simplemma(fi, token_min_length=0)", "token_min_length must be an integer"),
        ("snowball(klingon)", "neither a language code nor a Snowball algorithm"),
        ("simplemma(f_i)", "'f_i' is not a language code"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_valid_forms(
    tmp_path, setting, message
):
    cfg = tmp_path / "projects.cfg"
    cfg.write_text(CFG.format(data=DATA, analyzer=f"analyzer = {setting}"))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(cfg)
    assert "Project 'tfidf-fi'" in caught.value.message


def test_the_default_is_snowball_in_the_project_language(tmp_path):
    project = workspace_with(tmp_path).get("tfidf-fi")
    assert project.analyzer_spec == default_analyzer("fi")
    # the same tokens as before the setting existed (Snowball, final vowels trimmed)
    assert project.analyzer.tokens("Arkeologian arkeologia") == ["arkeolog"] * 2
    assert project.analyzer.tokens(FINNISH) == Analyzer("fi").tokens(FINNISH)


# -- the cache ---------------------------------------------------------
def test_the_word_cache_is_bounded():
    analyzer = build_analyzer(parse_analyzer("snowball(en, cache_size=3)"))
    analyzer.tokens("stars planets telescopes galaxies comets moons stars")
    info = analyzer.stem.cache_info()
    assert info.maxsize == 3
    assert info.currsize == 3


def test_cold_analyzer_caches_nothing_and_gives_the_same_tokens():
    cold = build_analyzer(parse_analyzer("snowball(fi, cache_size=0)"))
    assert cold.tokens(FINNISH) == analyzer_for("snowball(fi)").tokens(FINNISH)
    assert cold.stem.cache_info().currsize == 0


@pytest.mark.parametrize("setting", ["snowball(fi)", "simplemma(fi)", "voikko(fi)"])
def test_threads_sharing_an_analyzer_get_the_tokens_of_one_thread(setting):
    if setting == "simplemma(fi)":
        pytest.importorskip("simplemma")
    if setting == "voikko(fi)":
        voikko_or_skip()
    texts = [f"{FINNISH} {i} kirjastonhoitajien työssä {i * 7}" for i in range(200)]
    # a fresh analyzer with a small cache, so threads miss and evict at once
    shared = build_analyzer(parse_analyzer(setting.replace(")", ", cache_size=5)")))
    expected = [analyzer_for(setting).tokens(t) for t in texts]
    results: dict[int, list] = {}

    def work(n: int) -> None:
        results[n] = [shared.tokens(t) for t in texts]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n] == expected for n in range(4))


# -- the lemmatizers ---------------------------------------------------
def test_simplemma_lemmatizes():
    pytest.importorskip("simplemma")
    tokens = analyzer_for("simplemma(fi)").tokens("Kirjastoissa kirjastonhoitajien")
    assert tokens == ["kirjasto", "kirjastonhoitaja"]


def test_voikko_lemmatizes():
    voikko = voikko_or_skip()
    assert voikko.tokens("Tähtitieteen kirjastoissa") == ["tähtitiede", "kirjasto"]
    assert voikko.tokens("xqzzy") == ["xqzzy"]  # unknown words stay as they are


def test_spacy_blank_pipeline_uses_lookup_lemmas():
    pytest.importorskip("spacy")
    pytest.importorskip("spacy_lookups_data")
    assert analyzer_for("spacy(en)").tokens("The libraries were running") == [
        "the",
        "library",
        "be",
        "run",
    ]


def test_spacy_model_that_is_not_installed_says_what_to_do():
    pytest.importorskip("spacy")
    with pytest.raises(DependencyError, match="spaCy model 'xx_no_such_model'"):
        analyzer_for("spacy(xx_no_such_model)")
    with pytest.raises(DependencyError, match="no lookup lemmas for 'fi'"):
        analyzer_for("spacy(fi)")


@pytest.mark.parametrize(
    ("setting", "module", "install"),
    [
        ("simplemma(fi)", "simplemma", "subject-indexer[simplemma]"),
        ("voikko(fi)", "libvoikko", "Debian packages libvoikko1 voikko-fi"),
        ("spacy(en)", "spacy", "subject-indexer[spacy]"),
    ],
)
def test_a_missing_extra_is_named(monkeypatch, tmp_path, setting, module, install):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    build_analyzer.cache_clear()
    try:
        project = workspace_with(tmp_path, setting).get("tfidf-fi")
        with pytest.raises(DependencyError, match=f"package {module}") as caught:
            project.train([tmp_path / "fi.tsv"])
        assert install in caught.value.message
    finally:
        build_analyzer.cache_clear()


# -- backends use the project's analyzer -------------------------------
def test_lexical_matches_labels_through_the_projects_analyzer(tmp_path):
    voikko_or_skip()
    text = "Tähtitieteen historiaa"  # genitive: Snowball gives tähtitiet/tähtitied
    assert "astronomy" not in uris(workspace_with(tmp_path).get("lexical-fi"), text)
    voikko = workspace_with(tmp_path, "voikko(fi)").get("lexical-fi")
    assert "astronomy" in uris(voikko, text)


def test_the_analyzer_is_recorded_and_a_model_refuses_another(tmp_path):
    pytest.importorskip("simplemma")
    projects = workspace_with(tmp_path, "simplemma(fi)")
    project = projects.get("tfidf-fi")
    project.train([tmp_path / "fi.tsv"])
    manifest = json.loads((project.model_dir / "manifest.json").read_text())
    assert manifest["analyzer"] == "simplemma(fi)"
    assert uris(project, "aurinkovoimalan paneeleista")[0] == "solar-power"

    other = workspace_with(tmp_path, "snowball(finnish)").get("tfidf-fi")
    with pytest.raises(NotTrainedError) as caught:
        other.suggest(["aurinkovoimala"])
    assert caught.value.message == (
        "Project 'tfidf-fi' was trained with analyzer = simplemma(fi), but is "
        "configured with analyzer = snowball(fi): retrain it with `indexer train "
        "tfidf-fi CORPUS`, or set analyzer = simplemma(fi) again"
    )


def test_models_from_before_the_setting_serve_as_snowball(tmp_path):
    projects = workspace_with(tmp_path)
    project = projects.get("tfidf-fi")
    project.train([tmp_path / "fi.tsv"])
    before = uris(project, FINNISH)
    # a model saved before the setting existed: no analyzer anywhere
    manifest_path = project.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["analyzer"]
    manifest_path.write_text(json.dumps(manifest))
    terms_path = project.model_dir / "tfidf-terms.json"
    terms = json.loads(terms_path.read_text())
    del terms["meta"]["analyzer"]
    terms_path.write_text(json.dumps(terms))
    project.unload()
    assert uris(project, FINNISH) == before
    stated = workspace_with(tmp_path, "snowball(finnish)").get("tfidf-fi")
    assert uris(stated, FINNISH) == before


def test_cli_says_to_retrain_under_another_analyzer(tmp_path):
    from click.testing import CliRunner

    from indexer.cli import cli

    voikko_or_skip()
    workspace_with(tmp_path, "voikko(fi)").get("tfidf-fi").train([tmp_path / "fi.tsv"])
    workspace_with(tmp_path)  # the same projects, analyzer setting removed
    result = CliRunner().invoke(
        cli,
        ["--projects", str(tmp_path / "projects.cfg"), "suggest", "tfidf-fi"],
        input="tähtitiede",
    )
    assert result.exit_code == 1
    assert "trained with analyzer = voikko(fi)" in result.output
    assert "Traceback" not in result.output


# -- import-annif ------------------------------------------------------
def test_annif_analyzers_are_converted(tmp_path):
    from indexer.annif_import import convert_projects, read_annif_projects, render

    path = DATA / "annif-analyzers.cfg"
    converted = {p.id: p for p in convert_projects(read_annif_projects(path))}
    settings = {k: p.settings.get("analyzer") for k, p in converted.items()}
    assert settings == {
        "snowball-fi": None,  # the default: a comment, no setting
        "simplemma-fi": "simplemma(fi,token_min_length=3)",
        "voikko-fi": "voikko(fi)",
        "spacy-en": "spacy(en_core_web_sm)",
        "spacy-options": None,  # Annif's lowercase=false: tokens are lower-cased
    }
    assert not any(p.notes for k, p in converted.items() if k != "spacy-options")
    assert "lowercase=false" in converted["spacy-options"].notes[0]
    assert "libvoikko1 voikko-fi" in "\n".join(converted["voikko-fi"].lines)
    # the written configuration reads back with the same analyzers
    out = tmp_path / "projects.cfg"
    text = render(list(converted.values()), path, {"tiny": DATA / "tiny.ttl"})
    out.write_text(text)
    projects = Projects.from_path(out)
    assert str(projects.get("simplemma-fi").analyzer_spec) == settings["simplemma-fi"]
    assert projects.get("snowball-fi").analyzer_spec == default_analyzer("fi")

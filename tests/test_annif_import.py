"""`indexer import-annif`: Annif projects files become our configuration, every
Annif setting mapped or reported."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.annif_import import convert_projects, read_annif_projects, render
from indexer.cli import cli
from indexer.errors import InputError
from indexer.project import Projects

from .conftest import DATA, SHARED

ANNIF_CFG = DATA / "annif-projects.cfg"
PEERS = SHARED.parent / "peers"  # beside the datasets


def convert(path: Path = ANNIF_CFG) -> dict:
    return {p.id: p for p in convert_projects(read_annif_projects(path))}


def converted_config(tmp_path: Path, path: Path = ANNIF_CFG) -> Path:
    out = tmp_path / "projects.cfg"
    text = render(list(convert(path).values()), path, {"tiny": DATA / "tiny.ttl"})
    out.write_text(text)
    return out


def settings(tmp_path: Path, path: Path = ANNIF_CFG) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(converted_config(tmp_path, path))
    return parser


def test_common_keys_and_backends_map(tmp_path):
    cfg = settings(tmp_path)
    assert dict(cfg["tfidf-fi"]) == {
        "backend": "tfidf",
        "name": "TF-IDF Finnish",
        "language": "fi",
        "vocab": "tiny",
        "limit": "100",
        "threshold": "0.01",
    }
    assert cfg["mllm-en"]["backend"] == "lexical"
    assert cfg["mllm-en"]["limit"] == "50"  # from Annif's [DEFAULT]
    assert cfg["ens"]["backend"] == "ensemble"
    assert cfg["nn"]["backend"] == "calibrated"
    assert cfg["pav-en"]["backend"] == "calibrated"
    assert cfg["pav-en"]["calibration"] == "isotonic"


def test_omikuji_becomes_xmc_with_its_tree_settings(tmp_path):
    cfg = settings(tmp_path)
    parabel, bonsai = cfg["omikuji-parabel"], cfg["omikuji-bonsai"]
    assert (parabel["backend"], parabel["preset"]) == ("xmc", "parabel")
    assert "cluster_k" not in parabel  # omikuji's defaults are the preset
    assert (bonsai["backend"], bonsai["preset"]) == ("xmc", "bonsai")
    assert bonsai["min_df"] == "2" and bonsai["vocab"] == "tiny"


def test_ensemble_weights_are_kept_and_sources_left_out_are_named(tmp_path):
    cfg = settings(tmp_path)
    assert cfg["ens"]["sources"] == "tfidf-fi:1, omikuji-bonsai:2"
    assert cfg["nn"]["sources"] == "omikuji-parabel:0.6, mllm-en:0.4"
    notes = convert()["ens"].notes
    assert any("remote left out" in n for n in notes)


def test_what_has_no_counterpart_is_reported_with_the_closest_equivalent():
    projects = convert()
    mllm = " ".join(projects["mllm-en"].notes)
    assert "analyzer = voikko(fi)" in mllm and "Snowball" in mllm
    assert "min_samples = 5" in mllm and "scorer" in mllm
    assert "transform = limit(5000)" in mllm and "max_length" in mllm
    fasttext = " ".join(projects["fasttext-en"].notes)
    assert "closest equivalent, xmc" in fasttext and "dim = 100" in fasttext
    nn = " ".join(projects["nn"].notes)
    assert "nodes = 100" in nn and "epochs = 10" in nn
    assert "min-docs = 10" in " ".join(projects["pav-en"].notes)
    remote = projects["remote"]
    assert not remote.enabled and "no counterpart" in remote.notes[0]


def test_no_annif_setting_is_dropped_silently():
    annif = read_annif_projects(ANNIF_CFG)
    for project_id, project in convert().items():
        text = "\n".join(project.lines).lower()
        for key, value in annif[project_id].items():
            value = value.split("(")[0].lower()
            assert key in text and value in text, (project_id, key)


def test_converted_configuration_loads_and_trains(tmp_path):
    projects = Projects.from_path(converted_config(tmp_path))
    assert "remote" not in projects.ids()
    for project in projects:
        project.check()  # parameters parse
    bonsai = projects.get("omikuji-bonsai")
    assert bonsai.backend.params.preset == "bonsai"
    assert bonsai.backend.params.min_df == 2
    parabel = projects.get("omikuji-parabel")
    parabel.train([DATA / "tiny.tsv"])
    assert parabel.suggest(["stars and telescopes"]).row(0)


def test_toml_projects_file(tmp_path):
    path = tmp_path / "projects.toml"
    path.write_text(
        '[tfidf-en]\nlanguage = "en"\nbackend = "tfidf"\nvocab = "tiny"\n'
        "limit = 20\n"
        '[bonsai]\nlanguage = "en"\nbackend = "omikuji"\nvocab = "tiny"\n'
        "cluster_balanced = false\ncluster_k = 100\nmax_depth = 3\n"
    )
    cfg = settings(tmp_path, path)
    assert cfg["tfidf-en"]["limit"] == "20"
    assert cfg["bonsai"]["preset"] == "bonsai"


def test_unreadable_files_are_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_annif_projects(tmp_path / "missing.cfg")
    broken = tmp_path / "broken.cfg"
    broken.write_text("no section header\n")
    with pytest.raises(InputError, match="Cannot read"):
        read_annif_projects(broken)


# -- the command -----------------------------------------------------------------


def test_cli_writes_the_configuration_and_reports_notes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "converted.cfg"
    args = ["import-annif", str(ANNIF_CFG), "-o", str(out)]
    result = runner.invoke(cli, [*args, "--vocab", f"tiny={DATA / 'tiny.ttl'}"])
    assert result.exit_code == 0, result.output
    assert "Converted 8 of 9 Annif projects" in result.output
    assert "Warning: project 'mllm-en': min_samples = 5" in result.output
    listed = runner.invoke(cli, ["--projects", str(out), "list-projects"])
    assert listed.exit_code == 0 and "omikuji-bonsai" in listed.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_cli_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["import-annif", str(tmp_path / "nope.cfg")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    bad_vocab = runner.invoke(cli, ["import-annif", str(ANNIF_CFG), "--vocab", "x"])
    assert bad_vocab.exit_code == 2 and "ID=FILE" in bad_vocab.output


# -- the Annif projects file of the reference figures -------------------------------


def test_the_reference_annif_projects_file_converts_and_loads(tmp_path):
    path = PEERS / "annif-projects.cfg"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    projects = convert(path)
    assert len(projects) == 19 and all(p.enabled for p in projects.values())
    backends = {p.annif_backend: p.backend for p in projects.values()}
    assert backends == {
        "tfidf": "tfidf",
        "mllm": "lexical",
        "omikuji": "xmc",
        "ensemble": "ensemble",
    }
    assert not any(p.notes for p in projects.values())  # all of it maps
    vocabs = {p: DATA / "tiny.ttl" for p in ("yso-arch", "ykl", "yso-labels", "gnd")}
    out = tmp_path / "projects.cfg"
    out.write_text(render(list(projects.values()), path, vocabs))
    loaded = Projects.from_path(out)
    assert len(loaded.ids()) == 19
    for project in loaded:
        project.check()
    assert loaded.get("kh-bonsai").backend.params.preset == "bonsai"
    assert loaded.get("kh-ens-tuned").backend.params.sources == (
        "kh-tfidf:0.0007, kh-mllm:0.2330, kh-bonsai:0.7663"
    )

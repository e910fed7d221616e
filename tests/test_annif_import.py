"""`indexer import-annif`: Annif projects files become our configuration, every
Annif setting mapped or reported."""

from __future__ import annotations

import configparser
import os
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
    assert projects["mllm-en"].settings["analyzer"] == "voikko(fi)"  # converted
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


# -- hostile and broken Annif files ------------------------------------------------


def import_annif(tmp_path: Path, text: str | bytes, name: str = "annif.cfg", *args):
    """Run `import-annif` on `text`: (result, the written file's path)."""
    source = tmp_path / name
    if isinstance(text, bytes):
        source.write_bytes(text)
    else:
        source.write_text(text)
    out = tmp_path / "out" / "projects.cfg"
    out.parent.mkdir(exist_ok=True)
    result = CliRunner().invoke(
        cli, ["import-annif", str(source), "-o", str(out), "--force", *args]
    )
    return result, out


def loaded_projects(path: Path) -> dict:
    """The projects indexer/config.py reads from a converted file."""
    from indexer.config import load_config

    return load_config(path).projects


GOOD = "[good]\nlanguage = en\nbackend = tfidf\nvocab = tiny\n"


def test_continuation_lines_cannot_inject_a_section(tmp_path):
    text = (
        "[p1]\nbackend = tfidf\nlanguage = en\nvocab = tiny\n"
        "name = x\n  [evil]\n  backend = dummy\n  vocab = ../../x\n"
        "[ens]\nbackend = ensemble\nlanguage = en\nvocab = tiny\n"
        "sources = p1:1,\n    p1:2\n"
    )
    result, out = import_annif(tmp_path, text)
    assert result.exit_code == 0, result.output
    projects = loaded_projects(out)
    assert sorted(projects) == ["ens", "p1"]
    assert projects["p1"].name == "x [evil] backend = dummy vocab = ../../x"
    assert projects["p1"].backend == "tfidf" and projects["p1"].vocab == "tiny"
    assert projects["ens"].params["sources"] == "p1:1, p1:2"
    assert (
        "Warning: project 'p1': name = x [evil] backend = dummy vocab = ../../x: "
        "the value is on several lines"
    ) in result.output
    # no line of the output starts a section but the projects' own
    sections = [line for line in out.read_text().splitlines() if line[:1] == "["]
    assert sections == ["[p1]", "[ens]"]


def test_toml_keys_and_values_cannot_inject_lines(tmp_path):
    text = (
        '[p1]\nlanguage = "en"\nbackend = "tfidf"\nvocab = "tiny"\n'
        'name = "x\\n[evil]\\nbackend = dummy"\n'
        '"k\\n[evil2]\\nbackend" = "dummy"\n'
        '["bad\\n[evil3]"]\nlanguage = "en"\nbackend = "tfidf"\nvocab = "tiny"\n'
    )
    result, out = import_annif(tmp_path, text, "projects.toml")
    assert result.exit_code == 0, result.output
    assert sorted(loaded_projects(out)) == ["p1"]
    assert "Converted 1 of 2 Annif projects" in result.output
    assert not any(line.startswith("[evil") for line in out.read_text().splitlines())


def test_projects_our_configuration_refuses_are_reported_and_left_out(tmp_path):
    text = (
        GOOD + "[../../etc/evil]\nlanguage = en\nbackend = tfidf\nvocab = tiny\n"
        "[pwned]\nlanguage = en\nbackend = tfidf\nvocab = ../../../../tmp/pwned\n"
        "[nolang]\nlanguage = english!\nbackend = tfidf\nvocab = tiny\n"
        "[novocab]\nlanguage = en\nbackend = tfidf\n"
        "[badlimit]\nlanguage = en\nbackend = tfidf\nvocab = tiny\nlimit = many\n"
        "[indexer]\nlanguage = en\nbackend = tfidf\nvocab = tiny\n"
        "[ens]\nlanguage = en\nbackend = ensemble\nvocab = tiny\n"
        "sources = good:1, nope:2, pwned:1, ens:1\n"
        "[lost]\nlanguage = en\nbackend = ensemble\nvocab = tiny\n"
        "sources = nope, ../../etc/evil\n"
        "[lost-too]\nlanguage = en\nbackend = pav\nvocab = tiny\nsources = lost\n"
    )
    result, out = import_annif(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert "Converted 2 of 10 Annif projects" in result.output
    for fragment in (
        "project '../../etc/evil': Project id '../../etc/evil' is not valid: use 1",
        "project 'pwned': Vocabulary id '../../../../tmp/pwned' is not valid",
        "project 'nolang': language 'english!' is not a language tag",
        "project 'novocab': the required setting 'vocab' is missing",
        "project 'badlimit': limit must be an integer",
        "project 'indexer': [indexer] is the section of this toolkit's own settings",
        "project 'ens': source(s) pwned left out: not converted",
        "project 'ens': source(s) 'nope' left out: no such project in the Annif file",
        "project 'ens': source ens left out: it is the project itself",
        "project 'lost': no source is left; the project is left out",
        "project 'lost-too': source(s) lost left out: not converted",
    ):
        assert f"Warning: {fragment}" in result.output, fragment
    # the round trip: our loader reads exactly the converted projects
    projects = loaded_projects(out)
    assert sorted(projects) == ["ens", "good"]
    assert projects["ens"].params["sources"] == "good:1"
    assert not any(
        line.startswith(("vocab = ../", "[../", "[indexer]"))
        for line in out.read_text().splitlines()
    )


def test_converted_files_round_trip_through_our_loader(tmp_path):
    result, out = import_annif(
        tmp_path, ANNIF_CFG.read_text(), "annif.cfg", "--vocab", f"tiny={DATA}/t.ttl"
    )
    assert result.exit_code == 0, result.output
    from indexer.annif_import import COMMON_KEYS
    from indexer.config import load_config

    config = load_config(out)
    converted = {p.id: p for p in convert().values() if p.enabled}
    assert sorted(config.projects) == sorted(converted)
    for project_id, project in converted.items():
        loaded = config.projects[project_id]
        assert loaded.backend == project.settings["backend"]
        assert loaded.vocab == project.settings["vocab"]
        assert loaded.language == project.settings["language"]
        assert str(loaded.limit) == project.settings.get("limit", "10")
        expected = {k: v for k, v in project.settings.items() if k not in COMMON_KEYS}
        expected.pop("backend")
        assert loaded.analyzer == expected.pop("analyzer", "")
        assert loaded.params == expected, project_id
    assert list(config.vocabs) == ["tiny"]


def test_the_input_is_bounded_and_strictly_utf8(tmp_path, monkeypatch):
    import indexer.annif_import as annif_import

    with pytest.raises(InputError, match="'/dev/zero' is not a regular file"):
        read_annif_projects(Path("/dev/zero"))
    big = tmp_path / "big.cfg"
    big.write_text(GOOD + "; padding\n" * 200)
    monkeypatch.setattr(annif_import, "MAX_FILE_BYTES", 1024)
    with pytest.raises(InputError, match="is larger than"):
        read_annif_projects(big)
    monkeypatch.undo()
    bom = tmp_path / "bom.cfg"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert list(read_annif_projects(bom)) == ["good"]
    latin = tmp_path / "latin.cfg"
    latin.write_bytes((GOOD + "name = Café\n").encode("latin-1"))
    with pytest.raises(InputError) as info:
        read_annif_projects(latin)
    assert info.value.message == (
        f"Annif projects file '{latin}' is not UTF-8 text: the invalid UTF-8 byte "
        "0xe9 at byte offset 60 (line 5); convert it to UTF-8 first (e.g. "
        "`iconv -f latin1 -t utf-8`)"
    )


def test_cli_refuses_devices(tmp_path):
    runner = CliRunner()
    device = runner.invoke(cli, ["import-annif", "/dev/zero"])
    assert device.exit_code == 1 and "not a regular file" in device.output
    assert device.exception is None or isinstance(device.exception, SystemExit)


def test_cli_refuses_outputs_it_cannot_write(tmp_path):
    runner = CliRunner()
    (tmp_path / "good.cfg").write_text(GOOD)
    args = ["import-annif", str(tmp_path / "good.cfg"), "-o"]
    nowhere = runner.invoke(cli, [*args, str(tmp_path / "nonexistent" / "o.cfg")])
    assert nowhere.exit_code == 2, nowhere.output
    assert "directory" in nowhere.output and "does not exist" in nowhere.output
    bad_vocab = runner.invoke(
        cli, [*args, str(tmp_path / "o.cfg"), "--vocab", "../x=f.ttl"]
    )
    assert bad_vocab.exit_code == 2 and "Vocabulary id '../x'" in bad_vocab.output


def test_cli_writes_atomically(tmp_path, monkeypatch):
    (tmp_path / "good.cfg").write_text(GOOD)
    out = tmp_path / "o.cfg"
    out.write_text("previous\n")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    result = CliRunner().invoke(
        cli, ["import-annif", str(tmp_path / "good.cfg"), "-o", str(out), "--force"]
    )
    assert result.exit_code == 1, result.output
    assert f"Cannot write '{out}': No space left on device" in result.output
    assert out.read_text() == "previous\n"
    assert sorted(os.listdir(tmp_path)) == ["good.cfg", "o.cfg"]
    monkeypatch.undo()
    result = CliRunner().invoke(
        cli, ["import-annif", str(tmp_path / "good.cfg"), "-o", str(out), "--force"]
    )
    assert result.exit_code == 0 and sorted(loaded_projects(out)) == ["good"]
    assert sorted(os.listdir(tmp_path)) == ["good.cfg", "o.cfg"]


def test_a_file_name_that_is_not_utf8_is_written_escaped(tmp_path):
    source = tmp_path / os.fsdecode(b"\xff.cfg")
    source.write_text(GOOD)
    out = tmp_path / "o.cfg"
    result = CliRunner().invoke(cli, ["import-annif", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "\\xff.cfg" in out.read_text().splitlines()[0]
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, "o.cfg"])
    vocab = "tiny=" + str(tmp_path / os.fsdecode(b"\xff.ttl"))
    refused = CliRunner().invoke(
        cli, ["import-annif", str(source), "-o", str(out), "--force", "--vocab", vocab]
    )
    assert refused.exit_code == 2 and "must be UTF-8 text" in refused.output


def test_cli_refuses_to_write_over_the_file_it_converts(tmp_path):
    source = tmp_path / "projects.cfg"
    source.write_text(GOOD)
    (tmp_path / "link.cfg").symlink_to(source)
    (tmp_path / "sub").mkdir()
    for output in (source, tmp_path / "link.cfg", tmp_path / "sub/../projects.cfg"):
        for force in ((), ("--force",)):
            result = CliRunner().invoke(
                cli, ["import-annif", str(source), "-o", str(output), *force]
            )
            assert result.exit_code == 2, result.output
            assert "is the Annif file" in result.output
            assert "would replace it" in result.output
    assert source.read_text() == GOOD
    # nor into the projects.d directory it reads
    projects_d = tmp_path / "projects.d"
    projects_d.mkdir()
    (projects_d / "a.cfg").write_text(GOOD)
    for output in (projects_d / "a.cfg", projects_d / "new.cfg"):
        result = CliRunner().invoke(
            cli, ["import-annif", str(projects_d), "-o", str(output), "--force"]
        )
        assert result.exit_code == 2, result.output
        assert "is in the Annif directory" in result.output
    assert sorted(os.listdir(projects_d)) == ["a.cfg"]
    assert (projects_d / "a.cfg").read_text() == GOOD

"""The records of a SKOS file, as both parsers read it (rdflib and, where it is
installed, pyoxigraph), collected without building a graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer import rdfsafe
from indexer.errors import InputError
from indexer.skos import read_vocabulary_file

from .conftest import DATA, SHARED

ROOT = Path(__file__).resolve().parents[1]
HAS_PYOXIGRAPH = rdfsafe.importlib.util.find_spec("pyoxigraph") is not None
PARSERS = [
    "rdflib",
    pytest.param(
        "auto",
        marks=pytest.mark.skipif(not HAS_PYOXIGRAPH, reason="pyoxigraph not there"),
    ),
]
HEAD = (
    "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
    "@prefix owl: <http://www.w3.org/2002/07/owl#> .\n"
    "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\n"
)


def read(source: Path, parser: str, monkeypatch, in_child: bool = False):
    """The records of `source`, read by `parser`, in this process or not."""
    with monkeypatch.context() as patch:
        patch.setenv("INDEXER_VOCAB_PARSER", parser)
        patch.setattr(rdfsafe, "IN_PROCESS_BYTES", 0 if in_child else 2**30)
        if parser == "auto" and not in_child:
            patch.setattr(rdfsafe, "_parse", _rdflib_was_asked)
        return read_vocabulary_file(source)


def _rdflib_was_asked(*args, **kwargs):
    raise AssertionError("pyoxigraph was to parse this file, not rdflib")


def shipped_sources() -> list[Path]:
    sources = [DATA / "tiny.ttl", *sorted((ROOT / "vocabularies").glob("*.ttl"))]
    archaeology = SHARED / "yso-archaeology" / "vocab.ttl"
    return sources + ([archaeology] if archaeology.is_file() else [])


@pytest.mark.skipif(not HAS_PYOXIGRAPH, reason="pyoxigraph not there")
@pytest.mark.parametrize("source", shipped_sources(), ids=lambda p: p.name)
def test_pyoxigraph_reads_the_records_rdflib_reads(source, monkeypatch):
    expected = read(source, "rdflib", monkeypatch)
    assert len(expected) > 5
    assert read(source, "auto", monkeypatch) == expected
    assert read(source, "auto", monkeypatch, in_child=True) == expected


def tiny_in(rdf_format: str, path: Path) -> Path:
    """tests/data/tiny.ttl written in `rdf_format`; in TriG and N-Quads with a
    concept in a named graph too, which is not read."""
    import rdflib
    from rdflib.namespace import RDF, SKOS

    dataset = rdflib.Dataset()
    dataset.parse(DATA / "tiny.ttl")
    if rdf_format in ("trig", "nquads"):
        named = dataset.graph(rdflib.URIRef("http://example.org/g"))
        other = rdflib.URIRef("http://example.org/t/other")
        named.add((other, RDF.type, SKOS.Concept))
        named.add((other, SKOS.prefLabel, rdflib.Literal("other", lang="en")))
        path.write_text(dataset.serialize(format=rdf_format))
    else:
        graph = rdflib.Graph().parse(DATA / "tiny.ttl")
        path.write_text(graph.serialize(format=rdf_format))
    return path


FORMATS = {"nt": "nt", "xml": "rdf", "json-ld": "jsonld", "n3": "n3"}
FORMATS.update(trig="trig", nquads="nq")


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("rdf_format", sorted(FORMATS))
def test_every_format_gives_the_records_of_the_turtle_file(
    tmp_path, monkeypatch, parser, rdf_format
):
    expected = read(DATA / "tiny.ttl", "rdflib", monkeypatch)
    source = tiny_in(rdf_format, tmp_path / f"tiny.{FORMATS[rdf_format]}")
    in_child = rdf_format not in rdfsafe.FAST_FORMATS  # rdflib reads it anyway
    assert read(source, parser, monkeypatch, in_child) == expected


@pytest.mark.parametrize("parser", PARSERS)
def test_statements_read_as_rdflib_reads_them(tmp_path, monkeypatch, parser):
    source = tmp_path / "v.ttl"
    source.write_text(
        HEAD + "<http://x/a> a skos:Concept ; skos:prefLabel 'first'@en, 'x'@fi ;\n"
        "    skos:prefLabel 'second'@en ; skos:notation '01'^^xsd:integer ;\n"
        "    skos:definition 'a definition'@en ; skos:scopeNote 'a note'@en ;\n"
        "    skos:altLabel 'b', 'a', 'b' ; skos:hiddenLabel 'h' ;\n"
        "    skos:broader <http://x/b>, <http://x/b>, <http://x/nothing> .\n"
        "<http://x/b> a skos:Concept ; skos:prefLabel 'b' ;\n"
        "    owl:deprecated '1'^^xsd:integer ; skos:narrower <http://x/c> .\n"
        "<http://x/c> a skos:Concept ; owl:deprecated 'false'^^xsd:boolean ;\n"
        "    skos:related <http://x/a>, <http://x/a> ; skos:broader <http://x/b> .\n"
        "<http://x/d> a skos:Concept ; owl:deprecated <http://x/true> .\n"
        "<http://x/s> a skos:ConceptScheme ; skos:prefLabel 'scheme' .\n"
    )
    a, b, c, d = read(source, parser, monkeypatch)
    assert a.pref == {"en": "first", "fi": "x"}  # the first in the file
    assert a.notation == "1"  # rdflib's normal form of the integer
    assert a.note == {"en": "a note"}
    assert a.alt == {"und": ["a", "b", "h"]}
    assert a.broader == ["http://x/b"]
    assert (b.deprecated, c.deprecated, d.deprecated) == (True, False, False)
    assert c.broader == ["http://x/b"] and c.related == ["http://x/a"]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_scope_note_comes_before_a_definition(tmp_path, monkeypatch, parser):
    source = tmp_path / "v.ttl"
    source.write_text(
        HEAD + "<http://x/a> a skos:Concept ; skos:definition 'defined'@en ;\n"
        "    skos:scopeNote 'noted'@en ; skos:definition 'defined'@fi .\n"
    )
    [record] = read(source, parser, monkeypatch)
    assert record.note == {"en": "noted", "fi": "defined"}


@pytest.mark.parametrize("parser", PARSERS)
def test_untyped_concepts_are_the_labelled_subjects(tmp_path, monkeypatch, parser):
    source = tmp_path / "v.ttl"
    source.write_text(
        HEAD + "<http://x/a> skos:prefLabel 'a' ; skos:broader <http://x/b> .\n"
        "<http://x/b> skos:prefLabel 'b' .\n"
        "<http://x/s> a skos:ConceptScheme ; skos:prefLabel 'scheme' .\n"
    )
    records = read(source, parser, monkeypatch)
    assert [r.uri for r in records] == ["http://x/a", "http://x/b"]
    assert records[0].broader == ["http://x/b"]


def test_upper_case_language_tags_are_kept_as_rdflib_keeps_them(tmp_path, monkeypatch):
    """pyoxigraph would lower-case them: such a file goes to rdflib."""
    source = tmp_path / "v.ttl"
    source.write_text(
        HEAD + "<http://x/a> a skos:Concept ; skos:prefLabel 'a'@EN-GB .\n"
    )
    assert not rdfsafe._fast_parser_fits(source.read_bytes(), "turtle")
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", "auto")
    [record] = read_vocabulary_file(source)
    assert record.pref == {"EN-GB": "a"}


def test_an_unknown_parser_setting_is_an_error(monkeypatch):
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", "fast")
    with pytest.raises(InputError, match="INDEXER_VOCAB_PARSER is 'fast'; use"):
        read_vocabulary_file(DATA / "tiny.ttl")


def concepts_turtle(count: int) -> str:
    return HEAD + "".join(
        f"<http://x/{i}> a skos:Concept ; skos:prefLabel 'concept {i}'@en ;\n"
        f"    skos:altLabel 'alt {i}'@en ; skos:broader <http://x/{i // 2}> .\n"
        for i in range(count)
    )


@pytest.mark.parametrize("parser", PARSERS)
def test_the_parse_in_this_process_stops_at_the_deadline(monkeypatch, parser):
    data = concepts_turtle(3 * rdfsafe.CLOCK_EVERY).encode()
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", parser)
    monkeypatch.setenv("INDEXER_VOCAB_MAX_SECONDS", "0")
    with pytest.raises(InputError, match="took longer than 0 s and was stopped"):
        rdfsafe.collect(data, "turtle", Path("v.ttl"), _no_sink)


def _no_sink():
    from indexer.skosrows import ConceptRows

    return ConceptRows()


@pytest.mark.parametrize("parser", PARSERS)
def test_a_vocabulary_loads_within_a_budget_its_graph_would_exceed(
    tmp_path, monkeypatch, parser
):
    """20,000 concepts: an rdflib graph of them needed more than 150 MB (the
    parse was stopped); their statements alone fit."""
    source = tmp_path / "v.ttl"
    source.write_text(concepts_turtle(20_000))
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", parser)
    monkeypatch.setenv("INDEXER_VOCAB_MAX_MEMORY_MB", "150")
    records = read_vocabulary_file(source)
    assert len(records) == 20_000
    assert records[-1].broader == ["http://x/4999"]  # 9999 // 2


@pytest.mark.skipif(not HAS_PYOXIGRAPH, reason="pyoxigraph not there")
def test_the_memory_budget_stops_a_pyoxigraph_parse(tmp_path, monkeypatch):
    source = tmp_path / "v.ttl"
    source.write_text(concepts_turtle(150_000))
    monkeypatch.setenv("INDEXER_VOCAB_MAX_MEMORY_MB", "100")
    with pytest.raises(InputError) as error:
        read_vocabulary_file(source)
    assert error.value.message == (
        f"Parsing '{source}' needed more than 100 MB of memory and was stopped; "
        "raise INDEXER_VOCAB_MAX_MEMORY_MB to allow more"
    )


@pytest.mark.skipif(not HAS_PYOXIGRAPH, reason="pyoxigraph not there")
def test_pyoxigraph_reads_nesting_too_deep_for_rdflib(tmp_path, monkeypatch):
    source = tmp_path / "deep.ttl"
    source.write_text(
        HEAD
        + "<http://x/a> a skos:Concept ; skos:prefLabel 'a' ; skos:related "
        + "[ skos:related " * 100_000
        + "'x'"
        + " ]" * 100_000
        + " .\n"
    )
    [record] = read(source, "auto", monkeypatch, in_child=True)
    assert (record.uri, record.pref, record.related) == ("http://x/a", {"und": "a"}, [])


@pytest.mark.skipif(not HAS_PYOXIGRAPH, reason="pyoxigraph not there")
def test_a_literal_over_pyoxigraphs_buffer_is_read_by_rdflib(monkeypatch):
    """pyoxigraph refuses a term over 16 MiB with a MemoryError; that is no
    lack of memory: rdflib reads the file."""
    label = "a" * (17 * 2**20)
    data = HEAD + f"<http://x/a> a skos:Concept ; skos:prefLabel '{label}'@en .\n"
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", "auto")
    sink = rdfsafe.collect(data.encode(), "turtle", Path("v.ttl"), _no_sink)
    [row] = sink.rows()
    assert row[0] == "http://x/a"
    assert row[3] == {"en": label}


@pytest.mark.parametrize("parser", PARSERS)
def test_line_breaks_in_long_strings_are_read_as_rdflib_reads_them(
    tmp_path, monkeypatch, parser
):
    """rdflib reads a carriage return written in a long string as a line feed,
    pyoxigraph kept it: such a file goes to rdflib."""
    source = tmp_path / "v.ttl"
    source.write_bytes(
        HEAD.encode() + b"<http://x/a> a skos:Concept ;\r\n"
        b'  skos:prefLabel "a\\r\\nb"@en ; skos:scopeNote """one\r\ntwo\rthree"""@en .'
    )
    monkeypatch.setenv("INDEXER_VOCAB_PARSER", parser)
    [record] = read_vocabulary_file(source)
    assert record.pref == {"en": "a\r\nb"}  # escapes are what they say
    assert record.note == {"en": "one\ntwo\nthree"}


@pytest.mark.parametrize("parser", PARSERS)
def test_blank_nodes_are_no_concepts(tmp_path, monkeypatch, parser):
    """A blank node is named anew at each parse: as a concept it was added
    again at each reload (and pyoxigraph and rdflib named it differently)."""
    source = tmp_path / "v.ttl"
    source.write_text(
        HEAD + "_:b a skos:Concept ; skos:prefLabel 'blank'@en .\n"
        "[] a skos:Concept ; skos:prefLabel 'anonymous'@en ; skos:broader _:b .\n"
        "<http://x/a> a skos:Concept ; skos:prefLabel 'a'@en ;\n"
        "  skos:broader _:b ; skos:narrower [ skos:prefLabel 'n' ] .\n"
    )
    [record] = read(source, parser, monkeypatch)
    assert (record.uri, record.broader) == ("http://x/a", [])
    assert read(source, parser, monkeypatch, in_child=True) == [record]

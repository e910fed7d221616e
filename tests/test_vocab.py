from __future__ import annotations

import time

import pytest

from indexer.errors import InputError, NotFoundError
from indexer.vocab import Vocabulary

from .conftest import DATA, SHARED, shared_dataset


def load(tmp_path, source, vocab_id="v", **kwargs) -> Vocabulary:
    vocab = Vocabulary(vocab_id, tmp_path / "vocabs" / vocab_id)
    vocab.load_file(source, **kwargs)
    return Vocabulary(vocab_id, tmp_path / "vocabs" / vocab_id)  # reopen from disk


def test_skos_concepts_labels_and_relations(tmp_path):
    vocab = load(tmp_path, DATA / "tiny.ttl")
    assert len(vocab) == 8
    assert vocab.languages == ["en", "fi"]
    physics = vocab.concept(vocab.id_of("http://example.org/t/physics"), "en")
    assert physics.label == "physics"
    assert physics.alt_labels == ["physical sciences"]
    assert physics.notation == "1.1"
    assert [vocab.uris[i] for i in physics.broader] == ["http://example.org/t/science"]
    assert [vocab.uris[i] for i in physics.related] == [
        "http://example.org/t/astronomy"
    ]
    science = vocab.concept(vocab.id_of("<http://example.org/t/science>"), "en")
    assert sorted(vocab.uris[i] for i in science.narrower) == [
        "http://example.org/t/biology",
        "http://example.org/t/physics",
    ]
    assert science.note == "Systematic study of the natural world."
    assert vocab.label(physics.id, "fi") == "fysiikka"
    alchemy = vocab.id_of("http://example.org/t/alchemy")
    assert vocab.deprecated[alchemy]
    assert vocab.label(alchemy, "fi") == "alchemy"  # falls back to English


def test_search_finds_exact_before_partial(tmp_path):
    vocab = load(tmp_path, DATA / "tiny.ttl")
    found = vocab.search("solar", "en")
    assert [vocab.uris[i] for i in found] == ["http://example.org/t/solar-power"]
    assert (
        vocab.uris[vocab.search("stargazing", "en")[0]]
        == "http://example.org/t/astronomy"
    )


def test_ids_stay_stable_when_the_vocabulary_changes(tmp_path):
    vocab = load(tmp_path, DATA / "tiny.ttl")
    before = {uri: i for i, uri in enumerate(vocab.uris)}
    changed = tmp_path / "changed.ttl"
    text = (DATA / "tiny.ttl").read_text()
    start = text.index("ex:history a")
    end = text.index("ex:music a")
    changed.write_text(
        text[:start]
        + text[end:]
        + '\nex:zoology a skos:Concept ; skos:prefLabel "zoology"@en .\n'
    )
    info = vocab.load_file(changed)
    assert info == {**info, "added": 1, "removed": 1, "concepts": 9}
    after = Vocabulary("v", tmp_path / "vocabs" / "v")
    for uri, i in before.items():
        assert after.id_of(uri) == i
    assert after.id_of("http://example.org/t/zoology") == 8
    history = after.id_of("http://example.org/t/history")
    assert after.deprecated[history]
    assert after.label(history, "en") == "history"


def test_columns_csv(tmp_path):
    vocab = load(tmp_path, DATA / "tiny-columns.csv")
    apples = vocab.concept(vocab.id_of("http://example.org/c/a"), "en")
    assert apples.alt_labels == ["apple", "malus"]
    assert vocab.label(apples.id, "fi") == "omenat"
    assert [vocab.uris[i] for i in apples.broader] == ["http://example.org/c/f"]
    assert apples.note == "Fruit of the apple tree."


def test_headerless_tsv_needs_a_language(tmp_path):
    source = tmp_path / "labels.tsv"
    source.write_text(
        "<http://example.org/a>\tomena\n<http://example.org/b>\tpäärynä\n"
    )
    with pytest.raises(InputError, match="--language"):
        load(tmp_path, source)
    vocab = load(tmp_path, source, language="fi")
    assert vocab.pref_labels("fi") == ["omena", "päärynä"]


def test_malformed_turtle_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="Cannot parse .*bad.ttl' as turtle"):
        load(tmp_path, DATA / "bad.ttl")
    assert not (tmp_path / "vocabs" / "v").exists()


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="extensions"):
        load(tmp_path, DATA / "fulltext" / "doc2.key")
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path, tmp_path / "nope.ttl")


def test_unloaded_vocabulary_says_how_to_load(tmp_path):
    with pytest.raises(NotFoundError, match="indexer load-vocab x FILE"):
        len(Vocabulary("x", tmp_path / "x"))


def test_gzip_and_ntriples(tmp_path):
    import gzip

    import rdflib

    graph = rdflib.Graph().parse(DATA / "tiny.ttl")
    nt = tmp_path / "tiny.nt.gz"
    with gzip.open(nt, "wb") as f:
        f.write(graph.serialize(format="nt").encode())
    assert len(load(tmp_path, nt)) == 8
    rdfxml = tmp_path / "tiny.rdf"
    rdfxml.write_text(graph.serialize(format="xml"))
    assert len(load(tmp_path, rdfxml, vocab_id="x")) == 8


def _rdflib_counts(path):
    import rdflib
    from rdflib.namespace import RDF, SKOS

    graph = rdflib.Graph().parse(path)
    concepts = set(graph.subjects(RDF.type, SKOS.Concept))
    return {
        "concepts": len(concepts),
        "pref": sum(
            1 for s, _ in graph.subject_objects(SKOS.prefLabel) if s in concepts
        ),
        "alt": len(
            {(s, o) for s, o in graph.subject_objects(SKOS.altLabel) if s in concepts}
        ),
        "broader": len(
            {
                (s, o)
                for s, o in graph.subject_objects(SKOS.broader)
                if s in concepts and o in concepts
            }
            | {
                (o, s)
                for s, o in graph.subject_objects(SKOS.narrower)
                if s in concepts and o in concepts
            }
        ),
    }


def _our_counts(vocab):
    pref = alt = 0
    for lang in vocab.languages:
        p, a, _ = vocab.labels_in(lang)
        pref += sum(x is not None for x in p)
        alt += sum(len(x) for x in a)
    return {
        "concepts": len(vocab),
        "pref": pref,
        "alt": alt,
        "broader": len(vocab.relation("broader")[1]),
    }


@pytest.mark.parametrize(
    "dataset, concepts",
    [("yso-archaeology", 130), ("ykl-makupalat", 2404), ("stw", None)],
)
def test_real_skos_vocabularies(tmp_path, dataset, concepts):
    path = shared_dataset(dataset) / "vocab.ttl"
    vocab = load(tmp_path, path)
    expected = _rdflib_counts(path)
    assert _our_counts(vocab) == expected
    if concepts is not None:
        assert len(vocab) == concepts
    narrower = len(vocab.relation("narrower")[1])
    assert narrower == expected["broader"]


def test_reopening_is_fast(tmp_path):
    vocab = load(tmp_path, DATA / "tiny.ttl")
    started = time.perf_counter()
    reopened = Vocabulary("v", vocab.path)
    assert reopened.id_of("http://example.org/t/music") is not None
    assert reopened.label(0, "en")
    assert time.perf_counter() - started < 1.0


def test_the_child_process_reads_what_an_in_process_parse_reads(monkeypatch):
    """Small plain files skip the child process; both ways give the same."""
    from indexer import rdfsafe
    from indexer.skos import read_vocabulary_file

    sources = [DATA / "tiny.ttl"]
    archaeology = SHARED / "yso-archaeology" / "vocab.ttl"
    if archaeology.is_file():
        sources.append(archaeology)
    assert rdfsafe._in_process((DATA / "tiny.ttl").read_bytes(), "turtle")
    for source in sources:
        ways = []
        for limit in (2**20, 0):  # in this process, in the child process
            with monkeypatch.context() as patch:
                patch.setattr(rdfsafe, "IN_PROCESS_BYTES", limit)
                assert rdfsafe._in_process(source.read_bytes(), "turtle") == bool(limit)
                ways.append(read_vocabulary_file(source))
        assert ways[0] == ways[1]


@pytest.mark.parametrize("in_process", [True, False])
def test_a_lone_surrogate_escape_is_a_clear_error(tmp_path, monkeypatch, in_process):
    """`\\uD800` alone is no character: one clear error, whether the file is
    parsed here or in the child process; a surrogate pair is the character."""
    from indexer import rdfsafe

    monkeypatch.setattr(rdfsafe, "IN_PROCESS_BYTES", 2**20 if in_process else 0)
    source = tmp_path / "v.ttl"
    head = "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
    source.write_text(
        head + '<http://x/a> a skos:Concept ; skos:prefLabel "bad \\uD800 x"@en .\n'
        '<http://x/b> a skos:Concept ; skos:prefLabel "good"@en .\n'
    )
    with pytest.raises(InputError) as error:
        load(tmp_path, source)
    assert "the prefLabel of <http://x/a> holds \\uD800, a lone surrogate" in str(
        error.value.message
    )
    assert not (tmp_path / "vocabs" / "v").exists()
    source.write_text(
        head + '<http://x/a> a skos:Concept ; skos:prefLabel "smile \\uD83D\\uDE00"@en'
        ' ; skos:altLabel "\\uDE00\\uD83D"@en .\n'
    )
    with pytest.raises(InputError, match="altLabel of <http://x/a> holds \\\\uDE00"):
        load(tmp_path, source)
    source.write_text(
        head
        + '<http://x/a> a skos:Concept ; skos:prefLabel "smile \\uD83D\\uDE00"@en .\n'
    )
    assert load(tmp_path, source).label(0, "en") == "smile \U0001f600"

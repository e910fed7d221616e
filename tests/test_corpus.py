from __future__ import annotations

import gzip
import os
import shutil

import pytest

from indexer.corpus import Corpus, decode_document, read_documents
from indexer.errors import InputError

from .conftest import DATA

T = "http://example.org/t/"


@pytest.fixture
def vocab(projects):
    return projects.vocab("tiny")


def subjects(corpus, vocab):
    return [sorted(vocab.uris[i].removeprefix(T) for i in d.subjects) for d in corpus]


def test_short_text_tsv_with_and_without_brackets(vocab):
    corpus = Corpus([DATA / "tiny.tsv"], vocab, "en")
    docs = list(corpus)
    assert len(docs) == 10
    assert subjects(corpus, vocab)[-1] == ["physics", "solar-power"]
    assert docs[0].text.startswith("Stars, planets")
    assert corpus.stats.documents == 10 and not corpus.stats.unknown


def test_gzip_tsv(tmp_path, vocab):
    target = tmp_path / "tiny.tsv.gz"
    with open(DATA / "tiny.tsv", "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert len(list(Corpus([target], vocab, "en"))) == 10


def test_fulltext_directory_with_tsv_and_key_files(vocab):
    corpus = Corpus([DATA / "fulltext"], vocab, "en")
    assert subjects(corpus, vocab) == [["astronomy"], ["history", "music"]]
    assert [d.id for d in corpus] == ["doc1", "doc2"]


def test_csv_with_uris_and_metadata(vocab):
    docs = list(Corpus([DATA / "tiny.csv"], vocab, "en"))
    assert docs[0].id == "d1" and docs[0].metadata == {"source": "catalogue"}
    assert len(docs[1].subjects) == 2


def test_csv_with_labels_reports_unknown_labels(vocab):
    corpus = Corpus([DATA / "labels.csv"], vocab, "en")
    assert subjects(corpus, vocab) == [["astronomy", "physics"], ["music"]]
    assert corpus.stats.unknown == {"unknown topic": 1}
    assert "unknown topic" in corpus.stats.warnings()[0]


@pytest.mark.parametrize("name", ["platform.csv", "platform.jsonl"])
def test_llm_platform_format(vocab, name):
    corpus = Corpus([DATA / name], vocab, "en")
    assert subjects(corpus, vocab) == [["astronomy"], ["history"]]
    assert len(corpus.stats.unknown) == 1


def test_jsonl_documents(vocab):
    docs = list(Corpus([DATA / "docs.jsonl"], vocab, "en"))
    assert docs[0].id == "j1" and docs[0].metadata == {"year": 2020}
    assert docs[1].metadata == {"lang": "en"}
    assert [vocab.uris[i] for i in docs[1].subjects] == [T + "music"]


def test_unknown_uris_and_documents_without_subjects(tmp_path, vocab):
    path = tmp_path / "c.tsv"
    path.write_text("text one\t<http://nowhere/x>\ntext two\n")
    corpus = Corpus([path], vocab, "en")
    docs = list(corpus)
    assert [d.subjects for d in docs] == [[], []]
    assert corpus.stats.without_subjects == 2
    assert corpus.stats.unknown == {"http://nowhere/x": 1}


def test_reading_is_lazy_and_repeatable(tmp_path, vocab):
    path = tmp_path / "big.tsv"
    path.write_text("".join(f"doc {i}\t<{T}physics>\n" for i in range(1000)))
    iterator = iter(read_documents(path))
    assert next(iterator).text == "doc 0"
    corpus = Corpus([path], vocab, "en")
    assert sum(1 for _ in corpus) == sum(1 for _ in corpus) == 1000


def test_a_pipe_is_refused_as_a_corpus_rather_than_waited_on(tmp_path, vocab):
    fifo = tmp_path / "corpus.tsv"
    os.mkfifo(fifo)  # nobody writes: reading it twice would wait forever
    with pytest.raises(InputError, match="not a file or a directory"):
        Corpus([fifo], vocab, "en")


def test_bad_corpus_paths_and_lines(tmp_path, vocab):
    with pytest.raises(InputError, match="does not exist"):
        Corpus([tmp_path / "missing.tsv"], vocab, "en")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2: invalid JSON"):
        list(Corpus([bad], vocab, "en"))
    odd = tmp_path / "corpus.xlsx"
    odd.write_text("x")
    with pytest.raises(InputError, match="corpus format"):
        list(read_documents(odd))


def test_decode_document_rejects_empty_and_binary():
    assert decode_document("päivää".encode()) == "päivää"
    with pytest.raises(InputError, match="empty"):
        decode_document(b"  \n")
    with pytest.raises(InputError, match="binary"):
        decode_document(b"\x89PNG\x00\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        decode_document(b"caf\xe9")


def test_jsonl_records_without_a_text_are_skipped_and_reported(tmp_path, vocab):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"text": null, "subjects": ["http://example.org/t/physics"]}\n'
        '{"text": 5}\n'
        '{"text": ["a"]}\n'
        '{"text": "  "}\n'
        '{"prompt": null, "completion": {"physics": 1}}\n'
        '{"text": "ok", "subjects": ["http://example.org/t/physics"]}\n'
    )
    corpus = Corpus([path], vocab, "en")
    assert [d.text for d in corpus] == ["ok"]
    assert corpus.stats.documents == 1 and corpus.stats.without_text == 5
    assert corpus.stats.warnings()[0] == (
        "5 records have no text and were skipped, e.g. bad.jsonl:1 (no text); "
        "bad.jsonl:2 (the text is 5, not a string); bad.jsonl:3 (the text is "
        '["a"], not a string)'
    )


def test_csv_and_tsv_records_without_a_text_are_skipped_and_reported(tmp_path, vocab):
    csv_file = tmp_path / "c.csv"
    csv_file.write_text(f"text,subjects\n,{T}physics\nok,{T}physics\n")
    tsv_file = tmp_path / "c.tsv"
    tsv_file.write_text(f"\n \t<{T}physics>\nok\t<{T}physics>\n")
    corpus = Corpus([csv_file, tsv_file], vocab, "en")
    assert [d.text for d in corpus] == ["ok", "ok"]
    assert corpus.stats.without_text_examples == [
        "c.csv:2 (empty text)",
        "c.tsv:2 (empty text)",
    ]


def test_a_file_without_any_text_is_an_error(tmp_path, vocab):
    path = tmp_path / "none.jsonl"
    path.write_text('{"text": null}\n{"text": ""}\n')
    with pytest.raises(InputError) as info:
        list(Corpus([path], vocab, "en"))
    assert info.value.message == (
        f"No record of '{path}' has a text, e.g. none.jsonl:1 (no text)"
    )

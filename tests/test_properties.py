"""Property-based tests: whatever the input, only the documented errors."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from indexer.analyzer import SNOWBALL, Analyzer
from indexer.corpus import CorpusStats, read_documents
from indexer.errors import InputError
from indexer.suggestion import SuggestionBatch

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CORPUS_NAMES = ["c.tsv", "c.txt", "c.csv", "c.jsonl", "c.tsv.gz", "c.jsonl.gz"]

# bytes that look like corpus records: text, tabs, URIs, JSON and CSV syntax,
# invalid UTF-8 and NUL bytes, in any order
PIECES = st.sampled_from(
    [
        b"text",
        b"\t",
        b"\n",
        b"\r\n",
        b"<http://example.org/t/physics>",
        b" ",
        b",",
        b'"',
        b"{",
        b"}",
        b'{"text": "x", "subjects": ["http://example.org/t/physics"]}',
        b'{"prompt": "p", "completion": {"physics": 1}}',
        b'{"text": "x", "subjects": 5, "labels": [null], "metadata": [1]}',
        b'{"text": 1, "uris": [1, null], "labels": {"a": 1}, "id": null}',
        b'{"prompt": [], "completion": 5}',
        b"text,subjects\n",
        b"input,expected_output\n",
        "päivää".encode(),
        "päivää".encode("latin-1"),
        b"\xff\xfe",
        b"\x00",
        b"\xef\xbb\xbf",
    ]
)
CORPUS_BYTES = st.one_of(
    st.binary(max_size=200), st.lists(PIECES, max_size=30).map(b"".join)
)


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@SETTINGS
@given(name=st.sampled_from(CORPUS_NAMES), data=CORPUS_BYTES)
def test_corpus_readers_raise_only_input_errors(name, data):
    """Any bytes read as a corpus give documents or an InputError, and no text
    is ever invented: every document text was in the file as UTF-8."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), name, data)
        stats = CorpusStats()
        try:
            documents = list(read_documents(path, stats))
        except InputError as exc:
            assert exc.message
            return
    for doc in documents:
        assert (
            isinstance(doc.text, str)
            and "\ufffd" not in doc.text
            or ("\ufffd".encode() in data)
        )
        if name.startswith("c.tsv") or name == "c.txt":
            assert doc.text.encode() in data
    assert stats.rejected == len(stats.rejected_examples) or (
        stats.rejected > len(stats.rejected_examples) == 3
    )


@SETTINGS
@given(
    lines=st.lists(
        st.text(
            alphabet=st.characters(
                blacklist_categories=("Cs",),
                blacklist_characters="\t\n\r\x00\x85\u2028\u2029\x1c\x1d\x1e\x0b\x0c",
            ),
            min_size=1,
        ),
        max_size=10,
    )
)
@example(lines=[" "])  # no line with a text: no corpus, said so
def test_utf8_corpus_lines_are_never_rejected(lines):
    with tempfile.TemporaryDirectory() as tmp:
        body = "".join(f"{line}\thttp://example.org/t/physics\n" for line in lines)
        path = _write(Path(tmp), "c.tsv", body.encode())
        stats = CorpusStats()
        if lines and not any(line.strip() for line in lines):
            with pytest.raises(InputError, match="has a text"):
                list(read_documents(path, stats))
            return
        documents = list(read_documents(path, stats))
    assert stats.rejected == 0
    assert [d.text for d in documents] == [line for line in lines if line.strip()]


@SETTINGS
@given(
    texts=st.lists(st.binary(max_size=60), min_size=1, max_size=4),
    keys=st.lists(st.binary(max_size=40), max_size=4),
)
def test_fulltext_directories_raise_only_input_errors(texts, keys):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, text in enumerate(texts):
            (folder / f"d{i}.txt").write_bytes(text)
        for i, key in enumerate(keys):
            (folder / f"d{i}.key").write_bytes(key)
        stats = CorpusStats()
        try:
            documents = list(read_documents(folder, stats))
        except InputError as exc:
            assert exc.message.startswith(f"No document in '{folder}' is UTF-8 text")
            assert stats.rejected == len(texts)
            return
    assert len(documents) + stats.rejected == len(texts)
    for doc in documents:
        assert doc.text.encode() in texts[int(doc.id[1:])] or doc.text == ""


LANGUAGES = st.sampled_from([*SNOWBALL, "xx", "und", "fi-FI", "zh"])


@SETTINGS
@given(language=LANGUAGES, text=st.text(max_size=300))
def test_analyzer_tokenises_any_text(language, text):
    analyzer = Analyzer(language)
    words = analyzer.words(text)
    tokens = analyzer.tokens(text)
    assert len(tokens) == len(words)
    assert all(isinstance(t, str) and t for t in tokens)
    assert all(len(w) >= analyzer.min_length or w.isdigit() for w in words)
    assert all(w == w.lower() for w in words)


@st.composite
def score_matrices(draw):
    """Sparse docs x subjects scores on a grid of exact binary fractions."""
    n_docs = draw(st.integers(1, 6))
    n_subjects = draw(st.integers(1, 12))
    cells = draw(
        st.dictionaries(
            st.tuples(st.integers(0, n_docs - 1), st.integers(0, n_subjects - 1)),
            st.integers(1, 64),
            max_size=n_docs * n_subjects,
        )
    )
    rows = [r for r, _ in cells]
    cols = [c for _, c in cells]
    data = np.asarray(list(cells.values()), dtype=np.float32) / 64
    return sp.csr_matrix((data, (rows, cols)), shape=(n_docs, n_subjects))


@SETTINGS
@given(
    matrix=score_matrices(),
    limit=st.integers(1, 15),
    threshold=st.integers(0, 64).map(lambda t: t / 64),
)
def test_filter_keeps_the_best_subjects_above_the_threshold(matrix, limit, threshold):
    batch = SuggestionBatch(matrix).filter(limit, threshold)
    dense = matrix.toarray()
    for i, row in enumerate(batch):
        candidates = sorted(
            (-dense[i, j], j)
            for j in np.flatnonzero(dense[i])
            if dense[i, j] >= threshold
        )[:limit]
        assert [(s.subject, s.score) for s in row] == [
            (j, -negative) for negative, j in candidates
        ]

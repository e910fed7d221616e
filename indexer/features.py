"""TF-IDF document features with a JSON/npz representation (no pickle)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.analyzer import analyzer_for, default_analyzer
from indexer.corpus import batched

# documents tokenized at a time when fitting (their token lists are the
# largest temporary: a whole catalogue's would be gigabytes)
CHUNK = 2048


class TfidfFeatures:
    """Stemmed word (and optionally word-bigram) TF-IDF, L2-normalised rows."""

    def __init__(
        self,
        language: str,
        ngram: int = 1,
        sublinear_tf: bool = True,
        analyzer: str = "",
    ):
        self.language = language
        self.ngram = ngram
        self.sublinear_tf = sublinear_tf
        # saved with the terms, so a model always tokenizes as it was trained
        self.analyzer = analyzer or str(default_analyzer(language))
        self.terms: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)

    def _grams(self, text: str) -> list[str]:
        tokens = analyzer_for(self.analyzer).tokens(text)
        if self.ngram >= 2:
            tokens = tokens + [
                f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)
            ]
        return tokens

    def fit_transform(
        self,
        texts: Iterable[str],
        min_df: int = 1,
        max_df: float = 1.0,
        max_features: int | None = None,
    ) -> sp.csr_matrix:
        """Learn the term list and idf from `texts` and return their vectors.

        Memory stays near the size of the result: `texts` is read once, a
        chunk at a time (a generator need not hold them all), a document's
        grams are kept as an array of integer codes (a bigram is the pair of
        its words' ids), and only the terms kept get a string."""
        words: dict[str, int] = {}
        # per chunk of documents: their codes and counts, one document after
        # the other, and each document's number of codes (one array per chunk
        # rather than per document: no heap of small arrays left behind)
        codes, values, lengths = [], [], []
        n_docs = 0
        for chunk in batched(texts, CHUNK):
            n_docs += len(chunk)
            chunk_codes, chunk_counts = [], []
            # in this process: the analyzer caches each word type, and a worker
            # process's tokens cost more to send back than to make (`-j 2`
            # trained 30-50% slower on the scale benchmark)
            for tokens in map(self._tokens, chunk):
                ids = np.fromiter(
                    (words.setdefault(t, len(words)) for t in tokens),
                    np.int64,
                    len(tokens),
                )
                if self.ngram >= 2 and len(ids) > 1:
                    ids = np.concatenate([ids, (ids[:-1] + 1) << 32 | ids[1:]])
                doc_codes, counts = np.unique(ids, return_counts=True)
                chunk_codes.append(doc_codes)
                chunk_counts.append(counts)
            lengths.append(np.fromiter(map(len, chunk_codes), np.int64))
            codes.append(np.concatenate(chunk_codes))
            values.append(np.concatenate(chunk_counts).astype(np.float32))
            del chunk_codes, chunk_counts
        vocabulary, df = _distinct_counts(codes)
        n_docs = max(n_docs, 1)
        keep = (df >= min_df) & (df <= max_df * n_docs)
        if max_features and keep.sum() > max_features:
            threshold = np.sort(df[keep])[-max_features]
            keep &= df >= threshold
        kept = vocabulary[keep]
        names = list(words)  # in id order: ids were given in insertion order
        del words
        self.terms = {_term(names, int(code)): i for i, code in enumerate(kept)}
        del names
        self.idf = (np.log((1 + n_docs) / (1 + df[keep])) + 1).astype(np.float32)
        del vocabulary, df, keep
        for i, chunk_codes in enumerate(codes):  # codes -> column ids, in place
            columns = np.searchsorted(kept, chunk_codes)
            found = columns < len(kept)
            found[found] = kept[columns[found]] == chunk_codes[found]
            codes[i] = columns[found].astype(np.int32)
            values[i] = values[i][found]
            doc = np.repeat(np.arange(len(lengths[i])), lengths[i])
            lengths[i] = np.bincount(doc[found], minlength=len(lengths[i]))
        return self._weight(_chunks_to_csr(codes, values, lengths, len(kept)))

    def _tokens(self, text: str) -> list[str]:
        return analyzer_for(self.analyzer).tokens(text)

    def extend(
        self, texts: Sequence[str], documents_before: int, max_features: int
    ) -> int:
        """Append the terms of `texts` that are not known yet (the most frequent
        first, up to `max_features` terms in all), weighted by their idf over
        the documents seen so far; known terms keep their idf, so vectors made
        before stay valid. Returns how many terms were added."""
        known = self.terms
        df = Counter(
            t for text in texts for t in set(self._grams(text)) if t not in known
        )
        room = max(max_features - len(known), 0)
        added = [t for t, _ in sorted(df.items(), key=lambda x: (-x[1], x[0]))[:room]]
        n_docs = documents_before + len(texts)
        for term in added:
            known[term] = len(known)
        idf = np.log((1 + n_docs) / (1 + np.array([df[t] for t in added]))) + 1
        self.idf = np.concatenate([self.idf, idf.astype(np.float32)])
        return len(added)

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        rows = []
        for text in texts:
            counts = Counter(self._grams(text))
            rows.append(
                {self.terms[t]: c for t, c in counts.items() if t in self.terms}
            )
        return self._weight(_rows_to_csr(rows, len(self.terms)))

    def _weight(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """TF-IDF rows of a float32 count matrix, computed in place."""
        m = counts
        if self.sublinear_tf:
            np.log(m.data, out=m.data)
            m.data += 1
        m.data *= self.idf[m.indices]  # a terms x terms diagonal product is slow
        return normalize_rows(m, copy=False)

    def save(self, directory: Path, prefix: str = "tfidf") -> None:
        names = sorted(self.terms, key=self.terms.get)
        meta = {
            "language": self.language,
            "ngram": self.ngram,
            "sublinear_tf": self.sublinear_tf,
            "analyzer": self.analyzer,
        }
        (directory / f"{prefix}-terms.json").write_text(
            json.dumps({"meta": meta, "terms": names}, ensure_ascii=False)
        )
        np.save(directory / f"{prefix}-idf.npy", self.idf)

    @classmethod
    def load(cls, directory: Path, prefix: str = "tfidf") -> TfidfFeatures:
        data = json.loads((directory / f"{prefix}-terms.json").read_text())
        features = cls(**data["meta"])
        features.terms = {t: i for i, t in enumerate(data["terms"])}
        features.idf = np.load(directory / f"{prefix}-idf.npy", allow_pickle=False)
        return features


def _distinct_counts(codes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of the arrays and how often each occurs in them;
    sorted in place, where np.unique would copy the largest array of training
    once more."""
    every = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    every.sort()
    if not every.size:
        return every, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], every[1:] != every[:-1]]))
    counts = np.diff(np.append(starts, every.size))
    return every[starts], counts


def _term(names: list[str], code: int) -> str:
    """The term of a gram code: a word id, or (first word id + 1) << 32 | second."""
    if code >> 32:
        return f"{names[(code >> 32) - 1]} {names[code & 0xFFFFFFFF]}"
    return names[code]


def _rows_to_csr(rows: list[dict[int, int]], n_cols: int) -> sp.csr_matrix:
    return _arrays_to_csr(
        [np.fromiter(r, np.int32, len(r)) for r in rows],
        [np.fromiter(r.values(), np.float32, len(r)) for r in rows],
        n_cols,
    )


def _chunks_to_csr(
    ids: list[np.ndarray], values: list[np.ndarray], lengths: list, n_cols: int
) -> sp.csr_matrix:
    """A CSR matrix from chunks of rows: each chunk's column ids and values,
    row after row, and the length of each of its rows."""
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    dtype = index_dtype(int(indptr[-1]), n_cols)
    indices = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    data = np.concatenate(values) if values else np.zeros(0, np.float32)
    return sp.csr_matrix(
        (data, indices.astype(dtype, copy=False), indptr.astype(dtype)),
        shape=(len(lengths), n_cols),
    )


def _arrays_to_csr(
    ids: list[np.ndarray], values: list[np.ndarray], n_cols: int
) -> sp.csr_matrix:
    """A CSR matrix from each row's column ids and values, with 32-bit index
    arrays where they fit (scipy then keeps products 32-bit: half the memory)."""
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in ids])
    dtype = index_dtype(int(indptr[-1]), n_cols)
    indices = np.concatenate(ids).astype(dtype, copy=False) if ids else np.zeros(0)
    data = np.concatenate(values) if values else np.zeros(0, np.float32)
    return sp.csr_matrix(
        (data, indices.astype(dtype, copy=False), indptr.astype(dtype)),
        shape=(len(ids), n_cols),
    )


def index_dtype(*sizes: int) -> type:
    """int32 where every index and count fits, else int64."""
    return np.int32 if max(sizes, default=0) < 2**31 - 1 else np.int64


def normalize_rows(m: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
    """L2-normalise the rows of a sparse matrix (zero rows stay zero); with
    `copy=False`, a float32 CSR matrix without duplicates is scaled in place."""
    m = sp.csr_matrix(m, dtype=np.float32, copy=copy)
    m.sum_duplicates()
    # on the values directly: sparse products cost more than the rest of a
    # REST request for one short document; no per-value row array either,
    # which at catalogue scale is as large as the matrix
    lengths = np.diff(m.indptr)
    nonempty = lengths > 0
    squares = np.zeros(m.shape[0], dtype=np.float32)
    if m.nnz:
        squares[nonempty] = np.add.reduceat(np.square(m.data), m.indptr[:-1][nonempty])
    norms = np.sqrt(squares)
    norms[norms == 0] = 1
    m.data *= np.repeat(1 / norms, lengths)
    return m


def subject_matrix(subject_lists: list[list[int]], n_subjects: int) -> sp.csr_matrix:
    """Binary documents x subjects matrix."""
    rows = [dict.fromkeys(s, 1) for s in subject_lists]
    return _rows_to_csr(rows, n_subjects)

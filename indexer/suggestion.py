"""A batch of suggestions: a sparse documents x subjects matrix of scores in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: how far float32 rounding may carry a valid score past [0, 1] (a cosine of
#: unit vectors, a sum of weights); such scores are clipped, larger ones refused
ROUNDING = 1e-4


class InvalidScores(ValueError):
    """Scores that are NaN or outside [0, 1]: a bug in whatever produced them."""


@dataclass(frozen=True)
class Suggestion:
    """One suggested subject for one document."""

    subject: int
    score: float


class SuggestionBatch:
    """Scores of many documents over the whole vocabulary, stored sparsely."""

    def __init__(self, matrix: sp.spmatrix):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        _check_scores(matrix.data)
        matrix.data = np.clip(matrix.data, 0.0, 1.0)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        self.matrix = matrix

    @classmethod
    def empty(cls, n_docs: int, n_subjects: int) -> SuggestionBatch:
        return cls(sp.csr_matrix((n_docs, n_subjects), dtype=np.float32))

    @classmethod
    def from_rows(
        cls, rows: Sequence[tuple[Sequence[int], Sequence[float]]], n_subjects: int
    ) -> SuggestionBatch:
        """Build from per-document (subject ids, scores) pairs."""
        lengths = [len(ids) for ids, _ in rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate(
            [np.asarray(ids, dtype=np.int64) for ids, _ in rows] or [[]]
        )
        data = np.concatenate(
            [np.asarray(s, dtype=np.float32) for _, s in rows] or [[]]
        )
        matrix = sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_subjects))
        matrix.sum_duplicates()
        return cls(matrix)

    @classmethod
    def from_dense(
        cls, scores: np.ndarray, limit: int | None = None
    ) -> SuggestionBatch:
        """Keep the `limit` best scores per row of a dense (docs x subjects) array."""
        scores = np.asarray(scores, dtype=np.float32)
        if limit is not None and limit < scores.shape[1]:
            top = np.argpartition(-scores, limit - 1, axis=1)[:, :limit]
            values = np.take_along_axis(scores, top, axis=1)
            rows = np.repeat(np.arange(scores.shape[0]), limit)
            matrix = sp.csr_matrix(
                (values.ravel(), (rows, top.ravel())), shape=scores.shape
            )
            return cls(matrix)
        return cls(sp.csr_matrix(scores))

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_subjects(self) -> int:
        return self.matrix.shape[1]

    def filter(
        self, limit: int | None = None, threshold: float = 0.0
    ) -> SuggestionBatch:
        """Keep, per document, the `limit` best subjects scoring >= threshold."""
        m = self.matrix.copy()
        if threshold > 0:
            m.data[m.data < threshold] = 0
            m.eliminate_zeros()
        if limit is not None:
            m = _top_k_rows(m, limit)
        return SuggestionBatch(m)

    def row(self, i: int) -> list[Suggestion]:
        """Suggestions for document `i`, best first (ties by subject id)."""
        start, end = self.matrix.indptr[i], self.matrix.indptr[i + 1]
        ids = self.matrix.indices[start:end]
        scores = self.matrix.data[start:end]
        order = np.lexsort((ids, -scores))
        return [Suggestion(int(ids[j]), float(scores[j])) for j in order]

    def __iter__(self):
        return (self.row(i) for i in range(len(self)))

    def ranks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row, subject, score, 1-based rank) of every stored score, vectorised."""
        m = self.matrix
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        order = np.lexsort((m.indices, -m.data, rows))
        rows, cols, data = rows[order], m.indices[order], m.data[order]
        starts = np.repeat(m.indptr[:-1], np.diff(m.indptr))
        ranks = np.arange(len(rows)) - starts + 1
        return rows, cols, data, ranks

    def promote(self, mask: np.ndarray, slots: int, depth: int) -> SuggestionBatch:
        """Make sure `slots` of each document's top `depth` subjects are ones
        where `mask` is true, where the document has such candidates further
        down: the best of them swap scores with the lowest-ranked others of
        the top. Order within each group is kept."""
        if slots <= 0 or depth <= 0 or self.matrix.nnz == 0:
            return self
        rows, cols, data, _ = self.ranks()
        data = data.copy()
        flagged = np.asarray(mask, bool)[cols]
        bounds = np.searchsorted(rows, np.arange(len(self) + 1))
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            top = min(depth, end - start)
            need = slots - int(flagged[start : start + top].sum())
            if need <= 0:
                continue
            below = start + top + np.flatnonzero(flagged[start + top : end])
            others = start + np.flatnonzero(~flagged[start : start + top])[::-1]
            n = min(need, len(below), len(others))
            promoted, demoted = below[:n], others[:n][::-1]  # both best first
            data[promoted], data[demoted] = data[demoted], data[promoted].copy()
        matrix = sp.csr_matrix((data, (rows, cols)), shape=self.matrix.shape)
        return SuggestionBatch(matrix)

    @staticmethod
    def vstack(batches: Sequence[SuggestionBatch]) -> SuggestionBatch:
        return SuggestionBatch(sp.vstack([b.matrix for b in batches], format="csr"))


def _check_scores(scores: np.ndarray) -> None:
    bad = np.isnan(scores) | (scores < -ROUNDING) | (scores > 1 + ROUNDING)
    if bad.any():
        examples = ", ".join(str(s) for s in np.unique(scores[bad])[:3])
        raise InvalidScores(
            f"{int(bad.sum())} score(s) are NaN or outside [0, 1] (e.g. {examples})"
        )


def _top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    if k <= 0:
        return sp.csr_matrix(m.shape, dtype=m.dtype)
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    batch = SuggestionBatch.__new__(SuggestionBatch)
    batch.matrix = m
    rows, cols, data, ranks = batch.ranks()
    keep = ranks <= k
    return sp.csr_matrix((data[keep], (rows[keep], cols[keep])), shape=m.shape)

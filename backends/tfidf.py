"""TF-IDF associative baseline: cosine similarity to per-subject centroids.

The model is the terms x subjects matrix of the centroids as raw .npy arrays
of a CSR matrix (`centroids/`), memory-mapped when loading: a cold `suggest`
reads only the rows of a document's terms, and the processes of a server
share the pages. Models saved before (`centroids.npz`, subjects x terms) load
as they did."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.backend import ASSOCIATIVE, Backend
from indexer.corpus import indexed_documents, indexed_texts
from indexer.errors import NotTrainedError
from indexer.features import TfidfFeatures, index_dtype, subject_matrix
from indexer.params import param
from indexer.storage import load_arrays, load_mappable, read_manifest, save_mappable
from indexer.suggestion import SuggestionBatch


@dataclass
class TfidfParams:
    ngram: int = param(
        2, "word n-grams: 1 = words, 2 = words and bigrams", choices=[1, 2]
    )
    min_df: int = param(1, "ignore terms in fewer training documents", min=1)
    max_features: int = param(500_000, "keep at most this many terms", min=1)
    candidates: int = param(100, "subjects kept per document before limit", min=1)
    batch_size: int = param(256, "documents scored at once", min=1)
    min_weight: float = param(
        0.0,
        "centroid weights below this are dropped (a smaller model)",
        min=0.0,
        max=1.0,
    )


class TfidfBackend(Backend):
    """Each subject is the normalised sum of its training documents' TF-IDF vectors;
    a document scores each subject by cosine similarity.

    The norms of the sums are saved with the centroids, so `learn` adds new
    documents' vectors to the sums; their new terms are appended (known terms
    keep their idf, so the sums stay consistent)."""

    name = "tfidf"
    kind = ASSOCIATIVE
    tokenizes = True
    Params = TfidfParams
    learns_online = True

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        subjects: list[list[int]] = []
        features = TfidfFeatures(
            self.project.language,
            ngram=self.params.ngram,
            analyzer=str(self.project.analyzer_spec),
        )
        x = features.fit_transform(
            indexed_texts(corpus, subjects, "Vectorising"),
            min_df=self.params.min_df,
            max_features=self.params.max_features,
        )
        y = subject_matrix(subjects, len(self.project.vocab))
        features.save(directory)
        sums = term_subject_product(x, y)
        del x
        save_centroids(directory, sums, self.params.min_weight)
        return {
            "terms": len(features.terms),
            "subjects": int((np.diff(y.tocsc().indptr) > 0).sum()),
        }

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        weights, norms = load_centroids(previous)
        if norms is None:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained before tfidf could learn "
                f"online: retrain it once with `indexer train {self.project.id} "
                "CORPUS`"
            )
        texts, subjects, _ = indexed_documents(corpus, "Vectorising")
        features = TfidfFeatures.load(previous)
        added = features.extend(
            texts, read_manifest(previous)["documents"], self.params.max_features
        )
        x = features.transform(texts)
        n_subjects = len(self.project.vocab)
        sums = sp.csr_matrix(weights, dtype=np.float32, copy=True)
        sums.data *= norms.astype(np.float32)[sums.indices]
        # new terms; the vocabulary may grow
        sums.resize((x.shape[1], n_subjects))
        y = subject_matrix(subjects, n_subjects)
        features.save(directory)
        (directory / "centroids.npz").unlink(missing_ok=True)  # an older layout
        save_centroids(
            directory, sums + term_subject_product(x, y), self.params.min_weight
        )
        return {
            "documents_learned": len(texts),
            "terms_added": added,
            "subjects": int((y.sum(axis=0) > 0).sum()),
        }

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._features = TfidfFeatures.load(directory)
        # terms x subjects, so a batch of documents is one sparse product
        self._centroids_t = load_centroids(directory)[0]

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        parts = []
        size = self.params.batch_size
        for start in range(0, len(texts), size):
            x = self._features.transform(texts[start : start + size])
            parts.append(top_scores(x @ self._centroids_t, self.params.candidates))
        return SuggestionBatch.vstack(parts)


def term_subject_product(x: sp.csr_matrix, y: sp.csr_matrix) -> sp.csr_matrix:
    """The terms x subjects sums of documents' vectors (`x`: documents x
    terms) over their subjects (`y`: documents x subjects), with 32-bit
    indices where they fit."""
    xt = x.T.tocsr()
    dtype = index_dtype(xt.nnz, y.nnz, *y.shape, *xt.shape)
    xt.indices, xt.indptr = xt.indices.astype(dtype), xt.indptr.astype(dtype)
    y = sp.csr_matrix(y, dtype=np.float32)
    y.indices, y.indptr = y.indices.astype(dtype), y.indptr.astype(dtype)
    return xt @ y


def save_centroids(directory: Path, sums: sp.csr_matrix, min_weight: float) -> None:
    """The terms x subjects matrix of subject centroids (each subject's sum of
    document vectors, L2-normalised) and the norms of the sums (for `learn`),
    weights below `min_weight` dropped. The sums are normalised in place."""
    sums = sp.csr_matrix(sums, dtype=np.float32)
    sums.sum_duplicates()
    norms = np.zeros(sums.shape[1], dtype=np.float64)
    step = 1 << 22  # bounded temporaries: a chunk of the values at a time
    for start in range(0, sums.nnz, step):
        part = slice(start, start + step)
        norms += np.bincount(
            sums.indices[part],
            weights=np.square(sums.data[part], dtype=np.float64),
            minlength=sums.shape[1],
        )
    norms = np.sqrt(norms).astype(np.float32)
    scale = np.divide(1, norms, out=np.zeros_like(norms), where=norms > 0)
    for start in range(0, sums.nnz, step):
        part = slice(start, start + step)
        sums.data[part] *= scale[sums.indices[part]]
    if min_weight > 0:
        sums.data[sums.data < min_weight] = 0
        sums.eliminate_zeros()
    save_mappable(directory / "centroids", {"weights": sums, "norms": norms})


def load_centroids(directory: Path) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """The terms x subjects centroids (memory-mapped) and the sums' norms
    (None in models saved before `learn` existed)."""
    if (directory / "centroids").is_dir():
        arrays = load_mappable(directory / "centroids")
        return arrays["weights"], arrays["norms"]
    arrays = load_arrays(directory / "centroids.npz")  # subjects x terms
    return arrays["centroids"].T.tocsr(), arrays.get("norms")


def top_scores(scores: sp.csr_matrix, limit: int) -> SuggestionBatch:
    """The `limit` best of each row of a sparse documents x subjects matrix
    (never made dense: a batch over 200k subjects would be 200 MB)."""
    scores = scores.tocsr()
    rows = []
    for i in range(scores.shape[0]):
        start, end = scores.indptr[i], scores.indptr[i + 1]
        ids, values = scores.indices[start:end], scores.data[start:end]
        if len(values) > limit:
            best = np.argpartition(-values, limit - 1)[:limit]
            ids, values = ids[best], values[best]
        rows.append((ids, values))
    return SuggestionBatch.from_rows(rows, scores.shape[1])

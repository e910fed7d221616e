"""TF-IDF associative baseline: cosine similarity to per-subject centroids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.backend import ASSOCIATIVE, Backend
from indexer.corpus import indexed_documents
from indexer.errors import NotTrainedError
from indexer.features import TfidfFeatures, normalize_rows, subject_matrix
from indexer.params import param
from indexer.storage import load_arrays, read_manifest, save_arrays
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
        texts, subjects, _ = indexed_documents(corpus, "Vectorising")
        features = TfidfFeatures(
            self.project.language,
            ngram=self.params.ngram,
            analyzer=str(self.project.analyzer_spec),
        )
        x = features.fit_transform(
            texts,
            min_df=self.params.min_df,
            max_features=self.params.max_features,
            jobs=jobs,
        )
        y = subject_matrix(subjects, len(self.project.vocab))
        features.save(directory)
        save_centroids(directory, y.T.tocsr() @ x)
        return {
            "terms": len(features.terms),
            "subjects": int((y.sum(axis=0) > 0).sum()),
        }

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        arrays = load_arrays(previous / "centroids.npz")
        if "norms" not in arrays:
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
        sums = sp.diags(arrays["norms"].astype(np.float32)) @ arrays["centroids"]
        sums = sp.csr_matrix(sums)
        sums.resize((n_subjects, x.shape[1]))  # new terms; the vocabulary may grow
        y = subject_matrix(subjects, n_subjects)
        features.save(directory)
        save_centroids(directory, sums + y.T.tocsr() @ x)
        return {
            "documents_learned": len(texts),
            "terms_added": added,
            "subjects": int((y.sum(axis=0) > 0).sum()),
        }

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._features = TfidfFeatures.load(directory)
        # terms x subjects, so a batch of documents is one sparse product
        self._centroids_t = load_arrays(directory / "centroids.npz")[
            "centroids"
        ].T.tocsr()

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        parts = []
        size = self.params.batch_size
        for start in range(0, len(texts), size):
            x = self._features.transform(texts[start : start + size])
            scores = (x @ self._centroids_t).toarray()
            parts.append(
                SuggestionBatch.from_dense(np.asarray(scores), self.params.candidates)
            )
        return SuggestionBatch.vstack(parts)


def save_centroids(directory: Path, sums: sp.csr_matrix) -> None:
    """The normalised subject centroids and the norms of the sums they come from."""
    sums = sp.csr_matrix(sums, dtype=np.float32)
    norms = np.sqrt(np.asarray(sums.multiply(sums).sum(axis=1)).ravel())
    save_arrays(
        directory / "centroids.npz",
        {"centroids": normalize_rows(sums), "norms": norms.astype(np.float32)},
    )

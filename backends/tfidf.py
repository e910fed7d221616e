"""TF-IDF associative baseline: cosine similarity to per-subject centroids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.backend import ASSOCIATIVE, Backend
from indexer.features import TfidfFeatures, normalize_rows, subject_matrix
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
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
    a document scores each subject by cosine similarity."""

    name = "tfidf"
    kind = ASSOCIATIVE
    Params = TfidfParams

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        from tqdm import tqdm

        texts, subjects = [], []
        for doc in tqdm(
            corpus, desc="Vectorising", unit=" docs", leave=False, disable=None
        ):
            if doc.subjects:
                texts.append(doc.text)
                subjects.append(doc.subjects)
        features = TfidfFeatures(self.project.language, ngram=self.params.ngram)
        x = features.fit_transform(
            texts,
            min_df=self.params.min_df,
            max_features=self.params.max_features,
            jobs=jobs,
        )
        y = subject_matrix(subjects, len(self.project.vocab))
        centroids = normalize_rows(y.T.tocsr() @ x)
        features.save(directory)
        save_arrays(directory / "centroids.npz", {"centroids": centroids})
        return {
            "terms": len(features.terms),
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

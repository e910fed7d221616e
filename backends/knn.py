"""Nearest indexed documents: subjects of the most similar training documents,
weighted by similarity (dense embeddings, faiss)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from indexer.backend import ASSOCIATIVE, Backend
from indexer.corpus import indexed_documents
from indexer.errors import NotTrainedError
from indexer.features import subject_matrix
from indexer.neural.encoder import (
    encode_cached,
    load_encoder,
    project_cache,
    resolve_encoder_name,
)
from indexer.neural.vectorindex import VectorIndex
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
from indexer.suggestion import SuggestionBatch

INDEX_KINDS = ["auto", "flat", "hnsw", "ivf"]


@dataclass
class KnnParams:
    model: str = param("auto", "encoder: packaged name, local directory or hub id")
    k: int = param(30, "neighbours consulted per document", min=1)
    exponent: float = param(
        3.0, "similarities are raised to this power (sharper voting)", min=0.0
    )
    max_length: int = param(256, "tokens embedded per document", min=8)
    batch_size: int = param(32, "documents embedded at once", min=1)
    index: str = param(
        "auto", "faiss index: exact for small sets, HNSW for large", choices=INDEX_KINDS
    )
    candidates: int = param(100, "subjects kept per document", min=1)
    device: str = param("auto", "auto, cpu or cuda")


class KnnBackend(Backend):
    """Scores subject s for a document as sum_j w_j [s in doc_j] / sum_j w_j over its
    k nearest training documents, with w_j = max(similarity, 0) ** exponent.

    `learn` embeds the new documents and adds them to the index."""

    name = "knn"
    kind = ASSOCIATIVE
    learns_online = True
    #: parameters read only when suggesting (cheap to tune with `indexer hyperopt`)
    search_space: ClassVar[dict] = {
        "k": [10, 20, 30, 50],
        "exponent": [1.0, 2.0, 3.0, 5.0],
    }
    Params = KnnParams

    def _encoder(self):
        p = self.params
        return load_encoder(
            resolve_encoder_name(p.model, self.project.language),
            p.max_length,
            p.batch_size,
            p.device,
        )

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        texts, subjects, ids = indexed_documents(corpus)
        encoder = self._encoder()
        vectors = encode_cached(
            encoder, texts, project_cache(self.project), "passage", progress=True
        )
        index = VectorIndex.build(vectors, self.params.index)
        matrix = subject_matrix(subjects, len(self.project.vocab))
        snippets = [{"id": i, "text": t[:160]} for i, t in zip(ids, texts, strict=True)]
        save_documents(directory, index, encoder.identity, matrix, snippets)
        return {"documents_indexed": len(texts), "index": index.kind}

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        meta = json.loads((previous / "documents.json").read_text())
        encoder = self._encoder()
        if meta["encoder"] != encoder.identity:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained with the encoder "
                f"{meta['encoder']}, but is configured with {encoder.identity}: "
                f"retrain it with `indexer train {self.project.id} CORPUS`"
            )
        texts, subjects, ids = indexed_documents(corpus)
        vectors = encode_cached(
            encoder, texts, project_cache(self.project), "passage", progress=True
        )
        index = VectorIndex.load(previous / "documents.faiss", meta["index"])
        index.add(vectors)
        old = load_arrays(previous / "neighbours.npz")["subjects"]
        n_subjects = max(old.shape[1], len(self.project.vocab))
        old.resize((old.shape[0], n_subjects))  # the vocabulary may have grown
        matrix = sp.vstack([old, subject_matrix(subjects, n_subjects)]).tocsr()
        snippets = meta["documents"] + [
            {"id": i, "text": t[:160]} for i, t in zip(ids, texts, strict=True)
        ]
        save_documents(directory, index, encoder.identity, matrix, snippets)
        return {"documents_indexed": len(index), "documents_learned": len(texts)}

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        meta = json.loads((directory / "documents.json").read_text())
        self._index = VectorIndex.load(directory / "documents.faiss", meta["index"])
        self._documents = meta["documents"]
        self._subjects = load_arrays(directory / "neighbours.npz")["subjects"]

    def neighbours(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, training-document rows) of each text's k nearest documents."""
        vectors = encode_cached(self._encoder(), texts, None, "passage")
        return self._index.search(vectors, self.params.k)

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        return self.vote(*self.neighbours(texts))

    def vote(self, sims: np.ndarray, rows: np.ndarray) -> SuggestionBatch:
        """Subject scores from neighbours (rows < 0 are ignored)."""
        weights = np.where(rows >= 0, np.maximum(sims, 0) ** self.params.exponent, 0)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.divide(
            weights, totals, out=np.zeros_like(weights), where=totals > 0
        )
        n_docs = len(rows)
        votes = sp.csr_matrix(
            (
                weights.ravel(),
                (
                    np.repeat(np.arange(n_docs), rows.shape[1]),
                    np.maximum(rows, 0).ravel(),
                ),
            ),
            shape=(n_docs, self._subjects.shape[0]),
        )
        scores = (votes @ self._subjects).tocsr()
        return SuggestionBatch(scores).filter(limit=self.params.candidates)

    def explain(self, text: str, subjects) -> dict[int, dict]:
        """The similar training documents that carry each subject."""
        self._ensure_loaded()
        sims, rows = self.neighbours([text])
        out: dict[int, dict] = {}
        for sim, row in zip(sims[0], rows[0], strict=True):
            if row < 0:
                continue
            carried = set(self._subjects[row].indices.tolist())
            for subject in subjects:
                if subject in carried:
                    entry = out.setdefault(
                        subject, {"source": "similar documents", "documents": []}
                    )
                    entry["documents"].append(
                        {**self._documents[row], "similarity": round(float(sim), 3)}
                    )
        return out


def save_documents(
    directory: Path, index: VectorIndex, encoder: str, subjects, snippets: list
) -> None:
    """The index, each indexed document's subjects and a snippet of its text."""
    index.save(directory / "documents.faiss")
    save_arrays(directory / "neighbours.npz", {"subjects": subjects})
    (directory / "documents.json").write_text(
        json.dumps(
            {"index": index.kind, "encoder": encoder, "documents": snippets},
            ensure_ascii=False,
        )
    )

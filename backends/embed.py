"""Zero-shot dense retrieval of concepts: documents and concept descriptions
(label, altLabels, broader labels, scope note) are embedded with the same
encoder and compared by cosine similarity. Training only calibrates scores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.backend import LEXICAL, Backend
from indexer.encoder import (
    chunk_words,
    encode_cached,
    load_encoder,
    project_cache,
    resolve_encoder_name,
)
from indexer.errors import ConfigError
from indexer.linear import LinearScorer
from indexer.locking import ResourceLock
from indexer.params import param
from indexer.storage import atomic_directory, read_manifest, write_manifest
from indexer.suggestion import SuggestionBatch
from indexer.vectorindex import VectorIndex

FEATURES = ("bias", "similarity", "z", "gap", "log_rank")
# before training: candidates far above the document's candidate average score high
DEFAULT_WEIGHTS = {
    "bias": -3.0,
    "similarity": 0.0,
    "z": 1.6,
    "gap": 4.0,
    "log_rank": 0.0,
}


@dataclass
class EmbedParams:
    model: str = param("auto", "encoder: packaged name, local directory or hub id")
    label_language: str = param(
        "", "language of the labels embedded (default: the project's)"
    )
    template: str = param(
        "{label}. {alt}. {broader}. {note}",
        "text embedded per concept: {label} {alt} {broader} {note}",
    )
    max_length: int = param(256, "tokens per document chunk", min=8)
    concept_max_length: int = param(64, "tokens per concept description", min=4)
    chunk_words: int = param(150, "words per document chunk", min=10)
    max_chunks: int = param(2, "chunks embedded per document (mean-pooled)", min=1)
    candidates: int = param(100, "concepts retrieved per document", min=1)
    index: str = param(
        "auto", "faiss index for the concepts", choices=["auto", "flat", "hnsw", "ivf"]
    )
    batch_size: int = param(32, "texts embedded at once", min=1)
    calibration_docs: int = param(
        500, "training documents used to calibrate scores", min=10
    )
    device: str = param("auto", "auto, cpu or cuda")


class EmbedBackend(Backend):
    """Concept retrieval by embedding similarity (kind: lexical, no training needed)."""

    name = "embed"
    kind = LEXICAL
    Params = EmbedParams
    needs_training = False

    # -- encoders and the concept index ----------------------------------
    def _encoder(self, max_length: int):
        p = self.params
        return load_encoder(
            resolve_encoder_name(p.model, self.project.language),
            max_length,
            p.batch_size,
            p.device,
        )

    @property
    def label_language(self) -> str:
        return self.labels_language(self.params.label_language)

    def concept_texts(self) -> tuple[list[int], list[str]]:
        """(concept ids, description texts) of every non-deprecated concept."""
        vocab, lang = self.project.vocab, self.label_language
        pref, alt, note = vocab.labels_in(lang)
        labels = vocab.pref_labels(lang)
        broader_ptr, broader_idx = vocab.relation("broader")
        ids, texts = [], []
        for i in range(len(vocab)):
            if vocab.deprecated[i] or not pref[i]:
                continue
            parents = broader_idx[broader_ptr[i] : broader_ptr[i + 1]]
            parts = {
                "label": pref[i],
                "alt": ", ".join(alt[i]),
                "broader": ", ".join(labels[j] for j in parents),
                "note": note[i] or "",
            }
            text = self.params.template.format(**parts)
            text = ". ".join(x.strip() for x in text.split(". ") if x.strip(" .,;"))
            ids.append(i)
            texts.append(text)
        if not ids:
            raise ConfigError(
                f"Project '{self.project.id}': no concept has a label in '{lang}'"
            )
        return ids, texts

    def _index_key(self, encoder, texts: list[str]) -> str:
        sha = hashlib.sha256(encoder.identity.encode())
        for text in texts:
            sha.update(text.encode() + b"\x00")
        return sha.hexdigest()[:20]

    def concept_index(self) -> tuple[VectorIndex, np.ndarray]:
        """The faiss index of concept vectors, rebuilt when the vocabulary,
        template or encoder changed (cached under the project's data directory)."""
        encoder = self._encoder(self.params.concept_max_length)
        ids, texts = self.concept_texts()
        key = self._index_key(encoder, texts)
        directory = self.project.model_dir.parent / "concept-index"
        manifest = read_manifest(directory)
        if (
            not manifest
            or manifest.get("key") != key
            or manifest.get("index") != self.params.index
        ):
            vectors = encode_cached(
                encoder, texts, project_cache(self.project), "passage", progress=True
            )
            index = VectorIndex.build(vectors, self.params.index)
            lock = ResourceLock(
                self.project.projects.data_dir
                / "locks"
                / f"project-{self.project.id}-concept-index.lock",
                f"The concept index of project '{self.project.id}'",
            )
            with atomic_directory(directory, lock, wait=True) as tmp:
                index.save(tmp / "concepts.faiss")
                np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
                write_manifest(
                    tmp,
                    {
                        "key": key,
                        "index": self.params.index,
                        "kind": index.kind,
                        "concepts": len(ids),
                    },
                )
            manifest = read_manifest(directory)
        index = VectorIndex.load(directory / "concepts.faiss", manifest["kind"])
        return index, np.load(directory / "ids.npy", allow_pickle=False)

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._index, self._ids = self.concept_index()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        if directory is not None:
            self._scorer = LinearScorer.load(FEATURES, directory / "calibration.json")
        self._weights = self._scorer.weights  # read by llm_rank

    # -- scoring ---------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """One vector per document: the normalised mean of its chunks' vectors."""
        chunks, owner = [], []
        for i, text in enumerate(texts):
            for chunk in chunk_words(
                text, self.params.chunk_words, self.params.max_chunks
            ):
                chunks.append(chunk)
                owner.append(i)
        vectors = encode_cached(
            self._encoder(self.params.max_length), chunks, None, "query"
        )
        pooled = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        np.add.at(pooled, np.asarray(owner), vectors)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def retrieve(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, concept ids) of each text's nearest concepts."""
        sims, rows = self._index.search(
            self.embed_documents(texts), self.params.candidates
        )
        return sims, np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)

    @staticmethod
    def features(sims: np.ndarray) -> np.ndarray:
        """(docs, candidates, features): similarities relative to the candidates."""
        mean = sims.mean(axis=1, keepdims=True)
        std = sims.std(axis=1, keepdims=True) + 1e-6
        ranks = np.arange(1, sims.shape[1] + 1, dtype=np.float32)[None, :].repeat(
            len(sims), 0
        )
        columns = [
            np.ones_like(sims),
            sims,
            (sims - mean) / std,
            sims - sims[:, :1],
            np.log(ranks),
        ]
        return np.stack(columns, axis=-1).astype(np.float32)

    def calibrated(self, sims: np.ndarray) -> np.ndarray:
        """The probability that each retrieved concept is a subject, from the
        similarities of `retrieve` (the calibration learnt in training)."""
        self._ensure_loaded()
        return self._scorer(self.features(sims))

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        sims, ids = self.retrieve(texts)
        scores = self.calibrated(sims)
        rows = [
            (ids[i][ids[i] >= 0], scores[i][ids[i] >= 0]) for i in range(len(texts))
        ]
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

    # -- training: calibration only ----------------------------------------
    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        self._index, self._ids = self.concept_index()
        docs = [d for d in corpus if d.subjects][: self.params.calibration_docs]
        x_parts, y_parts = [], []
        for start in range(0, len(docs), 64):
            batch = docs[start : start + 64]
            sims, ids = self.retrieve([d.text for d in batch])
            x = self.features(sims)
            for doc, row_ids, row_x in zip(batch, ids, x, strict=True):
                gold = set(doc.subjects)
                x_parts.append(row_x)
                y_parts.append(np.array([c in gold for c in row_ids], dtype=np.float32))
        x, y = np.concatenate(x_parts), np.concatenate(y_parts)
        scorer = LinearScorer.fit(FEATURES, x, y, DEFAULT_WEIGHTS)
        scorer.save(directory / "calibration.json")
        return {
            "calibration_documents": len(docs),
            "candidate_recall": float(
                y.sum() / max(sum(len(d.subjects) for d in docs), 1)
            ),
            "weights": scorer.weights,
        }

    def explain(self, text: str, subjects) -> dict[int, dict]:
        """The similarity and rank of each subject's concept description."""
        self._ensure_loaded()
        sims, ids = self.retrieve([text])
        out = {}
        for rank, (sim, concept_id) in enumerate(
            zip(sims[0], ids[0], strict=True), start=1
        ):
            if concept_id in subjects:
                out[int(concept_id)] = {
                    "source": "embedding similarity",
                    "similarity": round(float(sim), 3),
                    "rank": rank,
                }
        return out

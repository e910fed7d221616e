"""Zero-shot dense retrieval of concepts: documents and concept descriptions
(label, altLabels, broader labels, scope note) are embedded with the same
encoder and compared by cosine similarity. Training only calibrates scores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.backend import LEXICAL, Backend
from indexer.errors import ConfigError
from indexer.linear import LinearScorer
from indexer.locking import ResourceLock
from indexer.neural.encoder import (
    chunk_words,
    encode_cached,
    load_encoder,
    project_cache,
    resolve_encoder_name,
)
from indexer.neural.vectorindex import VectorIndex
from indexer.params import param
from indexer.storage import atomic_directory, read_manifest, write_manifest
from indexer.suggestion import SuggestionBatch

TUNED = "encoder.safetensors"  # fine-tuned encoder weights in the model directory
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
    finetune: int = param(
        0,
        "epochs of contrastive fine-tuning of the encoder on (document, "
        "assigned concept) pairs when training; 0 = use the encoder as it is",
        min=0,
    )
    finetune_length: int = param(128, "document tokens seen when fine-tuning", min=8)
    finetune_batch_size: int = param(
        16, "pairs per fine-tuning step (in-batch negatives)", min=2
    )
    finetune_rate: float = param(3e-5, "fine-tuning learning rate", min=0.0)


class EmbedBackend(Backend):
    """Concept retrieval by embedding similarity (kind: lexical, no training needed)."""

    name = "embed"
    kind = LEXICAL
    Params = EmbedParams
    needs_training = False

    # -- encoders and the concept index ----------------------------------
    def _encoder(self, max_length: int, documents: bool = False):
        """The encoder of concepts, or with `documents` that of documents:
        the fine-tuned one when the model has it."""
        p = self.params
        return load_encoder(
            resolve_encoder_name(p.model, self.project.language),
            max_length,
            p.batch_size,
            p.device,
            weights=getattr(self, "_tuned", None) if documents else None,
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
        tuned = directory / TUNED if directory is not None else None
        self._tuned = tuned if tuned is not None and tuned.is_file() else None
        self._index, self._ids = self.concept_index()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        if directory is not None:
            self._scorer = LinearScorer.load(FEATURES, directory / "calibration.json")

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
            self._encoder(self.params.max_length, documents=True),
            chunks,
            None,
            "query",
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
        self._tuned = None
        tuning = self._fine_tune(corpus, directory) if self.params.finetune else {}
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
            **tuning,
            "calibration_documents": len(docs),
            "candidate_recall": float(
                y.sum() / max(sum(len(d.subjects) for d in docs), 1)
            ),
            "weights": scorer.weights,
        }

    def _fine_tune(self, corpus, directory: Path) -> dict:
        """Fine-tune the document encoder on (document, assigned concept)
        pairs against the concepts' fixed vectors; the weights go into the
        model directory and embed documents from then on. The concept index
        stays as it is."""
        from indexer.neural.encoder import TorchBertEncoder
        from indexer.neural.finetune import FineTuning, fine_tune

        p = self.params
        encoder = self._encoder(p.max_length).model
        if not isinstance(encoder, TorchBertEncoder):
            raise ConfigError(
                f"Project '{self.project.id}': finetune needs a plain BERT encoder "
                f"(config.json, model.safetensors, tokenizer.json); '{p.model}' "
                "is not one"
            )
        ids, texts = self.concept_texts()
        row = {concept: i for i, concept in enumerate(ids)}
        queries, positives = [], []
        for doc in corpus:
            known = [row[s] for s in doc.subjects if s in row]
            if known:
                queries.append(doc.text)
                positives.append(known)
        if len(queries) < 2:
            raise ConfigError(
                f"Project '{self.project.id}': fine-tuning needs at least two "
                "documents with subjects that have labels"
            )
        settings = FineTuning(
            epochs=p.finetune,
            batch_size=p.finetune_batch_size,
            learning_rate=p.finetune_rate,
            query_length=p.finetune_length,
        )
        concept_encoder = self._encoder(p.concept_max_length)
        wanted = sorted({i for rows in positives for i in rows})
        vectors = encode_cached(
            concept_encoder,
            [texts[i] for i in wanted],
            project_cache(self.project),
            "passage",
        )
        passages = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        passages[wanted] = vectors
        stats = fine_tune(
            encoder, queries, positives, passages, settings, directory / TUNED
        )
        self._tuned = directory / TUNED
        return {"finetuning": stats}

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

"""A decoder-only LLM with a multi-label classification head over subjects.

Each document becomes the hidden state of its last token (as transformers'
`AutoModelForSequenceClassification` pools Llama, Qwen2, Gemma and SmolLM), and
a head gives one sigmoid per subject, trained with binary cross-entropy (or a
focal or asymmetric loss, see `head.multilabel_loss`).

- `frozen`: the decoder's pooled states are computed once and cached on disk
  (keyed by model identity, settings and text); only the head is trained.
- `lora`: LoRA adapters (peft) and the head are trained end to end.
- `qlora`: the same on a 4-bit base (bitsandbytes, CUDA only).

Targets stay sparse (dense only per mini-batch), so the head can cover
thousands of subjects or, with `labels = vocabulary`, the whole vocabulary;
`head_init = labels` starts each subject's row from the pooled state of its
label, so subjects with few or no training documents still score sensibly.
A held-out validation split is evaluated after every epoch (early stopping),
and training resumes after an interruption: from the last completed epoch, or
in LoRA modes from the last completed batch. A model that clearly cannot fit in
the free memory is refused before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from backends.llm_head.head import (
    init_head,
    load_tensors,
    make_head,
    save_tensors,
    scores,
    sparse_targets,
    uses_bf16,
    validation_mask,
)
from backends.llm_head.training import Trainer
from indexer.backend import ASSOCIATIVE, Backend
from indexer.errors import ConfigError, NotTrainedError
from indexer.params import param
from indexer.suggestion import SuggestionBatch

MODES = ["frozen", "lora", "qlora"]
FORMAT_FILE = "llm_head.json"
# PromptEOL (Jiang et al. 2023): the last token then summarises the text
DEFAULT_TEMPLATE = 'This text: "{text}" means in one word: "'


@dataclass
class LlmHeadParams:
    model: str = param("smollm2", "decoder LLM: packaged name, local dir or hub id")
    mode: str = param(
        "frozen", "what is trained: head only, or also LoRA", choices=MODES
    )
    max_length: int = param(256, "tokens per document, template included", min=8)
    truncation: str = param(
        "head",
        "head: keep the start; head_tail: first 2/3 and last 1/3 of the budget",
        choices=["head", "head_tail"],
    )
    template: str = param(DEFAULT_TEMPLATE, "text around each document: {text}")
    pooling: str = param(
        "mean",
        "mean of all tokens, or the last non-pad token",
        choices=["mean", "last"],
    )
    labels: str = param(
        "seen",
        "subjects the head covers: those seen in training or the whole vocabulary",
        choices=["seen", "vocabulary"],
    )
    head_init: str = param(
        "random",
        "initial head rows: random, or each subject's label representation",
        choices=["random", "labels"],
    )
    label_language: str = param("", "language of the labels (default: the project's)")
    head_hidden: int = param(0, "units of a residual MLP before the head (0: linear)")
    dropout: float = param(0.1, "dropout on the pooled state", min=0.0, max=0.9)
    epochs: int = param(20, "most passes over the training documents", min=1)
    patience: int = param(
        3, "epochs without validation gain before stopping (0: never)"
    )
    validation_fraction: float = param(
        0.1, "training documents held out for validation", min=0.0, max=0.5
    )
    batch_size: int = param(8, "documents per decoder forward pass", min=1)
    head_batch_size: int = param(64, "documents per head update (frozen mode)", min=1)
    gradient_accumulation: int = param(1, "LoRA batches per optimiser step", min=1)
    probe_epochs: int = param(
        0,
        "LoRA modes: epochs of head-only training on the frozen states before the "
        "adapters train (LP-FT)",
        min=0,
    )
    learning_rate: float = param(1e-3, "learning rate of the head", min=0.0)
    schedule: str = param(
        "auto",
        "learning rates over the planned steps: constant, or linear warm-up then "
        "cosine decay (auto: cosine for LoRA, constant for frozen)",
        choices=["auto", "constant", "cosine"],
    )
    warmup: float = param(0.05, "fraction of the steps spent warming up", min=0, max=1)
    loss: str = param(
        "bce",
        "bce, focal or asymmetric (easy negatives damped)",
        choices=["bce", "focal", "asymmetric"],
    )
    label_smoothing: float = param(0.0, "targets eps/2 and 1-eps/2", min=0.0, max=0.5)
    lora_learning_rate: float = param(2e-4, "learning rate of the adapters", min=0.0)
    weight_decay: float = param(1e-4, "AdamW weight decay", min=0.0)
    lora_r: int = param(8, "LoRA rank", min=1)
    lora_alpha: int = param(16, "LoRA alpha (scale = alpha / r)", min=1)
    lora_dropout: float = param(0.05, "dropout inside LoRA", min=0.0, max=0.9)
    lora_targets: list[str] = param(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "modules given adapters: attention and MLP projections",
    )
    candidates: int = param(100, "subjects kept per document", min=1)
    device: str = param("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = param(
        "auto",
        "auto: bf16 autocast on CUDA, fp32 on CPU",
        choices=["auto", "fp32", "bf16"],
    )
    seed: int = param(0, "seed of initialisation, shuffling and dropout")


@dataclass
class _TrainingData:
    texts: list[str]
    subjects: list[list[int]]
    counts: np.ndarray  # per vocabulary subject
    label_ids: np.ndarray  # the head's subjects
    targets: sp.csr_matrix  # documents x labels
    train_rows: np.ndarray
    val_rows: np.ndarray


def _is_main_process() -> bool:
    from indexer.distributed import current_world

    return current_world().is_main


class LlmHeadBackend(Backend):
    """Multi-label head (one sigmoid per subject) on a decoder LLM's last token."""

    name = "llm_head"
    kind = ASSOCIATIVE
    Params = LlmHeadParams
    trains_distributed = True

    # -- the decoder -----------------------------------------------------
    @property
    def device(self) -> str:
        from indexer.neural.encoder import pick_device

        return pick_device(self.params.device)

    @property
    def checkpoint_dir(self) -> Path:
        """Where an interrupted training keeps its last completed epoch."""
        return self.model_dir.parent / f"{self.model_dir.name}.checkpoint"

    def _where(self) -> str:
        return f"Project '{self.project.id}'"

    def _check_mode(self) -> None:
        if self.params.mode == "qlora":
            from indexer.neural.llm import require_cuda

            require_cuda(self.device, f"{self._where()}: mode = qlora")

    def _decoder(self, trainable: bool):
        """(resolved model, tokenizer, decoder, lock): frozen decoders are shared."""
        from indexer.neural.llm import load_decoder, load_tokenizer, shared_decoder
        from indexer.neural.models import resolve_model

        p = self.params
        if p.mode == "frozen" or not trainable:
            return shared_decoder(p.model, self.device)
        model = resolve_model(p.model)
        decoder = load_decoder(model, self.device, quantize_4bit=p.mode == "qlora")
        return model, load_tokenizer(model), decoder, threading.Lock()

    def _inputs(self, tokenizer, texts: list[str], max_length: int):
        """Token ids and mask: the template around each text, the text cut to the
        budget (`head`: its start; `head_tail`: its start and its end)."""
        import torch

        p = self.params
        if "{text}" not in p.template:
            raise ConfigError(
                f"{self._where()}: template must contain {{text}}, got '{p.template}'"
            )
        prefix, _, suffix = p.template.partition("{text}")
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        special = with_special[: len(with_special) - len(plain)]
        pre = special + (
            tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        )
        post = (
            tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        )
        budget = max_length - len(pre) - len(post)
        if budget < 1:
            raise ConfigError(
                f"{self._where()}: max_length = {max_length} leaves no room for the "
                f"text after the template's {len(pre) + len(post)} tokens"
            )
        chars = budget * 16  # cut very long texts before tokenising them
        cut = [
            t if len(t) <= 2 * chars else t[:chars] + " " + t[-chars:] for t in texts
        ]
        ids = tokenizer(cut, add_special_tokens=False)["input_ids"]
        rows = []
        for row in ids:
            if len(row) > budget:
                if p.truncation == "head_tail":
                    head = budget - budget // 3
                    row = row[:head] + row[len(row) - (budget - head) :]
                else:
                    row = row[:budget]
            rows.append(pre + row + post)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return input_ids, mask

    def _pooled(self, decoder, tokenizer, texts: list[str], max_length=None):
        """Pooled final hidden states (float32) of one batch, gradients allowed."""
        from indexer.neural.llm import autocast, pool

        input_ids, mask = self._inputs(
            tokenizer, texts, max_length or self.params.max_length
        )
        device = self.device
        with autocast(device, self.params.precision):
            out = decoder(
                input_ids=input_ids.to(device), attention_mask=mask.to(device)
            )
        return pool(out.last_hidden_state, mask, self.params.pooling).float()

    def _featurizer(self, role_max_length: int | None = None) -> _Features:
        model, tokenizer, decoder, lock = self._decoder(trainable=False)
        features = _Features(self, model, tokenizer, decoder, lock, role_max_length)
        # how a Ray actor that loaded this project builds the same featurizer
        features.recipe = ("project", (role_max_length,))
        return features

    def training_encoder(self, role_max_length: int | None = None) -> _Features:
        """The frozen decoder's pooled states, as training encodes them."""
        return self._featurizer(role_max_length)

    # -- training --------------------------------------------------------
    def train(self, corpus, jobs: int = 1) -> dict:
        """Train; the checkpoint of an interrupted run is removed on success.

        Under torchrun only rank 0 saves the model; the other ranks train
        alongside it and keep nothing."""
        from indexer.distributed import current_world

        self._check_mode()
        world = current_world()
        if world.active and self.params.mode == "frozen":
            raise ConfigError(
                f"{self._where()}: torchrun trains the LoRA modes; mode = frozen "
                "trains only the head on cached states: train it in one process"
            )
        if not world.is_main:
            with tempfile.TemporaryDirectory() as scratch:
                return self._train(corpus, Path(scratch), jobs)
        info = super().train(corpus, jobs)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return info

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        import torch

        from indexer.neural.models import resolve_model

        p = self.params
        self._check_mode()
        base = resolve_model(p.model)
        self._check_memory(base)
        data = self._training_data(corpus)
        started = time.perf_counter()
        x, stats_rows, label_vectors, dim = self._frozen_states(data)
        feature_seconds = time.perf_counter() - started

        torch.manual_seed(p.seed)
        head = make_head(dim, len(data.label_ids), p.head_hidden, p.dropout)
        mean, std = x[stats_rows].mean(0), np.maximum(x[stats_rows].std(0), 1e-4)
        counts = data.counts[data.label_ids]
        init_head(
            head, mean, std, x[stats_rows], counts, len(data.texts), label_vectors
        )
        trainer = Trainer(
            self, head, x, data.targets, data.train_rows, data.val_rows, data.texts
        )
        trainer.label_ids, trainer.subjects = data.label_ids, data.subjects
        trainer.fingerprint = self._fingerprint(base, corpus.digest(), data.label_ids)
        history = trainer.run()
        head.eval()
        self._save(directory, base, data.label_ids, dim, head, trainer.adapter)
        best = history["best_epoch"]
        return {
            "mode": p.mode,
            "base_model": base.manifest(),
            "labels": len(data.label_ids),
            "training_documents": len(data.train_rows),
            "validation_documents": len(data.val_rows),
            "feature_seconds": round(feature_seconds, 1),
            "validation": (
                history["history"][best - 1] if best else history.get("probe", {})
            ),
            **history,
        }

    def _check_memory(self, base) -> None:
        from indexer.neural.llm import check_training_memory

        p = self.params
        check_training_memory(
            self._where(),
            base,
            self.device,
            0 if p.mode == "frozen" else p.batch_size,
            p.max_length,
            bits=4 if p.mode == "qlora" else 32,
        )

    def _training_data(self, corpus) -> _TrainingData:
        """The documents with subjects, the head's labels, sparse targets and
        the held-out validation rows."""
        p = self.params
        texts, subjects, counts = [], [], np.zeros(len(self.project.vocab), np.int64)
        for doc in corpus:
            if doc.subjects:
                texts.append(doc.text)
                subjects.append(doc.subjects)
                np.add.at(counts, doc.subjects, 1)
        label_ids = self._label_space(counts)
        column = np.full(len(self.project.vocab), -1, np.int64)
        column[label_ids] = np.arange(len(label_ids))
        validation = validation_mask(texts, p.validation_fraction)
        if validation.all() or len(texts) < 2:
            validation[:] = False
        return _TrainingData(
            texts,
            subjects,
            counts,
            label_ids,
            sparse_targets(subjects, column, len(label_ids)),
            np.flatnonzero(~validation),
            np.flatnonzero(validation),
        )

    def _frozen_states(self, data: _TrainingData):
        """(states, rows they are set for, label states or None, width) of the
        frozen decoder: every document in frozen mode or before a head probe,
        else a sample of 512 for the head's standardisation (the adapters start
        at zero)."""
        from indexer.neural.encoder import encode_cached, project_cache

        p = self.params
        features = self._featurizer()
        # one writer for the shared cache: rank 0 when training under torchrun
        cache = project_cache(self.project) if _is_main_process() else None
        if p.mode == "frozen" or p.probe_epochs:
            rows = data.train_rows
            x = encode_cached(features, data.texts, cache, "passage", progress=True)
        else:
            rows = data.train_rows[:512]
            x = np.zeros((len(data.texts), features.dim), np.float32)
            x[rows] = encode_cached(
                features, [data.texts[i] for i in rows], cache, "passage", True
            )
        label_vectors = None
        if p.head_init == "labels":
            label_vectors = encode_cached(
                self._featurizer(min(p.max_length, 64)),
                self._label_texts(data.label_ids),
                cache,
                "label",
                progress=True,
            )
        return x, rows, label_vectors, features.dim

    def _save(self, directory: Path, base, label_ids, dim: int, head, adapter):
        """The head and adapters in safetensors, with the base model's identity."""
        meta = {
            "base_model": base.manifest(),
            "mode": self.params.mode,
            "labels": [self.project.vocab.uris[i] for i in label_ids],
            "hidden_size": dim,
            "adapter": adapter is not None,
        }
        (directory / FORMAT_FILE).write_text(json.dumps(meta, indent=1))
        save_tensors(directory / "head.safetensors", head.state_dict())
        if adapter is not None:
            adapter.save_pretrained(directory / "adapter")

    def _label_space(self, counts: np.ndarray) -> np.ndarray:
        if self.params.labels == "seen":
            return np.flatnonzero(counts > 0)
        vocab = self.project.vocab
        return np.flatnonzero(~vocab.deprecated | (counts > 0))

    def _label_texts(self, label_ids: np.ndarray) -> list[str]:
        labels = self.project.vocab.pref_labels(
            self.params.label_language or self.project.language
        )
        return [labels[i] for i in label_ids]

    def _fingerprint(self, base, corpus_digest: str, label_ids: np.ndarray) -> str:
        settings = asdict(self.params)
        for key in ("epochs", "patience", "device"):
            settings.pop(key)  # changing these may resume an interrupted run
        sha = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        sha.update(f"{base.identity}|{corpus_digest}|".encode())
        sha.update(np.asarray(label_ids, np.int64).tobytes())
        return sha.hexdigest()[:20]

    def _epoch_done(self, epoch: int) -> None:
        """Called after each epoch's checkpoint is written (tests interrupt here)."""

    # -- loading and suggesting -------------------------------------------
    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        import torch

        from indexer.neural.models import resolve_model

        meta = json.loads((directory / FORMAT_FILE).read_text())
        saved, current = meta["base_model"], resolve_model(self.params.model)
        if saved["identity"] != current.identity:
            raise NotTrainedError(
                f"{self._where()} was trained on base model '{saved['name']}' "
                f"({saved['identity']}), but model = {self.params.model} is "
                f"'{current.identity}': set model back or retrain"
            )
        if meta["mode"] != self.params.mode:
            raise NotTrainedError(
                f"{self._where()} was trained with mode = {meta['mode']}, but is "
                f"configured with mode = {self.params.mode}: set it back or retrain"
            )
        self._check_mode()
        vocab = self.project.vocab
        self._label_ids = np.asarray([vocab.id_of(u) for u in meta["labels"]])
        head = make_head(
            meta["hidden_size"], len(self._label_ids), self.params.head_hidden, 0.0
        )
        head.load_state_dict(load_tensors(directory / "head.safetensors"))
        self._head = head.to(self.device).eval()
        _, tokenizer, decoder, lock = self._decoder(trainable=meta["adapter"])
        if meta["adapter"]:
            from peft import PeftModel

            decoder = PeftModel.from_pretrained(decoder, directory / "adapter").eval()
        self._runtime = (tokenizer, decoder, lock)
        self._torch = torch

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        torch = self._torch
        tokenizer, decoder, lock = self._runtime
        p = self.params
        order = np.argsort([-len(t) for t in texts], kind="stable")  # less padding
        pooled = torch.zeros((len(texts), self._head.out.in_features))
        with lock, torch.inference_mode():
            for start in range(0, len(texts), p.batch_size):
                index = order[start : start + p.batch_size]
                with self._out_of_memory_guard():
                    pooled[index] = self._pooled(
                        decoder, tokenizer, [texts[i] for i in index]
                    ).cpu()
            return self._batch(scores(self._head, pooled, self.device), self._label_ids)

    def _batch(self, scores, label_ids: np.ndarray) -> SuggestionBatch:
        """Keep each document's `candidates` best labels, as vocabulary ids."""
        import torch

        k = min(self.params.candidates, scores.shape[1])
        values, columns = torch.topk(scores, k, dim=1)
        rows = np.repeat(np.arange(scores.shape[0]), k)
        matrix = sp.csr_matrix(
            (values.numpy().ravel(), (rows, label_ids[columns.numpy().ravel()])),
            shape=(scores.shape[0], len(self.project.vocab)),
        )
        return SuggestionBatch(matrix)

    def _out_of_memory_guard(self):
        return _OutOfMemoryGuard(self)


class _OutOfMemoryGuard:
    """Turns an allocation failure into 'lower batch_size or max_length'."""

    def __init__(self, backend: LlmHeadBackend):
        self.backend = backend

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from indexer.neural.llm import is_out_of_memory, out_of_memory

        if exc is not None and is_out_of_memory(exc):
            p = self.backend.params
            raise out_of_memory(
                self.backend._where(), self.backend.device, p.batch_size, p.max_length
            ) from None
        return False


class _Features:
    """The frozen decoder as a cacheable encoder (see `encode_cached` in
    indexer.neural.encoder): pooled states, not normalised, keyed by model
    identity and settings."""

    def __init__(self, backend, model, tokenizer, decoder, lock, max_length=None):
        self.backend, self.tokenizer, self.decoder = backend, tokenizer, decoder
        self.lock = lock
        self.dim = int(decoder.config.hidden_size)
        p = backend.params
        self.max_length = max_length or p.max_length
        template = hashlib.sha256(p.template.encode()).hexdigest()[:12]
        precision = "bf16" if uses_bf16(backend.device, p.precision) else "fp32"
        self.identity = (
            f"{model.identity}|llm_head|pool={p.pooling}|len={self.max_length}"
            f"|trunc={p.truncation}|template={template}|{precision}"
        )

    def encode(self, texts: list[str], role: str, progress: bool) -> np.ndarray:
        import torch
        from tqdm import tqdm

        backend = self.backend
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        size = backend.params.batch_size
        starts = tqdm(
            range(0, len(texts), size),
            desc=f"LLM states ({role})",
            unit=" batches",
            leave=False,
            disable=not progress or None,
        )
        with self.lock, torch.inference_mode():
            for start in starts:
                index = order[start : start + size]
                with backend._out_of_memory_guard():
                    pooled = backend._pooled(
                        self.decoder,
                        self.tokenizer,
                        [texts[i] for i in index],
                        self.max_length,
                    )
                out[index] = pooled.cpu().numpy()
        return out

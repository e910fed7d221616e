"""Contrastive fine-tuning of a torch BERT query encoder on (query, passage)
pairs with in-batch negatives (multiple-negatives ranking loss, as in
sentence-transformers): each query must be nearer its own passage than every
other passage of the batch.

Passages keep the vectors of the base encoder (an asymmetric dual encoder):
they are computed once, only queries run backwards, and an index of
passages built with the base encoder stays valid, so concepts without
training documents are still found where the base encoder put them. The
word-embedding matrix stays frozen (most of the weights; the pairs touch few
of its rows); the other tensors are saved as safetensors and loaded over the
base model's weights."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FROZEN = ("embeddings.word_embeddings.weight",)


@dataclass
class FineTuning:
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 3e-5
    query_length: int = 128
    scale: float = 20.0  # inverse temperature of the cosine similarities
    seed: int = 0


def batches_without_repeats(
    keys: list, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffled index batches in which no passage key occurs twice (a repeat
    would be its own negative). A query whose key is already in the batch
    waits for a later one; only a last batch of a single query is left out
    (it would have no negative)."""
    batches: list[list[int]] = []
    current: list[int] = []
    taken: set = set()

    def place(candidates: list[int]) -> list[int]:
        """Put candidates into the current batch while it has room for
        their keys; return the ones that must wait."""
        rest = []
        for i in candidates:
            if len(current) < batch_size and keys[i] not in taken:
                current.append(i)
                taken.add(keys[i])
            else:
                rest.append(i)
        return rest

    waiting: list[int] = []
    for i in rng.permutation(len(keys)).tolist():
        waiting += place([i])
        while len(current) == batch_size:
            batches.append(current)
            current, taken = [], set()
            waiting = place(waiting)
    while len(current) > 1:
        batches.append(current)
        current, taken = [], set()
        waiting = place(waiting)
    return batches


def fine_tune(
    encoder,
    queries: list[str],
    positives: list[list[int]],
    passages: np.ndarray,
    settings: FineTuning,
    target: Path,
) -> dict:
    """Train a copy of `encoder` (a TorchBertEncoder) as query encoder: each
    epoch pairs every query with one of its `positives` (rows of the
    normalised `passages` vectors) drawn at random. The trained tensors go
    to `target` (safetensors); returns training statistics."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from indexer.neural.bert import load_bert
    from indexer.neural.encoder import padded

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    network = load_bert(encoder.directory).to(encoder.device).train()
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name not in FROZEN)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    q_ids = encoder.tokens(queries, "query", settings.query_length)
    fixed = torch.from_numpy(np.ascontiguousarray(passages)).to(encoder.device)
    labels_for = torch.arange(settings.batch_size, device=encoder.device)
    losses, pairs, started = [], [], time.perf_counter()
    for epoch in range(settings.epochs):
        epoch_losses = []
        drawn = [int(rng.choice(options)) for options in positives]
        grouped = batches_without_repeats(drawn, settings.batch_size, rng)
        pairs.append(sum(len(batch) for batch in grouped))
        batches = tqdm(
            grouped,
            desc=f"Fine-tuning, epoch {epoch + 1}/{settings.epochs}",
            unit=" batches",
            leave=False,
            disable=None,
        )
        for batch in batches:
            q = network(*padded([q_ids[i] for i in batch], encoder.device))
            q = torch.nn.functional.normalize(q, dim=-1)
            p = fixed[[drawn[i] for i in batch]]
            scores = settings.scale * q @ p.T
            loss = torch.nn.functional.cross_entropy(scores, labels_for[: len(batch)])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            epoch_losses.append(float(loss.detach()))
            recent = np.mean(epoch_losses[-20:])
            batches.set_postfix(loss=f"{recent:.3f}", refresh=False)
        losses.append(float(np.mean(epoch_losses)) if epoch_losses else 0.0)
        print(
            f"fine-tuning epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}",
            file=sys.stderr,
        )
    tensors = {
        name: parameter.detach().cpu().contiguous()
        for name, parameter in network.named_parameters()
        if name not in FROZEN
    }
    save_file(tensors, str(target))
    return {
        "queries": len(queries),
        "epochs": settings.epochs,
        "loss_per_epoch": [round(x, 4) for x in losses],
        "pairs_per_epoch": pairs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def weights_digest(path: Path) -> str:
    """Size and head of a weights file: distinct for two fine-tunings."""
    sha = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        sha.update(f.read(1 << 20))
    return sha.hexdigest()[:16]

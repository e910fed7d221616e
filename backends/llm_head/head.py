"""The classification head of llm_head and the arrays around it: standardised
pooled states, one logit per label, sparse targets, safetensors files."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def uses_bf16(device: str, precision: str) -> bool:
    from indexer.neural.llm import autocast

    return not isinstance(autocast(device, precision), contextlib.nullcontext)


def scores(head, pooled, device: str):
    """Sigmoid scores of pooled states (documents x labels), in chunks."""
    import torch

    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(head(chunk.to(device))).float().cpu()
                for chunk in torch.split(pooled, 64)
            ]
        )


def make_head(dim: int, n_labels: int, hidden: int, dropout: float):
    """Standardisation, an optional residual MLP, dropout and one logit per label."""
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("inv_std", torch.ones(dim))
            self.mlp = (
                nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                if hidden
                else None
            )
            if self.mlp is not None:  # starts as the identity: label rows stay valid
                nn.init.zeros_(self.mlp[2].weight)
                nn.init.zeros_(self.mlp[2].bias)
            self.dropout = nn.Dropout(dropout)
            self.out = nn.Linear(dim, n_labels)

        def standardise(self, x):
            return (x - self.mean) * self.inv_std

        def forward(self, x):
            x = self.standardise(x)
            if self.mlp is not None:
                x = x + self.mlp(x)
            return self.out(self.dropout(x))

    return Head()


def init_head(head, mean, std, x, counts, n_train, label_vectors) -> None:
    """Bias = log-odds of each label's training frequency; with label vectors,
    rows along each label's standardised, centred representation, scaled so that
    a one-standard-deviation match moves the logit by 2."""
    import torch

    with torch.no_grad():
        head.mean.copy_(torch.from_numpy(mean))
        head.inv_std.copy_(torch.from_numpy(1 / std))
        prior = (counts + 0.5) / (n_train + 1.0)
        head.out.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))))
        if label_vectors is None:
            return
        rows = (label_vectors - label_vectors.mean(0)) / std
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        sample = (x[:256] - mean) / std
        some = np.random.default_rng(0).permutation(len(rows))[:4096]
        spread = float((sample @ rows[some].T).std()) or 1.0
        head.out.weight.copy_(torch.from_numpy((2.0 / spread) * rows))


def multilabel_loss(logits, y, kind: str = "bce", smoothing: float = 0.0):
    """Summed over labels, averaged over documents, so each positive counts.

    - `bce`: binary cross-entropy.
    - `focal`: BCE scaled by (1 - p_t)^2, which quiets the labels a document
      already gets right (Lin et al. 2017).
    - `asymmetric`: negatives shifted down by 0.05 and scaled by p^4, positives
      plain BCE (Ridnik et al. 2021): with thousands of labels per document
      nearly all negatives are easy, and this stops them drowning the positives.

    `smoothing` moves targets from 0/1 to smoothing/2 and 1 - smoothing/2."""
    import torch
    import torch.nn.functional as F

    if smoothing:
        y = y * (1 - smoothing) + smoothing / 2
    if kind == "bce":
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    elif kind == "focal":
        p = torch.sigmoid(logits)
        p_t = p * y + (1 - p) * (1 - y)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        loss = (1 - p_t) ** 2 * bce
    elif kind == "asymmetric":
        p = torch.sigmoid(logits)
        shifted = (p - 0.05).clamp(min=0)
        positive = -y * F.logsigmoid(logits)
        negative = -(1 - y) * shifted**4 * torch.log((1 - shifted).clamp(min=1e-8))
        loss = positive + negative
    else:
        raise ValueError(f"unknown loss '{kind}'")
    return loss.sum() / logits.shape[0]


def sparse_targets(subjects, column: np.ndarray, n_labels: int) -> sp.csr_matrix:
    """Documents x labels, sparse."""
    indptr, indices = [0], []
    for ids in subjects:
        cols = column[np.asarray(ids)]
        indices.extend(cols[cols >= 0].tolist())
        indptr.append(len(indices))
    data = np.ones(len(indices), np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(subjects), n_labels))


def validation_mask(texts: list[str], fraction: float) -> np.ndarray:
    """Deterministic held-out documents: md5 of the text below `fraction`."""
    if fraction <= 0:
        return np.zeros(len(texts), bool)
    values = [int(hashlib.md5(t.encode()).hexdigest()[:8], 16) / 16**8 for t in texts]
    return np.asarray(values) < fraction


def save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)

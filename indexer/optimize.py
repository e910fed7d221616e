"""Choosing the limit and threshold that maximise document-averaged F1."""

from __future__ import annotations

import numpy as np

from indexer.features import subject_matrix

THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.05), 2)


def _ranked_hits(batches, n_subjects: int):
    """Concatenated (row, score, rank, hit) of all suggestions, and gold counts."""
    parts, gold_counts, offset = [], [], 0
    for gold, batch in batches:
        g = subject_matrix([list(s) for s in gold], n_subjects).astype(bool)
        rows, cols, scores, ranks = batch.ranks()
        hit = np.asarray(g[rows, cols]).ravel() if len(rows) else np.zeros(0, bool)
        parts.append((rows + offset, scores, ranks, hit.astype(np.float64)))
        gold_counts.append(np.diff(g.indptr))
        offset += g.shape[0]
    rows, scores, ranks, hits = (np.concatenate(x) for x in zip(*parts, strict=True))
    return rows, scores, ranks, hits, np.concatenate(gold_counts)


def best_limit_threshold(
    batches, n_subjects: int, max_limit: int
) -> tuple[list[dict], dict]:
    """Per limit, the threshold with the best document-averaged F1; and the best."""
    rows, scores, ranks, hits, n_gold = _ranked_hits(batches, n_subjects)
    evaluated = n_gold > 0
    n_docs = len(n_gold)
    table = []
    for limit in range(1, max_limit + 1):
        best = None
        for threshold in THRESHOLDS:
            chosen = (ranks <= limit) & (scores >= threshold)
            tp = np.bincount(rows[chosen], weights=hits[chosen], minlength=n_docs)[
                evaluated
            ]
            pred = np.bincount(rows[chosen], minlength=n_docs)[evaluated]
            gold = n_gold[evaluated]
            tp = tp.astype(np.float64)
            precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
            row = {
                "limit": limit,
                "threshold": float(threshold),
                "precision": float(precision.mean()) if len(tp) else 0.0,
                "recall": float((tp / gold).mean()) if len(tp) else 0.0,
                "f1": float((2 * tp / (pred + gold)).mean()) if len(tp) else 0.0,
            }
            if best is None or row["f1"] > best["f1"]:
                best = row
        table.append(best)
    return table, max(table, key=lambda r: r["f1"])

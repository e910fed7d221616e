"""Choosing the limit and threshold that maximise F1 on a corpus."""

from __future__ import annotations

import numpy as np

from indexer.eval import Evaluator

THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.05), 2)


def best_limit_threshold(
    batches, n_subjects: int, max_limit: int
) -> tuple[list[dict], dict]:
    """Per limit, the threshold with the best document-averaged F1; and the best."""
    rows = []
    for limit in range(1, max_limit + 1):
        best = None
        for threshold in THRESHOLDS:
            evaluator = Evaluator(
                n_subjects, limit=limit, threshold=float(threshold), ks=()
            )
            for gold, suggestions in batches:
                evaluator.add(gold, suggestions)
            r = evaluator.results()
            candidate = {
                "limit": limit,
                "threshold": float(threshold),
                "precision": r.get("precision", 0.0),
                "recall": r.get("recall", 0.0),
                "f1": r.get("f1", 0.0),
            }
            if best is None or candidate["f1"] > best["f1"]:
                best = candidate
        rows.append(best)
    return rows, max(rows, key=lambda r: r["f1"])

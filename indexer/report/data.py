"""The numbers of an evaluation report, as plain JSON-able data.

Everything here is computed from what `indexer eval` already has: the
Evaluator and the (gold, suggestions) batches it saw. Curves are
document-averaged like `indexer eval`'s metrics, so the curve at the
project's operating point is the value `indexer eval` prints.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from indexer.features import subject_matrix
from indexer.optimize import THRESHOLDS

MAX_LIMIT = 20
CALIBRATION_BINS = 10
#: concepts listed as "most often suggested wrongly"
WORST = 25


def _finite(value):
    """JSON has no NaN: a metric without data (no unseen gold) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Ranked:
    """Every stored suggestion of the evaluated documents: (row, subject,
    score, rank, hit) arrays, with the gold subject counts per document."""

    def __init__(self, batches, n_subjects: int):
        parts, n_gold, gold_subjects, offset = [], [], [], 0
        for gold, batch in batches:
            g = subject_matrix([list(s) for s in gold], n_subjects).astype(bool)
            rows, cols, scores, ranks = batch.ranks()
            hit = np.asarray(g[rows, cols]).ravel() if len(rows) else np.zeros(0)
            parts.append((rows + offset, cols, scores, ranks, hit.astype(bool)))
            n_gold.append(np.diff(g.indptr))
            gold_subjects.append(g.indices)
            offset += g.shape[0]
        columns = zip(*parts, strict=True) if parts else [np.zeros(0)] * 5
        self.rows, self.cols, self.scores, self.ranks, self.hits = (
            np.concatenate(x) for x in columns
        )
        self.hits = self.hits.astype(bool)
        self.n_gold = np.concatenate(n_gold or [np.zeros(0, np.int64)])
        self.gold_subjects = np.concatenate(gold_subjects or [np.zeros(0, np.int64)])
        self.n_docs = len(self.n_gold)

    def prf(self, limit: int, threshold: float) -> dict[str, float]:
        """Document-averaged precision, recall and F1 at a limit and threshold
        (documents without gold subjects skipped, as in `indexer eval`)."""
        chosen = (self.ranks <= limit) & (self.scores >= threshold)
        evaluated = self.n_gold > 0
        tp = np.bincount(
            self.rows[chosen], weights=self.hits[chosen], minlength=self.n_docs
        )[evaluated]
        pred = np.bincount(self.rows[chosen], minlength=self.n_docs)[evaluated]
        gold = self.n_gold[evaluated]
        if not len(gold):
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        precision = np.divide(tp, pred, out=np.zeros(len(tp)), where=pred > 0)
        return {
            "precision": float(precision.mean()),
            "recall": float((tp / gold).mean()),
            "f1": float((2 * tp / (pred + gold)).mean()),
        }


def limit_curve(ranked: Ranked, threshold: float) -> list[dict]:
    """P/R/F1 for limits 1..MAX_LIMIT at the project's threshold."""
    return [{"limit": k, **ranked.prf(k, threshold)} for k in range(1, MAX_LIMIT + 1)]


def threshold_curve(ranked: Ranked, limit: int) -> list[dict]:
    """P/R/F1 for thresholds 0, 0.05, ..., 0.95 at the project's limit."""
    return [{"threshold": float(t), **ranked.prf(limit, t)} for t in THRESHOLDS]


def seen_unseen(ranked: Ranked, seen: np.ndarray | None) -> dict | None:
    """Recall@k (k = 1..MAX_LIMIT) of gold subjects seen in training and of
    those never seen (micro: found gold over all gold of the group); None
    when the backend does not know its training subjects."""
    if seen is None:
        return None
    seen = np.asarray(seen) > 0
    gold_seen = seen[ranked.gold_subjects]
    out = {"gold_seen": int(gold_seen.sum()), "gold_unseen": int((~gold_seen).sum())}
    hit_seen = seen[ranked.cols[ranked.hits]]
    hit_ranks = ranked.ranks[ranked.hits]
    for name, mask, total in (
        ("seen", hit_seen, out["gold_seen"]),
        ("unseen", ~hit_seen, out["gold_unseen"]),
    ):
        found = np.bincount(hit_ranks[mask], minlength=MAX_LIMIT + 1)[1:]
        cumulative = np.cumsum(found)[:MAX_LIMIT]
        out[name] = [
            {"k": k + 1, "recall": float(c / total) if total else None}
            for k, c in enumerate(cumulative)
        ]
    return out


def calibration(ranked: Ranked, limit: int) -> dict:
    """Reliability diagram of the top-`limit` suggestions: per score bin,
    the mean score, the share that are gold subjects and the count; and the
    expected calibration error (count-weighted mean |score - share|)."""
    top = ranked.ranks <= limit
    scores, hits = ranked.scores[top], ranked.hits[top]
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    count = np.bincount(which, minlength=CALIBRATION_BINS)
    score_sum = np.bincount(which, weights=scores, minlength=CALIBRATION_BINS)
    hit_sum = np.bincount(which, weights=hits, minlength=CALIBRATION_BINS)
    bins = []
    for i in range(CALIBRATION_BINS):
        n = int(count[i])
        bins.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "count": n,
                "mean_score": float(score_sum[i] / n) if n else None,
                "share_correct": float(hit_sum[i] / n) if n else None,
            }
        )
    total = int(count.sum())
    ece = (
        float(np.abs(score_sum - hit_sum).sum() / total) if total else None
    )  # sum over bins of n * |mean score - share| / N
    return {"suggestions": total, "limit": limit, "bins": bins, "ece": ece}


def concepts(evaluator, vocab, language: str, ranked: Ranked) -> dict:
    """Per concept that occurred (gold or suggested at the operating point):
    support, suggested, precision, recall, F1; the gold concepts never
    suggested; and those most often suggested wrongly."""
    uris = vocab.uris
    rows = []
    for r in evaluator.per_subject():
        s = r["subject"]
        rows.append(
            {
                "uri": uris[s],
                "label": vocab.label(s, language),
                "support": r["support"],
                "suggested": r["tp"] + r["fp"],
                "tp": r["tp"],
                "fp": r["fp"],
                "fn": r["fn"],
                "precision": r["precision"],
                "recall": r["recall"],
                "f1": r["f1"],
            }
        )
    rows.sort(key=lambda r: (-r["support"], r["label"]))
    never = [
        {"uri": r["uri"], "label": r["label"], "support": r["support"]}
        for r in rows
        if r["support"] and not r["suggested"]
    ]
    wrong = sorted((r for r in rows if r["fp"]), key=lambda r: -r["fp"])[:WORST]
    return {
        "rows": rows,
        "never_suggested": never,
        "most_wrong": [
            {k: r[k] for k in ("uri", "label", "fp", "tp", "support")} for r in wrong
        ],
    }


def file_digest(path: Path) -> str:
    """sha256 of a corpus file, or of a directory's files (names and bytes,
    in name order)."""
    sha = hashlib.sha256()
    path = Path(path)
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    for file in files:
        if path.is_dir():
            sha.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                sha.update(chunk)
    return sha.hexdigest()

"""Choices about the calibrated fusion made on its cross-validated scores.

Both are made on the documents the fusion was fitted on (a tuning split or the
folds of a cross-fitting), with the scores each gets from a combination fitted
without it, never on the split the fusion is evaluated on.

- The unseen slots: how many of the top suggestions to keep for subjects that
  no source saw in training is a trade-off: each slot given to a new subject
  may push out a known one that was right. Of the slot counts that keep at
  least `KEEP` of the best zero-shot source's unseen recall@10, the one with
  the best nDCG@10 is taken; when none does, the one that keeps the most.
- What each source adds (`measure_sources`): the fusion fitted again without
  it, and the difference in F1@5, nDCG@10 and unseen recall@10, to decide
  whether a slow source is worth its cost.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from indexer.eval import Evaluator
from indexer.suggestion import SuggestionBatch

#: share of the best zero-shot source's unseen recall@10 the fusion must keep
KEEP = 0.95


def choose_unseen_slots(
    held, scores: np.ndarray, depth: int, zero_shot: list[int], keep: float = KEEP
) -> dict:
    """{"slots": n, "options": [...], ...} for the fused held-out `scores` of
    the candidates of `held` (a grouped HeldOut); `zero_shot` are the column
    numbers of the zero-shot sources, whose unseen recall is the bar."""
    options = [
        {"slots": n, **_metrics(held, scores, n, depth)} for n in range(depth + 1)
    ]
    bars = [
        _metrics(held, _rank_scores(held.candidates.rank[:, s]), 0, depth)
        for s in zero_shot
    ]
    best_zero_shot = max((b["unseen_recall@10"] for b in bars), default=0.0)
    target = keep * best_zero_shot
    feasible = [o for o in options if o["unseen_recall@10"] >= target]
    if feasible:
        chosen = max(feasible, key=lambda o: (o["ndcg@10"], -o["slots"]))
    else:
        chosen = max(options, key=lambda o: (o["unseen_recall@10"], o["ndcg@10"]))
    return {
        "slots": chosen["slots"],
        "by": "cross-validation",
        "zero_shot_unseen_recall@10": best_zero_shot,
        "target_unseen_recall@10": target,
        "options": options,
    }


def source_gains(held, fit, scores: np.ndarray, names: list[str]) -> dict:
    """{source: {"f1@5": gain, "ndcg@10": gain, "unseen_recall@10": gain}}: what
    the fusion loses without each source. `fit(candidates, gold, frequency)`
    fits the fusion as it was fitted; `scores` are its held-out scores."""
    from backends.fusion import Candidates

    c = held.candidates
    frequency = held.frequency(np.zeros(0))
    full = _metrics(held, scores, 0, 10)
    gains = {}
    for s, name in enumerate(names):
        others = [o for o in range(len(names)) if o != s]
        if not others:
            continue
        rows = (c.rank[:, others] > 0).any(axis=1)
        part = Candidates(
            c.docs[rows],
            c.subjects[rows],
            c.raw[rows][:, others],
            c.rank[rows][:, others],
            c.n_subjects,
        )
        model = fit(part, held.gold[rows], frequency[rows])
        if model.held_out_scores is None:
            continue
        without = np.zeros(len(c))
        without[rows] = model.held_out_scores
        reduced = _metrics(held, without, 0, 10)
        gains[name] = {
            key: full[key] - reduced[key]
            for key in ("f1@5", "ndcg@10", "unseen_recall@10")
        }
    return gains


def _rank_scores(rank: np.ndarray) -> np.ndarray:
    """A source's ranking as scores (0 where it did not suggest the subject)."""
    return np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)


def _metrics(held, scores: np.ndarray, slots: int, depth: int) -> dict:
    """F1@5, nDCG@10 and unseen recall@10 over every group of `held`, each
    group's suggestions promoted and judged with what its sources had seen."""
    c = held.candidates
    seen = held.group_seen.tocsr()
    groups = held.doc_group
    weighted = {"f1@5": 0.0, "ndcg@10": 0.0}
    documents = unseen_gold = unseen_hits = 0
    for g in np.unique(groups):
        docs = np.flatnonzero(groups == g)
        local = np.full(held.n_documents, -1)
        local[docs] = np.arange(len(docs))
        keep = (local[c.docs] >= 0) & (scores > 0)
        counts = np.zeros(c.n_subjects)
        row = seen[g]
        known = row.indices < c.n_subjects
        counts[row.indices[known]] = row.data[known]
        if not keep.any():  # nothing suggested for this group: every gold missed
            gold = [held.doc_gold[d] for d in docs]
            documents += sum(1 for subjects in gold if subjects)
            unseen_gold += sum(int((counts[s] == 0).sum()) for s in gold)
            continue
        matrix = sp.csr_matrix(
            (scores[keep], (local[c.docs[keep]], c.subjects[keep])),
            shape=(len(docs), c.n_subjects),
        )
        batch = SuggestionBatch(matrix).promote(counts == 0, slots, depth)
        evaluator = Evaluator(c.n_subjects, limit=5, seen=counts)
        evaluator.add([held.doc_gold[d] for d in docs], batch)
        r = evaluator.results()
        n = r.get("documents_with_subjects", 0)
        if n:
            documents += n
            for key in weighted:
                weighted[key] += n * r[key]
        unseen_gold += r.get("unseen_gold", 0)
        if r.get("unseen_gold"):
            unseen_hits += r["unseen_recall@10"] * r["unseen_gold"]
    return {
        **{k: v / max(documents, 1) for k, v in weighted.items()},
        "unseen_recall@10": unseen_hits / unseen_gold if unseen_gold else 0.0,
        "unseen_gold": int(unseen_gold),
    }

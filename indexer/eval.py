"""Evaluation metrics, computed with array operations over whole batches.

Document-averaged metrics skip documents that have no gold subjects. Ranks
come from the full (unfiltered) suggestion list; the "configured" metrics use
the project's limit and threshold, as `indexer suggest` would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from indexer.features import subject_matrix
from indexer.suggestion import SuggestionBatch

KS = (1, 3, 5, 10)


class Evaluator:
    """Accumulates gold subjects and suggestions batch by batch."""

    def __init__(
        self,
        n_subjects: int,
        limit: int = 10,
        threshold: float = 0.0,
        seen: np.ndarray | None = None,
        ks: Sequence[int] = KS,
    ):
        self.n_subjects = n_subjects
        self.limit = limit
        self.threshold = threshold
        self.seen = None if seen is None else np.asarray(seen) > 0
        self.ks = tuple(ks)
        self._docs: list[dict[str, np.ndarray]] = []
        # per batch, documents x subjects tp/fp/fn counts, for resampled macro F1
        self._subject_docs: list[tuple[sp.csr_matrix, ...]] = []
        self.tp = np.zeros(n_subjects, np.int64)
        self.fp = np.zeros(n_subjects, np.int64)
        self.fn = np.zeros(n_subjects, np.int64)
        self.unseen_gold = 0
        self.unseen_hits = {k: 0 for k in self.ks}

    def add(self, gold: Sequence[Sequence[int]], batch: SuggestionBatch) -> None:
        """Add a batch: gold subject ids per document and their suggestions."""
        g = subject_matrix([list(s) for s in gold], self.n_subjects).astype(bool)
        n_docs = g.shape[0]
        n_gold = np.diff(g.indptr)
        rows, cols, scores, ranks = batch.ranks()
        hit = (
            np.asarray(g[rows, cols]).ravel().astype(np.float64)
            if len(rows)
            else np.zeros(0)
        )
        out = {"n_gold": n_gold}
        for k in self.ks:
            top = ranks <= k
            out[f"hits@{k}"] = np.bincount(
                rows[top], weights=hit[top], minlength=n_docs
            )
            out[f"pred@{k}"] = np.bincount(rows[top], minlength=n_docs)
            out[f"dcg@{k}"] = np.bincount(
                rows[top], weights=hit[top] / np.log2(ranks[top] + 1), minlength=n_docs
            )
        out["lrap"] = _lrap(rows, ranks, hit, n_gold, self.n_subjects)
        chosen = (ranks <= self.limit) & (scores >= self.threshold)
        out["hits"] = np.bincount(rows[chosen], weights=hit[chosen], minlength=n_docs)
        out["pred"] = np.bincount(rows[chosen], minlength=n_docs)
        out["dcg"] = np.bincount(
            rows[chosen],
            weights=hit[chosen] / np.log2(ranks[chosen] + 1),
            minlength=n_docs,
        )
        chosen_hit = hit[chosen].astype(bool)
        self._subject_docs.append(
            _doc_subject_counts(g, rows[chosen], cols[chosen], chosen_hit)
        )
        self.tp += np.bincount(cols[chosen][chosen_hit], minlength=self.n_subjects)
        self.fp += np.bincount(cols[chosen][~chosen_hit], minlength=self.n_subjects)
        self.fn += np.bincount(g.indices, minlength=self.n_subjects)
        self.fn -= np.bincount(cols[chosen][chosen_hit], minlength=self.n_subjects)

        if self.seen is not None:
            gold_unseen = ~self.seen[g.indices]
            self.unseen_gold += int(gold_unseen.sum())
            gold_rows = np.repeat(np.arange(n_docs), n_gold)
            out["unseen_gold"] = np.bincount(gold_rows[gold_unseen], minlength=n_docs)
            unseen_hit = hit.astype(bool) & ~self.seen[cols]
            for k in self.ks:
                found = unseen_hit & (ranks <= k)
                self.unseen_hits[k] += int(found.sum())
                out[f"unseen_hits@{k}"] = np.bincount(rows[found], minlength=n_docs)
        self._docs.append(out)

    def results(self) -> dict[str, float]:
        """All metrics as a flat name -> value mapping."""
        if not self._docs:
            return {"documents": 0}
        d = self.document_counts()
        evaluated = d["n_gold"] > 0
        n_gold = d["n_gold"][evaluated]
        get = {key: value[evaluated] for key, value in d.items()}
        r: dict[str, float] = {
            "documents": int(len(d["n_gold"])),
            "documents_with_subjects": int(evaluated.sum()),
        }
        if not evaluated.any():
            return r
        # the document-averaged metrics: the mean of their per-document values
        for name, values in self.per_document().items():
            r[name] = float(np.mean(values[evaluated]))
        hits, pred = get["hits"], get["pred"]
        total_hits, total_pred, total_gold = hits.sum(), pred.sum(), n_gold.sum()
        r["precision_micro"] = float(total_hits / total_pred) if total_pred else 0.0
        r["recall_micro"] = float(total_hits / total_gold)
        r["f1_micro"] = float(2 * total_hits / (total_pred + total_gold))
        r["f1_macro"] = self._macro_f1()
        r["lrap"] = r.pop("lrap")  # after the micro and macro metrics, as ever
        if self.seen is not None:
            r["unseen_gold"] = self.unseen_gold
            for k in self.ks:
                r[f"unseen_recall@{k}"] = (
                    self.unseen_hits[k] / self.unseen_gold
                    if self.unseen_gold
                    else float("nan")
                )
        return r

    def document_counts(self) -> dict[str, np.ndarray]:
        """Per-document counts behind every metric (hits@k, pred@k, dcg@k, lrap,
        n_gold, hits/pred/dcg at the configured limit and threshold, unseen
        counts), concatenated over all batches in the order documents came."""
        if not self._docs:
            return {"n_gold": np.zeros(0, np.int64)}
        return {
            key: np.concatenate([x[key] for x in self._docs]) for key in self._docs[0]
        }

    def subject_counts(self) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
        """Documents x subjects true positive, false positive and false negative
        counts at the configured limit and threshold (summed over documents they
        give `tp`, `fp` and `fn`)."""
        if not self._subject_docs:
            empty = sp.csr_matrix((0, self.n_subjects), dtype=np.int64)
            return empty, empty, empty
        return tuple(  # type: ignore[return-value]
            sp.vstack(parts, format="csr")
            for parts in zip(*self._subject_docs, strict=True)
        )

    def per_document(self) -> dict[str, np.ndarray]:
        """The per-document value of each document-averaged metric (their mean
        over documents with gold subjects is the metric); NaN for documents
        without gold subjects, which the averages skip."""
        d = self.document_counts()
        n_gold = d["n_gold"].astype(np.float64)
        if not len(n_gold):
            return {}
        evaluated = n_gold > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r = {}
            for k in self.ks:
                hits, pred = d[f"hits@{k}"], d[f"pred@{k}"]
                r[f"precision@{k}"] = hits / k
                r[f"recall@{k}"] = hits / n_gold
                r[f"f1@{k}"] = 2 * hits / (pred + n_gold)
                r[f"ndcg@{k}"] = d[f"dcg@{k}"] / _idcg(np.minimum(d["n_gold"], k))
            hits, pred = d["hits"], d["pred"]
            r["precision"] = np.divide(
                hits, pred, out=np.zeros_like(hits, dtype=np.float64), where=pred > 0
            )
            r["recall"] = hits / n_gold
            r["f1"] = 2 * hits / (pred + n_gold)
            r["ndcg"] = d["dcg"] / _idcg(d["n_gold"])
            r["lrap"] = d["lrap"].astype(np.float64)
        return {key: np.where(evaluated, v, np.nan) for key, v in r.items()}

    def _macro_f1(self) -> float:
        active = (self.tp + self.fp + self.fn) > 0
        if not active.any():
            return 0.0
        tp, fp, fn = self.tp[active], self.fp[active], self.fn[active]
        return float(np.mean(2 * tp / (2 * tp + fp + fn)))

    def per_subject(self) -> list[dict]:
        """tp/fp/fn with precision, recall and F1 for every subject that occurred."""
        active = np.flatnonzero((self.tp + self.fp + self.fn) > 0)
        rows = []
        for s in active:
            tp, fp, fn = int(self.tp[s]), int(self.fp[s]), int(self.fn[s])
            rows.append(
                {
                    "subject": int(s),
                    "support": tp + fn,
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn) if tp + fn else 0.0,
                    "f1": 2 * tp / (2 * tp + fp + fn),
                }
            )
        return rows


def _doc_subject_counts(g, rows, cols, hit) -> tuple[sp.csr_matrix, ...]:
    """(tp, fp, fn) documents x subjects matrices of one batch: chosen
    suggestions (rows, cols) that are hits or not, and gold ones not found."""
    shape = g.shape

    def counts(r, c):
        return sp.csr_matrix(
            (np.ones(len(r), np.int64), (r, c)), shape=shape, dtype=np.int64
        )

    tp = counts(rows[hit], cols[hit])
    fp = counts(rows[~hit], cols[~hit])
    fn = g.astype(np.int64) - tp
    fn.eliminate_zeros()
    return tp, fp, fn


def _idcg(n_relevant: np.ndarray) -> np.ndarray:
    """Ideal DCG of `n` relevant items at the top, for each entry of n."""
    top = int(n_relevant.max(initial=0))
    cumulative = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(2, top + 2)))])
    ideal = cumulative[n_relevant]
    ideal[ideal == 0] = 1.0
    return ideal


def _lrap(rows, ranks, hit, n_gold, n_subjects) -> np.ndarray:
    """Label ranking average precision per document (unsuggested subjects tie last)."""
    n_docs = len(n_gold)
    is_hit = hit.astype(bool)
    hit_rows, hit_ranks = rows[is_hit], ranks[is_hit]
    # hits are sorted by row, then rank: the i-th hit of a row has i hits at or above it
    starts = np.searchsorted(hit_rows, np.arange(n_docs))
    order_in_row = np.arange(len(hit_rows)) - starts[hit_rows] + 1
    found = np.bincount(
        hit_rows, weights=order_in_row / hit_ranks, minlength=n_docs
    ).astype(np.float64)
    suggested_hits = np.bincount(hit_rows, minlength=n_docs)
    missing = n_gold - suggested_hits
    found += missing * (n_gold / n_subjects)
    return np.divide(found, n_gold, out=np.zeros(n_docs), where=n_gold > 0)


def evaluate_arrays(
    gold: Sequence[Sequence[int]], batch: SuggestionBatch, **options
) -> dict[str, float]:
    """One-shot evaluation of a single batch (convenience for tests and scripts)."""
    evaluator = Evaluator(batch.n_subjects, **options)
    evaluator.add(gold, batch)
    return evaluator.results()

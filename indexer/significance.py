"""Bootstrap confidence intervals and paired comparisons over documents.

Every metric of `Evaluator.results()` is a function of per-document counts
(document-averaged metrics average per-document values; micro metrics divide
summed counts; macro F1 averages per-subject F1 over summed documents x
subjects tp/fp/fn). A resample of documents is then just a vector of weights,
how many times each document was drawn, so one function computes the point
estimate (all weights 1) and a whole matrix of bootstrap replicates at once
(`metrics_for_weights`). Intervals are percentile intervals; resampling is
seeded, so the same call gives the same interval.

`paired_difference` draws the same documents for both evaluators, which is
what makes a small difference between two systems on one corpus detectable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.eval import KS, Evaluator

#: replicates resampled together: bounds the (replicates x subjects) arrays of
#: macro F1 to a few tens of MB
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with the bounds of its confidence interval."""

    point: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """Paired comparison of one metric: A, B, A - B with its interval."""

    a: float
    b: float
    difference: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether the interval of the difference excludes zero."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        """'A better', 'B better', or 'no difference' (the interval holds 0)."""
        if not self.significant:
            return "no difference"
        return "A better" if self.difference > 0 else "B better"


class _Table:
    """An evaluator's per-document counts, ready to be weighted."""

    def __init__(self, evaluator: Evaluator):
        self.ks = evaluator.ks
        self.counts = evaluator.document_counts()
        self.n_docs = len(self.counts["n_gold"])
        self.evaluated = (self.counts["n_gold"] > 0).astype(np.float64)
        self.values = {
            name: np.nan_to_num(v, nan=0.0)
            for name, v in evaluator.per_document().items()
        }
        tp, fp, fn = evaluator.subject_counts()
        active = np.flatnonzero(np.asarray((tp + fp + fn).sum(axis=0)).ravel() > 0)
        # only subjects that occur can be active in a resample
        self.subjects = tuple(
            m[:, active].tocsc().astype(np.float64) for m in (tp, fp, fn)
        )
        self.has_unseen = "unseen_gold" in self.counts

    def names(self) -> list[str]:
        """Metric names in the order of `Evaluator.results()`."""
        return metric_names(self.ks, self.has_unseen)

    def compute(self, weights: np.ndarray, names: Sequence[str]) -> dict:
        """Metric values for each row of `weights` (replicates x documents)."""
        w = np.asarray(weights, dtype=np.float64)
        c = self.counts
        e = self.evaluated
        out = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            n_evaluated = w @ e
            for name in names:
                if name in self.values:
                    out[name] = (w @ (self.values[name] * e)) / n_evaluated
            hits = w @ (c["hits"] * e)
            pred = w @ (c["pred"] * e)
            gold = w @ (c["n_gold"] * e)
            micro = {
                "precision_micro": np.where(pred > 0, hits / pred, 0.0),
                "recall_micro": hits / gold,
                "f1_micro": 2 * hits / (pred + gold),
            }
            out.update({n: v for n, v in micro.items() if n in names})
            if "f1_macro" in names:
                out["f1_macro"] = self._macro_f1(w)
            for k in self.ks:
                name = f"unseen_recall@{k}"
                if name in names and self.has_unseen:
                    out[name] = (w @ c[f"unseen_hits@{k}"]) / (w @ c["unseen_gold"])
        for name in names:
            if name not in out:
                raise ValueError(
                    f"No interval for metric {name!r}; choose from: "
                    + ", ".join(self.names())
                )
        return {name: out[name] for name in names}

    def _macro_f1(self, w: np.ndarray) -> np.ndarray:
        tp_m, fp_m, fn_m = self.subjects
        n_subjects = tp_m.shape[1]
        result = np.zeros(w.shape[0])
        if n_subjects == 0:
            return result
        step = max(1, _CHUNK_CELLS // n_subjects)
        for start in range(0, w.shape[0], step):
            part = w[start : start + step]
            tp = (tp_m.T @ part.T).T
            fp = (fp_m.T @ part.T).T
            fn = (fn_m.T @ part.T).T
            denominator = 2 * tp + fp + fn
            active = denominator > 0
            f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=active)
            n_active = active.sum(axis=1)
            result[start : start + step] = np.divide(
                f1.sum(axis=1),
                n_active,
                out=np.zeros(len(part)),
                where=n_active > 0,
            )
        return result


def metric_names(ks: Sequence[int] = KS, unseen: bool = True) -> list[str]:
    """Names of the metrics that get intervals, in the order of
    `Evaluator.results()`; unseen recall only where training data is known."""
    out = []
    for k in ks:
        out += [f"precision@{k}", f"recall@{k}", f"f1@{k}", f"ndcg@{k}"]
    out += ["precision", "recall", "f1", "ndcg"]
    out += ["precision_micro", "recall_micro", "f1_micro", "f1_macro", "lrap"]
    if unseen:
        out += [f"unseen_recall@{k}" for k in ks]
    return out


def interval_metrics(evaluator: Evaluator) -> list[str]:
    """Names of the metrics that have bootstrap intervals (all numeric ones of
    `Evaluator.results()` except the document and unseen-gold counts)."""
    return _Table(evaluator).names()


def metrics_for_weights(
    evaluator: Evaluator, weights: np.ndarray, metrics: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Metric values with documents weighted by `weights`: a (documents,) vector
    gives one value per metric (all ones: the values of `results()`), a
    (replicates, documents) matrix of resample counts one value per replicate."""
    table = _Table(evaluator)
    weights = np.asarray(weights, dtype=np.float64)
    single = weights.ndim == 1
    if weights.shape[-1] != table.n_docs:
        raise ValueError(
            f"weights cover {weights.shape[-1]} documents, the evaluator "
            f"has {table.n_docs}"
        )
    names = table.names() if metrics is None else list(metrics)
    values = table.compute(np.atleast_2d(weights), names)
    return {n: v[0] for n, v in values.items()} if single else values


def resample_counts(n_docs: int, n_boot: int, seed: int = 0) -> Iterable[np.ndarray]:
    """Bootstrap resamples as (replicates, documents) count matrices, in
    chunks; each row says how often each document was drawn (n_docs draws)."""
    if n_docs == 0:
        raise ValueError("Cannot resample an evaluation of no documents")
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // n_docs)
    for start in range(0, n_boot, step):
        size = min(step, n_boot - start)
        yield rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs), size=size)


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _check(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def bootstrap(
    evaluator: Evaluator,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Iterable[str] | None = None,
) -> dict[str, Interval]:
    """Point estimate and percentile bootstrap interval of each metric,
    resampling documents with replacement `n_boot` times."""
    _check(n_boot, confidence)
    table = _Table(evaluator)
    names = table.names() if metrics is None else list(metrics)
    point = table.compute(np.ones((1, table.n_docs)), names)
    parts = [
        table.compute(w, names) for w in resample_counts(table.n_docs, n_boot, seed)
    ]
    out = {}
    for name in names:
        replicates = np.concatenate([p[name] for p in parts])
        out[name] = Interval(
            float(point[name][0]), *_percentiles(replicates, confidence)
        )
    return out


def bootstrap_interval(
    evaluator: Evaluator,
    metric: str,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """(point, low, high) of one metric; see `bootstrap`."""
    return bootstrap(evaluator, n_boot, seed, confidence, [metric])[metric]


def subject_intervals(
    evaluator: Evaluator,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Percentile intervals of each subject's precision, recall and F1, in the
    rows of `Evaluator.per_subject()`: arrays `precision_low`, `precision_high`,
    `recall_low`, ... A resample where a ratio is 0/0 (precision of a subject
    not suggested, recall of one without gold in the resample) says nothing
    of it and is left out of that interval; NaN where no resample has it."""
    import warnings

    _check(n_boot, confidence)
    table = _Table(evaluator)
    tp_m, fp_m, fn_m = table.subjects
    names = ("precision", "recall", "f1")
    replicates: dict[str, list[np.ndarray]] = {n: [] for n in names}
    step = max(1, _CHUNK_CELLS // max(1, tp_m.shape[1]))
    for counts in resample_counts(table.n_docs, n_boot, seed):
        for start in range(0, len(counts), step):
            w = counts[start : start + step].astype(np.float64).T
            tp, fp, fn = ((m.T @ w).T for m in (tp_m, fp_m, fn_m))
            with np.errstate(divide="ignore", invalid="ignore"):
                # 0/0 (not suggested; no gold drawn; neither) is NaN: left out
                values = {
                    "precision": tp / (tp + fp),
                    "recall": tp / (tp + fn),
                    "f1": 2 * tp / (2 * tp + fp + fn),
                }
            for n in names:
                replicates[n].append(values[n].astype(np.float32))
    tail = (1 - confidence) / 2 * 100
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no interval
        for n in names:
            low, high = np.nanpercentile(
                np.concatenate(replicates[n]), [tail, 100 - tail], axis=0
            )
            out[f"{n}_low"], out[f"{n}_high"] = low, high
    return out


def paired_difference(
    evaluator_a: Evaluator,
    evaluator_b: Evaluator,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Iterable[str] | None = None,
) -> dict[str, Difference]:
    """A - B for each metric with its paired bootstrap interval: each replicate
    draws the same documents for both, so both must have evaluated the same
    documents in the same order."""
    _check(n_boot, confidence)
    a, b = _Table(evaluator_a), _Table(evaluator_b)
    if a.n_docs != b.n_docs or not np.array_equal(
        a.counts["n_gold"], b.counts["n_gold"]
    ):
        raise ValueError(
            "A paired comparison needs both evaluations on the same documents "
            f"with the same gold subjects ({a.n_docs} and {b.n_docs} documents)"
        )
    names = (
        [n for n in a.names() if n in b.names()] if metrics is None else list(metrics)
    )
    ones = np.ones((1, a.n_docs))
    point_a, point_b = a.compute(ones, names), b.compute(ones, names)
    diffs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for w in resample_counts(a.n_docs, n_boot, seed):
        va, vb = a.compute(w, names), b.compute(w, names)
        for n in names:
            diffs[n].append(va[n] - vb[n])
    out = {}
    for n in names:
        pa, pb = float(point_a[n][0]), float(point_b[n][0])
        low, high = _percentiles(np.concatenate(diffs[n]), confidence)
        out[n] = Difference(pa, pb, pa - pb, low, high)
    return out

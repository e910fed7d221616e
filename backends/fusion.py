"""Calibrated fusion: per-source calibration, then a learnt combination.

Raw scores of different backends live on different scales (a cosine of 0.3
can be a confident tfidf suggestion, a lexical 0.3 a weak one), so a weighted
mean mixes incomparable numbers. Trained on documents that the sources did not
see, this backend

1. calibrates each source: isotonic regression (or Platt's logistic) of
   "is this suggestion a gold subject" on the raw score;
2. describes every candidate (a subject any source suggested for a document)
   by each source's calibrated score, log-odds, rank and presence, whether the
   subject occurred in the sources' training data and how often, and
   interactions (a zero-shot source matters most on unseen subjects);
3. combines them with a logistic regression.

Cross-fitting keeps a small tuning set honest: the regression sees calibrated
scores from calibrators fitted on other documents (GroupKFold by document),
and its regularisation is chosen by the same folds. The fitted model is JSON
(coefficients) and npz (isotonic thresholds): no pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from backends.ensemble import EnsembleBackend, UnseenSlotsParams
from indexer.backend import LEXICAL
from indexer.errors import InputError, NotTrainedError
from indexer.features import subject_matrix
from indexer.linear import sigmoid
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
from indexer.suggestion import SuggestionBatch

if TYPE_CHECKING:
    from backends.fusion_folds import FitSample

CS = (0.01, 0.1, 1.0, 10.0)
HELDOUT = "heldout.npz"
EPS = 1e-4
#: learns the manifest lists one by one; earlier ones are summed up
LEARN_HISTORY = 20


@dataclass
class CalibratedParams(UnseenSlotsParams):
    sources: str = param(
        "", "source projects: 'a, b' (weights, if given, are learnt instead)"
    )
    calibration: str = param(
        "isotonic", "per-source calibration", choices=["isotonic", "platt"]
    )
    interactions: bool = param(
        True, "add products of scores with each other and with 'unseen'"
    )
    folds: int = param(5, "cross-validation folds (grouped by document)", min=2)
    per_source: int = param(50, "candidates taken from each source", min=1)
    candidates: int = param(100, "subjects kept per document", min=1)
    batch_size: int = param(256, "documents scored at once while training", min=1)
    measure_sources: bool = param(
        False,
        "also fit the fusion without each source and record in fusion.json what "
        "each adds (cross-validated F1@5, nDCG@10, unseen recall): is a slow "
        "source worth its cost?",
    )
    cross_fit: int = param(
        0,
        "0: fit on the training corpus as the trained sources score it (a tuning "
        "split); K >= 2: train the sources on K folds and fit on every training "
        "document, scored by sources that did not see it (see README)",
        min=0,
    )
    fit_documents: int = param(
        20_000,
        "fit on at most this many documents with known subjects, a sample fixed "
        "by their texts (0: all): the fit needs about 0.1 MB per document, and "
        "the sources score only the sample",
        min=0,
    )
    learn_window: int = param(
        2000,
        "documents learnt online kept for refitting, the latest (with every one "
        "of training): bounds the model's size and the time of a learn",
        min=1,
    )
    cross_fit_reuse: str = param(
        "",
        "sources trained once on all documents and reused for every fold: 'a, b' "
        "(slow ones whose training does not memorise documents)",
    )


# -- calibration ----------------------------------------------------------


class Calibrator:
    """A monotone map from one source's raw scores to P(gold subject)."""

    def __init__(self, kind: str, x: np.ndarray, y: np.ndarray):
        # isotonic: interpolation knots; platt: x = (slope,), y = (intercept,)
        self.kind = kind
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)

    @classmethod
    def fit(cls, kind: str, raw: np.ndarray, gold: np.ndarray) -> Calibrator:
        """Fit on raw scores of suggested subjects and whether each was gold."""
        raw, gold = np.asarray(raw, np.float64), np.asarray(gold, np.float64)
        if len(raw) == 0:
            return cls("isotonic", [0.0, 1.0], [0.0, 1.0])
        if kind == "platt":
            if gold.min() == gold.max():  # one class only: a constant
                return cls("platt", [0.0], [_logit(np.clip(gold.mean(), EPS, 1 - EPS))])
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=100.0).fit(raw[:, None], gold)
            return cls("platt", model.coef_[0], model.intercept_)
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(raw, gold)
        return cls("isotonic", model.X_thresholds_, model.y_thresholds_)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float64)
        if self.kind == "platt":
            return sigmoid(self.x[0] * raw + self.y[0])
        return np.interp(raw, self.x, self.y)


# -- candidates and their features ------------------------------------------


@dataclass
class Candidates:
    """(document, subject) pairs any source suggested, with each source's raw
    score and 1-based rank (0 where that source did not suggest the subject)."""

    docs: np.ndarray
    subjects: np.ndarray
    raw: np.ndarray
    rank: np.ndarray
    n_subjects: int

    @classmethod
    def from_batches(
        cls, batches: list[SuggestionBatch], per_source: int
    ) -> Candidates:
        n_subjects = batches[0].n_subjects
        parts = []
        for s, batch in enumerate(batches):
            rows, cols, scores, ranks = batch.ranks()
            keep = ranks <= per_source
            parts.append((rows[keep], cols[keep], scores[keep], ranks[keep], s))
        keys = np.concatenate(
            [r.astype(np.int64) * n_subjects + c for r, c, *_ in parts]
        )
        unique, inverse = np.unique(keys, return_inverse=True)
        raw = np.zeros((len(unique), len(batches)), np.float64)
        rank = np.zeros((len(unique), len(batches)), np.float64)
        offset = 0
        for rows, _, scores, ranks, s in parts:
            where = inverse[offset : offset + len(rows)]
            raw[where, s] = scores
            rank[where, s] = ranks
            offset += len(rows)
        return cls(unique // n_subjects, unique % n_subjects, raw, rank, n_subjects)

    def __len__(self) -> int:
        return len(self.docs)

    def gold(self, gold: list[list[int]]) -> np.ndarray:
        """1.0 where the candidate is one of its document's gold subjects."""
        if len(self) == 0:
            return np.zeros(0)
        matrix = subject_matrix([list(s) for s in gold], self.n_subjects)
        return np.asarray(matrix[self.docs, self.subjects]).ravel().astype(np.float64)


def feature_names(n_sources: int, interactions: bool) -> list[str]:
    """Names of the combination's features, in column order."""
    names = []
    for s in range(n_sources):
        names += [f"p{s}", f"logit{s}", f"rank{s}", f"present{s}"]
    names += ["seen", "log_frequency", "agreement"]
    if interactions:
        names += [f"p{s}*unseen" for s in range(n_sources)]
        names += [
            f"p{a}*p{b}" for a in range(n_sources) for b in range(a + 1, n_sources)
        ]
    return names


def features(
    calibrated: np.ndarray,
    rank: np.ndarray,
    frequency: np.ndarray,
    per_source: int,
    interactions: bool,
) -> np.ndarray:
    """Feature matrix of candidates from calibrated scores (candidates x sources),
    ranks and the training frequency of each candidate's subject."""
    present = (rank > 0).astype(np.float64)
    logit = present * _logit(np.clip(calibrated, EPS, 1 - EPS))
    rank_score = present * (1 - np.log(np.maximum(rank, 1)) / math.log(per_source + 1))
    seen = (frequency > 0).astype(np.float64)[:, None]
    columns = []
    for s in range(calibrated.shape[1]):
        columns += [calibrated[:, s], logit[:, s], rank_score[:, s], present[:, s]]
    columns += [seen[:, 0], np.log1p(frequency) / 10.0, present.mean(axis=1)]
    if interactions:
        columns += [
            calibrated[:, s] * (1 - seen[:, 0]) for s in range(calibrated.shape[1])
        ]
        columns += [
            calibrated[:, a] * calibrated[:, b]
            for a in range(calibrated.shape[1])
            for b in range(a + 1, calibrated.shape[1])
        ]
    return np.column_stack(columns)


# -- the fitted fusion model --------------------------------------------------


class FusionModel:
    """Calibrators per source and a logistic combination of candidate features."""

    def __init__(
        self,
        calibrators: list[Calibrator],
        coef: np.ndarray,
        intercept: float,
        mean: np.ndarray,
        scale: np.ndarray,
        per_source: int,
        interactions: bool,
        info: dict | None = None,
    ):
        self.calibrators = calibrators
        self.coef = np.asarray(coef, np.float64)
        self.intercept = float(intercept)
        self.mean = np.asarray(mean, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.per_source = per_source
        self.interactions = interactions
        self.info = info or {}
        self.held_out_scores: np.ndarray | None = None  # set by fit

    def calibrate(self, raw: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Calibrated score of each candidate per source (0 where not suggested)."""
        return _calibrated(self.calibrators, raw, rank)

    def predict(self, candidates: Candidates, frequency: np.ndarray) -> np.ndarray:
        """Fused probability that each candidate is a gold subject."""
        calibrated = self.calibrate(candidates.raw, candidates.rank)
        x = features(
            calibrated,
            candidates.rank,
            frequency[candidates.subjects],
            self.per_source,
            self.interactions,
        )
        z = (x - self.mean) / self.scale @ self.coef + self.intercept
        return sigmoid(z)

    @classmethod
    def fit(
        cls,
        candidates: Candidates,
        gold: np.ndarray,
        frequency: np.ndarray,
        *,
        calibration: str = "isotonic",
        folds: int = 5,
        per_source: int = 50,
        interactions: bool = True,
    ) -> FusionModel:
        """Cross-fitted calibration, then a logistic regression whose
        regularisation is chosen on folds of documents. `frequency` is each
        candidate's training frequency as its sources knew it.

        The model's `held_out_scores` are the fused scores of every candidate
        from a combination fitted without its document (None with too few
        documents), for choices made after the fit, such as the unseen slots."""
        splits = _document_folds(candidates.docs, gold, folds)
        everything = np.ones(len(gold), bool)
        calibrators = _fit_calibrators(calibration, candidates, gold, everything)
        calibrated = _cross_fitted(calibration, candidates, gold, splits, calibrators)
        x = features(
            calibrated,
            candidates.rank,
            np.asarray(frequency, np.float64),
            per_source,
            interactions,
        )
        mean, scale = _standardisation(x)
        x -= mean  # in place: the features are the largest array of the fit
        x /= scale
        coef, intercept, c, held_out = _fit_combination(x, gold, splits)
        info = {
            "features": feature_names(candidates.raw.shape[1], interactions),
            "C": c,
            "candidates": int(len(gold)),
            "positives": int(gold.sum()),
            "folds": len(splits),
        }
        model = cls(
            calibrators,
            coef,
            intercept,
            mean,
            scale,
            per_source,
            interactions,
            info,
        )
        model.held_out_scores = held_out
        return model

    # -- persistence (JSON and npz, no pickle) --------------------------------
    def save(self, directory: Path) -> None:
        arrays = {}
        for s, calibrator in enumerate(self.calibrators):
            arrays[f"x{s}"] = calibrator.x
            arrays[f"y{s}"] = calibrator.y
        arrays.update(coef=self.coef, mean=self.mean, scale=self.scale)
        save_arrays(directory / "fusion.npz", arrays)
        meta = {
            "calibration": [c.kind for c in self.calibrators],
            "intercept": self.intercept,
            "per_source": self.per_source,
            "interactions": self.interactions,
            "info": self.info,
            "coefficients": dict(
                zip(self.info.get("features", []), self.coef.tolist(), strict=False)
            ),
        }
        (directory / "fusion.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> FusionModel:
        meta = json.loads((directory / "fusion.json").read_text())
        arrays = load_arrays(directory / "fusion.npz")
        calibrators = [
            Calibrator(kind, arrays[f"x{s}"], arrays[f"y{s}"])
            for s, kind in enumerate(meta["calibration"])
        ]
        return cls(
            calibrators,
            arrays["coef"],
            meta["intercept"],
            arrays["mean"],
            arrays["scale"],
            meta["per_source"],
            meta["interactions"],
            meta["info"],
        )


def _calibrated(
    calibrators: list[Calibrator], raw: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    out = np.zeros_like(raw)
    for s, calibrator in enumerate(calibrators):
        present = rank[:, s] > 0
        out[present, s] = calibrator(raw[present, s])
    return out


def _fit_calibrators(
    kind: str, candidates: Candidates, gold: np.ndarray, rows: np.ndarray
) -> list[Calibrator]:
    """One calibrator per source, fitted on the candidates where `rows` is true
    and the source suggested the subject."""
    present = candidates.rank > 0
    return [
        Calibrator.fit(
            kind, candidates.raw[rows & present[:, s], s], gold[rows & present[:, s]]
        )
        for s in range(candidates.raw.shape[1])
    ]


def _cross_fitted(
    kind: str,
    candidates: Candidates,
    gold: np.ndarray,
    splits: list,
    final: list[Calibrator],
) -> np.ndarray:
    """Calibrated scores where each fold is calibrated by calibrators fitted
    without it, so the combination learns from scores as unseen documents get
    them; `final` (fitted on everything) when there are no folds."""
    if not splits:
        return _calibrated(final, candidates.raw, candidates.rank)
    calibrated = np.zeros_like(candidates.raw)
    for train_rows, test_rows in splits:
        mask = np.zeros(len(gold), bool)
        mask[train_rows] = True
        calibrated[test_rows] = _calibrated(
            _fit_calibrators(kind, candidates, gold, mask),
            candidates.raw[test_rows],
            candidates.rank[test_rows],
        )
    return calibrated


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (1 for a constant column)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return mean, scale


def _fit_combination(x: np.ndarray, y: np.ndarray, splits: list):
    """`_fit_logistic` on one BLAS thread: more only add overhead for these
    narrow matrices (10x slower)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_logistic(x, y, splits)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _document_folds(docs: np.ndarray, gold: np.ndarray, folds: int) -> list:
    """GroupKFold splits by document; [] when there are too few documents."""
    from sklearn.model_selection import GroupKFold

    n_docs = len(np.unique(docs))
    folds = min(folds, n_docs)
    if folds < 2 or gold.min(initial=0) == gold.max(initial=0):
        return []
    return list(GroupKFold(n_splits=folds).split(docs, gold, groups=docs))


def _fit_logistic(x: np.ndarray, y: np.ndarray, splits: list):
    """(coef, intercept, C, held-out scores): the regularisation with the best
    log loss on held-out documents, then refitted on all of them; the
    held-out scores are those of the chosen C (None without usable folds)."""
    from sklearn.linear_model import LogisticRegression

    if y.min(initial=0) == y.max(initial=0):
        # one class only: nothing to combine; a constant probability
        rate = np.clip(y.mean() if len(y) else 0.5, EPS, 1 - EPS)
        return np.zeros(x.shape[1]), float(_logit(rate)), None, None
    usable = [
        (a, b) for a, b in splits if 0 < y[a].sum() < len(a) and 0 < y[b].sum() < len(b)
    ]
    best_c, best_loss, best_scores = 1.0, math.inf, None
    if len(usable) >= 2:
        for c in CS:
            loss, scores = 0.0, np.zeros(len(y))
            for train, test in usable:
                model = LogisticRegression(C=c, max_iter=1000).fit(x[train], y[train])
                p = np.clip(model.predict_proba(x[test])[:, 1], EPS, 1 - EPS)
                loss -= np.sum(y[test] * np.log(p) + (1 - y[test]) * np.log1p(-p))
                scores[test] = p
            if loss < best_loss:
                best_c, best_loss, best_scores = c, loss, scores
    if len(usable) < len(splits):  # some candidates were never held out
        best_scores = None
    model = LogisticRegression(C=best_c, max_iter=1000).fit(x, y)
    return model.coef_[0], float(model.intercept_[0]), best_c, best_scores


@dataclass
class HeldOut:
    """The sources' scores on documents they were not trained on, kept so that
    `learn` can refit on all documents seen so far without scoring them again.

    Documents come in groups, each scored by sources with one training: the
    folds of a cross-fitting, the tuning corpus, the `learn` calls.
    `group_seen` holds each group's training frequency of every subject, so a
    candidate is "unseen" exactly when its sources had not seen it; groups
    whose sources had the same frequencies are one group (so learning with
    unchanged sources adds documents, never another row of frequencies).
    `doc_gold` keeps each document's gold subjects (also those no source
    suggested) for choosing the unseen slots by cross-validation. The first
    `n_trained` documents are those of training, the rest were learnt.
    """

    candidates: Candidates
    gold: np.ndarray
    n_documents: int
    per_source: int
    doc_group: np.ndarray | None = None  # group of each document
    group_seen: sp.csr_matrix | None = None  # groups x subjects frequencies
    doc_gold: list[list[int]] | None = None
    n_trained: int | None = None  # None: all of them

    @classmethod
    def of_group(
        cls,
        candidates: Candidates,
        gold: list[list[int]],
        per_source: int,
        seen: np.ndarray | None,
    ) -> HeldOut:
        """One group of documents scored by sources that saw `seen`."""
        n = candidates.n_subjects
        counts = np.zeros(n) if seen is None else np.asarray(seen, float)[:n]
        counts = np.pad(counts, (0, n - len(counts)))
        return cls(
            candidates,
            candidates.gold(gold),
            len(gold),
            per_source,
            np.zeros(len(gold), np.int64),
            sp.csr_matrix(counts[None, :]),
            [list(s) for s in gold],
        )

    @property
    def grouped(self) -> bool:
        """Whether the groups are known (saved by older versions: not)."""
        return self.doc_group is not None

    def frequency(self, fallback: np.ndarray) -> np.ndarray:
        """Each candidate's training frequency as its sources knew it
        (`fallback`, per subject, where the groups are not known)."""
        c = self.candidates
        if not self.grouped:
            return np.asarray(fallback, float)[c.subjects]
        seen = self._group_seen(c.n_subjects)
        return np.asarray(seen[self.doc_group[c.docs], c.subjects]).ravel()

    def _group_seen(self, n_subjects: int) -> sp.csr_matrix:
        seen = self.group_seen.tocsr().copy()
        seen.resize((seen.shape[0], n_subjects))
        return seen

    def unseen_examples(self) -> int:
        """Gold candidates whose sources had not seen the subject in training."""
        if not self.grouped:
            return 0
        unseen = self.frequency(np.zeros(0)) == 0
        return int((self.gold[unseen] > 0).sum())

    @property
    def trained(self) -> int:
        """How many of the documents (the first) are those of training."""
        return self.n_documents if self.n_trained is None else self.n_trained

    def extend(self, other: HeldOut, learned: bool = False) -> HeldOut:
        """These documents followed by `other`'s (document numbers shifted);
        `learned`: other's documents were learnt, not trained on."""
        a, b = self.candidates, other.candidates
        n_subjects = max(a.n_subjects, b.n_subjects)
        candidates = Candidates(
            np.concatenate([a.docs, b.docs + self.n_documents]),
            np.concatenate([a.subjects, b.subjects]),
            np.concatenate([a.raw, b.raw]),
            np.concatenate([a.rank, b.rank]),
            n_subjects,
        )
        grouped = self.grouped and other.grouped
        groups = seen = doc_gold = None
        if grouped:
            ours, theirs = self._group_seen(n_subjects), other._group_seen(n_subjects)
            rows = {key: g for g, key in reversed(list(enumerate(_row_keys(ours))))}
            added, renumbered = [], np.zeros(theirs.shape[0], np.int64)
            for g, key in enumerate(_row_keys(theirs)):
                if key not in rows:
                    rows[key] = ours.shape[0] + len(added)
                    added.append(g)
                renumbered[g] = rows[key]
            groups = np.concatenate([self.doc_group, renumbered[other.doc_group]])
            seen = sp.vstack([ours, theirs[added]], "csr")
            doc_gold = self.doc_gold + other.doc_gold
        trained = self.trained if learned or self.trained < self.n_documents else None
        return HeldOut(
            candidates,
            np.concatenate([self.gold, other.gold]),
            self.n_documents + other.n_documents,
            self.per_source,
            groups,
            seen,
            doc_gold,
            trained,
        )

    def latest_learned(self, window: int) -> HeldOut:
        """Every trained document and the last `window` learnt ones."""
        drop = self.n_documents - self.trained - window
        if drop <= 0:
            return self
        keep = np.ones(self.n_documents, bool)
        keep[self.trained : self.trained + drop] = False
        number = np.cumsum(keep) - 1
        c = self.candidates
        rows = keep[c.docs]
        candidates = Candidates(
            number[c.docs[rows]],
            c.subjects[rows],
            c.raw[rows],
            c.rank[rows],
            c.n_subjects,
        )
        groups = seen = doc_gold = None
        if self.grouped:
            used, groups = np.unique(self.doc_group[keep], return_inverse=True)
            seen = self.group_seen.tocsr()[used]
            doc_gold = [g for g, k in zip(self.doc_gold, keep, strict=True) if k]
        return HeldOut(
            candidates,
            self.gold[rows],
            int(keep.sum()),
            self.per_source,
            None if groups is None else groups.astype(np.int64),
            seen,
            doc_gold,
            self.n_trained,
        )

    def save(self, path: Path) -> None:
        c = self.candidates
        arrays = {
            "docs": c.docs,
            "subjects": c.subjects,
            "raw": c.raw,
            "rank": c.rank,
            "gold": self.gold,
            "shape": np.asarray([self.n_documents, c.n_subjects, self.per_source]),
            "trained": np.asarray(self.trained),
        }
        if self.grouped:
            lengths = [len(g) for g in self.doc_gold]
            arrays.update(
                doc_group=self.doc_group,
                group_seen=self.group_seen,
                doc_gold=np.asarray(
                    [s for g in self.doc_gold for s in g], dtype=np.int64
                ),
                doc_gold_lengths=np.asarray(lengths, dtype=np.int64),
            )
        save_arrays(path, arrays)

    @classmethod
    def load(cls, path: Path) -> HeldOut:
        arrays = load_arrays(path)
        n_documents, n_subjects, per_source = (int(x) for x in arrays["shape"])
        columns = (arrays[k] for k in ("docs", "subjects", "raw", "rank"))
        candidates = Candidates(*columns, n_subjects)
        held = cls(candidates, arrays["gold"], n_documents, per_source)
        if "trained" in arrays and int(arrays["trained"]) < n_documents:
            held.n_trained = int(arrays["trained"])
        if "doc_group" in arrays:
            bounds = np.cumsum(arrays["doc_gold_lengths"])[:-1]
            held.doc_group = arrays["doc_group"].astype(np.int64)
            held.group_seen = arrays["group_seen"]
            held.doc_gold = [g.tolist() for g in np.split(arrays["doc_gold"], bounds)]
        return held


def _row_keys(matrix: sp.csr_matrix) -> list[bytes]:
    """A key per row of `matrix`: equal exactly when the rows are equal."""
    matrix = matrix.tocsr().copy()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    keys = []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        indices = matrix.indices[start:end].astype(np.int64).tobytes()
        data = matrix.data[start:end].astype(np.float64).tobytes()
        keys.append(hashlib.sha256(indices + b"|" + data).digest())
    return keys


# -- the backend --------------------------------------------------------------


class CalibratedBackend(EnsembleBackend):
    """An ensemble whose combination is learnt on held-out documents."""

    name = "calibrated"
    Params = CalibratedParams
    trainable = True  # unlike a plain ensemble, it learns its combination
    needs_training = True
    learns_online = True
    learn_writes_whole_model = True  # fusion.npz, fusion.json and heldout.npz

    def _frequency(self, seen: np.ndarray | None) -> np.ndarray:
        return np.zeros(len(self.project.vocab)) if seen is None else seen.astype(float)

    def _source_batches(self, sources, texts: list[str]) -> list[SuggestionBatch]:
        return [p.backend.suggest_batch(texts) for p, _ in sources]

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        sources = self.sources()
        ids = [p.id for p, _ in sources]
        if self.params.cross_fit:
            from backends.fusion_crossfit import CrossFit

            crossfit = CrossFit(self, sources, corpus, self.params.cross_fit, jobs)
            with crossfit.held():  # no source changes but by this run, at its end
                heldout = crossfit.run()
                if len(heldout.candidates) == 0:
                    raise InputError(
                        "The sources suggested nothing for the documents they were "
                        f"not trained on ({heldout.n_documents} scored in "
                        f"{crossfit.folds} folds): nothing to fit the fusion on. "
                        "Nothing was swapped in"
                    )
                info = {**self._fit(heldout, ids, directory), **crossfit.info(heldout)}
                crossfit.swap_in()
            crossfit.finish()
            # beside heldout_documents, as a tuning split's: is it a sample?
            return {**info, "documents_with_subjects": crossfit.labelled}
        for source, _ in sources:
            if not source.is_ready:
                raise NotTrainedError(
                    f"Source '{source.id}' of project '{self.project.id}' is not "
                    f"trained: run `indexer train {source.id} CORPUS` on other "
                    f"documents than the ones {self.project.id} is trained on, "
                    f"or train {self.project.id} with --cross-fit K"
                )
        sample, labelled = self._fit_sample(corpus)
        heldout = self._score(sources, corpus, self.params.per_source, sample)
        info = self._fit(heldout, ids, directory)
        return {**info, "documents_with_subjects": labelled}

    def _fit_sample(self, corpus) -> tuple[FitSample | None, int]:
        """The fit's sample of `corpus` (`fit_documents`; None: every document)
        and how many documents have known subjects."""
        from array import array

        from backends.fusion_crossfit import fit_sample
        from backends.fusion_folds import fit_sample_key

        # 8 bytes each: a list of Python integers was 44
        keys = array("Q", (fit_sample_key(d.text) for d in corpus if d.subjects))
        return fit_sample(keys, self.params.fit_documents), len(keys)

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        """Score the new documents with the sources, add them to the held-out
        scores kept from training and refit calibration and combination."""
        if not (previous / HELDOUT).is_file():
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained before the fusion could "
                f"learn online: retrain it once with `indexer train "
                f"{self.project.id} CORPUS`"
            )
        sources = self.sources()
        trained = FusionModel.load(previous).info.get("sources")
        if trained != [p.id for p, _ in sources]:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained with sources "
                f"{', '.join(trained or [])}: retrain it with `indexer train "
                f"{self.project.id} CORPUS`"
            )
        kept = HeldOut.load(previous / HELDOUT)
        # a document no source suggests anything for still counts: its gold
        # subjects are missed, which the unseen slots are chosen on
        new = self._score(sources, corpus, kept.per_source, None, learning=True)
        held = kept.extend(new, learned=True).latest_learned(self.params.learn_window)
        info = self._fit(held, trained, directory)
        # what this learn changed, in brief: the manifest keeps one per learn
        return {
            "documents_learned": new.n_documents,
            "heldout_documents": info["heldout_documents"],
            "unseen_slots": info.get("unseen_slots", {}).get("slots"),
        }

    def _manifest_after_learning(
        self, manifest: dict, corpus, seen: np.ndarray, info: dict
    ) -> dict:
        """The manifest lists the last LEARN_HISTORY learns; the calls and
        documents before them are summed in `learned_earlier` (a fusion may
        learn one document at a time, thousands of times)."""
        updated = super()._manifest_after_learning(manifest, corpus, seen, info)
        history = updated["learned"]
        if len(history) > LEARN_HISTORY:
            dropped = history[:-LEARN_HISTORY]
            earlier = updated.get("learned_earlier", {"calls": 0, "documents": 0})
            updated["learned_earlier"] = {
                "calls": earlier["calls"] + len(dropped),
                "documents": earlier["documents"]
                + sum(d["documents"] for d in dropped),
            }
            updated["learned"] = history[-LEARN_HISTORY:]
        return updated

    def _score(
        self,
        sources,
        corpus,
        per_source: int,
        sample: FitSample | None,
        learning: bool = False,
    ) -> HeldOut:
        """The sources' candidates for the documents of `corpus` that have
        known subjects and are in the fit's `sample` (a FitSample; None: all),
        and which of them are gold (when `learning`, there may be none: the
        held-out scores kept from training are fitted on)."""
        from tqdm import tqdm

        from backends.fusion_folds import sampled
        from indexer.corpus import batched

        gold, parts = [], []
        for docs in tqdm(
            batched(sampled(corpus, sample), self.params.batch_size),
            desc="Scoring with the sources",
            unit=" batches",
            leave=False,
            disable=None,
        ):
            gold += [d.subjects for d in docs]
            parts.append(self._source_batches(sources, [d.text for d in docs]))
        if not gold:
            raise InputError("No document of the corpus has a known subject")
        batches = [
            SuggestionBatch.vstack([p[s] for p in parts]) for s in range(len(sources))
        ]
        candidates = Candidates.from_batches(batches, per_source)
        if len(candidates) == 0 and not learning:
            raise InputError("The sources suggested nothing for the corpus")
        return HeldOut.of_group(candidates, gold, per_source, self.seen_subjects())

    def _fit(self, heldout: HeldOut, source_ids: list[str], directory: Path) -> dict:
        def fit(candidates, gold, frequency):
            return FusionModel.fit(
                candidates,
                gold,
                frequency,
                calibration=self.params.calibration,
                folds=self.params.folds,
                per_source=heldout.per_source,
                interactions=self.params.interactions,
            )

        frequency = heldout.frequency(self._frequency(self.seen_subjects()))
        model = fit(heldout.candidates, heldout.gold, frequency)
        model.info["sources"] = source_ids
        model.info["heldout_documents"] = heldout.n_documents
        model.info["unseen_examples"] = heldout.unseen_examples()
        if heldout.grouped and model.held_out_scores is not None:
            from backends.fusion_cv import choose_unseen_slots, source_gains

            zero_shot = [
                s for s, (p, _) in enumerate(self.sources()) if p.kind == LEXICAL
            ]
            model.info["unseen_slots"] = choose_unseen_slots(
                heldout,
                model.held_out_scores,
                self.params.unseen_depth,
                zero_shot,
            )
            if self.params.measure_sources:
                model.info["source_gains"] = source_gains(
                    heldout, fit, model.held_out_scores, source_ids
                )
        model.save(directory)
        heldout.save(directory / HELDOUT)
        return {k: v for k, v in model.info.items() if k != "features"}

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._sources = self.sources()
        self._model = FusionModel.load(directory)
        trained = self._model.info.get("sources")
        configured = [p.id for p, _ in self._sources]
        if trained != configured:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained with sources "
                f"{', '.join(trained or [])}, but is configured with "
                f"{', '.join(configured)}: retrain it"
            )
        self._seen = self.seen_subjects()
        self._slots = self.unseen_slots(self._seen)
        chosen = self._model.info.get("unseen_slots")
        if chosen and str(self.params.unseen_slots).strip().lower() == "auto":
            self._slots = int(chosen["slots"])  # cross-validated when it was fitted
        self._frequency_cache = self._frequency(self._seen)

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        batches = self._source_batches(self._sources, texts)
        candidates = Candidates.from_batches(batches, self._model.per_source)
        scores = self._model.predict(candidates, self._frequency_cache)
        matrix = sp.csr_matrix(
            (scores, (candidates.docs, candidates.subjects)),
            shape=(len(texts), len(self.project.vocab)),
        )
        batch = SuggestionBatch(matrix).filter(limit=self.params.candidates)
        return self.keep_unseen_slots(batch)

"""Zero-shot label matching: finds prefLabels and altLabels in the text.

Every concept with a label in the project language can be suggested without
training data. Candidates come from exact (stemmed) label phrases, compound
word heads (Finnish, German, ...) and partial matches of multi-word labels;
each gets features (occurrences, first position, spread, label type and
length, idf-weighted coverage, how many concepts share the matched label, how
many of its broader/narrower/related concepts matched, training frequency)
that a logistic model turns into a score. Untrained, hand-set weights are
used; `train` fits the weights.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from indexer.analyzer import get_analyzer
from indexer.backend import LEXICAL, Backend
from indexer.parallel import parallel_map
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
from indexer.suggestion import SuggestionBatch

COMPOUND_LANGUAGES = {"fi", "de", "sv", "nl", "da", "no", "nb", "nn", "et", "hu", "is"}
FEATURES = (
    "bias",
    "exact",
    "log_count",
    "first_position",
    "spread",
    "pref_label",
    "label_length",
    "compound_only",
    "coverage",
    "prior",
    "match_precision",
    "unambiguous",
    "neighbours",
)
# Weights used before training: exact matches of specific labels early in the
# text score high; partial coverage alone scores low.
DEFAULT_WEIGHTS = {
    "bias": -4.0,
    "exact": 1.5,
    "log_count": 1.0,
    "first_position": 1.0,
    "spread": 0.5,
    "pref_label": 0.3,
    "label_length": 1.0,
    "compound_only": -0.8,
    "coverage": 1.5,
    "prior": 0.0,
    "match_precision": 0.0,
    "unambiguous": 0.5,
    "neighbours": 0.3,
}
# smoothing (pseudo-matches) of a concept's match precision learnt in training
MATCH_PSEUDOCOUNT = 2.0
QUALIFIER = re.compile(r"\s*\([^)]*\)")


@dataclass
class LexicalParams:
    compounds: str = param(
        "auto", "match labels as heads of compound words", choices=["auto", "yes", "no"]
    )
    compound_min_length: int = param(
        5, "shortest label stem matched inside compounds", min=2
    )
    min_coverage: float = param(
        0.6,
        "idf-weighted share of a multi-word label's words that must occur",
        min=0.0,
        max=1.0,
    )
    candidates: int = param(100, "candidates kept per document", min=1)
    use_prior: bool = param(
        False,
        "after training, favour subjects frequent in training (lowers the "
        "recall of subjects unseen in training)",
    )
    regularisation: float = param(
        1.0, "inverse regularisation strength C of the trained weights", min=1e-6
    )


@dataclass
class _Match:
    positions: list[int] = field(default_factory=list)
    pref: bool = False
    length: int = 0
    exact: bool = False
    compound_only: bool = True
    coverage: float = 0.0
    senses: int = 1_000_000  # fewest concepts sharing a label that matched


class LexicalBackend(Backend):
    """Label matching with learnable feature weights (kind: lexical)."""

    name = "lexical"
    kind = LEXICAL
    Params = LexicalParams
    #: parameters read only when suggesting (cheap to tune with `indexer hyperopt`)
    search_space: ClassVar[dict] = {
        "min_coverage": [0.4, 0.5, 0.6, 0.8, 1.0],
        "compound_min_length": [4, 5, 6],
    }
    needs_training = False

    # -- index of the vocabulary's labels --------------------------------
    def _build_index(self) -> None:
        vocab = self.project.vocab
        lang = self.project.language
        analyzer = get_analyzer(lang)
        languages = [lang] if vocab.has_language(lang) else vocab.languages
        phrases: dict[tuple[str, ...], list[tuple[int, bool]]] = defaultdict(list)
        deprecated = vocab.deprecated
        for label_lang in languages:
            pref, alt, _ = vocab.labels_in(label_lang)
            for concept_id in range(len(vocab)):
                if deprecated[concept_id]:
                    continue
                labels = ([(pref[concept_id], True)] if pref[concept_id] else []) + [
                    (a, False) for a in alt[concept_id]
                ]
                for label, is_pref in labels:
                    # "realism (art)" is also matched as "realism"
                    for form in {label, QUALIFIER.sub("", label)}:
                        tokens = tuple(analyzer.tokens(form))
                        if tokens and (concept_id, is_pref) not in phrases[tokens]:
                            phrases[tokens].append((concept_id, is_pref))
        self._phrases = dict(phrases)
        self._neighbours = _neighbour_matrix(vocab)
        self._lengths = sorted({len(t) for t in phrases})
        self._heads = {
            t[0]
            for t in phrases
            if len(t) == 1 and len(t[0]) >= self.params.compound_min_length
        }
        # multi-word labels as a sparse labels x terms matrix for partial matches
        multi = [t for t in phrases if len(t) > 1]
        terms: dict[str, int] = {}
        rows, cols = [], []
        for row, tokens in enumerate(multi):
            for token in set(tokens):
                rows.append(row)
                cols.append(terms.setdefault(token, len(terms)))
        matrix = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)),
            shape=(len(multi), len(terms)),
        )
        df = np.asarray(matrix.sum(axis=0)).ravel()
        self._term_idf = np.log1p(len(multi) / np.maximum(df, 1)).astype(np.float32)
        weighted = matrix @ sp.diags(self._term_idf)
        totals = np.asarray(weighted.sum(axis=1)).ravel()
        totals[totals == 0] = 1
        self._multi_weights = sp.csr_matrix(sp.diags(1 / totals) @ weighted).T.tocsr()
        self._multi = multi
        self._terms = terms
        lang_code = lang.split("-")[0]
        self._use_compounds = self.params.compounds == "yes" or (
            self.params.compounds == "auto" and lang_code in COMPOUND_LANGUAGES
        )

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._build_index()
        self._weights = dict(DEFAULT_WEIGHTS)
        self._prior = self._match_precision = None
        if directory is not None:
            self._weights = json.loads((directory / "weights.json").read_text())
            counts = self.seen_subjects()
            if counts is not None and self.params.use_prior:
                self._prior = np.log1p(counts.astype(np.float32)) / math.log1p(
                    max(int(counts.max()), 1)
                )
            stats = load_arrays(directory / "match_stats.npz")
            self._match_precision = _smoothed_precision(
                stats["hits"], stats["matched"], float(stats["base_rate"])
            )

    # -- matching --------------------------------------------------------
    def _matches(self, text: str) -> tuple[dict[int, _Match], int]:
        tokens = get_analyzer(self.project.language).tokens(text)
        matches: dict[int, _Match] = defaultdict(_Match)
        for i in range(len(tokens)):
            for length in self._lengths:
                if i + length > len(tokens):
                    break
                entries = self._phrases.get(tuple(tokens[i : i + length]), ())
                senses = _senses(entries)
                for concept_id, is_pref in entries:
                    match = matches[concept_id]
                    self._record(match, i, is_pref, length, exact=True)
                    match.senses = min(match.senses, senses)
        if self._use_compounds:
            min_len = self.params.compound_min_length
            for i, token in enumerate(tokens):
                for start in range(1, len(token) - min_len + 1):
                    head = token[start:]
                    if head in self._heads:
                        entries = self._phrases[(head,)]
                        senses = _senses(entries)
                        for concept_id, is_pref in entries:
                            match = matches[concept_id]
                            self._record(match, i, is_pref, 1, exact=False)
                            match.senses = min(match.senses, senses)
                        break  # the longest head is the most specific
        self._partial_matches(tokens, matches)
        return matches, len(tokens)

    @staticmethod
    def _record(
        match: _Match, position: int, is_pref: bool, length: int, exact: bool
    ) -> None:
        match.positions.append(position)
        match.pref = match.pref or is_pref
        match.length = max(match.length, length)
        match.exact = match.exact or exact
        match.compound_only = match.compound_only and not exact
        match.coverage = 1.0

    def _partial_matches(self, tokens: list[str], matches: dict[int, _Match]) -> None:
        if not self._multi:
            return
        present = sorted({self._terms[t] for t in tokens if t in self._terms})
        if len(present) < 2:
            return
        coverage = np.asarray(self._multi_weights[present].sum(axis=0)).ravel()
        # a partial match needs two of the label's words, not one shared word
        words = np.asarray((self._multi_weights[present] > 0).sum(axis=0)).ravel()
        for row in np.flatnonzero(
            (coverage >= max(self.params.min_coverage, 1e-6)) & (words >= 2)
        ):
            entries = self._phrases[self._multi[row]]
            senses = _senses(entries)
            for concept_id, is_pref in entries:
                match = matches[concept_id]
                match.senses = min(match.senses, senses)
                if match.coverage < coverage[row]:
                    match.coverage = float(coverage[row])
                    match.pref = match.pref or is_pref
                    match.length = max(match.length, len(self._multi[row]))

    def _features(self, text: str) -> tuple[list[int], np.ndarray]:
        matches, n_tokens = self._matches(text)
        ids = list(matches)
        x = np.zeros((len(ids), len(FEATURES)), dtype=np.float32)
        n = max(n_tokens, 1)
        neighbours = self._matched_neighbours(ids)
        for row, concept_id in enumerate(ids):
            m = matches[concept_id]
            first = min(m.positions) if m.positions else n
            last = max(m.positions) if m.positions else n
            x[row] = (
                1.0,
                float(m.exact),
                math.log1p(len(m.positions)),
                1.0 - first / n,
                (last - first) / n,
                float(m.pref),
                min(m.length, 4) / 4,
                float(bool(m.positions) and m.compound_only),
                m.coverage,
                0.0 if self._prior is None else float(self._prior[concept_id]),
                0.0
                if self._match_precision is None
                else float(self._match_precision[concept_id]),
                1.0 / m.senses,
                math.log1p(neighbours[row]),
            )
        return ids, x

    def _matched_neighbours(self, ids: list[int]) -> np.ndarray:
        """For each matched concept, how many of its broader, narrower and
        related concepts matched too: a topic the text really is about tends
        to bring its neighbours along, a stray word does not."""
        if not ids:
            return np.zeros(0)
        matched = np.zeros(self._neighbours.shape[0], np.float32)
        matched[ids] = 1.0
        return self._neighbours[ids] @ matched

    def _score(self, x: np.ndarray) -> np.ndarray:
        # models trained before a feature existed give it no weight
        w = np.array([self._weights.get(name, 0.0) for name in FEATURES], np.float32)
        return 1 / (1 + np.exp(-(x @ w)))

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        rows = []
        for text in texts:
            ids, x = self._features(text)
            scores = self._score(x) if len(ids) else np.zeros(0, np.float32)
            if len(ids) > self.params.candidates:
                top = np.argsort(-scores)[: self.params.candidates]
                ids, scores = [ids[i] for i in top], scores[top]
            rows.append((ids, scores))
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

    # -- training --------------------------------------------------------
    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        from tqdm import tqdm

        self._build_index()
        self._weights = dict(DEFAULT_WEIGHTS)
        self._prior = self._match_precision = None
        n = len(self.project.vocab)
        counts, matched, hits = (np.zeros(n, np.float32) for _ in range(3))
        examples = []
        docs = [d for d in corpus if d.subjects]
        matches = parallel_map(self._features, [d.text for d in docs], jobs)
        bar = tqdm(
            docs, desc="Matching labels", unit=" docs", leave=False, disable=None
        )
        for doc, (ids, x) in zip(bar, matches, strict=True):
            counts[doc.subjects] += 1
            gold = set(doc.subjects)
            own = np.array([c in gold for c in ids], dtype=np.float32)
            matched[ids] += 1
            hits[ids] += own
            examples.append((ids, x, own))
        base_rate = float(hits.sum() / max(matched.sum(), 1))
        weights = self._fit_weights(examples, counts, matched, hits, base_rate)
        (directory / "weights.json").write_text(json.dumps(weights, indent=2))
        save_arrays(
            directory / "match_stats.npz",
            {"matched": matched, "hits": hits, "base_rate": np.float32(base_rate)},
        )
        return {"weights": weights, "candidates": int(sum(len(e[0]) for e in examples))}

    def _fit_weights(self, examples, counts, matched, hits, base_rate) -> dict:
        """Logistic regression on the candidates' features; a document's own
        subjects are left out of its prior and match-precision features."""
        from sklearn.linear_model import LogisticRegression

        examples = [e for e in examples if len(e[0])]
        targets = [own for _, _, own in examples]
        if not examples or len({t for y in targets for t in y.tolist()}) < 2:
            return dict(DEFAULT_WEIGHTS)
        scale = math.log1p(max(int(counts.max()), 1))
        prior_column = FEATURES.index("prior")
        precision_column = FEATURES.index("match_precision")
        for ids, x, own in examples:
            if self.params.use_prior:
                x[:, prior_column] = np.log1p(counts[ids] - own) / scale
            x[:, precision_column] = _smoothed_precision(
                hits[ids] - own, matched[ids] - 1, base_rate
            )
        x = np.vstack([e[1] for e in examples])
        y = np.concatenate(targets)
        model = LogisticRegression(
            C=self.params.regularisation, fit_intercept=False, max_iter=1000
        )
        model.fit(x, y)
        return dict(zip(FEATURES, map(float, model.coef_[0]), strict=True))

    def explain(self, text: str, subjects) -> dict[int, dict]:
        """The label text that matched each subject, and where."""
        self._ensure_loaded()
        matches, n_tokens = self._matches(text)
        out = {}
        for concept_id in subjects:
            m = matches.get(concept_id)
            if m is None:
                continue
            out[concept_id] = {
                "source": "label match",
                "occurrences": len(m.positions),
                "first_position": (min(m.positions) / max(n_tokens, 1))
                if m.positions
                else None,
                "exact": m.exact,
                "compound": m.compound_only and bool(m.positions),
                "coverage": round(m.coverage, 3),
                "concepts_sharing_the_label": m.senses,
            }
        return out


def _smoothed_precision(hits, matched, base_rate: float) -> np.ndarray:
    """Share of a concept's label matches that were gold, shrunk to the base rate."""
    return (hits + MATCH_PSEUDOCOUNT * base_rate) / (matched + MATCH_PSEUDOCOUNT)


def _senses(entries: list[tuple[int, bool]]) -> int:
    """How many concepts share one label."""
    return len({concept_id for concept_id, _ in entries})


def _neighbour_matrix(vocab) -> sp.csr_matrix:
    """Concepts x concepts, 1 where one is broader, narrower or related to the
    other."""
    n = len(vocab)
    total = sp.csr_matrix((n, n), dtype=np.float32)
    for name in ("broader", "narrower", "related"):
        indptr, indices = vocab.relation(name)
        data = np.ones(len(indices), np.float32)
        total = total + sp.csr_matrix((data, indices, indptr), shape=(n, n))
    total = total + total.T
    total.data[:] = 1.0
    total.setdiag(0)
    total.eliminate_zeros()
    return total.tocsr()

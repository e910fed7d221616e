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

import bisect
import itertools
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from indexer.backend import LEXICAL, Backend
from indexer.errors import NotTrainedError
from indexer.linear import LinearScorer
from indexer.parallel import parallel_map
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
from indexer.suggestion import SuggestionBatch
from indexer.trees import TreeEnsemble

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
    "fuzzy",
    "last_position",
    "doc_length",
    "candidates",
    "relative_count",
    "candidate_rate",
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
    "fuzzy": -1.0,
}
# smoothing (pseudo-matches) of a concept's match precision learnt in training
MATCH_PSEUDOCOUNT = 2.0
# A word of the text matches a label word that differs only in its ending when
# they share a prefix this long that leaves at most this many letters of the
# label word and of the text word unmatched: the Snowball stemmers of
# inflecting languages leave stem alternations ("vaihdevuod"/"vaihdevuos").
FUZZY_MIN_PREFIX = 5
FUZZY_LABEL_REST = 2
FUZZY_TEXT_REST = 3
# below this many training candidates a logistic model generalises better
TREE_MIN_CANDIDATES = 5000
QUALIFIER = re.compile(r"\s*\([^)]*\)")


@dataclass
class LexicalParams:
    label_language: str = param(
        "", "language of the labels matched (default: the project's)"
    )
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
    fuzzy: str = param(
        "auto",
        "match label words whose stems differ only in their endings",
        choices=["auto", "yes", "no"],
    )
    candidates: int = param(100, "candidates kept per document", min=1)
    scorer: str = param(
        "auto",
        "how training turns candidate features into scores: gradient-boosted "
        "trees, a logistic model, or auto (trees once the training corpus gives "
        f"{TREE_MIN_CANDIDATES} candidates)",
        choices=["auto", "trees", "linear"],
    )
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
    spans: list[tuple[int, int]] = field(default_factory=list)  # token ranges
    pref: bool = False
    length: int = 0
    exact: bool = False
    compound_only: bool = True
    fuzzy_only: bool = True
    coverage: float = 0.0
    senses: int = 1_000_000  # fewest concepts sharing a label that matched

    @property
    def positions(self) -> list[int]:
        """Where each mention starts: the spans of one concept's labels that
        overlap ("battery"/"batteries" at one place, or "kaivaukset" inside
        "arkeologiset kaivaukset") are one mention."""
        starts, end = [], -1
        for start, stop in sorted(set(self.spans), key=lambda s: (s[0], -s[1])):
            if start >= end:
                starts.append(start)
                end = stop
            else:
                end = max(end, stop)
        return starts


class LexicalBackend(Backend):
    """Label matching with learnable feature weights (kind: lexical)."""

    name = "lexical"
    kind = LEXICAL
    tokenizes = True
    Params = LexicalParams
    #: parameters read only when suggesting (cheap to tune with `indexer hyperopt`)
    search_space: ClassVar[dict] = {
        "min_coverage": [0.4, 0.5, 0.6, 0.8, 1.0],
        "compound_min_length": [4, 5, 6],
    }
    needs_training = False
    learns_online = True

    # -- index of the vocabulary's labels --------------------------------
    def _build_index(self) -> None:
        vocab = self.project.vocab
        lang = self.project.language
        # labels and documents through the same analyzer, so a label matches
        # the inflected forms of its words in a text
        self._analyzer = analyzer = self.project.analyzer
        languages = [self.labels_language(self.params.label_language)]
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
        use_fuzzy = self.params.fuzzy == "yes" or (
            self.params.fuzzy == "auto" and lang_code in COMPOUND_LANGUAGES
        )
        self._fuzzy = (
            _FuzzyWords({t for p in phrases for t in p}) if use_fuzzy else None
        )

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._build_index()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        self._trees = None
        self._prior = self._match_precision = self._candidate_rate = None
        if directory is None:
            return
        if (directory / "trees.json").is_file():
            self._trees = TreeEnsemble.load(directory, "trees")
            self._tree_columns = self._trees.columns(FEATURES)
        else:
            self._scorer = LinearScorer.load(FEATURES, directory / "weights.json")
        stats = self._match_stats_for_vocabulary(directory)
        if self.params.use_prior:
            # from this model version's own files, never through the link that
            # a training may swap meanwhile; older models kept no counts of
            # their own, so their training counts stand in
            counts = (
                stats["counts"]
                if "counts" in stats
                else _padded(
                    load_arrays(directory / "subjects.npz")["counts"],
                    len(self.project.vocab),
                )
            )
            self._prior = _log_scaled(counts, counts.max())
        self._match_precision = _smoothed_precision(
            stats["hits"], stats["matched"], float(stats["base_rate"])
        )
        if "documents" in stats:
            self._candidate_rate = _log_scaled(stats["matched"], stats["documents"])

    def _match_stats_for_vocabulary(self, directory: Path) -> dict:
        """The saved per-concept match statistics, zero-padded to today's
        vocabulary: concepts added since training have no history yet."""
        stats = load_arrays(directory / "match_stats.npz")
        n = len(self.project.vocab)
        for name in ("counts", "matched", "hits"):
            if name in stats:
                stats[name] = _padded(stats[name], n)
        return stats

    # -- matching --------------------------------------------------------
    def _matches(self, text: str) -> tuple[dict[int, _Match], int]:
        tokens = self._analyzer.tokens(text)
        words, fuzzy = tokens, [False] * len(tokens)
        if self._fuzzy is not None:
            words = [self._fuzzy.label_word(t) or t for t in tokens]
            fuzzy = [w != t for w, t in zip(words, tokens, strict=True)]
        matches: dict[int, _Match] = defaultdict(_Match)
        for i in range(len(tokens)):
            for length in self._lengths:
                if i + length > len(tokens):
                    break
                entries = self._phrases.get(tuple(words[i : i + length]), ())
                senses = _senses(entries)
                for concept_id, is_pref in entries:
                    match = matches[concept_id]
                    self._record(match, i, is_pref, length, exact=True)
                    match.fuzzy_only = match.fuzzy_only and any(fuzzy[i : i + length])
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
                            match.fuzzy_only = False
                            match.senses = min(match.senses, senses)
                        break  # the longest head is the most specific
        self._partial_matches(tokens, matches)
        return matches, len(tokens)

    @staticmethod
    def _record(
        match: _Match, position: int, is_pref: bool, length: int, exact: bool
    ) -> None:
        match.spans.append((position, position + length))
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
        mentions = [len(matches[c].positions) for c in ids]
        most = max(mentions, default=1) or 1
        for row, concept_id in enumerate(ids):
            m = matches[concept_id]
            positions = m.positions
            first = min(positions) if positions else n
            last = max(positions) if positions else n
            x[row] = (
                1.0,
                float(m.exact),
                math.log1p(len(positions)),
                1.0 - first / n,
                (last - first) / n,
                float(m.pref),
                min(m.length, 4) / 4,
                float(bool(positions) and m.compound_only),
                m.coverage,
                _value(self._prior, concept_id),
                _value(self._match_precision, concept_id),
                1.0 / m.senses,
                math.log1p(neighbours[row]),
                float(bool(positions) and m.fuzzy_only),
                1.0 - last / n,
                math.log1p(n_tokens),
                math.log1p(len(ids)),
                mentions[row] / most,
                _value(self._candidate_rate, concept_id),
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
        if self._trees is not None:
            return self._trees.predict(x[:, self._tree_columns]).astype(np.float32)
        return self._scorer(x)

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
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        self._trees = None
        self._prior = self._match_precision = self._candidate_rate = None
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
        stats = _MatchStats(counts, matched, hits, len(docs))
        x, y = self._training_rows(examples, stats)
        info = {"candidates": len(y)}
        if self._use_trees(y):
            trees = TreeEnsemble.fit(
                x, y, list(FEATURES), min_samples_leaf=min(200, max(5, len(y) // 100))
            )
            trees.save(directory, "trees")
            info["trees"] = len(trees.roots)
        else:
            scorer = LinearScorer.fit(
                FEATURES, x, y, DEFAULT_WEIGHTS, self.params.regularisation
            )
            scorer.save(directory / "weights.json")
            info["weights"] = scorer.weights
        self._save_match_stats(directory, stats)
        return info

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        """Add the new documents' label matches to the per-concept match
        statistics; the scorer learnt in training stays."""
        self._build_index()
        self._prior = self._match_precision = self._candidate_rate = None
        stats = load_arrays(previous / "match_stats.npz")
        if "documents" not in stats:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained before lexical could "
                f"learn online: retrain it once with `indexer train "
                f"{self.project.id} CORPUS`"
            )
        n = len(self.project.vocab)
        counts, matched, hits = (
            _padded(stats[name], n) for name in ("counts", "matched", "hits")
        )
        docs = [d for d in corpus if d.subjects]
        for doc in docs:
            ids, _ = self._features(doc.text)
            counts[doc.subjects] += 1
            matched[ids] += 1
            hits[ids] += np.isin(ids, doc.subjects)
        self._save_match_stats(
            directory,
            _MatchStats(counts, matched, hits, int(stats["documents"]) + len(docs)),
        )
        return {"documents_learned": len(docs)}

    def _save_match_stats(self, directory: Path, stats: _MatchStats) -> None:
        save_arrays(
            directory / "match_stats.npz",
            {
                "counts": stats.counts,
                "matched": stats.matched,
                "hits": stats.hits,
                "base_rate": np.float32(stats.base_rate),
                "documents": np.int64(stats.documents),
            },
        )

    def _use_trees(self, y: np.ndarray) -> bool:
        if not 0 < y.sum() < len(y):
            return False
        if self.params.scorer == "auto":
            return len(y) >= TREE_MIN_CANDIDATES
        return self.params.scorer == "trees"

    def _training_rows(self, examples, stats: _MatchStats):
        """All candidates' features and whether each was a gold subject.

        The features learnt from the corpus are computed leaving the
        candidate's own document out, so a subject's first occurrence looks
        like a subject never seen in training, as at suggest time."""
        examples = [e for e in examples if len(e[0])]
        if not examples:
            return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32)
        column = FEATURES.index
        for ids, x, own in examples:
            if self.params.use_prior:
                x[:, column("prior")] = _log_scaled(
                    stats.counts[ids] - own, stats.counts.max()
                )
            x[:, column("match_precision")] = _smoothed_precision(
                stats.hits[ids] - own, stats.matched[ids] - 1, stats.base_rate
            )
            x[:, column("candidate_rate")] = _log_scaled(
                stats.matched[ids] - 1, stats.documents - 1
            )
        x = np.vstack([e[1] for e in examples])
        y = np.concatenate([own for _, _, own in examples])
        return x, y

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


@dataclass
class _MatchStats:
    """Per concept: training frequency, documents where a label matched, and
    matched documents where it was a gold subject."""

    counts: np.ndarray
    matched: np.ndarray
    hits: np.ndarray
    documents: int

    @property
    def base_rate(self) -> float:
        return float(self.hits.sum() / max(self.matched.sum(), 1))


class _FuzzyWords:
    """Finds the label word that a text word differs from only in its ending."""

    def __init__(self, label_words: set[str]):
        self._words = set(label_words)
        self._sorted = sorted(w for w in label_words if len(w) >= FUZZY_MIN_PREFIX)
        self._cache: dict[str, str | None] = {}

    def label_word(self, word: str) -> str | None:
        if word in self._words:
            return word
        if word not in self._cache:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[word] = self._closest(word)
        return self._cache[word]

    def _closest(self, word: str) -> str | None:
        if len(word) < FUZZY_MIN_PREFIX:
            return None
        prefix = word[:FUZZY_MIN_PREFIX]
        start = bisect.bisect_left(self._sorted, prefix)
        best, best_key = None, None
        for candidate in itertools.islice(self._sorted, start, None):
            if not candidate.startswith(prefix):
                break
            shared = _common_prefix(word, candidate)
            if (
                len(candidate) - shared <= FUZZY_LABEL_REST
                and len(word) - shared <= FUZZY_TEXT_REST
            ):
                key = (shared, -abs(len(candidate) - len(word)))
                if best_key is None or key > best_key:
                    best, best_key = candidate, key
        return best


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _padded(values: np.ndarray, n: int) -> np.ndarray:
    """`values` as float32, zero-padded to `n` (the vocabulary may have grown)."""
    out = np.zeros(max(n, len(values)), np.float32)
    out[: len(values)] = values
    return out


def _log_scaled(values, top) -> np.ndarray:
    """log(1 + values) scaled so that `top` maps to 1."""
    values = np.maximum(np.asarray(values, dtype=np.float32), 0)
    return np.log1p(values) / math.log1p(max(float(top), 1.0))


def _value(array: np.ndarray | None, index: int) -> float:
    return 0.0 if array is None else float(array[index])


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

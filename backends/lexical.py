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

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from backends.lexical_index import (  # QUALIFIER: other backends import it here
    QUALIFIER,  # noqa: F401
    build_arrays,
    cached_index,
    index_identity,
    token_hashes,
    window_hashes,
)
from indexer.backend import LEXICAL, Backend
from indexer.corpus import batched
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
# below this many training candidates a logistic model generalises better
TREE_MIN_CANDIDATES = 5000
# The match statistics count every training document; the scorer learns from
# the candidates of at most this many of them (a seeded uniform sample beyond
# it), so training memory does not grow with the corpus
SCORER_DOCUMENTS = 50_000
# documents matched at a time (by `-j` processes)
MATCH_CHUNK = 4096


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
    def _open_index(self) -> None:
        """The label index, from the project's cache when it was built for
        this vocabulary version, analyzer and label language (memory-mapped),
        else built and cached."""
        project = self.project
        # labels and documents through the same analyzer, so a label matches
        # the inflected forms of its words in a text
        self._analyzer = analyzer = project.analyzer
        language = self.labels_language(self.params.label_language)
        identity = index_identity(project.vocab, str(project.analyzer_spec), language)
        self._index = cached_index(
            project.model_dir.parent / "lexical-index",
            identity,
            lambda: build_arrays(project.vocab, analyzer, language),
        )
        lang_code = project.language.split("-")[0]
        self._use_compounds = self.params.compounds == "yes" or (
            self.params.compounds == "auto" and lang_code in COMPOUND_LANGUAGES
        )
        use_fuzzy = self.params.fuzzy == "yes" or (
            self.params.fuzzy == "auto" and lang_code in COMPOUND_LANGUAGES
        )
        self._fuzzy = self._index.fuzzy_words() if use_fuzzy else None

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._open_index()
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
            found = self._fuzzy.label_words(tokens)
            words = [w or t for w, t in zip(found, tokens, strict=True)]
            fuzzy = [w != t for w, t in zip(words, tokens, strict=True)]
        index = self._index
        matches: dict[int, _Match] = defaultdict(_Match)
        for i, length, phrase in self._phrases_in(words):
            senses = index.senses(phrase)
            for concept_id, is_pref in index.entries(phrase):
                match = matches[concept_id]
                self._record(match, i, is_pref, length, exact=True)
                match.fuzzy_only = match.fuzzy_only and any(fuzzy[i : i + length])
                match.senses = min(match.senses, senses)
        if self._use_compounds:
            for i, phrase in self._compound_heads(tokens):
                senses = index.senses(phrase)
                for concept_id, is_pref in index.entries(phrase):
                    match = matches[concept_id]
                    self._record(match, i, is_pref, 1, exact=False)
                    match.fuzzy_only = False
                    match.senses = min(match.senses, senses)
        self._partial_matches(tokens, matches)
        return matches, len(tokens)

    def _phrases_in(self, words: list[str]) -> list[tuple[int, int, int]]:
        """(start, length, phrase) of each label phrase among `words`, by
        start, then length."""
        hashes = token_hashes(words)
        found = []
        for length in self._index.lengths:
            phrases = self._index.find(window_hashes(hashes, length))
            found.extend(
                (int(i), length, int(phrases[i])) for i in np.flatnonzero(phrases >= 0)
            )
        return sorted(found)

    def _compound_heads(self, tokens: list[str]) -> list[tuple[int, int]]:
        """(position, phrase) of each token that ends in a one-word label of
        at least compound_min_length letters: the longest such label, the most
        specific."""
        min_len = self.params.compound_min_length
        heads = [
            (i, token[start:])
            for i, token in enumerate(tokens)
            for start in range(1, len(token) - min_len + 1)
        ]
        phrases = self._index.one_word_phrases([head for _, head in heads])
        found: dict[int, int] = {}
        for (i, _), phrase in zip(heads, phrases.tolist(), strict=True):
            if phrase >= 0 and i not in found:
                found[i] = phrase
        return sorted(found.items())

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
        index = self._index
        if not len(index.multi_phrases):
            return
        present = index.terms(token_hashes(tokens))
        if len(present) < 2:
            return
        # the text's terms x the multi-word phrases that have any of them:
        # summed over the phrases touched only, not every phrase of the index
        weights = index.multi_weights[present]
        rows, entry_row = np.unique(weights.indices, return_inverse=True)
        # float32 sums in the terms' order, as the index's shares were built
        coverage = np.zeros(len(rows), weights.dtype)
        np.add.at(coverage, entry_row, weights.data)
        # a partial match needs two of the label's words, not one shared word
        words = np.bincount(entry_row[weights.data > 0], minlength=len(rows))
        for k in np.flatnonzero(
            (coverage >= max(self.params.min_coverage, 1e-6)) & (words >= 2)
        ):
            row = rows[k]
            phrase = int(index.multi_phrases[row])
            length = int(index.phrase_lengths[phrase])
            senses = index.senses(phrase)
            for concept_id, is_pref in index.entries(phrase):
                match = matches[concept_id]
                match.senses = min(match.senses, senses)
                if match.coverage < coverage[k]:
                    match.coverage = float(coverage[k])
                    match.pref = match.pref or is_pref
                    match.length = max(match.length, length)

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
        # the matched concepts' rows, restricted to the matched columns (a
        # vector over the whole vocabulary per document cost more than this)
        rows = self._index.neighbours[ids]
        counts = np.diff(rows.indptr)
        hit = np.isin(rows.indices, ids)
        row_of = np.repeat(np.arange(len(ids)), counts)
        return np.bincount(
            row_of[hit], weights=rows.data[hit], minlength=len(ids)
        ).astype(np.float32)

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

        self._open_index()
        self._scorer = LinearScorer(FEATURES, dict(DEFAULT_WEIGHTS))
        self._trees = None
        self._prior = self._match_precision = self._candidate_rate = None
        n = len(self.project.vocab)
        counts, matched, hits = (np.zeros(n, np.float32) for _ in range(3))
        sample = _Reservoir(SCORER_DOCUMENTS)
        documents = 0
        with tqdm(
            desc="Matching labels", unit=" docs", leave=False, disable=None
        ) as bar:
            for chunk in batched((d for d in corpus if d.subjects), MATCH_CHUNK):
                # only the documents the scorer may learn from need features
                slots = [sample.slot() for _ in chunk]
                tasks = [
                    (d.text, slot is not None)
                    for d, slot in zip(chunk, slots, strict=True)
                ]
                matches = parallel_map(self._training_matches, tasks, jobs)
                for doc, slot, (ids, x) in zip(chunk, slots, matches, strict=True):
                    counts[doc.subjects] += 1
                    gold = set(doc.subjects)
                    own = np.array([c in gold for c in ids], dtype=np.float32)
                    matched[ids] += 1
                    hits[ids] += own
                    if slot is not None:
                        sample.put(slot, (ids, x, own))
                documents += len(chunk)
                bar.update(len(chunk))
        stats = _MatchStats(counts, matched, hits, documents)
        x, y = self._training_rows(sample.items, stats)
        info = {"candidates": len(y), "scorer_documents": len(sample.items)}
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

    def _training_matches(self, task: tuple[str, bool]):
        """A training document's matched concepts, with their features when
        the scorer may learn from it (a third of the time goes to them)."""
        text, featured = task
        if featured:
            return self._features(text)
        return list(self._matches(text)[0]), None

    def _learn(self, corpus, previous: Path, directory: Path) -> dict:
        """Add the new documents' label matches to the per-concept match
        statistics; the scorer learnt in training stays."""
        self._open_index()
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


class _Reservoir:
    """A seeded uniform sample of at most `size` items of a stream (all of
    them, in order, while there are no more than `size`)."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.items: list = []
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, item) -> None:
        slot = self.slot()
        if slot is not None:
            self.put(slot, item)

    def slot(self) -> int | None:
        """Where the next item of the stream goes, None if it is left out:
        drawn before the item is made, so an item left out costs nothing.
        Items must be `put` in the order of their slots' draws."""
        self._seen += 1
        if self._seen <= self.size:
            return self._seen - 1
        slot = int(self._rng.integers(self._seen))
        return slot if slot < self.size else None

    def put(self, slot: int, item) -> None:
        if slot == len(self.items):
            self.items.append(item)
        else:
            self.items[slot] = item


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

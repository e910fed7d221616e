"""From generated terms to concepts of the vocabulary, in three steps, the
first that finds anything wins: a label written the same way (prefLabel or
altLabel, which holds the hiddenLabels too; case-insensitive; a label's
qualifier in parentheses may be left out), a label whose words all stem
alike (the project's Snowball analyzer), else the `map_candidates` nearest
concepts of the embed concept index above a similarity floor. Deprecated
concepts are never in either index, so no term maps to one, and nothing
outside the vocabulary can come out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from backends.lexical import QUALIFIER
from indexer.analyzer import get_analyzer

EXACT, STEMMED, EMBEDDING = "exact", "stemmed", "embedding"
KINDS = (EXACT, STEMMED, EMBEDDING)  # best first


@dataclass(frozen=True)
class TermMatch:
    """One generated term mapped to one concept."""

    term: str
    rank: int  # the term's place in the model's list, from 1
    concept: int
    kind: str  # exact, stemmed or embedding
    label: str = ""  # the label that matched (exact, stemmed)
    similarity: float = 0.0  # embedding: cosine similarity
    senses: int = 1  # how many concepts the term mapped to


class LabelIndex:
    """The vocabulary's labels in one language: written forms and stems."""

    def __init__(self, vocab, language: str):
        self.analyzer = get_analyzer(language)
        self.exact: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.stemmed: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
        pref, alt, _ = vocab.labels_in(language)
        deprecated = vocab.deprecated
        for concept in range(len(vocab)):
            if deprecated[concept]:
                continue
            for label in ([pref[concept]] if pref[concept] else []) + alt[concept]:
                for form in dict.fromkeys((label, QUALIFIER.sub("", label))):
                    self._add(form, concept, label)

    def _add(self, form: str, concept: int, label: str) -> None:
        entry = (concept, label)
        written = written_form(form)
        if written and entry not in self.exact[written]:
            self.exact[written].append(entry)
        stems = tuple(self.analyzer.tokens(form))
        if stems and entry not in self.stemmed[stems]:
            self.stemmed[stems].append(entry)

    def lookup(self, term: str) -> tuple[str, list[tuple[int, str]]] | None:
        """(exact or stemmed, [(concept, label)]) of `term`; None when no
        label matches it."""
        found = self.exact.get(written_form(term))
        if found:
            return EXACT, _one_per_concept(found)
        found = self.stemmed.get(tuple(self.analyzer.tokens(term)))
        if found:
            return STEMMED, _one_per_concept(found)
        return None


class TermMapper:
    """Maps the terms of many documents at once (one embedding batch)."""

    def __init__(self, labels: LabelIndex, embed, candidates: int, floor: float):
        self.labels = labels
        self.embed = embed  # an EmbedBackend part: retrieve(texts) -> (sims, ids)
        self.candidates = candidates
        self.floor = floor

    def map(self, term_lists: list[list[str]]) -> list[list[TermMatch]]:
        """Per document, every (term, concept) match of its terms."""
        out: list[list[TermMatch]] = [[] for _ in term_lists]
        unmatched: list[tuple[int, int, str]] = []  # (document, rank, term)
        for doc, terms in enumerate(term_lists):
            for rank, term in enumerate(terms, start=1):
                found = self.labels.lookup(term)
                if found is None:
                    unmatched.append((doc, rank, term))
                    continue
                kind, entries = found
                out[doc] += [
                    TermMatch(term, rank, concept, kind, label, senses=len(entries))
                    for concept, label in entries
                ]
        for (doc, rank, term), nearest in zip(
            unmatched, self._nearest([t for _, _, t in unmatched]), strict=True
        ):
            out[doc] += [
                TermMatch(
                    term, rank, concept, EMBEDDING, similarity=sim, senses=len(nearest)
                )
                for concept, sim in nearest
            ]
        return out

    def _nearest(self, terms: list[str]) -> list[list[tuple[int, float]]]:
        """The nearest concepts of each term above the floor, best first."""
        if not terms or self.embed is None:
            return [[] for _ in terms]
        sims, ids = self.embed.retrieve(terms)
        return [
            [
                (int(concept), float(sim))
                for sim, concept in zip(row_sims, row_ids, strict=True)
                if concept >= 0 and sim >= self.floor
            ][: self.candidates]
            for row_sims, row_ids in zip(sims, ids, strict=True)
        ]


def written_form(text: str) -> str:
    """`text` compared as written: case-folded, runs of white space as one."""
    return " ".join(text.casefold().split())


def _one_per_concept(entries: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The first matching label of each concept."""
    seen: dict[int, str] = {}
    for concept, label in entries:
        seen.setdefault(concept, label)
    return list(seen.items())

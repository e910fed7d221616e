"""Which documents go where in a cross-fit of the calibrated fusion, by the
md5 of their texts (the same on every run and every Ray worker): the fold of
each document, the sample the fusion is fitted on (`fit_documents`), one
streamed survey of the corpus, and a fold's documents streamed from it."""

from __future__ import annotations

import dataclasses
import hashlib
from array import array
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from indexer.corpus import Corpus, CorpusStats, Document


def fold_of(text: str, folds: int) -> int:
    """The fold of a document: the md5 of its text, modulo `folds`."""
    return _digest(text) % folds


def _digest(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16)


def fit_sample_key(text: str) -> int:
    """A document's place in the order the fit's sample is taken in: the high
    64 bits of the md5 of its text. The fold is the whole md5 modulo K, and
    its low 64 bits alone spread the sample's documents evenly over the
    folds, so every fold gets its share."""
    return _digest(text) >> 64


@dataclasses.dataclass(frozen=True)
class FitSample:
    """Which documents with known subjects the fit takes, at most `fit_documents`:
    those whose `fit_sample_key` is below `bound`, and the first `ties` of those
    at it, in the corpus's order. Copies of a text share its key, so a text
    repeated thousands of times (a boilerplate abstract) at the bound must not
    all come along."""

    bound: int
    ties: int

    @classmethod
    def of(cls, keys: Sequence[int], limit: int) -> FitSample | None:
        """The sample of at most `limit` (0: no limit) of the documents with
        these keys; None when all of them are fitted on."""
        if not limit or len(keys) <= limit:
            return None
        keys = np.asarray(keys, np.uint64)
        bound = int(np.partition(keys, limit - 1)[limit - 1])
        return cls(bound, limit - int((keys < bound).sum()))

    def taken(self, documents: Iterable[Document]) -> Iterator[Document]:
        """Those of `documents` (with known subjects, in the corpus's order)
        in the sample. Copies of a text are in one fold, so a fold's documents
        take the same copies as the whole corpus's."""
        at_bound = 0
        for doc in documents:
            key = fit_sample_key(doc.text)
            if key == self.bound and at_bound < self.ties:
                at_bound += 1
                yield doc
            elif key < self.bound:
                yield doc


def sampled(
    documents: Iterable[Document], sample: FitSample | None
) -> Iterator[Document]:
    """The documents with known subjects in the fit's `sample` (None: all)."""
    labelled = (d for d in documents if d.subjects)
    return labelled if sample is None else sample.taken(labelled)


@dataclasses.dataclass
class CorpusSurvey:
    """What a cross-fit needs to know of its corpus, from one streamed read:
    its digest (texts and resolved subjects), the md5 of every text with a
    known subject (16 bytes each, in two arrays: a Python integer for each
    was 100 bytes, a gigabyte at ten million records), and how often each
    subject occurs (in a fold: counted as the fold is scored, so that a
    mistyped --cross-fit 100000 allocates no folds x subjects table)."""

    digest: str
    keys: np.ndarray  # uint64: the md5's high half, the `fit_sample_key`
    low: np.ndarray  # uint64: the md5's low half
    counts: np.ndarray  # of each subject

    @classmethod
    def of(cls, corpus: Corpus, n_subjects: int) -> CorpusSurvey:
        sha = hashlib.sha256()
        keys, low = array("Q"), array("Q")
        counts = np.zeros(n_subjects, np.int64)
        for doc in corpus:
            sha.update(doc.text.encode())
            sha.update(" ".join(map(str, doc.subjects)).encode() + b"\n")
            if doc.subjects:
                digest = _digest(doc.text)
                keys.append(digest >> 64)
                low.append(digest & (2**64 - 1))
                np.add.at(counts, doc.subjects, 1)
        return cls(
            sha.hexdigest()[:16],
            np.array(keys, np.uint64),
            np.array(low, np.uint64),
            counts,
        )

    @property
    def labelled(self) -> int:
        """How many documents have a known subject."""
        return len(self.keys)

    def folds_of(self, folds: int) -> np.ndarray:
        """The fold (`fold_of`) of each document with a known subject: its md5
        modulo `folds`, from the two halves."""
        if folds < 2**32:  # no product below reaches 2**64
            high = self.keys % np.uint64(folds) * np.uint64(2**64 % folds)
            return (high + self.low % np.uint64(folds)) % np.uint64(folds)
        whole = self.keys.astype(object) * 2**64 + self.low.astype(object)
        return whole % folds


class FoldCorpus(Corpus):
    """The documents of `corpus` in fold `fold` of `folds` or, `outside`, in
    the other folds; streamed (each iteration reads `corpus` again), so a
    cross-fit holds no copy of a catalogue's texts."""

    def __init__(self, corpus: Corpus, folds: int, fold: int, outside: bool):
        super().__init__([], corpus.vocab, corpus.language)
        self.corpus, self.folds, self.fold, self.outside = corpus, folds, fold, outside

    def __iter__(self) -> Iterator[Document]:
        self.stats = CorpusStats()
        for doc in self.corpus:
            if (fold_of(doc.text, self.folds) == self.fold) == self.outside:
                continue
            self.stats.documents += 1
            self.stats.subject_refs += len(doc.subjects)
            if not doc.subjects:
                self.stats.without_subjects += 1
            yield doc

    def digest(self) -> str:
        part = f"{self.corpus.digest()} {self.folds} {self.fold} {self.outside}"
        return hashlib.sha256(part.encode()).hexdigest()[:16]


def scored_documents(
    corpus: Corpus, folds: int, fold: int, sample: FitSample | None
) -> list[Document]:
    """The documents of `fold` the sources trained without it score: those
    with a known subject, in the fit's `sample`."""
    return list(sampled(FoldCorpus(corpus, folds, fold, outside=False), sample))

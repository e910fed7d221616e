"""Cross-fitting the calibrated fusion: every training document scored by
sources that were not trained on it.

A fusion fitted on a small tuning split learns from few documents and few
subjects new to its sources. Cross-fitting splits the training corpus into K
folds (by the md5 of each text: the same folds on every run); for each fold
the sources are trained on the other K-1 folds and score the fold. The fusion
then learns from all training documents, and a subject that occurs only in one
fold is new to the sources that score it, as a new subject is on new documents.
Finally the sources are trained on the whole corpus, the models that serve.

Sources whose class sets `cross_fit = "reuse"`, or that the project names in
`cross_fit_reuse`, are trained once on the whole corpus and score every fold
(for slow sources whose training does not memorise documents). Each scored
fold is saved under the project's `cross-fit` folder, so an interrupted run
resumes with the next fold; the folder is removed when the fusion is saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from indexer.backend import ENSEMBLE
from indexer.corpus import Corpus, Document, ResolvedCorpus
from indexer.errors import ConfigError, InputError
from indexer.rendering import jsonable
from indexer.suggestion import SuggestionBatch

REFIT, REUSE = "refit", "reuse"


def fold_of(text: str, folds: int) -> int:
    """The fold of a document: the md5 of its text, modulo `folds`."""
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % folds


class CrossFit:
    """Out-of-fold scores of a calibrated fusion's sources (see the module)."""

    def __init__(self, fusion, sources, corpus: Corpus, folds: int, jobs: int = 1):
        if folds < 2:
            raise ConfigError(
                f"Project '{fusion.project.id}': cross_fit must be 0 (fit on the "
                f"corpus as the sources score it) or at least 2 folds, got {folds}"
            )
        self.fusion = fusion
        self.sources = [project for project, _ in sources]
        self.corpus = corpus
        self.folds = folds
        self.jobs = jobs
        self.workdir = fusion.project.model_dir.parent / "cross-fit"
        reuse = {s.strip() for s in fusion.params.cross_fit_reuse.split(",")}
        self.policy = {p.id: self._policy(p, reuse) for p in self.sources}

    def _policy(self, source, reuse: set[str]) -> str:
        if source.kind == ENSEMBLE:
            raise ConfigError(
                f"Project '{self.fusion.project.id}': source '{source.id}' is an "
                "ensemble; a cross-fitted fusion needs trained sources: use its "
                "sources directly"
            )
        if not source.backend_class.trainable:
            return REUSE  # nothing of its own to train: the same in every fold
        if source.id in reuse or source.backend_class.cross_fit == REUSE:
            return REUSE
        return REFIT

    # -- the run ---------------------------------------------------------------
    def run(self):
        """The HeldOut of every training document with a known subject, one
        group per fold, after training every source on the whole corpus."""
        from tqdm import tqdm

        from backends.fusion import HeldOut

        documents = list(self.corpus)
        if not any(d.subjects for d in documents):
            raise InputError("No document of the corpus has a known subject")
        self._start(documents)
        self._train_sources_on_everything()
        folds = [fold_of(d.text, self.folds) for d in documents]
        held = None
        bar = tqdm(
            range(self.folds),
            desc="Cross-fitting the sources",
            unit=" folds",
            disable=None,
        )
        for fold in bar:
            part = self._fold(fold, documents, folds)
            held = part if held is None else held.extend(part)
        assert isinstance(held, HeldOut)
        return held

    def finish(self) -> None:
        """Remove the per-fold work (after the fusion was saved)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self, held) -> dict:
        return {
            "cross_fit": {
                "folds": self.folds,
                "sources": self.policy,
                "documents": int(held.n_documents),
                "unseen_examples": held.unseen_examples(),
            }
        }

    def _plan(self, documents: list[Document]) -> dict:
        """What the saved folds were computed from: a change starts afresh."""
        return {
            "folds": self.folds,
            "corpus": ResolvedCorpus(documents, None, "").digest(),
            "per_source": self.fusion.params.per_source,
            "sources": {
                p.id: [
                    p.config.backend,
                    self.policy[p.id],
                    jsonable(dataclasses.asdict(p.backend.params), full_paths=True),
                ]
                for p in self.sources
            },
        }

    def _start(self, documents: list[Document]) -> None:
        plan = self._plan(documents)
        path = self.workdir / "plan.json"
        try:
            same = json.loads(path.read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir.mkdir(parents=True)
            _write_atomically(path, json.dumps(plan, indent=2).encode())

    def _train_sources_on_everything(self) -> None:
        """Train each trainable source on the whole corpus, unless its model
        already is of this corpus and these settings (a resumed run)."""
        digest = self.corpus.digest()
        for source in self.sources:
            if not source.backend_class.trainable:
                continue
            backend = source.backend
            manifest = backend.manifest or {}
            params = jsonable(dataclasses.asdict(backend.params), full_paths=True)
            if manifest.get("corpus_digest") == digest and (
                manifest.get("params") == params and backend.is_trained
            ):
                continue
            backend.train(self.corpus, jobs=self.jobs)

    def _fold(self, fold: int, documents: list[Document], folds: list[int]):
        from backends.fusion import Candidates, HeldOut

        path = self.workdir / f"fold-{fold}.npz"
        if path.is_file():
            return HeldOut.load(path)
        training = [d for d, f in zip(documents, folds, strict=True) if f != fold]
        scored = [
            d for d, f in zip(documents, folds, strict=True) if f == fold and d.subjects
        ]
        vocab = self.fusion.project.vocab
        corpus = ResolvedCorpus(training, vocab, self.corpus.language)
        seen = np.zeros(len(vocab), np.int64)
        for doc in training:
            np.add.at(seen, doc.subjects, 1)
        if not scored:
            raise InputError(
                f"Fold {fold + 1} of {self.folds} has no document with a known "
                "subject: use fewer folds or a larger corpus"
            )
        texts = [d.text for d in scored]
        batches = [self._scores(source, fold, corpus, texts) for source in self.sources]
        per_source = self.fusion.params.per_source
        candidates = Candidates.from_batches(batches, per_source)
        held = HeldOut.of_group(
            candidates, [d.subjects for d in scored], per_source, seen
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
        held.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        return held

    def _scores(self, source, fold: int, corpus, texts: list[str]) -> SuggestionBatch:
        """`source`'s scores of the fold's texts, from a model trained on the
        other folds (or the whole corpus, for sources that are reused)."""
        if self.policy[source.id] == REUSE:
            backend = source.backend
            return self._suggest(backend, texts)
        directory = self.workdir / f"fold-{fold}-{source.id}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        try:
            backend = source.new_backend()
            backend.train_part(corpus, directory, self.jobs)
            backend.load_part(directory)
            return self._suggest(backend, texts)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _suggest(self, backend, texts: list[str]) -> SuggestionBatch:
        size = self.fusion.params.batch_size
        return SuggestionBatch.vstack(
            [
                backend.suggest_batch(texts[i : i + size])
                for i in range(0, len(texts), size)
            ]
        )


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

"""Cross-fitting the calibrated fusion: every training document scored by
sources that were not trained on it.

A fusion fitted on a small tuning split learns from few documents and few
subjects new to its sources. Cross-fitting splits the training corpus into K
folds (by the md5 of each text: the same folds on every run); for each fold
the sources are trained on the other K-1 folds and score the fold. The fusion
then learns from all training documents, and a subject that occurs only in one
fold is new to the sources that score it, as a new subject is on new documents.
The sources are also trained on the whole corpus: the models that serve.

The serving models are protected throughout. K is checked against the corpus
before anything is trained; every source's lock is held for the whole run (a
`train`, `learn` or `clear` of a source meanwhile is refused as busy); the
sources' new models are trained into a staging folder and swapped in only
once the fusion is fitted, so a run that fails or is interrupted leaves every
source as it was. The corpus is read again for every training, so a run
whose corpus's files changed meanwhile is refused as its next fold is saved
(or at its end), nothing swapped in or kept.

Sources whose class sets `cross_fit = "reuse"`, or that the project names in
`cross_fit_reuse`, are trained once on the whole corpus and score every fold
(for slow sources whose training does not memorise documents). Each scored
fold and each staged model is saved under the project's `cross-fit` folder, so
an interrupted run resumes with the next fold; the folder is removed when the
fusion is saved. The plan saved beside them (folds, corpus, and the sources in
order, with their language, backend and parameters) decides what is reused.

The trainings run here one after another, or, within `cross_fit_engine`, on
another engine (`backends.fusion_ray`: each training a Ray task); either way
the folds are scored, saved and fitted here, the same way.

On a large corpus the sources score, and the fusion is fitted on, a sample of
the documents: at most `fit_documents` of those with known subjects (the
fit's memory grows with the documents it is fitted on, about 0.1 MB each;
a few thousand documents are plenty for its few dozen coefficients). The
sample is fixed by the texts, as the folds are (`backends.fusion_folds`), so every
run and every Ray worker takes the same documents (of the copies of the text
where it ends, the first ones in the corpus's order: `FitSample`); the sources
are still trained on every document. A fold the sample leaves without a
document has nothing to score: its sources are not trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from backends.fusion_folds import (
    CorpusSurvey,
    FitSample,
    FoldCorpus,
    sampled,
)
from indexer.backend import ENSEMBLE
from indexer.corpus import Corpus, Document
from indexer.errors import ConfigError, InputError
from indexer.rendering import jsonable
from indexer.storage import atomic_directory, read_manifest
from indexer.suggestion import SuggestionBatch

REFIT, REUSE = "refit", "reuse"

_ENGINE = None  # where the trainings run, if not here (see cross_fit_engine)


@contextmanager
def cross_fit_engine(engine) -> Iterator[None]:
    """Run the trainings of cross-fits started meanwhile on `engine` (its
    `run(crossfit, documents, todo, staging)` yields each fold's scores)."""
    global _ENGINE
    previous, _ENGINE = _ENGINE, engine
    try:
        yield
    finally:
        _ENGINE = previous


def fit_sample(keys: Sequence[int], limit: int) -> FitSample | None:
    """`FitSample.of` these keys, said on stderr when it is a sample."""
    sample = FitSample.of(keys, limit)
    if sample is not None:
        tell(
            f"The sources score, and the fusion is fitted on, {limit:,} of the "
            f"{len(keys):,} documents with known subjects (fit_documents)"
        )
    return sample


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
        self.staged: dict[str, Path] = {}  # source -> its staged whole model
        self._staged_backends: dict = {}

    def _policy(self, source, reuse: set[str]) -> str:
        if source.kind == ENSEMBLE:
            raise ConfigError(
                f"Project '{self.fusion.project.id}': source '{source.id}' is an "
                "ensemble; a cross-fitted fusion needs trained sources: use its "
                "sources directly"
            )
        refusal = getattr(source.backend, "cross_fit_refusal", None)
        why = refusal() if refusal is not None else ""
        if why:
            raise ConfigError(f"Project '{self.fusion.project.id}': {why}")
        if not source.backend_class.trainable:
            return REUSE  # nothing of its own to train: the same in every fold
        if source.id in reuse or source.backend_class.cross_fit == REUSE:
            return REUSE
        return REFIT

    # -- the run ---------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """Every source's lock, for the whole run: nobody trains, updates or
        clears a source while it is cross-fitted (BusyError if one is busy)."""
        with ExitStack() as stack:
            for source in self.sources:
                stack.enter_context(source.lock.hold())
            yield

    def run(self):
        """The HeldOut of every training document with a known subject, one
        group per fold; the sources' whole-corpus models wait in staging for
        `swap_in`. Call it while `held`."""
        self.corpus_digest = self.corpus.digest()  # of its files, as first read
        n_subjects = len(self.fusion.project.vocab)
        self.survey = survey = CorpusSurvey.of(self.corpus, n_subjects)
        self.check_folds(survey)  # refused before anything is trained
        self.sample = self._sample(survey)
        done = self._start(survey)
        staging = self._staging()
        if _ENGINE is not None:
            held = self._run_on(_ENGINE, done, staging)
        else:
            held = self._run_here(done, staging)
        self._check_unchanged()
        return held

    def _check_unchanged(self) -> None:
        """An InputError when the corpus's files changed during the run (as
        each fold is saved, and at the end): it is read again for every
        training, so the sources and the folds would have learnt from
        different corpora."""
        now = self.corpus.digest()
        if now != self.corpus_digest:
            # nothing of this run can be trusted, not even once the corpus is
            # as it began: its plan would have the folds reused
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise InputError(
                "The corpus changed while it was cross-fitted (digest "
                f"{self.corpus_digest} when the run began, {now} at its end): "
                "every training reads it again, so the sources and the folds "
                "learnt from different documents. Nothing was swapped in or "
                "kept: train again once its files stay as they are"
            )

    def _run_here(self, done: set[int], staging):
        """`run`, the trainings in this process, one after another."""
        from tqdm import tqdm

        from backends.fusion import HeldOut

        for source, staged in staging:
            tell(f"Training '{source.id}' on the whole corpus (staged)")
            stage_model(source, self.corpus, staged, self.jobs)
            self.staged[source.id] = staged
        held = None
        bar = tqdm(
            range(self.folds),
            desc="Cross-fitting the sources",
            unit=" folds",
            disable=None,
        )
        for fold in bar:
            started = time.perf_counter()
            part = self._fold(fold)
            held = part if held is None else held.extend(part)
            if bar.disable:  # no bar (not a terminal): a line per fold instead
                how = (
                    "reused"
                    if fold in done
                    else f"{time.perf_counter() - started:.1f} s"
                )
                tell(f"Cross-fitting: fold {fold + 1} of {self.folds} done ({how})")
        assert isinstance(held, HeldOut)
        return held

    def _run_on(self, engine, done, staging):
        """`run`, the trainings on `engine`: each fold is saved as its scores
        come, the staged models are recorded as they are trained."""
        from backends.fusion import HeldOut

        parts = {fold: HeldOut.load(self.fold_path(fold)) for fold in done}
        todo = [fold for fold in range(self.folds) if fold not in done]
        for fold, batches in engine.run(self, todo, staging):
            parts[fold] = self._save_fold(fold, batches)
        held = parts[0]
        for fold in range(1, self.folds):
            held = held.extend(parts[fold])
        return held

    def swap_in(self) -> None:
        """Replace each staged source's serving model with its new one (after
        the fusion was fitted, still `held`)."""
        for source in self.sources:
            staged = self.staged.get(source.id)
            if staged is None:
                continue
            with atomic_directory(source.model_dir, source.lock) as version:
                for entry in staged.iterdir():
                    os.replace(entry, version / entry.name)
            source.unload()

    def finish(self) -> None:
        """Remove the per-fold work (after the fusion was saved)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self, held) -> dict:
        return {
            "cross_fit": {
                "folds": self.folds,
                "sources": self.policy,
                "documents": int(held.n_documents),
                "documents_with_subjects": self.labelled,
                "unseen_examples": held.unseen_examples(),
            }
        }

    survey: CorpusSurvey | None = None  # of the corpus, read once by `run`
    sample: FitSample | None = None  # the fit's (None: every document)
    corpus_digest: str | None = None  # of the corpus's files when `run` began

    @property
    def labelled(self) -> int:
        """How many documents have a known subject."""
        return self.survey.labelled if self.survey else 0

    def _sample(self, survey: CorpusSurvey) -> FitSample | None:
        """The fit's sample of the documents with a known subject (said so
        when it is one), and the folds it leaves without a document to score
        (their sources are not trained)."""
        sample = fit_sample(survey.keys, self.fusion.params.fit_documents)
        if sample is not None:
            taken = survey.folds_of(self.folds)[survey.keys <= np.uint64(sample.bound)]
            empty = sorted(set(range(self.folds)) - set(taken.tolist()))
            if empty:
                them = "it" if len(empty) == 1 else "them"
                tell(
                    f"Cross-fitting: the sample has no document in "
                    f"{folds_in_words(empty)} of {self.folds}: nothing to score "
                    f"there, so no source is trained for {them} (a larger "
                    "fit_documents gives every fold some)"
                )
        return sample

    def check_folds(self, survey: CorpusSurvey) -> None:
        """An InputError when a fold would have no document with a known
        subject, naming a number of folds that works."""
        labelled = survey.labelled
        if not labelled:
            raise InputError("No document of the corpus has a known subject")
        empty = _first_empty(survey.folds_of(self.folds), self.folds)
        if empty is not None:
            workable = _workable_folds(survey, min(self.folds - 1, labelled))
            advice = (
                f"use --cross-fit {workable} (it works with this corpus)"
                if workable
                else "train the sources on other documents and the fusion "
                "without --cross-fit"
            )
            raise InputError(
                f"Cannot cross-fit on {self.folds} folds: fold {empty + 1} "
                f"would have no document with a known subject ({labelled} "
                f"documents have one). Nothing was trained: {advice}, or give a "
                "larger corpus"
            )

    def _plan(self, survey: CorpusSurvey) -> dict:
        """What the saved folds were computed from: a change starts afresh.
        The sources are a list, in order: their columns in the folds' scores."""
        return {
            "folds": self.folds,
            "corpus": survey.digest,
            "per_source": self.fusion.params.per_source,
            "fit_documents": self.fusion.params.fit_documents,
            "sources": [
                [
                    p.id,
                    p.language,
                    p.config.backend,
                    self.policy[p.id],
                    jsonable(dataclasses.asdict(p.backend.params), full_paths=True),
                ]
                for p in self.sources
            ],
        }

    def _start(self, survey: CorpusSurvey) -> set[int]:
        """Keep the saved work of a run with the same plan (else start afresh);
        the folds already scored."""
        plan = self._plan(survey)
        path = self.workdir / "plan.json"
        try:
            same = json.loads(path.read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir.mkdir(parents=True)
            _write_atomically(path, json.dumps(plan, indent=2).encode())
            return set()
        done = {f for f in range(self.folds) if self.fold_path(f).is_file()}
        if done:
            tell(f"Resuming: {folds_in_words(sorted(done))} of {self.folds} reused")
        return done

    def refitted(self) -> list:
        """The sources trained anew for each fold, in order."""
        return [p for p in self.sources if self.policy[p.id] == REFIT]

    def _staging(self) -> list[tuple]:
        """The trainable sources to train on the whole corpus, each with its
        folder in staging: not those whose serving model already is of this
        corpus and these settings, nor those a resumed run staged already
        (recorded in `staged` now)."""
        digest = self.corpus_digest
        out = []
        for source in self.sources:
            if not source.backend_class.trainable:
                continue
            backend = source.backend
            params = jsonable(dataclasses.asdict(backend.params), full_paths=True)

            def current(manifest, backend=backend, params=params) -> bool:
                return bool(manifest) and (
                    manifest.get("backend") == backend.name
                    and manifest.get("format") == backend.model_format
                    and manifest.get("corpus_digest") == digest
                    and manifest.get("params") == params
                )

            if current(read_manifest(source.model_dir)):
                continue
            staged = self.workdir / f"model-{source.id}"
            if current(read_manifest(staged)):
                self.staged[source.id] = staged
            else:
                out.append((source, staged))
        return out

    def _whole(self, source):
        """The source's model of the whole corpus: staged, or the serving one."""
        staged = self.staged.get(source.id)
        if staged is None:
            return source.backend
        if source.id not in self._staged_backends:
            backend = source.new_backend()
            backend.load_part(staged)
            self._staged_backends[source.id] = backend
        return self._staged_backends[source.id]

    def fold_path(self, fold: int) -> Path:
        return self.workdir / f"fold-{fold}.npz"

    def _fold(self, fold: int):
        from backends.fusion import HeldOut

        path = self.fold_path(fold)
        if path.is_file():
            return HeldOut.load(path)
        scored, inside = self._scored(fold)
        texts = [d.text for d in scored]
        batches = {
            source.id: score_on_fold(
                source,
                FoldCorpus(self.corpus, self.folds, fold, outside=True),
                self.fold_directory(fold, source.id),
                texts,
                self.fusion.params.batch_size,
                self.jobs,
            )
            for source in self.refitted()
        }
        return self._save_fold(fold, batches, (scored, inside))

    @property
    def language(self) -> str:
        return self.corpus.language

    def fold_directory(self, fold: int, source_id: str) -> Path:
        """Where `source` is trained for `fold` (removed once it has scored)."""
        return self.workdir / f"fold-{fold}-{source_id}"

    def _scored(self, fold: int) -> tuple[list[Document], np.ndarray]:
        """The documents of `fold` its sources score (`scored_documents`), and
        how often each subject occurs in the fold (in all of its documents:
        those its sources were not trained on)."""
        inside = np.zeros(len(self.fusion.project.vocab), np.int64)

        def counted(documents: Iterable[Document]) -> Iterator[Document]:
            for doc in documents:
                np.add.at(inside, doc.subjects, 1)
                yield doc

        fold_corpus = FoldCorpus(self.corpus, self.folds, fold, outside=False)
        return list(sampled(counted(fold_corpus), self.sample)), inside

    def _save_fold(self, fold: int, batches: dict, part=None):
        """The fold's held-out scores from the refitted sources' `batches` (and
        the reused sources' whole models) of its scored documents (`part`, as
        `_scored` gives it; read again when not given), saved atomically."""
        from backends.fusion import Candidates, HeldOut

        self._check_unchanged()  # before a fold of two corpora is kept
        scored, inside = part if part is not None else self._scored(fold)
        seen = self.survey.counts - inside  # in the folds its sources learnt
        texts = [d.text for d in scored]
        ordered = [
            batches[source.id]
            if self.policy[source.id] == REFIT
            else self._suggest(self._whole(source), texts)
            for source in self.sources
        ]
        per_source = self.fusion.params.per_source
        candidates = Candidates.from_batches(ordered, per_source)
        held = HeldOut.of_group(
            candidates, [d.subjects for d in scored], per_source, seen
        )
        path = self.fold_path(fold)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
        held.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        return held

    def _suggest(self, backend, texts: list[str]) -> SuggestionBatch:
        return suggest_in_batches(backend, texts, self.fusion.params.batch_size)


# -- one training, wherever it runs ----------------------------------------------


def score_on_fold(
    source, corpus, directory: Path, texts: list[str], batch_size: int, jobs: int
) -> SuggestionBatch:
    """`source`'s scores of `texts` from a model trained on `corpus` in
    `directory` (emptied first, removed after); no training when there are
    no texts (a fold with no document of the fit's sample)."""
    if not texts:
        return SuggestionBatch.empty(0, len(source.vocab))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    try:
        backend = source.new_backend()
        backend.train_part(corpus, directory, jobs)
        backend.load_part(directory)
        return suggest_in_batches(backend, texts, batch_size)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def stage_model(source, corpus, staged: Path, jobs: int) -> None:
    """Train `source`'s whole model on `corpus` into `staged`, which appears
    complete or not at all."""
    shutil.rmtree(staged, ignore_errors=True)
    partial = staged.with_name(f".{staged.name}.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source.new_backend().train_into(corpus, partial, jobs)
    os.replace(partial, staged)


def suggest_in_batches(backend, texts: list[str], size: int) -> SuggestionBatch:
    """The backend's scores of `texts`, suggested `size` at a time."""
    if not texts:
        return backend.suggest_batch([])  # no rows, and no model to load
    return SuggestionBatch.vstack(
        [backend.suggest_batch(texts[i : i + size]) for i in range(0, len(texts), size)]
    )


def _first_empty(folds_of: np.ndarray, folds: int) -> int | None:
    """The first of `folds` folds that no document is in (None: there is
    none), from the fold of each document."""
    used = np.unique(folds_of)
    if len(used) == folds:
        return None
    gaps = np.flatnonzero(used != np.arange(len(used)))
    return int(gaps[0]) if len(gaps) else len(used)


def _workable_folds(survey: CorpusSurvey, below: int) -> int | None:
    """A number of folds (at most `below`) that leaves none of the surveyed
    documents with a known subject empty: the largest, of the few tried."""
    k, tries = below, 0
    while k >= 2:
        if len(np.unique(survey.folds_of(k))) == k:
            return k
        k, tries = (k - 1 if tries < 20 else k // 2), tries + 1
    return None


def folds_in_words(folds: list[int]) -> str:
    """'fold 1', 'folds 1-3' or 'folds 1, 3' (1-based) of 0-based numbers."""
    if len(folds) == 1:
        return f"fold {folds[0] + 1}"
    if folds == list(range(folds[0], folds[-1] + 1)):
        return f"folds {folds[0] + 1}-{folds[-1] + 1}"
    return "folds " + ", ".join(str(f + 1) for f in folds)


def tell(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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

"""`indexer train FUSION --cross-fit K --engine ray`: the trainings of a
cross-fit (`backends.fusion_crossfit`) as Ray tasks.

Each (fold, source) training is a task: it reads the corpus by path, streams
the documents of the other folds (`FoldCorpus`), trains the source into its
folder under the project's `cross-fit` folder, scores the fold's documents
and sends the scores back (the arrays of a SuggestionBatch). Each source's
whole-corpus training is a task too, writing its model into staging. At most
`workers` tasks run at once, the whole-corpus ones (the longest) first. This
process holds the sources' locks throughout and saves each fold as its scores
come, as the local engine does, so a rerun resumes from the folds finished.

A task whose worker dies (out of memory, a crash) is tried again, `RETRIES`
times; then the run stops with an error naming the fold and the source, the
folds finished kept. An error raised by the training itself stops the run at
once: the same documents would raise it again.

The workers read the configuration, the vocabulary and the corpus at the same
absolute paths as here, and write the whole models they train into the
project's data dir, where this process swaps them in: on a remote cluster the
data dir and the corpus must be on a shared filesystem, as for `indexer index
--engine ray`. The models stay on disk rather than travel through the object
store because a whole model can be hundreds of MB while a fold's scores are a
few, and the workers need the shared data dir for the vocabulary anyway. A
worker checks the corpus it reads against the digest of the one cross-fitted
here, so a node that sees other files stops the run rather than skew it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backends.fusion_crossfit import (
    REUSE,
    folds_in_words,
    score_on_fold,
    stage_model,
    tell,
)
from backends.fusion_folds import FitSample, FoldCorpus, scored_documents
from indexer.batch.ray_engine import RETRIES, ray_error_reason, start_ray
from indexer.batch.records import RayOptions
from indexer.batch.work import ProjectRef
from indexer.errors import IndexerError, UsageError
from indexer.suggestion import SuggestionBatch


@dataclass(frozen=True)
class Job:
    """What every task of one cross-fit needs: the projects and the corpus."""

    ref: ProjectRef  # the fusion (its configuration names the sources)
    paths: tuple[str, ...]
    language: str
    digest: str
    folds: int
    batch_size: int
    jobs: int
    sample: FitSample | None = None  # of the documents scored


@dataclass(frozen=True)
class Training:
    """A source trained for a fold (its scores of the fold come back), or on
    the whole corpus (`fold` None: its model is staged in `directory`)."""

    source: str
    fold: int | None
    directory: str

    def describe(self, folds: int) -> str:
        if self.fold is None:
            return f"the training of '{self.source}' on the whole corpus"
        return f"the training of '{self.source}' for fold {self.fold + 1} of {folds}"


class CrossFitStopped(IndexerError):
    """A training of the cross-fit failed on the cluster (the message says which)."""

    status = 503
    title = "Cross-fit stopped"


# -- in a worker ------------------------------------------------------------------

_LOADED: tuple | None = None  # (job's corpus key, fusion project, corpus)


def _loaded(job: Job) -> tuple:
    """The fusion project and the corpus (streamed from its files), checked
    once per worker."""
    global _LOADED
    key = (job.ref, job.paths, job.language, job.digest)
    if _LOADED is None or _LOADED[0] != key:
        from indexer.corpus import Corpus

        fusion = job.ref.load()
        corpus = Corpus([Path(p) for p in job.paths], fusion.vocab, job.language)
        if corpus.digest() != job.digest:
            raise IndexerError(
                f"The corpus at {', '.join(job.paths)} on node "
                f"{os.uname().nodename} is not the one being cross-fitted (its "
                "digest differs): the Ray workers must see the same files at the "
                "same paths (a shared filesystem)"
            )
        _LOADED = (key, fusion, corpus)
    return _LOADED[1:]


def train(job: Job, training: Training):
    """Run one training (a Ray task): the arrays of the fold's scores, or None
    for a whole-corpus training (its model is in `training.directory`)."""
    fusion, corpus = _loaded(job)
    source = fusion.projects.get(training.source)
    if training.fold is None:
        stage_model(source, corpus, Path(training.directory), job.jobs)
        return None
    scored = scored_documents(corpus, job.folds, training.fold, job.sample)
    batch = score_on_fold(
        source,
        FoldCorpus(corpus, job.folds, training.fold, outside=True),
        Path(training.directory),
        [d.text for d in scored],
        job.batch_size,
        job.jobs,
    )
    matrix = batch.matrix
    return matrix.data, matrix.indices, matrix.indptr, matrix.shape


# -- here -------------------------------------------------------------------------


class RayCrossFit:
    """Runs the trainings of a cross-fit on a Ray cluster (a context manager:
    joins the cluster at `settings.address`, or starts one here)."""

    def __init__(self, ref: ProjectRef, settings: RayOptions):
        self.ref = ref
        self.settings = settings
        self.trained = 0  # trainings finished on the cluster
        self._started_here = False

    def __enter__(self) -> RayCrossFit:
        self._started_here = start_ray(self.settings.address)
        return self

    def __exit__(self, *exc) -> None:
        if self._started_here:
            import ray

            ray.shutdown()

    def run(self, crossfit, todo: list[int], staging) -> Iterator:
        """(fold, {source: scores}) of each fold of `todo` as its trainings
        finish, once the reused sources are staged; `staging`'s models are
        recorded in `crossfit.staged` as they are trained."""
        import ray
        from tqdm import tqdm

        job = self._job(crossfit)
        refitted = [s.id for s in crossfit.refitted()]
        trainings = [Training(s.id, None, str(path)) for s, path in staging] + [
            Training(s, fold, str(crossfit.fold_directory(fold, s)))
            for fold in todo
            for s in refitted
        ]
        gpus = (
            {"num_gpus": self.settings.gpus_per_worker}
            if self.settings.gpus_per_worker
            else {}
        )
        task = ray.remote(train).options(
            num_cpus=job.jobs, max_retries=RETRIES, retry_exceptions=False, **gpus
        )
        waiting, running = deque(trainings), {}
        scores: dict[int, dict] = {fold: {} for fold in todo}
        unstaged = {s.id for s, _ in staging if crossfit.policy[s.id] == REUSE}
        ready = [fold for fold in todo if not refitted]
        bar = tqdm(
            total=len(trainings),
            desc="Cross-fitting on Ray",
            unit=" trainings",
            disable=None,
        )
        try:
            while waiting or running:
                while waiting and len(running) < self.settings.workers:
                    training = waiting.popleft()
                    running[task.remote(job, training)] = training
                (finished,), _ = ray.wait(list(running), num_returns=1)
                training = running.pop(finished)
                try:
                    result = ray.get(finished)
                except ray.exceptions.RayError as exc:
                    raise self._stopped(crossfit, training, exc) from None
                self.trained += 1
                bar.update()
                if training.fold is None:
                    crossfit.staged[training.source] = Path(training.directory)
                    unstaged.discard(training.source)
                else:
                    scores[training.fold][training.source] = _batch(*result)
                    if len(scores[training.fold]) == len(refitted):
                        ready.append(training.fold)
                while ready and not unstaged:
                    fold = ready.pop(0)
                    yield fold, scores.pop(fold)
                    if bar.disable:
                        tell(f"Cross-fitting: fold {fold + 1} of {job.folds} done")
        finally:
            bar.close()
            for ref in running:
                ray.cancel(ref, force=True)

    def _job(self, crossfit) -> Job:
        corpus = crossfit.corpus
        if not corpus.paths or getattr(corpus, "_documents", None) is not None:
            raise UsageError(
                "A cross-fit on Ray reads the corpus from files: give its paths"
            )
        return Job(
            self.ref,
            tuple(str(Path(p).resolve()) for p in corpus.paths),
            corpus.language,
            crossfit.corpus_digest,
            crossfit.folds,
            crossfit.fusion.params.batch_size,
            crossfit.jobs,
            crossfit.sample,
        )

    @staticmethod
    def _stopped(crossfit, training: Training, exc) -> CrossFitStopped:
        """The error that stops the run: which training, why, and what is kept."""
        import ray

        reason = ray_error_reason(exc)
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if cause is not None and not isinstance(cause, IndexerError):
                reason = f"{type(cause).__name__}: {reason}"  # a bug: say which
            why = f"failed: {reason}"
        else:
            why = (
                f"lost its Ray worker {RETRIES + 1} times (out of memory, or a "
                f"crash): {reason}"
            )
        kept = [f for f in range(crossfit.folds) if crossfit.fold_path(f).is_file()]
        after = (
            f"{folds_in_words(kept)} of {crossfit.folds} are kept: rerun the same "
            "command to resume"
            if kept
            else "no fold was finished"
        )
        return CrossFitStopped(
            f"Cross-fitting stopped: {training.describe(crossfit.folds)} {why}. "
            f"The sources are as they were; {after}"
        )


def _batch(data, indices, indptr, shape) -> SuggestionBatch:
    import numpy as np
    import scipy.sparse as sp

    # arrays from the object store are read-only views of it
    arrays = (np.array(data), np.array(indices), np.array(indptr))
    return SuggestionBatch(sp.csr_matrix(arrays, shape=shape))

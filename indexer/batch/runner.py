"""One batch run: plan the blocks, skip those done, index the rest, join the output.

A run holds a lock on its output for its whole length (a second run on it is
refused, or waits with --wait), never writes over one of its inputs, and
indexes each id once: a record whose id an earlier one has goes to the rejects.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from indexer.batch import readers
from indexer.batch.duplicates import SeenIds, reject_duplicates
from indexer.batch.local import WorkerError, run_local
from indexer.batch.plan import plan_of
from indexer.batch.records import BlockSpec, DocResult, Options, RayOptions
from indexer.batch.work import ProjectRef
from indexer.batch.writers import BlockStore, PerDocumentWriter
from indexer.errors import IndexerError, InputError, NotTrainedError, UsageError

ENGINES = ("local", "ray")
ON_ERROR = ("fail", "skip")


@dataclass
class BatchJob:
    """Everything `indexer index` was asked to do."""

    project: object
    ref: ProjectRef
    inputs: list[Path]
    output: Path | None
    options: Options = field(default_factory=Options)
    block_size: int = 1000
    on_error: str = "fail"
    force: bool = False
    wait: bool = False
    suffix: str = ".suggestions.tsv"
    engine: str = "local"
    jobs: int = 1
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass
class Summary:
    documents: int = 0
    rejected: int = 0
    duplicates: int = 0
    resumed_blocks: int = 0
    seconds: float = 0.0
    rejects_file: Path | None = None


class IndexingStopped(IndexerError):
    """A batch run stopped before the end; what is written stays for a rerun."""


class IndexingInterrupted(IndexingStopped):
    """Ctrl-C: the shell's exit code for an interrupt."""

    exit_code = 130


def run(job: BatchJob, progress: bool = True) -> Summary:
    """Index every record of the job's inputs, resuming an interrupted run."""
    started = time.perf_counter()
    _ = job.project.vocab  # loaded here once, not raced for by the workers
    if not job.project.is_ready:
        raise NotTrainedError.of(job.project.id)
    store = _store(job)
    try:
        with store.lock().hold(wait=job.wait):
            summary = _index(job, store, progress)
    except OSError as exc:
        raise IndexingStopped(_stopped(_os_error(exc), store)) from None
    summary.seconds = time.perf_counter() - started
    return summary


def _index(job: BatchJob, store, progress: bool) -> Summary:
    """The run itself, holding the output's lock."""
    specs = _blocks(job, store)
    done = store.open(job.force) if isinstance(store, BlockStore) else set()
    summary = Summary(resumed_blocks=len(done))
    seen = SeenIds()
    summary.duplicates = _remember_done(seen, specs, done, job.options)
    bar = _progress_bar(job.engine, specs, done, progress)

    def on_block(spec: BlockSpec, results: list[DocResult]) -> None:
        if job.on_error == "fail":
            _fail_on_reject(results, store)
        summary.duplicates += reject_duplicates(seen, results)
        store.write(spec.number, results)
        summary.documents += sum(r.error is None for r in results)
        bar.update(len(results))

    try:
        _run_engine(job, [s for s in specs if s.number not in done], on_block)
    except WorkerError as exc:
        raise IndexingStopped(_stopped(str(exc), store)) from None
    finally:
        bar.close()
    summary.rejected = store.finish(len(specs))
    if summary.rejected:
        summary.rejects_file = store.rejects
    return summary


def _progress_bar(engine: str, specs: list[BlockSpec], done: set[int], shown: bool):
    from tqdm import tqdm

    return tqdm(
        total=sum(s.count for s in specs),
        initial=sum(s.count for s in specs if s.number in done),
        unit=" docs",
        desc=f"Indexing ({engine})",
        disable=None if shown else True,
        smoothing=0.1,
    )


def _remember_done(seen: SeenIds, specs, done: set[int], options) -> int:
    """Put the ids indexed by the blocks done before into `seen` (their records
    are read again, not indexed); the number of duplicates among them."""
    duplicates = 0
    for spec in specs:
        if spec.number in done:
            records = readers.read_block(spec, options)
            results = [DocResult(r.id, r.where, [], r.error) for r in records]
            duplicates += reject_duplicates(seen, results)
    return duplicates


def _store(job: BatchJob):
    """Where the results go; usage errors before anything is written."""
    for path in job.inputs:
        readers.input_kind(path)
    if job.output is None:
        if len(job.inputs) != 1 or not job.inputs[0].is_dir():
            raise UsageError(
                "Give --output OUT.jsonl or OUT.parquet; a file per document is "
                "written only for one input directory"
            )
        return PerDocumentWriter(job.inputs[0], job.suffix)
    _check_output_directory(job.output)
    plan = plan_of(job.project, job.inputs, job.block_size, job.options)
    store = BlockStore(job.output, plan)
    _refuse_overwriting_inputs(store, job.inputs)
    return store


def _check_output_directory(output: Path) -> None:
    directory = output.parent
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise UsageError(f"Cannot write '{output}': '{directory}' {state}")


def _refuse_overwriting_inputs(store: BlockStore, inputs: list[Path]) -> None:
    """The output, its rejects and its parts must not be (or hold) an input,
    even with --force: that would replace documents with suggestions."""
    parts = store.parts.resolve()
    for path in inputs:
        for written in (store.output, store.rejects):
            if _same_file(path, written):
                raise UsageError(
                    f"'{written}' is the input '{path}': writing there would "
                    "replace the documents; give another --output"
                )
        if path.resolve().is_relative_to(parts):
            raise UsageError(
                f"The input '{path}' is in '{store.parts}', which this run "
                "writes and removes; give another --output"
            )


def _same_file(a: Path, b: Path) -> bool:
    """The same file, through links and relative paths too."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def _blocks(job: BatchJob, store) -> list[BlockSpec]:
    """Every block of the inputs, in order (for one directory of per-document
    files: of the documents without one, unless --force)."""
    if isinstance(store, PerDocumentWriter):
        done = None if job.force else (lambda f: store.target(f).exists())
        return list(readers.scan(job.inputs[0], job.block_size, 0, done))
    specs: list[BlockSpec] = []
    for path in job.inputs:
        specs += readers.scan(path, job.block_size, len(specs))
    return specs


def _run_engine(job: BatchJob, pending: list[BlockSpec], on_block) -> None:
    if job.engine == "ray":
        from indexer.batch.ray_engine import run_ray

        run_ray(job.ref, job.options, pending, job.ray, on_block)
    else:
        run_local(job.ref, job.options, pending, job.jobs, on_block)


def _fail_on_reject(results: list[DocResult], store) -> None:
    bad = next((r for r in results if r.error is not None), None)
    if bad is not None:
        raise InputError(
            _stopped(
                f"record '{bad.id}' ({bad.where}): {bad.error}. Fix it, or rerun "
                f"with --on-error skip to write such records to {store.rejects} "
                "and go on",
                store,
            )
        )


def _os_error(exc: OSError) -> str:
    """An operating system error in words: the file and the reason."""
    reason = exc.strerror or type(exc).__name__
    return f"'{exc.filename}': {reason}" if exc.filename else reason


def _stopped(reason: str, store) -> str:
    where = getattr(store, "parts", None)
    kept = (
        f"; the blocks finished are kept in '{where}': rerun the same command to resume"
        if where is not None and where.is_dir()
        else ""
    )
    return f"Indexing stopped: {reason}{kept}"

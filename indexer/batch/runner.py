"""One batch run: plan the blocks, skip those done, index the rest, join the output."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from indexer.batch import readers
from indexer.batch.local import WorkerError, run_local
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
    suffix: str = ".suggestions.tsv"
    engine: str = "local"
    jobs: int = 1
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass
class Summary:
    documents: int = 0
    rejected: int = 0
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
    from tqdm import tqdm

    started = time.perf_counter()
    _ = job.project.vocab  # loaded here once, not raced for by the workers
    if not job.project.is_ready:
        raise NotTrainedError.of(job.project.id)
    store, specs = _plan(job)
    done = store.open(job.force) if isinstance(store, BlockStore) else set()
    pending = [s for s in specs if s.number not in done]
    summary = Summary(resumed_blocks=len(done))
    bar = tqdm(
        total=sum(s.count for s in specs),
        initial=sum(s.count for s in specs if s.number in done),
        unit=" docs",
        desc=f"Indexing ({job.engine})",
        disable=None if progress else True,
        smoothing=0.1,
    )

    def on_block(spec: BlockSpec, results: list[DocResult]) -> None:
        if job.on_error == "fail":
            _fail_on_reject(results, store)
        store.write(spec.number, results)
        summary.documents += sum(r.error is None for r in results)
        bar.update(len(results))

    try:
        _run_engine(job, pending, on_block)
    except WorkerError as exc:
        raise IndexingStopped(_stopped(str(exc), store)) from None
    finally:
        bar.close()
    summary.rejected = store.finish(len(specs))
    if summary.rejected:
        summary.rejects_file = store.rejects
    summary.seconds = time.perf_counter() - started
    return summary


def _plan(job: BatchJob):
    """The output store and every block of the inputs, in order."""
    for path in job.inputs:
        readers.input_kind(path)  # a usage error before anything is written
    if job.output is None:
        if len(job.inputs) != 1 or not job.inputs[0].is_dir():
            raise UsageError(
                "Give --output OUT.jsonl or OUT.parquet; a file per document is "
                "written only for one input directory"
            )
        store = PerDocumentWriter(job.inputs[0], job.suffix)
        done = None if job.force else (lambda f: store.target(f).exists())
        return store, list(readers.scan(job.inputs[0], job.block_size, 0, done))
    specs: list[BlockSpec] = []
    for path in job.inputs:
        specs += readers.scan(path, job.block_size, len(specs))
    plan = {
        "project": job.project.id,
        "inputs": [_identity(p) for p in job.inputs],
        "block_size": job.block_size,
        "options": dataclasses.asdict(job.options),
    }
    return BlockStore(job.output, plan), specs


def _identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


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


def _stopped(reason: str, store) -> str:
    where = getattr(store, "parts", None)
    kept = (
        f"; the blocks finished are kept in '{where}': rerun the same command to resume"
        if where
        else ""
    )
    return f"Indexing stopped: {reason}{kept}"

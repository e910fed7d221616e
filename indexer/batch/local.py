"""`--engine local`: blocks indexed by worker processes on this machine.

Each worker process loads the project once. At most two blocks per worker are
in flight, so memory stays bounded whatever the size of the input. The workers
read their blocks, except Parquet ones: this process reads those, in order, so
that each row group is decoded once (see `readers`). A worker ends when this
process ends, however it ends (kill -9 too).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from indexer.batch.readers import read_block
from indexer.batch.records import BlockSpec, DocResult, Options, Record
from indexer.batch.work import BlockIndexer, ProjectRef
from indexer.errors import IndexerError
from indexer.parallel import die_with_parent

OnBlock = Callable[[BlockSpec, list[DocResult]], None]

_WORKER: BlockIndexer | None = None
_WORKER_ERROR: str | None = None


class WorkerError(Exception):
    """A worker could not do its job; the message says why."""


def _start_worker(parent: int, ref: ProjectRef, options: Options) -> None:
    global _WORKER, _WORKER_ERROR
    _end_with_parent(parent)
    try:
        _WORKER = BlockIndexer(ref, options)
    except IndexerError as exc:
        _WORKER_ERROR = exc.message
    except Exception as exc:  # reported with the block, not as a dead pool
        _WORKER_ERROR = f"{type(exc).__name__}: {exc}"


def _end_with_parent(parent: int) -> None:
    """Exit when the process `parent` ends: a worker left behind by a killed
    run would wait on its queue forever, holding its memory."""
    die_with_parent()  # on Linux the kernel kills this process at once
    watcher = threading.Thread(
        target=_watch_parent, args=(parent,), name="watch-parent", daemon=True
    )
    watcher.start()


def _watch_parent(parent: int) -> None:
    """Everywhere else (or if the parent died before the signal was asked for):
    an orphan gets a new parent process."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker() -> BlockIndexer:
    if _WORKER is None:
        raise WorkerError(_WORKER_ERROR or "the worker did not start")
    return _WORKER


def _index(spec: BlockSpec) -> list[DocResult]:
    return _worker().index_block(spec)


def _index_records(records: list[Record]) -> list[DocResult]:
    return _worker().index_records(records)


def run_local(
    ref: ProjectRef,
    options: Options,
    blocks: Iterable[BlockSpec],
    jobs: int,
    on_block: OnBlock,
) -> None:
    """Index `blocks`, calling `on_block` for each finished one, in block order."""
    if jobs == 1:
        indexer = BlockIndexer(ref, options)
        for spec in blocks:
            on_block(spec, indexer.index_block(spec))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked copy of a process that has started torch's
    # threads can deadlock
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), ref, options),
    )
    in_flight: deque = deque()
    try:
        for spec in blocks:
            in_flight.append((spec, _submit(pool, spec, options)))
            if len(in_flight) >= 2 * jobs:
                _finish_oldest(in_flight, on_block)
        while in_flight:
            _finish_oldest(in_flight, on_block)
    except BrokenProcessPool:
        raise WorkerError("a worker process died (killed, or out of memory)") from None
    finally:
        for _, future in in_flight:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool, spec: BlockSpec, options: Options):
    if spec.kind == "parquet":  # read here, in order: each row decoded once
        return pool.submit(_index_records, read_block(spec, options))
    return pool.submit(_index, spec)


def _finish_oldest(in_flight: deque, on_block: OnBlock) -> None:
    spec, future = in_flight.popleft()
    on_block(spec, future.result())

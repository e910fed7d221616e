"""`--engine ray`: read -> map_batches through an actor pool -> back to the writer.

Each block of the input travels as one row (its records, then its results,
encoded as JSON), and is one Ray Data block: a read task reads a block, or
the blocks of one Parquet row group in order (so that each row is decoded
once); an actor pool of `workers` actors, each of which loads the project
once, indexes them; the results stream back to this process in input order
(blocks finished early wait in Ray's object store, under its backpressure),
and it hands them on.

Ray restarts an actor that died and retries its block, but only `RETRIES`
times: a block that kills its worker every time (out of memory, a crash in a
backend) stops the run with an error that names it. The blocks that
finished before it are written; those still in flight then (a block queued
on the same actor, or slower on another) are not, and a rerun resumes with
them. The workers record which block they start in a small actor, so that
the block can be named whichever worker it killed.

The workers need the project's configuration and models at the same absolute
paths as here (a shared filesystem) and the same version of this package.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.batch.local import WorkerError
from indexer.batch.readers import read_block
from indexer.batch.records import BlockSpec, DocResult, Options, RayOptions, Record
from indexer.batch.work import BlockIndexer, ProjectRef
from indexer.errors import DependencyError

OnBlock = Callable[[BlockSpec, list[DocResult]], None]

#: how many times a block is tried again after its worker died
RETRIES = 2


def _block_row(spec: BlockSpec, records: list[Record]):
    import pyarrow as pa

    encoded = [[r.id, r.where, r.text, r.error] for r in records]
    return pa.table({"block": [spec.number], "records": [json.dumps(encoded)]})


def _read_units(specs: list[BlockSpec]) -> list[list[BlockSpec]]:
    """The blocks each read task reads: those of one Parquet row group together,
    in order, and any other block alone."""
    units: list[list[BlockSpec]] = []
    for spec in specs:
        last = units[-1][-1] if units else None
        if spec.kind == "parquet" and _same_row_group(last, spec):
            units[-1].append(spec)
        else:
            units.append([spec])
    return units


def _same_row_group(a: BlockSpec | None, b: BlockSpec) -> bool:
    return a is not None and (a.kind, a.source, a.row_group) == (
        b.kind, b.source, b.row_group,
    )  # fmt: skip


def _read(unit: list[BlockSpec], options: Options, attempts) -> Iterator:
    import ray

    for spec in unit:
        ray.get(attempts.begin.remote("read", spec.number))
        yield _block_row(spec, read_block(spec, options))


def _datasource(units: list[list[BlockSpec]], options: Options, attempts):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class BlockSource(Datasource):
        """One read task per block (or per Parquet row group)."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, **_):
            return [
                ReadTask(
                    lambda unit=unit: _read(unit, options, attempts),
                    BlockMetadata(
                        num_rows=len(unit),
                        size_bytes=None,
                        exec_stats=None,
                        input_files=(unit[0].source,),
                    ),
                )
                for unit in units
            ]

    return BlockSource()


def _attempts_actor():
    """A small actor that counts how often each block was started."""
    import ray

    @ray.remote(num_cpus=0)
    class Attempts:
        def __init__(self):
            self.counts: dict[tuple[str, int], int] = {}

        def begin(self, stage: str, block: int) -> None:
            self.counts[stage, block] = self.counts.get((stage, block), 0) + 1

        def all(self) -> dict[tuple[str, int], int]:
            return self.counts

    return Attempts.remote()


class RayIndexer:
    """A Ray actor: loads the project once, indexes whole blocks."""

    def __init__(self, ref: ProjectRef, options: Options, attempts):
        from indexer.errors import IndexerError

        self.attempts = attempts
        try:
            self.indexer = BlockIndexer(ref, options)
        except IndexerError as exc:
            raise RuntimeError(
                f"the project could not be loaded on worker node "
                f"{os.uname().nodename}: {exc.message}"
            ) from None

    def __call__(self, table):
        import pyarrow as pa
        import ray

        (row,) = table.to_pylist()
        ray.get(self.attempts.begin.remote("index", row["block"]))
        records = [Record(*r) for r in json.loads(row["records"])]
        results = self.indexer.index_records(records)
        encoded = json.dumps([r.to_json() for r in results])
        return pa.table({"block": [row["block"]], "results": [encoded]})


class InOrder:
    """Hands finished blocks on in the order of `specs`, holding those that
    come early (so that of two records with one id, the first is kept).

    Ray Data streams the blocks back in order (`_one_row_blocks`), so none
    should come early; `most_held` is how many were held at once."""

    def __init__(self, specs: list[BlockSpec], on_block: OnBlock):
        self._waiting = deque(specs)
        self._ready: dict[int, list[DocResult]] = {}
        self._on_block = on_block
        self.arrived: set[int] = set()
        self.most_held = 0

    def add(self, number: int, results: list[DocResult]) -> None:
        if number in self.arrived:  # a retried block that came twice
            return
        self.arrived.add(number)
        self._ready[number] = results
        while self._waiting and self._waiting[0].number in self._ready:
            spec = self._waiting.popleft()
            self._on_block(spec, self._ready.pop(spec.number))
        self.most_held = max(self.most_held, len(self._ready))


def start_ray(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local one; True if started here."""
    try:
        import ray
    except ImportError:
        raise DependencyError(
            "--engine ray needs Ray: pip install 'subject-indexer[distributed]'"
        ) from None
    if ray.is_initialized():
        return False
    package_root = str(Path(__file__).resolve().parents[2])
    ray.init(
        address=address,
        log_to_driver=False,
        include_dashboard=False,
        logging_level=logging.WARNING,
        # local workers import this very copy of the package
        runtime_env=None if address else {"env_vars": {"PYTHONPATH": package_root}},
    )
    return True


def run_ray(
    ref: ProjectRef,
    options: Options,
    specs: list[BlockSpec],
    settings: RayOptions,
    on_block: OnBlock,
) -> int:
    """Index `specs` on Ray, calling `on_block` for each finished block, in
    order; the most blocks this process held at once, waiting for an earlier
    one (none: Ray holds them, in its object store, within its memory budget)."""
    if not specs:
        return 0
    import ray

    started_here = start_ray(settings.address)
    in_order = InOrder(specs, on_block)
    attempts = None
    try:
        attempts = _attempts_actor()
        with _one_row_blocks():
            dataset = _dataset(ref, options, specs, settings, attempts)
        with _ray_data_off_the_terminal():
            _hand_on(dataset, in_order)
    except ray.exceptions.RayError as exc:
        reason = _killer_block(attempts, specs, in_order.arrived)
        raise WorkerError(
            reason or f"the Ray cluster failed: {ray_error_reason(exc)}"
        ) from None
    finally:
        if started_here:
            ray.shutdown()
    return in_order.most_held


def _hand_on(dataset, in_order: InOrder) -> None:
    """Each block's results, as they stream back, to `in_order`."""
    # no prefetching: in order, a prefetched block is yielded only when the
    # next one comes, and a block that kills its workers never comes
    for batch in dataset.iter_batches(
        batch_size=None, batch_format="pyarrow", prefetch_batches=0
    ):
        for row in batch.to_pylist():
            results = [DocResult.from_json(d) for d in json.loads(row["results"])]
            in_order.add(row["block"], results)


def _dataset(ref, options, specs, settings: RayOptions, attempts):
    # Ray 2.60 takes the bounds on retries only as `ray_remote_args`, which it
    # deprecates without a named replacement yet
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        return _bounded_dataset(ref, options, specs, settings, attempts)


def _bounded_dataset(ref, options, specs, settings: RayOptions, attempts):
    import ray
    from ray.data import ActorPoolStrategy

    units = _read_units(specs)
    return ray.data.read_datasource(
        _datasource(units, options, attempts),
        override_num_blocks=len(units),
        # reading is light: it must not wait for the CPUs the actors hold
        num_cpus=0,
        concurrency=max(1, min(settings.workers, len(units))),
        ray_remote_args={"max_retries": RETRIES},
    ).map_batches(
        RayIndexer,
        fn_constructor_kwargs={"ref": ref, "options": options, "attempts": attempts},
        batch_size=1,  # one block
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=settings.workers),
        num_cpus=1,
        num_gpus=settings.gpus_per_worker or None,
        # Ray Data's default is to restart actors and retry their tasks forever
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )


@contextmanager
def _one_row_blocks():
    """Datasets made meanwhile cut their data into Ray blocks of one row (one
    block of ours each), so that any actor can take any block, and stream
    their output in input order: blocks finished while an earlier one is slow
    wait in Ray's object store, where its backpressure stops new work when
    they fill the budget, not in this process without bound."""
    import ray

    context = ray.data.DataContext.get_current()
    options = context.execution_options
    saved = (
        context.target_max_block_size,
        context.enable_progress_bars,
        options.preserve_order,
    )
    context.target_max_block_size = 1
    context.enable_progress_bars = False
    options.preserve_order = True
    try:
        yield
    finally:
        (
            context.target_max_block_size,
            context.enable_progress_bars,
            options.preserve_order,
        ) = saved


@contextmanager
def _ray_data_off_the_terminal():
    """Ray Data logs to its file in the Ray session's logs only: the command
    reports how the run went in one line (a failed block's traceback too)."""
    consoles = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    levels = [handler.level for handler in consoles]
    for handler in consoles:
        handler.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for handler, level in zip(consoles, levels, strict=True):
            handler.setLevel(level)


def _killer_block(attempts, specs: list[BlockSpec], arrived: set[int]) -> str | None:
    """The block that killed its workers every time it was tried, in words."""
    import ray

    if attempts is None:
        return None
    try:
        counts = ray.get(attempts.all.remote(), timeout=30)
    except ray.exceptions.RayError:
        return None
    tried = [(n, stage, block) for (stage, block), n in counts.items()]
    tried = [t for t in tried if t[2] not in arrived and t[0] > RETRIES]
    if not tried:
        return None
    times, stage, number = max(tried)
    spec = next(s for s in specs if s.number == number)
    doing = "reading" if stage == "read" else "indexing"
    return (
        f"block {number} ({spec.describe()}) killed its Ray worker while {doing} "
        f"it, {times} times (out of memory, or a crash)"
    )


def ray_error_reason(exc: Exception) -> str:
    """The innermost message of a Ray error, without its remote traceback."""
    cause = exc
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = str(cause).strip().splitlines()
    meaningful = [line for line in text if line.strip() and "Traceback" not in line]
    return meaningful[-1] if meaningful else type(exc).__name__

"""`--engine ray`: read -> map_batches through an actor pool -> back to the writer.

Each block becomes one Ray Data read task. An actor pool of `workers` actors,
each of which loads the project once, indexes the blocks; the results stream
back to this process, which writes each block as soon as all its documents
arrived. Ray restarts a killed actor and retries its block; a block is written
once, whole, whatever was retried.

The workers need the project's configuration and models at the same absolute
paths as here (a shared filesystem) and the same version of this package.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from indexer.batch.local import WorkerError
from indexer.batch.readers import read_block
from indexer.batch.records import BlockSpec, DocResult, Options, RayOptions, Record
from indexer.batch.work import BlockIndexer, ProjectRef
from indexer.errors import DependencyError

OnBlock = Callable[[BlockSpec, list[DocResult]], None]


def _records_table(spec: BlockSpec, records: list[Record]):
    import pyarrow as pa

    return pa.table(
        {
            "block": [spec.number] * len(records),
            "seq": list(range(len(records))),
            "id": [r.id for r in records],
            "where": [r.where for r in records],
            "text": [r.text for r in records],
            "error": [r.error for r in records],
        }
    )


def _datasource(specs: list[BlockSpec], options: Options):
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class BlockSource(Datasource):
        """One read task per block of the input."""

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, **_):
            return [
                ReadTask(
                    lambda spec=spec: [_records_table(spec, read_block(spec, options))],
                    BlockMetadata(
                        num_rows=spec.count,
                        size_bytes=None,
                        exec_stats=None,
                        input_files=(spec.source,),
                    ),
                )
                for spec in specs
            ]

    return BlockSource()


class RayIndexer:
    """A Ray actor: loads the project once, indexes whole blocks."""

    def __init__(self, ref: ProjectRef, options: Options):
        from indexer.errors import IndexerError

        try:
            self.indexer = BlockIndexer(ref, options)
        except IndexerError as exc:
            raise RuntimeError(
                f"the project could not be loaded on worker node "
                f"{os.uname().nodename}: {exc.message}"
            ) from None

    def __call__(self, table):
        import pyarrow as pa

        rows = table.to_pylist()
        records = [Record(r["id"], r["where"], r["text"], r["error"]) for r in rows]
        results = self.indexer.index_records(records)
        return pa.table(
            {
                "block": [r["block"] for r in rows],
                "seq": [r["seq"] for r in rows],
                "result": [json.dumps(d.to_json()) for d in results],
            }
        )


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
) -> None:
    """Index `specs` on Ray, calling `on_block` once for each finished block."""
    if not specs:
        return
    import ray
    from ray.data import ActorPoolStrategy

    started_here = start_ray(settings.address)
    expected = {spec.number: spec for spec in specs}
    arrived: dict[int, dict[int, DocResult]] = {}
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.read_datasource(
            _datasource(specs, options),
            override_num_blocks=len(specs),
            # reading is light: it must not wait for the CPUs the actors hold
            num_cpus=0,
            concurrency=max(1, settings.workers),
        ).map_batches(
            RayIndexer,
            fn_constructor_kwargs={"ref": ref, "options": options},
            batch_size=None,
            batch_format="pyarrow",
            # Ray Data restarts a killed actor and retries its block by default
            compute=ActorPoolStrategy(size=settings.workers),
            num_cpus=1,
            num_gpus=settings.gpus_per_worker or None,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                block = arrived.setdefault(row["block"], {})
                block[row["seq"]] = DocResult.from_json(json.loads(row["result"]))
                spec = expected[row["block"]]
                if len(block) == spec.count:
                    on_block(spec, [block[i] for i in range(spec.count)])
                    del arrived[row["block"]]
    except ray.exceptions.RayError as exc:
        raise WorkerError(f"the Ray cluster failed: {ray_error_reason(exc)}") from None
    finally:
        if started_here:
            ray.shutdown()


def ray_error_reason(exc: Exception) -> str:
    """The innermost message of a Ray error, without its remote traceback."""
    cause = exc
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = str(cause).strip().splitlines()
    meaningful = [line for line in text if line.strip() and "Traceback" not in line]
    return meaningful[-1] if meaningful else type(exc).__name__

"""Set up in every Ray worker of tests/batch/test_ray.py (its cluster's
`worker_process_setup_hook`): a record whose text holds KILLER kills the worker
that indexes it, as running out of memory or a crash in a backend would (if a
path follows KILLER, only while that file exists: the crash mended, the same
input can be resumed); one whose text holds SLOW takes SLOW_SECONDS longer."""

from __future__ import annotations

import os
import time
from pathlib import Path

KILLER = "this record kills the worker that indexes it"
SLOW = "this record takes long to index"
SLOW_SECONDS = 4.0


def install() -> None:
    from indexer.batch.work import BlockIndexer

    index_records = BlockIndexer.index_records

    def index_or_die(self, records):
        if any(_kills(r.text) for r in records):
            os._exit(1)
        if any(r.text and SLOW in r.text for r in records):
            time.sleep(SLOW_SECONDS)
        return index_records(self, records)

    BlockIndexer.index_records = index_or_die


def _kills(text: str | None) -> bool:
    if not text or KILLER not in text:
        return False
    crash = text.split(KILLER, 1)[1].split()[:1]
    return not crash or Path(crash[0]).exists()

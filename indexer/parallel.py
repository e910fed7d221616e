"""`train -j N`: map a function over items in N forked worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence

_TASK: Callable | None = None  # inherited by forked workers, so it needs no pickling


def _run(item):
    return _TASK(item)


def parallel_map(
    func: Callable, items: Sequence, jobs: int = 1, chunksize: int = 32
) -> list:
    """[func(x) for x in items], in `jobs` processes when that pays off."""
    global _TASK
    if (
        jobs <= 1
        or len(items) < 4 * chunksize
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return [func(x) for x in items]
    _TASK = func
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_run, items, chunksize)
    finally:
        _TASK = None

"""`train -j N`: map a function over items in N forked worker processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence

_TASK: Callable | None = None  # inherited by forked workers, so it needs no pickling


def die_with_parent() -> None:
    """On Linux, ask the kernel to kill this process (SIGKILL) when its parent
    dies, however the parent dies; elsewhere nothing (callers that must not
    outlive their parent also watch os.getppid())."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def set_torch_threads() -> None:
    """Torch threads for this process: OMP_NUM_THREADS when set (by the user
    or a `-j` worker), else one per core this process may run on. Once per
    process."""
    global _threads_set
    if _threads_set:
        return
    _threads_set = True
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(available_cores())


_threads_set = False


def _start_worker(jobs: int, parent: int) -> None:
    """In a worker: die with the parent (killed, it leaves no workers behind to
    finish their tasks and print a traceback each when they cannot send the
    results), and take its share of the cores."""
    die_with_parent()
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    _share_cores(jobs)


def _share_cores(jobs: int) -> None:
    """In a worker: its share of the cores for torch and OpenMP, so that N
    workers do not each start a thread per core (oversubscription)."""
    threads = max(1, available_cores() // jobs)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    global _threads_set
    _threads_set = True
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


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
        with multiprocessing.get_context("fork").Pool(
            jobs, initializer=_start_worker, initargs=(jobs, os.getpid())
        ) as pool:
            return pool.map(_run, items, chunksize)
    finally:
        _TASK = None

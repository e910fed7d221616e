"""How much memory is free, and giving freed native memory back to the system.

glibc's allocator keeps the memory a program frees for its own reuse: a
free block sits in the heap, and counts in the process's resident memory,
until the heap's top is free or `malloc_trim` is called. Native code that
builds and drops large temporary structures (omikuji builds a hash map for
every subject's centroid, then drops them all) leaves hundreds of megabytes
resident that nothing will use again, and the peak memory of a training
grows by that much. The two trimming helpers do nothing where the C library
is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# the shortest pause between two trims, and the largest share of the wall
# time spent trimming (a trim walks every arena, longer as the heap grows)
TRIM_EVERY_S = 0.2
TRIM_SHARE = 0.05


def available_memory() -> int:
    """Bytes free for new allocations: the smaller of the kernel's
    MemAvailable and what the cgroup's limit leaves (in a container); where
    neither can be read, the free physical pages, else no limit at all."""
    free = None
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        line = next(x for x in lines if x.startswith("MemAvailable:"))
        free = int(line.split()[1]) * 1024
    cgroup = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError, ValueError):
        limit = int((cgroup / "memory.max").read_text())  # "max": no limit
        left = limit - int((cgroup / "memory.current").read_text())
        free = left if free is None else min(free, left)
    if free is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return sys.maxsize if free is None else free


def _malloc_trim():
    """glibc's `malloc_trim`, or None where there is no glibc."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Hand the memory freed so far back to the system, once."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def returning_freed_memory(
    every: float = TRIM_EVERY_S, share: float = TRIM_SHARE
) -> Iterator[None]:
    """While the block runs (typically a native call that releases the GIL),
    hand freed memory back to the system from a background thread: every
    `every` seconds, or less often where trimming would take more than
    `share` of the time. The thread ends with the block."""
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    done = threading.Event()

    def keep_trimming() -> None:
        pause = every
        while not done.wait(pause):
            started = time.perf_counter()
            trim(0)
            pause = max(every, (time.perf_counter() - started) / share)

    trimmer = threading.Thread(target=keep_trimming, name="malloc-trim", daemon=True)
    trimmer.start()
    try:
        yield
    finally:
        done.set()
        trimmer.join()

"""How much memory the machine has and how much is free, and giving freed
native memory back to the system.

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
# cgroup v2's files: the memory limit of a container, and its use
CGROUP = Path("/sys/fs/cgroup")


def available_memory() -> int:
    """Bytes free for new allocations: the smaller of the kernel's
    MemAvailable and what the cgroup's limit leaves (in a container); where
    neither can be read, the free physical pages, else no limit at all."""
    free = _meminfo("MemAvailable")
    with contextlib.suppress(OSError, ValueError):
        left = _cgroup_limit() - int((CGROUP / "memory.current").read_text())
        free = left if free is None else min(free, left)
    if free is None:
        free = _sysconf_bytes("SC_AVPHYS_PAGES")
    return sys.maxsize if free is None else free


def total_memory() -> int:
    """Bytes of memory the machine has, or the cgroup's limit where that is
    smaller (in a container); else the physical pages, else no limit."""
    total = _meminfo("MemTotal")
    with contextlib.suppress(OSError, ValueError):
        total = _cgroup_limit() if total is None else min(total, _cgroup_limit())
    if total is None:
        total = _sysconf_bytes("SC_PHYS_PAGES")
    return sys.maxsize if total is None else total


def _meminfo(field: str) -> int | None:
    """A field of /proc/meminfo in bytes, or None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        line = next(x for x in lines if x.startswith(f"{field}:"))
        return int(line.split()[1]) * 1024
    return None


def _cgroup_limit() -> int:
    """The cgroup v2 memory limit; ValueError where it is "max" (none)."""
    return int((CGROUP / "memory.max").read_text())


def _sysconf_bytes(pages: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    return None


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

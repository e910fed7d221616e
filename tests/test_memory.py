"""Freed native memory goes back to the system while a long native call runs."""

import ctypes
import threading
import time

import pytest

from indexer.memory import returning_freed_memory

try:
    LIBC = ctypes.CDLL("libc.so.6")
    LIBC.malloc_trim  # noqa: B018 (glibc only)
except (OSError, AttributeError):
    LIBC = None

pytestmark = pytest.mark.skipif(LIBC is None, reason="needs glibc")

CHUNKS, CHUNK = 40_000, 1_000  # 40 MB of small blocks, as a native hash map


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def leave_freed_blocks_in_the_heap():
    """malloc 40 MB of small blocks, keep one block after them, and free the
    rest: glibc keeps the freed 40 MB resident (it trims only the heap's top,
    which the kept block holds). Returns the kept block, to free later."""
    LIBC.malloc.restype = ctypes.c_void_p
    LIBC.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(CHUNKS):
        block = LIBC.malloc(CHUNK)
        ctypes.memset(block, 1, CHUNK)
        blocks.append(block)
    kept = LIBC.malloc(CHUNK)
    for block in blocks:
        LIBC.free(block)
    return kept


def test_freed_memory_is_returned_while_the_block_runs():
    kept = leave_freed_blocks_in_the_heap()
    try:
        freed = resident_mb()
        time.sleep(0.3)
        assert resident_mb() > freed - 10, "glibc returned the blocks on its own"
        with returning_freed_memory(every=0.05):
            deadline = time.monotonic() + 10
            while resident_mb() > freed - 30 and time.monotonic() < deadline:
                time.sleep(0.05)  # as a native call would, without the GIL
            returned = freed - resident_mb()
    finally:
        LIBC.free(kept)
    assert returned >= 30, f"only {returned:.0f} MB of 40 MB went back"


def test_the_trimming_thread_ends_with_the_block():
    with returning_freed_memory(every=0.01):
        assert any(t.name == "malloc-trim" for t in threading.enumerate())
        time.sleep(0.05)
    assert not any(t.name == "malloc-trim" for t in threading.enumerate())


def test_the_thread_ends_when_the_block_fails():
    with pytest.raises(RuntimeError), returning_freed_memory(every=0.01):
        raise RuntimeError("native call failed")
    assert not any(t.name == "malloc-trim" for t in threading.enumerate())


def test_free_memory_is_at_most_what_the_machine_has():
    from indexer.memory import available_memory, total_memory

    with open("/proc/meminfo") as meminfo:
        total = next(int(x.split()[1]) * 1024 for x in meminfo if "MemTotal" in x)
    assert 0 < available_memory() <= total_memory() == total


def test_a_containers_memory_limit_bounds_total_and_free(tmp_path, monkeypatch):
    import indexer.memory

    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**28}\n")
    monkeypatch.setattr(indexer.memory, "CGROUP", tmp_path)
    assert indexer.memory.total_memory() == 2**30
    assert indexer.memory.available_memory() == 2**30 - 2**28
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the machine's
    assert indexer.memory.total_memory() > 2**30

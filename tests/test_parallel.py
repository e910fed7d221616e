from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from indexer.parallel import available_cores, parallel_map


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)
def test_workers_share_the_cores_instead_of_each_taking_all():
    import torch

    threads = parallel_map(lambda _: torch.get_num_threads(), range(128), jobs=2)
    assert set(threads) == {max(1, available_cores() // 2)}
    assert parallel_map(lambda x: x * 2, list(range(128)), jobs=2)[5] == 10


def test_a_process_uses_its_cores_unless_told_otherwise(monkeypatch):
    import torch

    from indexer import parallel

    monkeypatch.setattr(parallel, "_threads_set", False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        parallel.set_torch_threads()
        assert torch.get_num_threads() == available_cores()
    finally:
        torch.set_num_threads(before)


WORKERS_OF_A_KILLED_PARENT = """
import os, signal, sys, threading, time
from indexer.parallel import parallel_map

def work(x):
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.05)
    return x

threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()
parallel_map(work, list(range(2000)), jobs=2, chunksize=1)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods()
    or not __import__("sys").platform.startswith("linux"),
    reason="needs fork and Linux's parent-death signal",
)
def test_workers_die_with_a_killed_parent_without_tracebacks(tmp_path):
    """Killed mid-map (kill -9, out of memory), the parent leaves no workers
    that go on with their tasks and print a traceback each."""
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    child = subprocess.run(
        [sys.executable, "-c", WORKERS_OF_A_KILLED_PARENT, str(pids)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9
    workers = {int(line) for line in pids.read_text().split()}
    assert len(workers) == 2
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    assert "Traceback" not in child.stderr

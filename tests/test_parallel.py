from __future__ import annotations

import multiprocessing

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


def test_idle_cores_leave_out_the_busy_ones(monkeypatch):
    import os

    from indexer import parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0, 0))
    assert parallel.idle_cores() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 0, 0))
    assert parallel.idle_cores() == 1

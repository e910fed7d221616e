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

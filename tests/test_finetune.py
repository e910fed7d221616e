import numpy as np
import pytest

from indexer.neural.finetune import batches_without_repeats


def used(batches, keys, batch_size) -> set[int]:
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))  # each query at most once an epoch
    for batch in batches:
        assert 2 <= len(batch) <= batch_size
        assert len({keys[i] for i in batch}) == len(batch)  # no own negative
    return set(flat)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_queries_sharing_a_passage_wait_for_a_later_batch(seed):
    # subject frequencies are skewed: many queries share a few passages
    keys = np.random.default_rng(seed).zipf(1.5, 2000).tolist()
    batches = batches_without_repeats(keys, 16, np.random.default_rng(seed))
    left_out = set(range(len(keys))) - used(batches, keys, 16)
    # a query is left out only where no batch had room for its passage
    # (dropping it at the first clash used about half as many queries)
    open_batches = [{keys[i] for i in b} for b in batches if len(b) < 16]
    assert all(keys[i] in b for i in left_out for b in open_batches)
    assert len(left_out) < 0.3 * len(keys)


def test_every_query_is_used_when_passages_differ():
    keys = list(range(10))
    batches = batches_without_repeats(keys, 4, np.random.default_rng(0))
    assert used(batches, keys, 4) == set(keys)


def test_a_batch_needs_two_different_passages():
    assert batches_without_repeats([3, 3, 3], 4, np.random.default_rng(0)) == []
    assert batches_without_repeats([3], 4, np.random.default_rng(0)) == []

from __future__ import annotations

import numpy as np
import pytest

from indexer.neural.vectorindex import VectorIndex


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_finds_each_vector_itself(vectors, kind, tmp_path):
    index = VectorIndex.build(vectors, kind)
    sims, ids = index.search(vectors[:20], 3)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.9
    assert sims[:, 0] == pytest.approx(1.0, abs=1e-4) or kind != "flat"
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss", kind)
    np.testing.assert_array_equal(loaded.search(vectors[:20], 3)[1], ids)
    assert len(loaded) == 500 and loaded.memory_bytes() > 500 * 16 * 4 * 0.9


def test_exact_search_matches_numpy(vectors):
    sims, ids = VectorIndex.build(vectors, "auto").search(vectors[:5], 4)
    expected = np.argsort(-(vectors[:5] @ vectors.T), axis=1)[:, :4]
    np.testing.assert_array_equal(ids, expected)


def test_k_larger_than_the_index(vectors):
    sims, ids = VectorIndex.build(vectors[:3], "flat").search(vectors[:1], 10)
    assert ids.shape == (1, 3)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_the_same_vectors_build_the_same_index(kind):
    """faiss inserts into HNSW in thread-timing order when it adds with several
    threads (its documented reproducibility caveat); building single-threaded
    gives the same bytes every time."""
    import faiss

    rng = np.random.default_rng(1)
    many = rng.normal(size=(5000, 32)).astype(np.float32)
    many /= np.linalg.norm(many, axis=1, keepdims=True)
    threads = faiss.omp_get_max_threads()
    first = faiss.serialize_index(VectorIndex.build(many, kind).index)
    second = faiss.serialize_index(VectorIndex.build(many, kind).index)
    np.testing.assert_array_equal(first, second)
    assert faiss.omp_get_max_threads() == threads  # searching stays parallel

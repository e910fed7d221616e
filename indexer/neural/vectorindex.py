"""Nearest-neighbour search over normalised vectors with faiss (inner product)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

EXACT_LIMIT = 100_000  # below this many vectors, exact search is fast enough


@contextmanager
def _one_thread() -> Iterator[None]:
    """Build indexes single-threaded: faiss' parallel HNSW insertion and k-means
    depend on thread timing, and the same vectors must give the same index."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


class VectorIndex:
    """A faiss index: exact (`flat`), `hnsw` or `ivf`; saved with faiss' own writer."""

    def __init__(self, index, kind: str):
        self.index = index
        self.kind = kind

    @classmethod
    def build(
        cls, vectors: np.ndarray, kind: str = "auto", hnsw_m: int = 32, nlist: int = 0
    ) -> VectorIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with _one_thread():  # threads would insert in a varying order
            return cls._build(vectors, kind, hnsw_m, nlist)

    @classmethod
    def _build(
        cls, vectors: np.ndarray, kind: str, hnsw_m: int, nlist: int
    ) -> VectorIndex:
        import faiss

        n, dim = vectors.shape
        if kind == "auto":
            kind = "flat" if n <= EXACT_LIMIT else "hnsw"
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(
                quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            index.train(vectors)
            index.nprobe = max(1, nlist // 16)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        index.add(vectors)
        return cls(index, kind)

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (their ids continue after the existing ones)."""
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids) of the k nearest vectors per query; id -1 pads."""
        k = min(k, self.index.ntotal)
        if k == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str) -> VectorIndex:
        import faiss

        return cls(faiss.read_index(str(path)), kind)

    def memory_bytes(self) -> int:
        """Serialised size: a close estimate of the index's memory."""
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

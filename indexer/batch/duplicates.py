"""The ids a batch run has indexed, to index each id once.

A record whose id an earlier record of the run already has is not indexed
again: it goes to the rejects, the first one stays. The ids are kept as
64-bit hashes in a few sorted arrays (8 bytes an id, so ten million ids take
80 MB), which this one process compares; two different ids with the same hash
(odds about n^2 / 2^65: 3e-6 for ten million ids) would count as one.
"""

from __future__ import annotations

import numpy as np

from indexer.batch.records import DocResult

DUPLICATE = "duplicate id: an earlier record with this id is indexed"


class SeenIds:
    """Hashes of the ids met so far, in sorted arrays of growing sizes."""

    def __init__(self):
        self._levels: list[np.ndarray] = []

    def first_times(self, ids: list[str]) -> np.ndarray:
        """For each id, in order, whether it is new (also within `ids`); the
        new ones are remembered."""
        hashes = np.fromiter((hash(i) for i in ids), np.int64, len(ids))
        new = _first_occurrences(hashes) & ~self._contains(hashes)
        self._add(np.unique(hashes[new]))
        return new

    def _contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), bool)
        for level in self._levels:
            at = np.minimum(np.searchsorted(level, hashes), len(level) - 1)
            found |= level[at] == hashes
        return found

    def _add(self, hashes: np.ndarray) -> None:
        if not len(hashes):
            return
        self._levels.append(hashes)
        # merge while the newest level is as large as the one before: log2(n) levels
        while len(self._levels) > 1 and len(self._levels[-2]) <= len(self._levels[-1]):
            newest = self._levels.pop()
            self._levels[-1] = np.union1d(self._levels[-1], newest)


def _first_occurrences(hashes: np.ndarray) -> np.ndarray:
    first = np.zeros(len(hashes), bool)
    first[np.unique(hashes, return_index=True)[1]] = True
    return first


def reject_duplicates(seen: SeenIds, results: list[DocResult]) -> int:
    """Turn the indexed results whose id was indexed before into rejects; how many."""
    indexed = [r for r in results if r.error is None]
    duplicates = 0
    for result, new in zip(
        indexed, seen.first_times([r.id for r in indexed]), strict=True
    ):
        if not new:
            result.suggestions, result.error = [], DUPLICATE
            duplicates += 1
    return duplicates

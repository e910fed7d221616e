from __future__ import annotations

import numpy as np
import pytest

from indexer.suggestion import InvalidScores, SuggestionBatch


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.2])
def test_nan_and_out_of_range_scores_are_refused(bad):
    with pytest.raises(InvalidScores, match=r"1 score\(s\) are NaN or outside"):
        SuggestionBatch.from_rows([([0, 1], [0.5, bad])], 4)


def test_rounding_past_the_unit_interval_is_clipped():
    batch = SuggestionBatch.from_rows([([0, 1], [1.00001, -0.00001])], 4)
    assert [(s.subject, s.score) for s in batch.row(0)] == [(0, 1.0)]


def test_a_backend_with_invalid_scores_is_named(projects):
    from backends.dummy import DummyBackend
    from indexer.errors import BackendError

    class BrokenBackend(DummyBackend):
        def _suggest_batch(self, texts):
            return SuggestionBatch.from_rows([([0], [np.nan])] * len(texts), 3)

    backend = BrokenBackend(projects.get("dummy-en"))
    with pytest.raises(
        BackendError,
        match="Backend 'dummy' of project 'dummy-en' returned invalid scores: 1 "
        r"score\(s\) are NaN",
    ):
        backend.suggest_batch(["some text"])


def test_filter_by_limit_and_threshold():
    batch = SuggestionBatch.from_dense(
        np.array([[0.1, 0.9, 0.5, 0.7], [0.3, 0.0, 0.2, 0.0]])
    )
    top = batch.filter(limit=2, threshold=0.25)
    assert [s.subject for s in top.row(0)] == [1, 3]
    assert [s.subject for s in top.row(1)] == [0]


def test_from_dense_keeps_the_best_per_row():
    scores = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    assert [s.subject for s in SuggestionBatch.from_dense(scores, limit=2).row(0)] == [
        4,
        3,
    ]


def test_ties_are_broken_by_subject_id():
    batch = SuggestionBatch.from_rows([([3, 1, 2], [0.5, 0.5, 0.5])], 4)
    assert [s.subject for s in batch.row(0)] == [1, 2, 3]
    assert [s.subject for s in batch.filter(limit=2).row(0)] == [1, 2]


def test_ranks_are_one_based_per_row():
    batch = SuggestionBatch.from_rows([([0, 1], [0.2, 0.8]), ([2], [0.4])], 3)
    rows, cols, scores, ranks = batch.ranks()
    assert rows.tolist() == [0, 0, 1]
    assert cols.tolist() == [1, 0, 2]
    assert ranks.tolist() == [1, 2, 1]


def test_vstack_and_empty():
    empty = SuggestionBatch.empty(2, 3)
    assert len(SuggestionBatch.vstack([empty, empty])) == 4
    assert list(empty) == [[], []]


def test_promote_swaps_the_best_flagged_into_the_reserved_slots():
    batch = SuggestionBatch.from_dense(
        np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0.9, 0.8, 0.7, 0, 0, 0, 0]])
    )
    flagged = np.array([0, 0, 0, 0, 1, 1, 1], bool)
    promoted = batch.promote(flagged, slots=2, depth=3)
    first = [(s.subject, round(s.score, 2)) for s in promoted.row(0)]
    # the two lowest of the top 3 give their scores to the two best flagged
    assert first[:3] == [(0, 0.9), (4, 0.8), (5, 0.7)]
    assert [s for s, _ in first[3:]] == [3, 1, 2, 6]
    # no flagged candidate in the second row: unchanged
    assert [s.subject for s in promoted.row(1)] == [0, 1, 2]


def test_promote_leaves_rows_that_already_fill_their_slots():
    batch = SuggestionBatch.from_dense(np.array([[0.9, 0.8, 0.7, 0.6]]))
    flagged = np.array([0, 1, 0, 1], bool)
    assert batch.promote(flagged, slots=1, depth=2).row(0) == batch.row(0)
    assert batch.promote(flagged, slots=0, depth=4).row(0) == batch.row(0)

from __future__ import annotations

import pytest

from indexer.eval import evaluate_arrays
from indexer.optimize import best_limit_threshold
from indexer.suggestion import SuggestionBatch


def test_best_limit_and_threshold_agree_with_the_evaluator():
    gold = [[0, 1], [3], [2]]
    batch = SuggestionBatch.from_rows(
        [([0, 2, 1], [0.9, 0.3, 0.5]), ([4, 3], [0.7, 0.6]), ([2, 0], [0.8, 0.1])], 5
    )
    table, best = best_limit_threshold([(gold, batch)], 5, max_limit=3)
    assert [r["limit"] for r in table] == [1, 2, 3]
    for row in table:
        expected = evaluate_arrays(
            gold, batch, limit=row["limit"], threshold=row["threshold"]
        )
        assert row["f1"] == pytest.approx(expected["f1"])
    assert best["f1"] == max(r["f1"] for r in table)
    # two subjects per document, and a threshold that drops the 0.1 of document 2
    assert best["limit"] == 2 and 0.1 < best["threshold"] <= 0.5
    assert best["f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)

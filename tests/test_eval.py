from __future__ import annotations

import numpy as np
import pytest

from indexer.eval import Evaluator, evaluate_arrays
from indexer.suggestion import SuggestionBatch

GOLD = [[0, 1], [3]]
ROWS = [([0, 2, 1], [0.9, 0.8, 0.5]), ([4, 3], [0.7, 0.6])]


@pytest.fixture
def metrics():
    batch = SuggestionBatch.from_rows(ROWS, 5)
    return evaluate_arrays(
        GOLD, batch, limit=2, threshold=0.55, seen=np.array([1, 1, 1, 0, 0]), ks=(1, 3)
    )


def test_rank_metrics_match_hand_computed_values(metrics):
    assert metrics["precision@1"] == pytest.approx(0.5)
    assert metrics["precision@3"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["f1@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["f1@3"] == pytest.approx((0.8 + 2 / 3) / 2)
    ndcg0 = 1.5 / (1 + 1 / np.log2(3))
    assert metrics["ndcg@3"] == pytest.approx((ndcg0 + 1 / np.log2(3)) / 2)
    assert metrics["lrap"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_configured_limit_and_threshold(metrics):
    assert metrics["precision"] == pytest.approx(0.5)
    assert metrics["recall"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics["precision_micro"] == pytest.approx(0.5)
    assert metrics["recall_micro"] == pytest.approx(2 / 3)
    assert metrics["f1_micro"] == pytest.approx(4 / 7)
    assert metrics["f1_macro"] == pytest.approx(0.4)


def test_recall_on_subjects_unseen_in_training(metrics):
    assert metrics["unseen_gold"] == 1
    assert metrics["unseen_recall@1"] == 0.0
    assert metrics["unseen_recall@3"] == 1.0


def test_lrap_agrees_with_scikit_learn():
    from sklearn.metrics import label_ranking_average_precision_score

    rng = np.random.default_rng(0)
    scores = rng.random((30, 12)) * (rng.random((30, 12)) < 0.4)
    gold = [
        list(rng.choice(12, size=rng.integers(1, 4), replace=False)) for _ in range(30)
    ]
    y = np.zeros((30, 12), dtype=int)
    for i, g in enumerate(gold):
        y[i, g] = 1
    ours = evaluate_arrays(gold, SuggestionBatch.from_dense(scores))["lrap"]
    assert ours == pytest.approx(label_ranking_average_precision_score(y, scores))


def test_batches_accumulate_like_one_batch():
    batch = SuggestionBatch.from_rows(ROWS, 5)
    whole = evaluate_arrays(GOLD, batch, limit=2)
    evaluator = Evaluator(5, limit=2)
    evaluator.add(GOLD[:1], SuggestionBatch.from_rows(ROWS[:1], 5))
    evaluator.add(GOLD[1:], SuggestionBatch.from_rows(ROWS[1:], 5))
    assert evaluator.results() == whole


def test_documents_without_gold_are_not_averaged():
    batch = SuggestionBatch.from_rows([([0], [0.9]), ([1], [0.9])], 3)
    metrics = evaluate_arrays([[0], []], batch, ks=(1,))
    assert metrics["documents"] == 2
    assert metrics["documents_with_subjects"] == 1
    assert metrics["precision@1"] == 1.0


def test_per_subject_results():
    evaluator = Evaluator(5, limit=2, threshold=0.55)
    evaluator.add(GOLD, SuggestionBatch.from_rows(ROWS, 5))
    rows = {r["subject"]: r for r in evaluator.per_subject()}
    assert rows[0] == {
        "subject": 0,
        "support": 1,
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert rows[1]["fn"] == 1 and rows[2]["fp"] == 1


def test_a_batch_without_any_suggestion_scores_zero():
    """No suggestion at all (integer, empty counts) still gives float zeros."""
    metrics = evaluate_arrays([[1], [2, 3]], SuggestionBatch.empty(2, 5), seen=[1] * 5)
    assert metrics["documents_with_subjects"] == 2
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 0.0
    assert metrics["ndcg@10"] == metrics["f1@5"] == 0.0
    assert metrics["unseen_gold"] == 0


def test_per_document_values_and_subject_counts():
    evaluator = Evaluator(5, limit=2, threshold=0.55, seen=np.array([1, 1, 1, 0, 0]))
    evaluator.add(GOLD[:1], SuggestionBatch.from_rows(ROWS[:1], 5))
    evaluator.add([[]], SuggestionBatch.from_rows([([1], [0.9])], 5))
    evaluator.add(GOLD[1:], SuggestionBatch.from_rows(ROWS[1:], 5))
    per_doc = evaluator.per_document()
    # document 0: chosen 0 (hit) and 2 (miss); document 2: 4 (miss) and 3 (hit)
    assert per_doc["precision"][[0, 2]].tolist() == [0.5, 0.5]
    assert per_doc["recall"][[0, 2]].tolist() == [0.5, 1.0]
    assert np.isnan(per_doc["f1"][1])  # no gold subjects: not averaged
    counts = evaluator.document_counts()
    assert counts["unseen_gold"].tolist() == [0, 0, 1]
    assert counts["unseen_hits@3"].tolist() == [0, 0, 1]
    tp, fp, fn = evaluator.subject_counts()
    assert tp.shape == (3, 5)
    assert (np.asarray(tp.sum(axis=0)).ravel() == evaluator.tp).all()
    assert (np.asarray(fp.sum(axis=0)).ravel() == evaluator.fp).all()
    assert (np.asarray(fn.sum(axis=0)).ravel() == evaluator.fn).all()
    assert fp[1, 1] == 1  # the suggestion for the document without gold

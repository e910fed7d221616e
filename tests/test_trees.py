from __future__ import annotations

import numpy as np
import pytest

from indexer.trees import TreeEnsemble


def _data(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.2 * rng.standard_normal(n)) > 0.9
    return x, y


def test_array_trees_predict_what_scikit_learn_predicts():
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _data()
    model = HistGradientBoostingClassifier(
        max_iter=30, max_leaf_nodes=7, early_stopping=False, random_state=0
    ).fit(x, y)
    trees = TreeEnsemble.from_sklearn(model, ["a", "b", "c", "d"])
    test, _ = _data(seed=1, n=500)
    expected = model.predict_proba(test)[:, 1]
    np.testing.assert_allclose(trees.predict(test), expected, atol=1e-9)
    assert len(trees.roots) == 30


def test_saved_trees_reload_with_identical_scores(tmp_path):
    x, y = _data()
    trees = TreeEnsemble.fit(x, y, ["a", "b", "c", "d"], trees=20)
    trees.save(tmp_path, "model")
    assert {p.name for p in tmp_path.iterdir()} == {"model.npz", "model.json"}
    again = TreeEnsemble.load(tmp_path, "model")
    np.testing.assert_array_equal(again.predict(x), trees.predict(x))
    # the scores order the rows: positives score higher on average
    scores = trees.predict(x)
    assert scores[y].mean() > scores[~y].mean() + 0.3


def test_feature_columns_follow_the_names_and_refuse_unknown_ones():
    x, y = _data()
    trees = TreeEnsemble.fit(x, y, ["a", "b", "c", "d"], trees=5)
    assert trees.columns(("d", "c", "b", "a", "e")) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="unknown"):
        trees.columns(("a", "b", "c"))


def test_no_rows_give_no_scores():
    x, y = _data()
    trees = TreeEnsemble.fit(x, y, ["a", "b", "c", "d"], trees=5)
    assert trees.predict(np.zeros((0, 4))).shape == (0,)

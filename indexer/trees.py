"""Gradient-boosted decision trees for binary scoring, stored as plain arrays.

scikit-learn fits the trees (`HistGradientBoostingClassifier`); the fitted
trees are copied into flat arrays, saved as npz with a JSON description and
evaluated here with numpy, so a saved model needs neither pickle nor the same
scikit-learn version to load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRAYS = ("feature", "threshold", "left", "right", "value", "is_leaf", "roots")


@dataclass
class TreeEnsemble:
    """Trees over named features; `predict` gives P(positive) per row."""

    features: list[str]
    baseline: float
    feature: np.ndarray  # per node: the column tested
    threshold: np.ndarray  # per node: go left when x <= threshold
    left: np.ndarray  # per node: index of the left child (whole ensemble)
    right: np.ndarray
    value: np.ndarray  # per leaf: its additive contribution (log-odds)
    is_leaf: np.ndarray
    roots: np.ndarray  # index of each tree's root node

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        features: list[str],
        *,
        trees: int = 100,
        leaves: int = 7,
        min_samples_leaf: int = 200,
        learning_rate: float = 0.1,
        seed: int = 0,
    ) -> TreeEnsemble:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            max_iter=trees,
            max_leaf_nodes=leaves,
            min_samples_leaf=min_samples_leaf,
            learning_rate=learning_rate,
            early_stopping=False,
            random_state=seed,
        )
        model.fit(x, y.astype(np.int8))
        return cls.from_sklearn(model, features)

    @classmethod
    def from_sklearn(cls, model, features: list[str]) -> TreeEnsemble:
        """Copy the trees of a fitted binary HistGradientBoostingClassifier."""
        parts = {name: [] for name in ARRAYS}
        offset = 0
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            parts["roots"].append([offset])
            parts["feature"].append(nodes["feature_idx"])
            parts["threshold"].append(nodes["num_threshold"])
            parts["left"].append(nodes["left"].astype(np.int64) + offset)
            parts["right"].append(nodes["right"].astype(np.int64) + offset)
            parts["value"].append(nodes["value"])
            parts["is_leaf"].append(nodes["is_leaf"].astype(bool))
            offset += len(nodes)
        arrays = {name: np.concatenate(values) for name, values in parts.items()}
        return cls(
            features=list(features),
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            feature=arrays["feature"].astype(np.int32),
            threshold=arrays["threshold"].astype(np.float64),
            left=arrays["left"].astype(np.int32),
            right=arrays["right"].astype(np.int32),
            value=arrays["value"].astype(np.float64),
            is_leaf=arrays["is_leaf"],
            roots=arrays["roots"].astype(np.int32),
        )

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of each row of `x` (columns in the order of `features`)."""
        x = np.asarray(x, dtype=np.float64)
        if not len(x):
            return np.zeros(0)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        while True:
            inner = ~self.is_leaf[node]
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            child = np.where(go_left, self.left[node], self.right[node])
            node = np.where(inner, child, node)
        return self.baseline + self.value[node].sum(axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(self.decision(x))

    def save(self, directory: Path, name: str) -> None:
        np.savez(
            Path(directory) / f"{name}.npz",
            **{key: getattr(self, key) for key in ARRAYS},
        )
        (Path(directory) / f"{name}.json").write_text(
            json.dumps({"features": self.features, "baseline": self.baseline})
        )

    @classmethod
    def load(cls, directory: Path, name: str) -> TreeEnsemble:
        meta = json.loads((Path(directory) / f"{name}.json").read_text())
        with np.load(Path(directory) / f"{name}.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ARRAYS}
        return cls(features=meta["features"], baseline=meta["baseline"], **arrays)

    def columns(self, names: tuple[str, ...]) -> list[int]:
        """Where each of the model's features is among `names` (the current
        feature order); a model needs every feature it was trained with."""
        missing = [f for f in self.features if f not in names]
        if missing:
            raise ValueError(f"features unknown to this version: {missing}")
        return [names.index(f) for f in self.features]

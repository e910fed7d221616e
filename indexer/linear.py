"""A linear scorer: named features -> logistic regression -> JSON weights ->
sigmoid(x @ w). The backends that learn how much each of their features
counts share it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1 / (1 + np.exp(-z))


@dataclass
class LinearScorer:
    """Weights for named feature columns; a probability per row of features.

    There is no separate intercept: a constant feature column carries it."""

    features: tuple[str, ...]
    weights: dict[str, float]

    @classmethod
    def fit(
        cls,
        features: Sequence[str],
        x: np.ndarray,
        y: np.ndarray,
        default: Mapping[str, float],
        regularisation: float = 1.0,
    ) -> LinearScorer:
        """Logistic regression of `y` (0/1) on the columns of `x`; the `default`
        weights when `y` has only one class, so there is nothing to learn."""
        features = tuple(features)
        if len(y) == 0 or y.min() == y.max():
            return cls(features, dict(default))
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(
            C=regularisation, fit_intercept=False, max_iter=1000
        ).fit(x, y)
        return cls(
            features, dict(zip(features, map(float, model.coef_[0]), strict=True))
        )

    @classmethod
    def load(cls, features: Sequence[str], path: Path) -> LinearScorer:
        """Read weights written by `save`."""
        return cls(tuple(features), json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        """Write the weights as JSON (name -> weight)."""
        path.write_text(json.dumps(self.weights, indent=2))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The probability of each row of `x` (columns in `features` order).
        A feature without a weight (added after the model was trained) counts 0."""
        w = np.array(
            [self.weights.get(name, 0.0) for name in self.features], np.float32
        )
        return sigmoid(x @ w)

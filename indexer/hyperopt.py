"""Tuning a project's settings on a validation corpus (`indexer hyperopt`).

- An `ensemble`: the source weights and the exponent. Each source scores the
  corpus once; a trial only re-weights the cached scores, so hundreds of
  trials take seconds. Half the trials are random (weights uniform, exponent
  log-uniform), the rest perturb the best so far.
- Any backend whose `search_space` is not empty (parameters read only when
  suggesting, e.g. xmc's `beam_size`): the choices are tried on the trained
  model.

The first trial is always the project's current settings, so the best is
never worse than what is configured (on this corpus).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.errors import UsageError
from indexer.eval import Evaluator
from indexer.suggestion import SuggestionBatch

EXPONENT_RANGE = (0.25, 4.0)


@dataclass
class Trial:
    """One setting and its score."""

    settings: dict
    score: float
    metrics: dict = field(default_factory=dict)


@dataclass
class HyperoptResult:
    """All trials, the best one and the config snippet that applies it."""

    project_id: str
    metric: str
    trials: list[Trial]
    best: Trial
    baseline: Trial

    def snippet(self) -> str:
        """A projects.cfg section with the best settings."""
        lines = [f"[{self.project_id}]"]
        lines += [f"{key} = {value}" for key, value in self.best.settings.items()]
        return "\n".join(lines)


def hyperopt(
    project,
    paths: Sequence,
    trials: int = 100,
    seed: int = 0,
    metric: str = "ndcg@10",
    batch_size: int = 64,
    progress: Callable | None = None,
) -> HyperoptResult:
    """Search the settings of `project` that maximise `metric` on the corpus."""
    docs = [d for d in project.corpus(paths) if d.subjects]
    if not docs:
        raise UsageError("The validation corpus contains no document with subjects")
    texts = [d.text for d in docs]
    gold = [d.subjects for d in docs]
    n_subjects = len(project.vocab)

    def score(batch: SuggestionBatch) -> tuple[float, dict]:
        evaluator = Evaluator(
            n_subjects, limit=project.limit, threshold=project.threshold
        )
        evaluator.add(gold, batch)
        results = evaluator.results()
        if metric not in results:
            valid = ", ".join(k for k, v in results.items() if isinstance(v, float))
            raise UsageError(f"Unknown metric '{metric}'. Metrics: {valid}")
        return float(results[metric]), results

    backend = project.backend
    if backend.name == "ensemble":
        search = _ensemble_trials(backend, texts, batch_size, trials, seed, score)
    elif backend.search_space:
        search = _param_trials(project, texts, batch_size, trials, seed, score)
    else:
        raise UsageError(
            f"Project '{project.id}' (backend {backend.name}) has nothing that "
            "`indexer hyperopt` tunes: it tunes ensembles (weights, exponent) and "
            "backends with suggest-time parameters (e.g. xmc's beam_size)"
            + (
                "; a calibrated fusion learns its combination with `indexer train "
                f"{project.id} CORPUS`"
                if backend.kind == "ensemble"
                else ""
            )
        )
    done: list[Trial] = []
    for trial in search:
        done.append(trial)
        if progress:
            progress(trial)
    best = max(done, key=lambda t: t.score)  # the earliest of equal scores
    return HyperoptResult(project.id, metric, done, best, done[0])


def _batches(backend, texts: list[str], batch_size: int) -> SuggestionBatch:
    return SuggestionBatch.vstack(
        [
            backend.suggest_batch(texts[i : i + batch_size])
            for i in range(0, len(texts), batch_size)
        ]
    )


def _ensemble_trials(backend, texts, batch_size, trials, seed, score):
    """Weights and exponent of a weighted-mean ensemble, on cached scores."""
    sources = backend.sources()
    ids = [p.id for p, _ in sources]
    matrices = [_batches(p.backend, texts, batch_size).matrix for p, _ in sources]
    rng = np.random.default_rng(seed)

    def run(weights: np.ndarray, exponent: float) -> Trial:
        weights = np.asarray(weights, np.float64)
        weights = weights / (weights.sum() or 1.0)
        value, metrics = score(backend.fuse(matrices, list(weights), exponent))
        sources_value = ", ".join(
            f"{i}:{w:.4f}" for i, w in zip(ids, weights, strict=True)
        )
        settings = {"sources": sources_value, "exponent": round(exponent, 4)}
        return Trial(settings, value, metrics)

    low, high = (math.log(x) for x in EXPONENT_RANGE)
    best = run(np.array([w for _, w in sources]), backend.params.exponent)
    best_point = (np.array([w for _, w in sources], float), backend.params.exponent)
    yield best
    for n in range(1, trials):
        if n < trials // 2:
            weights = rng.uniform(0.0, 1.0, len(ids))
            exponent = math.exp(rng.uniform(low, high))
        else:  # refine around the best: multiplicative noise that shrinks
            spread = 0.5 * (1 - (n - trials // 2) / max(trials - trials // 2, 1)) + 0.05
            w0, e0 = best_point
            w0 = w0 / (w0.sum() or 1.0)
            weights = w0 * np.exp(rng.normal(0.0, spread, len(ids)))
            exponent = float(
                np.clip(e0 * math.exp(rng.normal(0.0, spread)), *EXPONENT_RANGE)
            )
        trial = run(weights, exponent)
        if trial.score > best.score:
            best, best_point = trial, (weights, exponent)
        yield trial


def _param_trials(project, texts, batch_size, trials, seed, score):
    """The backend's declared suggest-time parameters: a grid, or a random
    sample of it when it is larger than `trials`."""
    backend_class = project.backend_class
    space = backend_class.search_space
    current = project.backend.params
    names = list(space)
    grid = list(itertools.product(*(space[name] for name in names)))
    rng = np.random.default_rng(seed)
    if len(grid) > trials - 1:
        grid = [grid[i] for i in sorted(rng.choice(len(grid), trials - 1, False))]
    points = [tuple(getattr(current, name) for name in names), *grid]
    seen = set()
    for point in points:
        if point in seen:
            continue
        seen.add(point)
        settings = dict(zip(names, point, strict=True))
        backend = backend_class(project, {**project.config.params, **settings})
        value, metrics = score(_batches(backend, texts, batch_size))
        yield Trial(settings, value, metrics)

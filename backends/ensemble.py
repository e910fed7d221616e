"""Weighted fusion of other projects' scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.backend import ENSEMBLE, Backend
from indexer.errors import ConfigError
from indexer.params import param
from indexer.suggestion import SuggestionBatch


@dataclass
class UnseenSlotsParams:
    unseen_slots: str = param(
        "auto",
        "of the top 'unseen_depth' suggestions, this many are kept for the best "
        "subjects that no source saw in training: a number (0: rank by score "
        "alone) or auto (as many as new subjects are expected to make up)",
    )
    unseen_depth: int = param(
        10, "how many top suggestions 'unseen_slots' applies to", min=1
    )


@dataclass
class EnsembleParams(UnseenSlotsParams):
    sources: str = param("", "source projects with weights: 'a:0.6, b:0.4'")
    exponent: float = param(
        1.0, "scores are raised to this power before weighting", min=0.0
    )


def parse_sources(value: str, where: str) -> list[tuple[str, float]]:
    """'a:0.6, b' -> [('a', 0.6), ('b', 1.0)]."""
    sources = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, weight = item.partition(":")
        try:
            sources.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ConfigError(
                f"{where}: weight of source '{name}' must be a number, got '{weight}'"
            ) from None
    if not sources:
        raise ConfigError(
            f"{where}: set 'sources', e.g. sources = tfidf-en:0.6, lexical-en:0.4"
        )
    if any(w < 0 for _, w in sources):
        raise ConfigError(f"{where}: source weights must be >= 0")
    return sources


class EnsembleBackend(Backend):
    """Weighted mean of the source projects' scores (one shared vocabulary)."""

    name = "ensemble"
    kind = ENSEMBLE
    Params = EnsembleParams
    trainable = False
    needs_training = False

    def sources(self) -> list[tuple[object, float]]:
        where = f"Project '{self.project.id}'"
        out = []
        for source_id, weight in parse_sources(self.params.sources, where):
            if source_id == self.project.id:
                raise ConfigError(f"{where}: an ensemble cannot use itself as a source")
            source = self.project.projects.get(source_id)
            if source.config.vocab != self.project.config.vocab:
                raise ConfigError(
                    f"{where}: source '{source_id}' uses vocabulary "
                    f"'{source.config.vocab}', "
                    f"not '{self.project.config.vocab}'"
                )
            out.append((source, weight))
        return out

    def seen_subjects(self) -> np.ndarray | None:
        """The largest training frequency of each subject among the sources."""
        counts = [
            c for c in (p.seen_subjects() for p, _ in self.sources()) if c is not None
        ]
        if not counts:
            return None
        n = len(self.project.vocab)
        out = np.zeros(n, np.int64)
        for c in counts:
            out[: len(c)] = np.maximum(out[: len(c)], c[:n])
        return out

    def unseen_slots(self, seen: np.ndarray | None) -> int:
        """How many of the top `unseen_depth` suggestions go to unseen subjects.

        auto: the Good-Turing estimate of the share of future subject
        assignments that will be new, the share of training assignments whose
        subject occurred exactly once, times `unseen_depth` (a vocabulary
        whose subjects all recur often gets none)."""
        value = str(self.params.unseen_slots).strip().lower()
        if value == "auto":
            total = 0 if seen is None else int(seen.sum())
            if total == 0:
                return 0
            once = int(np.count_nonzero(seen == 1))
            return round(self.params.unseen_depth * once / total)
        if not value.isdigit():
            raise ConfigError(
                f"Project '{self.project.id}': unseen_slots must be 'auto' or a "
                f"whole number >= 0, got '{self.params.unseen_slots}'"
            )
        return int(value)

    def keep_unseen_slots(self, batch: SuggestionBatch) -> SuggestionBatch:
        """Promote subjects unseen in the sources' training into the reserved
        slots, so that new subjects stay visible next to well-known ones.
        Nothing changes where no source was trained (everything is unseen)."""
        self._ensure_loaded()
        if self._seen is None or self._slots == 0:
            return batch
        return batch.promote(self._seen == 0, self._slots, self.params.unseen_depth)

    def _why_not_trainable(self) -> str:
        names = ", ".join(p.id for p, _ in self.sources())
        return (
            f"Project '{self.project.id}' is an ensemble with nothing to train: train "
            f"its sources ({names})"
        )

    def _why_not_learning(self) -> str:
        names = ", ".join(p.id for p, _ in self.sources())
        return (
            f"Backend '{self.name}' of project '{self.project.id}' does not learn "
            f"online: it has no model of its own; let its sources learn ({names})"
        )

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._sources = self.sources()
        self._seen = self.seen_subjects()
        self._slots = self.unseen_slots(self._seen)

    def fuse(
        self, matrices: list, weights: list[float], exponent: float
    ) -> SuggestionBatch:
        """The ensemble's formula: the weighted mean of the sources' score
        matrices, each raised to `exponent`, with the unseen slots kept
        (`indexer hyperopt` tries weights and exponents through it)."""
        total = sum(weights) or 1.0
        fused = None
        for m, weight in zip(matrices, weights, strict=True):
            part = (m.power(exponent) if exponent != 1.0 else m) * (weight / total)
            fused = part if fused is None else fused + part
        return self.keep_unseen_slots(SuggestionBatch(fused))

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        matrices = [p.backend.suggest_batch(texts).matrix for p, _ in self._sources]
        weights = [w for _, w in self._sources]
        return self.fuse(matrices, weights, self.params.exponent)

"""Weighted fusion of other projects' scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.backend import ENSEMBLE, Backend
from indexer.errors import ConfigError
from indexer.params import param
from indexer.suggestion import SuggestionBatch


@dataclass
class EnsembleParams:
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

    def train(self, corpus, jobs: int = 1) -> dict:
        names = ", ".join(p.id for p, _ in self.sources())
        raise ConfigError(
            f"Project '{self.project.id}' is an ensemble with nothing to train: train "
            f"its sources ({names})"
        )

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._sources = self.sources()

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        total = sum(w for _, w in self._sources) or 1.0
        fused = None
        for source, weight in self._sources:
            m = source.backend.suggest_batch(texts).matrix
            if self.params.exponent != 1.0:
                m = m.power(self.params.exponent)
            m = m * (weight / total)
            fused = m if fused is None else fused + m
        return SuggestionBatch(fused)

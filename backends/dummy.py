"""A deterministic backend for tests: always suggests the same subject."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from indexer.backend import ASSOCIATIVE, Backend
from indexer.errors import ConfigError
from indexer.params import param
from indexer.suggestion import SuggestionBatch


@dataclass
class DummyParams:
    uri: str = param("", "subject to suggest (default: the first concept)")
    score: float = param(1.0, "score of the suggestion", min=0.0, max=1.0)


class DummyBackend(Backend):
    """Suggests one fixed subject for every non-empty text; training is a no-op."""

    name = "dummy"
    kind = ASSOCIATIVE
    Params = DummyParams
    needs_training = False

    def _subject(self) -> int:
        if not self.params.uri:
            return 0
        concept_id = self.project.vocab.id_of(self.params.uri)
        if concept_id is None:
            raise ConfigError(
                f"Project '{self.project.id}': uri {self.params.uri} is not in the "
                "vocabulary"
            )
        return concept_id

    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        (directory / "dummy.json").write_text(json.dumps({"subject": self._subject()}))
        return {}

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        subject = self._subject()
        rows = [([subject], [self.params.score]) for _ in texts]
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

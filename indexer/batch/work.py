"""What a worker does, whatever the engine: load the project once, index blocks."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from indexer.batch.readers import read_block
from indexer.batch.records import BlockSpec, DocResult, Options, Record


@dataclass(frozen=True)
class ProjectRef:
    """How a worker finds the project: the configuration and the data directory,
    as absolute paths (the same on every node of a cluster: a shared filesystem)."""

    project_id: str
    config_path: str
    data_dir: str

    @classmethod
    def of(cls, project, projects_path: str | None) -> ProjectRef:
        from indexer.config import ENV_PROJECTS

        origin = projects_path or os.environ.get(ENV_PROJECTS)
        if not origin:
            sources = project.projects.config.sources
            origin = str(sources[0]) if len(sources) == 1 else str(Path.cwd())
        return cls(
            project.id,
            str(Path(origin).resolve()),
            str(project.projects.data_dir.resolve()),
        )

    def load(self):
        """The project, read from the configuration (its model loads on first use)."""
        from indexer.config import load_config
        from indexer.project import Projects

        config = load_config(self.config_path)
        config = dataclasses.replace(config, data_dir=Path(self.data_dir))
        return Projects(config).get(self.project_id)


class BlockIndexer:
    """A loaded project that turns blocks of records into results."""

    def __init__(self, ref: ProjectRef, options: Options):
        self.project = ref.load()
        self.options = options
        self.project.reload()  # load the model now: a missing one fails here, once
        self.language = options.language or self.project.language

    def index_block(self, spec: BlockSpec) -> list[DocResult]:
        return self.index_records(read_block(spec, self.options))

    def index_records(self, records: list[Record]) -> list[DocResult]:
        """Results in record order; rejected records keep their error."""
        results = [DocResult(r.id, r.where, [], r.error) for r in records]
        good = [i for i, r in enumerate(records) if r.error is None]
        size = self.options.batch_size
        for start in range(0, len(good), size):
            chunk = good[start : start + size]
            batch = self.project.suggest(
                [records[i].text for i in chunk],
                limit=self.options.limit,
                threshold=self.options.threshold,
            )
            for i, found in zip(chunk, batch, strict=True):
                results[i].suggestions = self._rows(found)
        return results

    def _rows(self, found) -> list[tuple[str, str, float]]:
        vocab = self.project.vocab
        return [
            (vocab.uris[s.subject], vocab.label(s.subject, self.language), s.score)
            for s in found
        ]

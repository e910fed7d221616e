"""What flows through a batch run: block descriptions, records and their results."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BlockSpec:
    """Where block `number` lies in its input: enough for any worker to read it.

    `offset`/`first_line`/`lines` locate line-based inputs, `first_row` Parquet
    rows, `files` the documents of a directory; `count` is its number of records.
    """

    number: int
    source: str
    kind: str
    count: int
    offset: int = 0
    first_line: int = 1
    lines: int = 0
    row_group: int = 0
    first_row: int = 0
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        """Where its records are, in words: `corpus.jsonl, lines 1-1000`."""
        name = self.source.rstrip("/").rpartition("/")[2]
        if self.kind == "dir":
            return f"{name}/{self.files[0]} to {self.files[-1]}"
        if self.kind == "parquet":
            return f"{name}, rows {self.first_row}-{self.first_row + self.count - 1}"
        return f"{name}, lines {self.first_line}-{self.first_line + self.lines - 1}"


@dataclass
class Record:
    """One input record; `error` says why it cannot be indexed (then `text` is None)."""

    id: str
    where: str
    text: str | None = None
    error: str | None = None


@dataclass
class DocResult:
    """The suggestions (uri, label, score) for one record, or why it was rejected."""

    id: str
    where: str
    suggestions: list[tuple[str, str, float]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "where": self.where,
            "suggestions": [list(s) for s in self.suggestions],
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict) -> DocResult:
        return cls(
            data["id"],
            data["where"],
            [tuple(s) for s in data["suggestions"]],
            data["error"],
        )


@dataclass(frozen=True)
class Options:
    """How to read and index: the settings every worker needs."""

    limit: int | None = None
    threshold: float | None = None
    language: str | None = None
    batch_size: int = 32
    id_column: str = "id"
    text_column: str = "text"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run on Ray."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0

"""Outputs of a batch run, written block by block so that a rerun can resume.

`BlockStore` writes each finished block atomically as a part file in
`OUT.parts/`; a part on disk is a block done. When every block is done, the
parts are joined, in block order, into OUT (JSONL or Parquet rows `id`, `rank`,
`uri`, `label`, `score`, by the extension) and the records rejected under
`--on-error skip` into `OUT.rejects.jsonl`. `PerDocumentWriter` keeps the
one-file-per-document output for directories.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from indexer.batch.readers import require_pyarrow
from indexer.batch.records import DocResult
from indexer.errors import UsageError
from indexer.rendering import tsv_line

OUTPUT_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"Cannot tell the output format of '{path.name}': end it in .jsonl or "
            ".parquet"
        )
    if fmt == "parquet":
        require_pyarrow()
    return fmt


def rows_of(results: list[DocResult]) -> list[dict]:
    """One row per suggestion: id, rank (from 1), uri, label, score."""
    return [
        {"id": r.id, "rank": rank, "uri": uri, "label": label, "score": score}
        for r in results
        if r.error is None
        for rank, (uri, label, score) in enumerate(r.suggestions, start=1)
    ]


def rejects_of(results: list[DocResult]) -> list[dict]:
    return [
        {"id": r.id, "where": r.where, "error": r.error}
        for r in results
        if r.error is not None
    ]


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _parquet_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("rank", pa.int32()),
            ("uri", pa.string()),
            ("label", pa.string()),
            ("score", pa.float64()),
        ]
    )


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=_parquet_schema()), path)


class BlockStore:
    """Part files of one output; `plan` guards a resume against changed settings."""

    def __init__(self, output: Path, plan: dict):
        self.output = output
        self.format = output_format(output)
        self.parts = output.with_name(output.name + ".parts")
        self.rejects = output.with_name(output.name + ".rejects.jsonl")
        self.plan = plan

    def part(self, number: int) -> Path:
        return self.parts / f"block-{number:08d}.{self.format}"

    def rejects_part(self, number: int) -> Path:
        return self.parts / f"block-{number:08d}.rejects.jsonl"

    def open(self, force: bool) -> set[int]:
        """Start, or resume: the numbers of the blocks already done."""
        plan_file = self.parts / "plan.json"
        if force:
            shutil.rmtree(self.parts, ignore_errors=True)
        elif plan_file.is_file():
            previous = json.loads(plan_file.read_text(encoding="utf-8"))
            if previous != self.plan:
                raise UsageError(
                    f"'{self.parts}' holds an unfinished run with other inputs or "
                    "settings: rerun that command to finish it, or add --force to "
                    "start again"
                )
            return {
                int(p.name.split("-")[1].split(".")[0])
                for p in self.parts.glob(f"block-*.{self.format}")
            }
        elif self.output.exists():
            raise UsageError(f"'{self.output}' exists: add --force to overwrite it")
        self.parts.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            plan_file, lambda p: p.write_text(json.dumps(self.plan), encoding="utf-8")
        )
        return set()

    def write(self, number: int, results: list[DocResult]) -> None:
        """Record a finished block: its rejects first, then its part (the marker)."""
        rejects = rejects_of(results)
        if rejects:
            _write_atomically(
                self.rejects_part(number), lambda p: _write_jsonl(p, rejects)
            )
        writer = _write_parquet if self.format == "parquet" else _write_jsonl
        rows = rows_of(results)
        _write_atomically(self.part(number), lambda p: writer(p, rows))

    def finish(self, blocks: int) -> int:
        """Join the parts into the output; the number of rejected records."""
        missing = [n for n in range(blocks) if not self.part(n).is_file()]
        if missing:
            raise RuntimeError(f"blocks {missing[:5]} are missing in {self.parts}")
        join = _join_parquet if self.format == "parquet" else _join_files
        _write_atomically(
            self.output, lambda p: join([self.part(n) for n in range(blocks)], p)
        )
        reject_parts = [
            self.rejects_part(n)
            for n in range(blocks)
            if self.rejects_part(n).is_file()
        ]
        rejected = 0
        if reject_parts:
            _write_atomically(self.rejects, lambda p: _join_files(reject_parts, p))
            for part in reject_parts:
                with open(part, "rb") as f:
                    rejected += sum(1 for _ in f)
        shutil.rmtree(self.parts)
        return rejected


def _join_files(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def _join_parquet(parts: list[Path], target: Path) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(target, _parquet_schema()) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part, schema=_parquet_schema()))


class PerDocumentWriter:
    """`ID<suffix>` beside each document: `<uri>TAB label TAB score` lines."""

    def __init__(self, directory: Path, suffix: str):
        self.directory = directory
        self.suffix = suffix
        self.rejects = directory / "rejects.jsonl"
        self._rejected: list[dict] = []

    def target(self, document: Path) -> Path:
        return document.with_name(document.stem + self.suffix)

    def write(self, number: int, results: list[DocResult]) -> None:
        for result in results:
            if result.error is not None:
                continue
            target = self.directory / (result.id + self.suffix)
            text = "".join(tsv_line(*row) + "\n" for row in result.suggestions)
            _write_atomically(target, lambda p, t=text: p.write_text(t, "utf-8"))
        self._rejected += rejects_of(results)

    def finish(self, blocks: int) -> int:
        if self._rejected:
            _write_atomically(self.rejects, lambda p: _write_jsonl(p, self._rejected))
        return len(self._rejected)

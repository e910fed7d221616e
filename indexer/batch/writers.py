"""Outputs of a batch run, written block by block so that a rerun can resume.

`BlockStore` writes each finished block atomically (written, flushed to disk,
renamed, the rename flushed) as a part file in `OUT.parts/`; a part on disk is
a block done. When every block is done, the parts are joined, in block order,
into OUT (JSONL or Parquet rows `id`, `rank`, `uri`, `label`, `score`, by the
extension) and the records rejected under `--on-error skip` (or as duplicates)
into `OUT.rejects.jsonl`. `PerDocumentWriter` keeps the one-file-per-document
output for directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from indexer.batch.plan import why_not_resumable
from indexer.batch.readers import require_pyarrow
from indexer.batch.records import DocResult
from indexer.corpus import SUBJECT_SUFFIXES
from indexer.errors import IndexerError, UsageError
from indexer.locking import ResourceLock
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
    """`write(tmp)`, then `tmp` on disk, renamed to `path`, and the rename on
    disk: a crash or a power cut at any moment leaves the old file or the new
    one, whole."""
    tmp = _tmp(path)
    write(tmp)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _replace_atomically(path: Path, write) -> None:
    """`write(tmp)`, renamed to `path`: whole after a kill, not after a power cut."""
    tmp = _tmp(path)
    write(tmp)
    os.replace(tmp, path)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _fsync(path: Path) -> None:
    """Make a file's content, or a directory's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


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
    """Part files of one output; `plan` guards a resume against changed settings.

    A block is done when its part is in `OUT.parts/`; its rejects are written
    before it. When all are done they are joined into OUT and OUT.rejects.jsonl,
    and `OUT.parts/` is removed, its plan last: a run killed meanwhile is
    resumed by a rerun, which indexes again the blocks whose part was removed.
    """

    def __init__(self, output: Path, plan: dict):
        self.output = output
        self.format = output_format(output)
        self.parts = output.with_name(output.name + ".parts")
        self.rejects = output.with_name(output.name + ".rejects.jsonl")
        self.plan = plan
        self._part_name = re.compile(rf"block-(\d{{8}})\.{re.escape(self.format)}")

    def lock(self) -> ResourceLock:
        """Held by a run for its whole length: one run at a time writes OUT."""
        return ResourceLock(
            self.output.with_name(f".{self.output.name}.lock"),
            f"Output '{self.output}'",
        )

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
            reason = why_not_resumable(previous, self.plan)
            if reason:
                raise UsageError(f"'{self.parts}' holds an unfinished run {reason}")
            return self.done()
        elif self.output.exists():
            raise UsageError(f"'{self.output}' exists: add --force to overwrite it")
        self.parts.mkdir(parents=True, exist_ok=True)
        _fsync(self.parts.parent)
        _write_atomically(
            plan_file, lambda p: p.write_text(json.dumps(self.plan), encoding="utf-8")
        )
        return set()

    def done(self) -> set[int]:
        """The blocks whose part is complete (a rejects part alone is not a block)."""
        names = (self._part_name.fullmatch(p.name) for p in self.parts.iterdir())
        return {int(match.group(1)) for match in names if match}

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
            raise IndexerError(
                f"Blocks {missing[:5]} are missing from '{self.parts}' (removed "
                "during the run?): rerun the same command to index them"
            )
        join = _join_parquet if self.format == "parquet" else _join_files
        _write_atomically(
            self.output, lambda p: join([self.part(n) for n in range(blocks)], p)
        )
        rejected = self._join_rejects(blocks)
        self._remove_parts()
        return rejected

    def _remove_parts(self) -> None:
        """`OUT.parts/` in the reverse order of its writes: the blocks' parts,
        then their rejects, the plan last. Killed meanwhile, a rerun resumes and
        indexes again the blocks whose part is gone (never a block without its
        rejects)."""
        plan = self.parts / "plan.json"

        def order(path: Path) -> tuple[bool, bool]:
            return path == plan, not self._part_name.fullmatch(path.name)

        for path in sorted(self.parts.iterdir(), key=order):
            path.unlink()
        self.parts.rmdir()

    def _join_rejects(self, blocks: int) -> int:
        """OUT.rejects.jsonl from the blocks' rejects (none: no file); how many."""
        parts = [self.rejects_part(n) for n in range(blocks)]
        parts = [part for part in parts if part.is_file()]
        if not parts:
            self.rejects.unlink(missing_ok=True)  # a previous run's
            return 0
        _write_atomically(self.rejects, lambda p: _join_files(parts, p))
        return sum(_count_lines(part) for part in parts)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


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


def check_suffix(suffix: str) -> None:
    """The suffix of per-document files: a plain one, not making them documents."""
    if not suffix or "/" in suffix or os.sep in suffix or "\0" in suffix:
        raise UsageError(
            f"--suffix {suffix!r} is not a plain file-name suffix (such as "
            "'.suggestions.tsv'): it must not be empty or hold a '/'"
        )
    if suffix.lower().endswith(".txt"):
        raise UsageError(
            f"--suffix {suffix!r} ends in .txt: the files written would be read "
            "as documents, or overwrite them; use another one, such as "
            "'.suggestions.tsv'"
        )
    if suffix.lower() in SUBJECT_SUFFIXES:
        raise UsageError(
            f"--suffix {suffix!r} names the subject files of a full-text corpus "
            f"(ID{suffix.lower()} beside ID.txt holds a document's gold subjects): "
            "the suggestions would replace them; use another one, such as "
            "'.suggestions.tsv'"
        )


class PerDocumentWriter:
    """`ID<suffix>` beside each document: `<uri>TAB label TAB score` lines."""

    def __init__(self, directory: Path, suffix: str):
        check_suffix(suffix)
        self.directory = directory
        self.suffix = suffix
        self.rejects = directory / "rejects.jsonl"
        self._rejected: list[dict] = []

    def lock(self) -> ResourceLock:
        """Held by a run for its whole length: one run at a time writes here."""
        return ResourceLock(
            self.directory / ".index.lock", f"Directory '{self.directory}'"
        )

    def target(self, document: Path) -> Path:
        return document.with_name(document.stem + self.suffix)

    def write(self, number: int, results: list[DocResult]) -> None:
        # not flushed to disk one by one: at some ms a file, that would take
        # hours for a million documents
        for result in results:
            if result.error is None:
                target = self.directory / (result.id + self.suffix)
                _replace_atomically(target, _suggestions_writer(result))
        self._rejected += rejects_of(results)

    def finish(self, blocks: int) -> int:
        if self._rejected:
            _write_atomically(self.rejects, lambda p: _write_jsonl(p, self._rejected))
        else:
            self.rejects.unlink(missing_ok=True)  # a previous run's
        return len(self._rejected)


def _suggestions_writer(result: DocResult):
    text = "".join(tsv_line(*row) + "\n" for row in result.suggestions)
    return lambda path: path.write_text(text, "utf-8")

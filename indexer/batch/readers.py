"""Inputs of a batch run, cut into blocks that any worker can read on its own.

Formats, chosen by path: a directory of `.txt` documents, JSONL (`id`, `text`),
Parquet (`id` and `text` columns, names configurable) and Annif's short-text
TSV (`text<TAB><uri> ...`). `scan` is one cheap pass that only finds where the
blocks lie; `read_block` reads one block. Text is decoded strictly (a UTF-8
byte order mark opening a file is dropped): a record whose text is missing,
empty or not UTF-8 becomes a `Record` with an `error`.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from pathlib import Path

from indexer.batch.records import BlockSpec, Options, Record
from indexer.errors import DependencyError, InputError, UsageError
from indexer.textfile import BadBytes, decode_bytes

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}


def input_kind(path: Path) -> str:
    """The format of one input, or a usage error naming the accepted ones."""
    if path.is_dir():
        return "dir"
    if not path.is_file():
        raise UsageError(f"Input '{path}' does not exist")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(
            f"Cannot tell the format of '{path.name}': give a directory of .txt "
            "files, or a .jsonl, .parquet or .tsv (Annif) file"
        )
    return kind


def require_pyarrow() -> None:
    """Parquet needs pyarrow, which comes with the `distributed` extra."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DependencyError(
            "Parquet needs pyarrow: pip install 'subject-indexer[distributed]'"
        ) from None


def scan(
    path: Path, block_size: int, first_number: int, skip_files=None
) -> Iterator[BlockSpec]:
    """The blocks of one input, numbered from `first_number`."""
    kind = input_kind(path)
    if kind == "dir":
        return _scan_dir(path, block_size, first_number, skip_files)
    if kind == "parquet":
        require_pyarrow()
        return _scan_parquet(path, block_size, first_number)
    return _scan_lines(path, kind, block_size, first_number)


def read_block(spec: BlockSpec, options: Options) -> list[Record]:
    """The records of one block."""
    if spec.kind == "dir":
        return [_read_file(Path(spec.source) / name) for name in spec.files]
    if spec.kind == "parquet":
        return _read_parquet(spec, options)
    parse = _parse_jsonl if spec.kind == "jsonl" else _parse_tsv
    name = Path(spec.source).name
    records = []
    with open(spec.source, "rb") as f:
        f.seek(spec.offset)
        for lineno in range(spec.first_line, spec.first_line + spec.lines):
            line = _without_bom(f.readline(), lineno == 1)
            if line.strip():
                records.append(parse(line, f"{name}:{lineno}", options))
    return records


# -- directories -------------------------------------------------------------


def text_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.txt"))
    if not files:
        raise InputError(f"Directory '{path}' contains no .txt files")
    return files


def _scan_dir(path, block_size, first_number, skip_files) -> Iterator[BlockSpec]:
    names = [f.name for f in text_files(path) if not (skip_files and skip_files(f))]
    for n, start in enumerate(range(0, len(names), block_size)):
        files = tuple(names[start : start + block_size])
        yield BlockSpec(first_number + n, str(path), "dir", len(files), files=files)


def _read_file(path: Path) -> Record:
    from indexer.corpus import decode_document

    if not _is_unicode(path.name):  # bytes that are not UTF-8 (surrogateescape)
        name = os.fsencode(path.name).decode("utf-8", "backslashreplace")
        return Record(name.removesuffix(".txt"), name, error="the file name is not "
                      "UTF-8: rename the file")  # fmt: skip
    try:
        text = decode_document(path.read_bytes(), f"File '{path.name}'")
    except (InputError, OSError) as exc:
        return Record(path.stem, path.name, error=_message(exc))
    return Record(path.stem, path.name, text)


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


# -- line-based: JSONL and Annif TSV -------------------------------------------


def _scan_lines(path, kind, block_size, first_number) -> Iterator[BlockSpec]:
    number, offset, first_line, lines, count = first_number, 0, 1, 0, 0
    position = 0
    with open(path, "rb") as f:
        for line in f:
            count += bool(_without_bom(line, position == 0).strip())
            position += len(line)
            lines += 1
            if count == block_size:
                yield _line_block(number, path, kind, count, offset, first_line, lines)
                number, offset, first_line = number + 1, position, first_line + lines
                lines = count = 0
    if count:
        yield _line_block(number, path, kind, count, offset, first_line, lines)


def _without_bom(line: bytes, at_start: bool) -> bytes:
    """The line without the UTF-8 byte order mark that may open the file."""
    return line.removeprefix(codecs.BOM_UTF8) if at_start else line


def _line_block(number, path, kind, count, offset, first_line, lines) -> BlockSpec:
    return BlockSpec(
        number, str(path), kind, count, offset=offset, first_line=first_line,
        lines=lines,
    )  # fmt: skip


def _decode(data: bytes, where: str) -> str:
    try:
        return decode_bytes(data, first=False)
    except BadBytes as bad:
        raise InputError(f"not UTF-8 text ({bad.describe()})") from None


def _checked_text(value, where: str, record_id: str) -> Record:
    if value is None:
        return Record(record_id, where, error="no text")
    if isinstance(value, bytes):
        try:
            value = _decode(value, where)
        except InputError as exc:
            return Record(record_id, where, error=exc.message)
    if not isinstance(value, str):
        return Record(record_id, where, error="the text is not a string")
    if not value.strip():
        return Record(record_id, where, error="empty text")
    return Record(record_id, where, value)


def _record_id(value, where: str) -> tuple[str, str | None]:
    """(the id, why it cannot be one or None). The rule, for every format: a
    string is the id; bytes are decoded as UTF-8; an integer is written in
    decimal; none at all, the record's place (`docs.jsonl:7`). A boolean, a
    fraction, a list or an object is no id: the record is rejected."""
    if value is None:
        return where, None
    if isinstance(value, bytes):
        try:
            return _decode(value, where), None
        except InputError as exc:
            return where, f"the id is {exc.message}"
    if isinstance(value, str):
        if not _is_unicode(value):
            return where, "the id holds a lone surrogate (a \\uD800-\\uDFFF escape)"
        return value, None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    kind = {bool: "a boolean", float: "a number with a fraction"}.get(
        type(value), f"of type {type(value).__name__}"
    )
    return where, f"the id is {kind} ({value!r:.40}): give a string or an integer"


def _is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate, which no file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _with_id(value, where: str, text) -> Record:
    record_id, wrong = _record_id(value, where)
    if wrong is not None:
        return Record(record_id, where, error=wrong)
    return _checked_text(text, where, record_id)


def _parse_jsonl(line: bytes, where: str, options: Options) -> Record:
    try:
        record = json.loads(_decode(line, where))
    except InputError as exc:
        return Record(
            _id_despite_bad_bytes(line, where, options), where, error=exc.message
        )
    except json.JSONDecodeError as exc:
        return Record(where, where, error=f"invalid JSON ({exc.msg})")
    if not isinstance(record, dict):
        return Record(where, where, error="the line is not a JSON object")
    return _with_id(
        record.get(options.id_column), where, record.get(options.text_column)
    )


def _id_despite_bad_bytes(line: bytes, where: str, options: Options) -> str:
    """The record's id, read past the bytes that make it invalid, to report it."""
    try:
        record_id = json.loads(line.decode("utf-8", "replace")).get(options.id_column)
    except (json.JSONDecodeError, AttributeError):
        return where
    return _record_id(record_id, where)[0]


def _parse_tsv(line: bytes, where: str, options: Options) -> Record:
    try:
        text = _decode(line, where).rstrip("\r\n").partition("\t")[0]
    except InputError as exc:
        return Record(where, where, error=exc.message)
    return _checked_text(text, where, where)


# -- Parquet -------------------------------------------------------------------


def _scan_parquet(path, block_size, first_number) -> Iterator[BlockSpec]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    number = first_number
    first_row = 0
    # blocks never span row groups, so a worker reads one row group at most
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, block_size):
            count = min(block_size, rows - start)
            yield BlockSpec(
                number, str(path), "parquet", count, row_group=group,
                offset=start, first_row=first_row + start,
            )  # fmt: skip
            number += 1
        first_row += rows


# pyarrow decodes a column of a row group from its start only: a block read on
# its own decodes every row before it in its row group too. So a process keeps
# one stream open on the Parquet file it reads, and blocks read in order (by
# one worker, or by the process that hands them out) go on where the previous
# one stopped: each row is decoded once.

_stream: ParquetStream | None = None


class ParquetStream:
    """The text (and id) column of one Parquet file, decoded in row order."""

    def __init__(self, key: tuple, options: Options, row_group: int, batch: int):
        import pyarrow.parquet as pq

        self.key = key
        self.name = Path(key[0]).name
        parquet = pq.ParquetFile(key[0], pre_buffer=False, buffer_size=1 << 22)
        names = parquet.schema_arrow.names
        if options.text_column not in names:
            raise InputError(
                f"'{self.name}' has no column '{options.text_column}' (columns: "
                f"{', '.join(names)}): name it with --text-column"
            )
        self.has_ids = options.id_column in names
        columns = [options.text_column] + [options.id_column] * self.has_ids
        metadata = parquet.metadata
        self.position = sum(metadata.row_group(g).num_rows for g in range(row_group))
        self._batches = parquet.iter_batches(
            batch,
            row_groups=range(row_group, metadata.num_row_groups),
            columns=columns,
        )
        self._ahead = None  # decoded rows not taken yet

    def can_serve(self, spec: BlockSpec) -> bool:
        """True when the block lies ahead in the row group the stream is in."""
        group_start = spec.first_row - spec.offset
        return group_start <= self.position <= spec.first_row

    def take(self, first_row: int, count: int):
        """Rows `first_row` .. `first_row + count - 1` (a pyarrow Table)."""
        import pyarrow as pa

        pieces = []
        while count:
            batch = self._next_batch()
            skip = min(max(first_row - self.position, 0), batch.num_rows)
            used = min(batch.num_rows - skip, count)
            if used:
                pieces.append(batch.slice(skip, used))
            self.position += skip + used
            rest = batch.slice(skip + used)
            self._ahead = rest if rest.num_rows else None
            count -= used
        return pa.Table.from_batches(pieces)

    def _next_batch(self):
        batch = self._ahead if self._ahead is not None else next(self._batches, None)
        if batch is None:
            raise InputError(
                f"'{self.name}' has fewer rows than when the run began: was it "
                "changed? Rerun with --force to start again"
            )
        return batch


def _stream_for(spec: BlockSpec, options: Options) -> ParquetStream:
    """The stream to read `spec` from: this process's, if it can go on to it."""
    global _stream
    stat = os.stat(spec.source)
    key = (spec.source, stat.st_size, stat.st_mtime_ns, options.id_column,
           options.text_column)  # fmt: skip
    if _stream is None or _stream.key != key or not _stream.can_serve(spec):
        _stream = None  # close the previous file first
        _stream = ParquetStream(key, options, spec.row_group, max(spec.count, 1))
    return _stream


def _read_parquet(spec: BlockSpec, options: Options) -> list[Record]:
    global _stream
    stream = _stream_for(spec, options)
    try:
        table = stream.take(spec.first_row, spec.count)
    except BaseException:
        _stream = None  # where it stopped is unknown: the next block opens anew
        raise
    texts = table.column(options.text_column).to_pylist()
    ids = (
        table.column(options.id_column).to_pylist()
        if stream.has_ids
        else [None] * len(texts)
    )
    records = []
    for i, (text, record_id) in enumerate(zip(texts, ids, strict=True)):
        where = f"{stream.name}:row {spec.first_row + i}"
        records.append(_with_id(record_id, where, text))
    return records

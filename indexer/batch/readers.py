"""Inputs of a batch run, cut into blocks that any worker can read on its own.

Formats, chosen by path: a directory of `.txt` documents, JSONL (`id`, `text`),
Parquet (`id` and `text` columns, names configurable) and Annif's short-text
TSV (`text<TAB><uri> ...`). `scan` is one cheap pass that only finds where the
blocks lie; `read_block` reads one block. Text is decoded strictly: a record
whose text is missing, empty or not UTF-8 becomes a `Record` with an `error`.
"""

from __future__ import annotations

import json
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
            line = f.readline()
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
            position += len(line)
            lines += 1
            count += bool(line.strip())
            if count == block_size:
                yield _line_block(number, path, kind, count, offset, first_line, lines)
                number, offset, first_line = number + 1, position, first_line + lines
                lines = count = 0
    if count:
        yield _line_block(number, path, kind, count, offset, first_line, lines)


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
    record_id = record.get(options.id_column)
    record_id = where if record_id is None else str(record_id)
    return _checked_text(record.get(options.text_column), where, record_id)


def _id_despite_bad_bytes(line: bytes, where: str, options: Options) -> str:
    """The record's id, read past the bytes that make it invalid, to report it."""
    try:
        record_id = json.loads(line.decode("utf-8", "replace")).get(options.id_column)
    except (json.JSONDecodeError, AttributeError):
        return where
    return where if record_id is None else str(record_id)


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


def _read_parquet(spec: BlockSpec, options: Options) -> list[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(spec.source)
    names = parquet.schema_arrow.names
    if options.text_column not in names:
        raise InputError(
            f"'{Path(spec.source).name}' has no column '{options.text_column}' "
            f"(columns: {', '.join(names)}): name it with --text-column"
        )
    columns = [options.text_column]
    if options.id_column in names:
        columns.append(options.id_column)
    table = parquet.read_row_group(spec.row_group, columns=columns)
    table = table.slice(spec.offset, spec.count)
    texts = table.column(options.text_column).to_pylist()
    ids = (
        table.column(options.id_column).to_pylist()
        if options.id_column in names
        else [None] * len(texts)
    )
    name = Path(spec.source).name
    records = []
    for i, (text, record_id) in enumerate(zip(texts, ids, strict=True)):
        where = f"{name}:row {spec.first_row + i}"
        records.append(
            _checked_text(text, where, where if record_id is None else str(record_id))
        )
    return records

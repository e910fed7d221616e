"""Strict UTF-8 reading of input files: never a replacement character.

Configuration, vocabularies and corpora are decoded strictly. What is not UTF-8
is reported with the file and the byte offset (and line) of the first bad byte,
so it can be found and converted; nothing is guessed or silently replaced.
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from indexer.errors import InputError

#: how much of a file is looked at to tell binary files (NUL bytes) from text
SNIFF_BYTES = 8192
#: the piece size of reading a file up to a limit
READ_CHUNK = 16 * 2**20


class BadBytes(ValueError):
    """A piece of input that is not UTF-8 text; `offset` is of the first bad
    byte, `source` (optional) names the file."""

    def __init__(self, reason: str, offset: int, source: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.source = source

    def describe(self, line: int | None = None) -> str:
        where = f"byte offset {self.offset}"
        return f"{self.reason} at {where}" + (f" (line {line})" if line else "")


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it ends in `.gz`."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The whole file (`.gz` decompressed), or its first `limit` + 1 bytes; a
    corrupt file is an InputError."""
    with open_binary(path) as f:
        try:
            if limit is None:
                return f.read()
            # in pieces: read(limit + 1) would reserve limit + 1 bytes at once
            # (4 GiB by default, a problem under a memory limit)
            buffer, left = io.BytesIO(), limit + 1
            while left > 0:
                chunk = f.read(min(left, READ_CHUNK))
                if not chunk:
                    break
                buffer.write(chunk)
                left -= len(chunk)
            return buffer.getvalue()  # without a copy
        except (OSError, EOFError) as exc:
            raise InputError(f"Cannot read '{path}': {exc}") from None


def decode_bytes(data: bytes, base: int = 0, first: bool = True) -> str:
    """`data` as text, or BadBytes naming the offset (from `base`) of the first
    byte that is not UTF-8 or is NUL (binary data). A byte order mark at the
    very start is dropped."""
    nul = data.find(b"\x00")
    if 0 <= nul < SNIFF_BYTES:  # binary data, whatever else is wrong with it
        raise BadBytes("a NUL byte (binary data)", base + nul)
    # the mark is cut off here, not by the "utf-8-sig" codec, whose error
    # positions count from after it
    skip = len(codecs.BOM_UTF8) if first and data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = str(memoryview(data)[skip:], "utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        raise BadBytes(f"the invalid UTF-8 byte 0x{data[at]:02x}", base + at) from None
    if nul >= 0:
        raise BadBytes("a NUL byte (binary data)", base + nul)
    return text


def not_text(where: str, bad: BadBytes, line: int | None = None) -> InputError:
    """The InputError for a file that is not UTF-8 text."""
    return InputError(
        f"{where} is not UTF-8 text: {bad.describe(line)}; convert it to UTF-8 "
        "first (e.g. `iconv -f latin1 -t utf-8`)"
    )


def decode_text(data: bytes, where: str) -> str:
    """`data` as text, or an InputError naming `where`, the byte offset and line."""
    try:
        return decode_bytes(data)
    except BadBytes as bad:
        raise not_text(where, bad, data.count(b"\n", 0, bad.offset) + 1) from None


def read_text(path: Path, what: str = "File") -> str:
    """The whole file as text (`.gz` decompressed), decoded strictly."""
    return decode_text(read_bytes(path), f"{what} '{path}'")


def lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes with the line end) of every line."""
    offset = 0
    with open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, offset, raw
                offset += len(raw)
        except (OSError, EOFError) as exc:  # a corrupt .gz
            raise InputError(f"Cannot read '{path}': {exc}") from None


def strict_lines(path: Path) -> Iterator[str]:
    """The file's lines as text (with their ends); the first line that is not
    UTF-8 text raises an InputError naming the file, byte offset and line."""
    for lineno, offset, raw in lines(path):
        try:
            yield decode_bytes(raw, offset, first=lineno == 1)
        except BadBytes as bad:
            raise not_text(f"'{path}'", bad, lineno) from None


def refuse_binary(path: Path) -> None:
    """An InputError when the file looks binary (a NUL byte near its start)."""
    with open_binary(path) as f:
        try:
            head = f.read(SNIFF_BYTES)
        except (OSError, EOFError) as exc:
            raise InputError(f"Cannot read '{path}': {exc}") from None
    offset = head.find(b"\x00")
    if offset >= 0:
        raise InputError(
            f"'{path}' looks binary (a NUL byte at byte offset {offset}), not text"
        )

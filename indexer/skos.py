"""Read vocabulary files (SKOS in any rdflib format, TSV/CSV) into records.

Files are untrusted: RDF is parsed offline and within hard time and memory
bounds (`indexer.rdfsafe`, in a child process), and text is decoded as strict
UTF-8 (`indexer.textfile`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import InputError
from indexer.rdfsafe import budget, check_size, parse_rows
from indexer.textfile import decode_text, read_bytes

RDF_FORMATS = {
    ".ttl": "turtle",
    ".turtle": "turtle",
    ".n3": "n3",
    ".nt": "nt",
    ".ntriples": "nt",
    ".rdf": "xml",
    ".xml": "xml",
    ".owl": "xml",
    ".jsonld": "json-ld",
    ".json": "json-ld",
    ".trig": "trig",
    ".nq": "nquads",
}
TABLE_FORMATS = {".tsv": "\t", ".csv": ","}


@dataclass(slots=True)
class ConceptRecord:
    """Everything a vocabulary keeps about one concept, keyed by language."""

    uri: str
    notation: str = ""
    deprecated: bool = False
    pref: dict[str, str] = field(default_factory=dict)
    alt: dict[str, list[str]] = field(default_factory=dict)
    note: dict[str, str] = field(default_factory=dict)
    broader: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)


def read_vocabulary_file(
    path: Path, language: str | None = None
) -> list[ConceptRecord]:
    """Parse a vocabulary file; the format is chosen by its extension (.gz allowed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Vocabulary file '{path}' does not exist")
    suffix = _format_suffix(path)
    if suffix in TABLE_FORMATS:
        records = _read_table(path, TABLE_FORMATS[suffix], language)
    elif suffix in RDF_FORMATS:
        records = _read_rdf(path, RDF_FORMATS[suffix])
    else:
        known = ", ".join(sorted(set(RDF_FORMATS) | set(TABLE_FORMATS)))
        raise InputError(
            f"Cannot tell the format of '{path.name}': use one of the extensions "
            f"{known}"
        )
    if not records:
        raise InputError(f"Vocabulary file '{path}' contains no concepts")
    return records


def _format_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_text(path: Path) -> str:
    """The file as strict UTF-8 text (InputError with the byte offset)."""
    return decode_text(_read_bytes(path), f"Vocabulary file '{path}'")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (decompressed), refused when over the size budget."""
    limit, _ = budget()
    if path.suffix.lower() != ".gz":
        check_size(path, path.stat().st_size)
    data = read_bytes(path, limit)  # a decompression bomb stops at the limit
    check_size(path, len(data))
    return data


def _read_rdf(path: Path, rdf_format: str) -> list[ConceptRecord]:
    if rdf_format == "xml":  # XML declares its own encoding
        data = _read_bytes(path)
    else:
        data = _read_text(path).encode("utf-8")
    # parsed in a bounded child process (small plain files in this one), which
    # sends back the rows of the concepts' statements
    rows = parse_rows(data, rdf_format, path, "indexer.skosrows:ConceptRows")
    del data  # the child has it
    return [ConceptRecord(*row) for row in rows]


def _read_table(
    path: Path, delimiter: str, language: str | None
) -> list[ConceptRecord]:
    text = _read_text(path)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "uri" in header:
        return _read_columns(path, header, rows[1:])
    if not language:
        raise InputError(
            f"'{path.name}' has no header row: give the label language "
            "(indexer load-vocab --language LANG ...)"
        )
    records = []
    for lineno, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise InputError(f"{path.name}:{lineno}: expected '<uri><TAB>label'")
        records.append(ConceptRecord(_strip_brackets(row[0]), pref={language: row[1]}))
    return records


def _read_columns(
    path: Path, header: list[str], rows: list[list[str]]
) -> list[ConceptRecord]:
    """Columns: uri, label_<lang>, altlabel_<lang> ('|'-separated), note_<lang>,
    notation, broader and related (space-separated URIs), deprecated."""
    records = []
    for lineno, row in enumerate(rows, start=2):
        cells = dict(zip(header, row, strict=False))
        uri = _strip_brackets(cells.get("uri", ""))
        if not uri:
            raise InputError(f"{path.name}:{lineno}: empty 'uri' column")
        record = ConceptRecord(uri, notation=cells.get("notation", "").strip())
        record.deprecated = cells.get("deprecated", "").strip().lower() in ("1", "true")
        for column, value in cells.items():
            value = value.strip()
            if not value or "_" not in column:
                continue
            kind, lang = column.rsplit("_", 1)
            if kind in ("label", "preflabel"):
                record.pref[lang] = value
            elif kind in ("altlabel", "altlabels"):
                record.alt[lang] = [v.strip() for v in value.split("|") if v.strip()]
            elif kind in ("note", "scopenote"):
                record.note[lang] = value
        record.broader = [_strip_brackets(u) for u in cells.get("broader", "").split()]
        record.related = [_strip_brackets(u) for u in cells.get("related", "").split()]
        if not record.pref:
            raise InputError(
                f"{path.name}:{lineno}: no label: add a 'label_<lang>' column value"
            )
        records.append(record)
    return records


def _strip_brackets(uri: str) -> str:
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    return uri

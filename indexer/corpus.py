"""Documents and subject sets, and streaming readers for every corpus format.

Formats, chosen by path:
- directory: full texts, `ID.txt` with `ID.tsv` (`<uri><TAB>label`) or `ID.key`
- `.tsv`: Annif short-text, `text<TAB><uri> <uri>` (brackets optional)
- `.csv`: a header with `text` and `subjects`/`uris` or `labels`, or the
  LLM-platform columns `input,expected_output`
- `.jsonl`: `{"text", "subjects"|"uris"|"labels", "id", ...}` or the
  LLM-platform records `{"prompt", "completion": {"Label": 1, ...}}`
Any file may be gzip-compressed (`.gz`). Nothing is read before iteration.

A record without a text (a JSONL `"text"` that is null, not a string or
blank; a CSV row or a TSV line with subjects and an empty text) is skipped,
counted and reported with its line, as `indexer index` rejects it; a file
none of whose records has a text is an InputError.

Decoding is strict UTF-8. A record that is not UTF-8 text (a TSV or JSONL line,
a file of a full-text directory) is rejected: counted, skipped and reported
with its byte offset in the corpus warnings. A file that cannot be text at all
is an InputError naming it and the byte offset: one that looks binary (a NUL
byte in its first 8 KiB), a CSV file with any bad byte (its records may span
lines, so none can be skipped safely), or a file none of whose records is text.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import InputError
from indexer.textfile import (
    SNIFF_BYTES,
    BadBytes,
    decode_bytes,
    decode_text,
    lines,
    read_bytes,
    refuse_binary,
    strict_lines,
)

csv.field_size_limit(sys.maxsize)

TEXT_COLUMNS = ("text", "content", "body", "input", "prompt")
URI_COLUMNS = ("subjects", "uris", "subject_uris")
LABEL_COLUMNS = ("labels", "subject_labels")
SEPARATORS = re.compile(r"[|;]")


@dataclass
class RawDocument:
    """A document as read from a corpus, subjects not yet matched to a vocabulary."""

    text: str
    uris: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    id: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class Document:
    """A document with its subjects as vocabulary ids."""

    text: str
    subjects: list[int]
    id: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class CorpusStats:
    """What reading a corpus found: unknown subject references are never hidden."""

    documents: int = 0
    without_subjects: int = 0
    subject_refs: int = 0
    unknown: Counter = field(default_factory=Counter)
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    without_text: int = 0
    without_text_examples: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        """Count a record that could not be read (it is skipped)."""
        self.rejected += 1
        if len(self.rejected_examples) < 3:
            self.rejected_examples.append(f"{where} ({reason})")

    def skip_without_text(self, where: str, reason: str) -> None:
        """Count a record that has no text to learn from (it is skipped)."""
        self.without_text += 1
        if len(self.without_text_examples) < 3:
            self.without_text_examples.append(f"{where} ({reason})")

    def warnings(self) -> list[str]:
        out = []
        if self.rejected:
            out.append(
                f"{self.rejected} records are not UTF-8 text and were skipped, "
                f"e.g. {'; '.join(self.rejected_examples)}"
            )
        if self.without_text:
            out.append(
                f"{self.without_text} records have no text and were skipped, "
                f"e.g. {'; '.join(self.without_text_examples)}"
            )
        if self.unknown:
            examples = ", ".join(s for s, _ in self.unknown.most_common(5))
            total = sum(self.unknown.values())
            out.append(
                f"{total} subject references ({len(self.unknown)} distinct) are not "
                f"in the vocabulary and were ignored, e.g. {examples}"
            )
        if self.without_subjects:
            out.append(f"{self.without_subjects} documents have no known subjects")
        return out


class Corpus:
    """Documents from one or more paths, subjects resolved against a vocabulary.

    Re-iterable: every iteration streams the files again, so a corpus larger
    than memory can be used by multi-pass training.
    """

    def __init__(self, paths: Iterable[Path], vocab, language: str):
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.exists():
                raise InputError(f"Corpus '{path}' does not exist")
            if not (path.is_file() or path.is_dir()):  # a pipe would hang
                raise InputError(
                    f"Corpus '{path}' is not a file or a directory: a pipe or "
                    "device can be read only once, and a corpus is read more "
                    "than once (its digest, then its documents, again for each "
                    "pass of training); write it to a file first"
                )
        self.vocab = vocab
        self.language = language
        self.stats = CorpusStats()

    @classmethod
    def from_documents(
        cls, documents: Iterable[RawDocument], vocab, language: str
    ) -> Corpus:
        """A corpus of documents already in memory (a REST `learn` request)."""
        corpus = cls([], vocab, language)
        corpus._documents = list(documents)
        return corpus

    _documents: list[RawDocument] | None = None

    def _raw_documents(self) -> Iterator[RawDocument]:
        if self._documents is not None:
            yield from self._documents
        for path in self.paths:
            yield from read_documents(path, self.stats)

    def __iter__(self) -> Iterator[Document]:
        self.stats = CorpusStats()
        resolver = SubjectResolver(self.vocab, self.language)
        for raw in self._raw_documents():
            subjects = resolver.resolve(raw, self.stats)
            self.stats.documents += 1
            self.stats.subject_refs += len(raw.uris) + len(raw.labels)
            if not subjects:
                self.stats.without_subjects += 1
            yield Document(raw.text, subjects, raw.id, raw.metadata)

    def batches(self, size: int) -> Iterator[list[Document]]:
        yield from batched(self, size)

    def digest(self) -> str:
        """A content digest of the corpus files (recorded in model manifests)."""
        sha = hashlib.sha256()
        for raw in self._documents or ():
            sha.update(raw.text.encode())
            sha.update(" ".join(raw.uris + raw.labels).encode())
        for path in self.paths:
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for file in files:
                sha.update(file.name.encode())
                if path.is_dir():
                    sha.update(str(file.stat().st_size).encode())
                else:
                    with open(file, "rb") as f:
                        for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                            sha.update(chunk)
        return sha.hexdigest()[:16]


class SubjectResolver:
    """Maps URIs and labels to vocabulary ids (labels case-insensitively)."""

    def __init__(self, vocab, language: str):
        self.vocab = vocab
        self.language = language
        self._by_label: dict[str, int] | None = None

    def _label_index(self) -> dict[str, int]:
        if self._by_label is None:
            index: dict[str, int] = {}
            languages = [self.language] + [
                x for x in self.vocab.languages if x != self.language
            ]
            for lang in reversed(languages):  # the project language wins
                pref, alt, _ = self.vocab.labels_in(lang)
                for i, labels in enumerate(alt):
                    for label in labels:
                        index[label.casefold()] = i
                for i, label in enumerate(pref):
                    if label:
                        index[label.casefold()] = i
            self._by_label = index
        return self._by_label

    def resolve(self, raw: RawDocument, stats: CorpusStats) -> list[int]:
        found: dict[int, None] = {}
        for uri in raw.uris:
            concept_id = self.vocab.id_of(uri)
            if concept_id is None:
                stats.unknown[uri] += 1
            else:
                found[concept_id] = None
        for label in raw.labels:
            concept_id = self.vocab.id_of(label) if "://" in label else None
            if concept_id is None:
                concept_id = self._label_index().get(label.strip().casefold())
            if concept_id is None:
                stats.unknown[label] += 1
            else:
                found[concept_id] = None
        return list(found)


def indexed_documents(
    corpus, progress: str | None = None
) -> tuple[list[str], list[list[int]], list[str]]:
    """Texts, subjects and ids of the documents that have known subjects
    (`progress`: a progress bar with this label while the corpus is read)."""
    from tqdm import tqdm

    texts, subjects, ids = [], [], []
    docs = tqdm(corpus, desc=progress, unit=" docs", leave=False, disable=None)
    for doc in docs if progress else corpus:
        if doc.subjects:
            texts.append(doc.text)
            subjects.append(doc.subjects)
            ids.append(doc.id or str(len(ids)))
    return texts, subjects, ids


def indexed_texts(corpus, subjects: list, progress: str | None = None) -> Iterator[str]:
    """The texts of the documents that have known subjects, one at a time,
    each one's subjects appended to `subjects` as it is yielded: a training
    that reads the texts once need not hold them all (`progress`: a
    progress bar with this label)."""
    from tqdm import tqdm

    docs = tqdm(corpus, desc=progress, unit=" docs", leave=False, disable=None)
    for doc in docs if progress else corpus:
        if doc.subjects:
            subjects.append(doc.subjects)
            yield doc.text


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- readers ---------------------------------------------------------------


def read_documents(
    path: Path, stats: CorpusStats | None = None
) -> Iterator[RawDocument]:
    """Stream the documents of one corpus path, whatever its format; rejected
    records are counted in `stats`."""
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    if path.is_dir():
        yield from _read_fulltext_dir(path, stats)
        return
    suffixes = [s.lower() for s in path.suffixes]
    kind = (
        suffixes[-2]
        if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1
        else (suffixes[-1] if suffixes else "")
    )
    readers = {
        ".tsv": _read_tsv,
        ".txt": _read_tsv,
        ".csv": _read_csv,
        ".jsonl": _read_jsonl,
        ".ndjson": _read_jsonl,
    }
    if kind not in readers:
        raise InputError(
            f"Cannot tell the corpus format of '{path.name}': use a directory of "
            ".txt files or a .tsv, .csv or .jsonl file (optionally .gz)"
        )
    refuse_binary(path)
    yield from _some_with_text(path, readers[kind](path, stats), stats)


def _some_with_text(
    path: Path, documents: Iterator[RawDocument], stats: CorpusStats
) -> Iterator[RawDocument]:
    """The documents; an InputError when every record was skipped for having
    no text (a file of such records is no corpus)."""
    skipped, examples = stats.without_text, len(stats.without_text_examples)
    read = 0
    for doc in documents:
        read += 1
        yield doc
    if not read and stats.without_text > skipped:
        example = stats.without_text_examples[examples:][:1]
        raise InputError(
            f"No record of '{path}' has a text"
            + (f", e.g. {example[0]}" if example else "")
        )


def _text_or_skip(value, where: str, stats: CorpusStats) -> str | None:
    """A record's text, or None when it has none (null, not a string, blank):
    then the record is counted as skipped, as `indexer index` rejects it."""
    if value is None:
        reason = "no text"
    elif not isinstance(value, str):
        reason = f"the text is {json.dumps(value)[:40]}, not a string"
    elif not value.strip():
        reason = "empty text"
    else:
        return value
    stats.skip_without_text(where, reason)
    return None


def _strip(uri: str) -> str:
    uri = uri.strip()
    return uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri


def _text_lines(path: Path, stats: CorpusStats) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line that is UTF-8 text; the others are
    rejected records. A file without one readable line is an InputError."""
    readable = rejected = 0
    first_bad = ""
    for lineno, offset, raw in lines(path):
        try:
            text = decode_bytes(raw, offset, first=lineno == 1)
        except BadBytes as bad:
            rejected += 1
            first_bad = first_bad or bad.describe(lineno)
            stats.reject(f"{path.name}:{lineno}", bad.describe())
            continue
        readable += 1
        yield lineno, text.rstrip("\r\n")
    if rejected and not readable:
        raise InputError(f"'{path}' is not UTF-8 text: {first_bad}")


def _read_tsv(path: Path, stats: CorpusStats) -> Iterator[RawDocument]:
    for lineno, line in _text_lines(path, stats):
        text, _, subjects = line.partition("\t")
        if not text.strip():  # a blank line is no record; subjects without a text
            if subjects.strip():
                stats.skip_without_text(f"{path.name}:{lineno}", "empty text")
            continue
        uris = [_strip(u) for u in subjects.split()]
        yield RawDocument(text, uris=uris, id=f"{path.name}:{lineno}")


def _read_fulltext_dir(path: Path, stats: CorpusStats) -> Iterator[RawDocument]:
    texts = sorted(path.glob("*.txt"))
    if not texts:
        raise InputError(f"Directory '{path}' contains no .txt documents")
    readable = 0
    for txt in texts:
        try:
            doc = _read_fulltext(txt)
        except BadBytes as bad:
            stats.reject(f"{path.name}/{bad.source}", bad.describe())
            continue
        readable += 1
        yield doc
    if not readable:
        raise InputError(
            f"No document in '{path}' is UTF-8 text: "
            + "; ".join(stats.rejected_examples)
        )


# the subject files of ID.txt, in the order they are looked for
SUBJECT_SUFFIXES = (".tsv", ".key")


def _read_fulltext(txt: Path) -> RawDocument:
    """One document and its subject file; BadBytes naming the file when
    either is not UTF-8 text."""
    doc = RawDocument(_decode_file(txt), id=txt.stem)
    for ext in SUBJECT_SUFFIXES:
        subject_file = txt.with_suffix(ext)
        if subject_file.is_file():
            _parse_subject_file(_decode_file(subject_file), doc)
            break
    return doc


def _decode_file(path: Path) -> str:
    try:
        return decode_bytes(read_bytes(path))
    except BadBytes as bad:
        raise BadBytes(bad.reason, bad.offset, path.name) from None


def _parse_subject_file(text: str, doc: RawDocument) -> None:
    for line in text.splitlines():
        first = line.split("\t", 1)[0].strip()
        if not first:
            continue
        if first.startswith("<") or "://" in first:
            doc.uris.append(_strip(first))
        else:
            doc.labels.append(first)


def _read_csv(path: Path, stats: CorpusStats) -> Iterator[RawDocument]:
    reader = csv.DictReader(strict_lines(path))
    columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    if "input" in columns and "expected_output" in columns:
        for n, row in enumerate(reader, start=1):
            where = f"{path.name}:{n + 1}"
            text = _text_or_skip(row[columns["input"]], where, stats)
            if text is None:
                continue
            expected = row[columns["expected_output"]]
            yield RawDocument(
                text, labels=_completion_labels(expected, where), id=where
            )
        return
    text_column = next((columns[c] for c in TEXT_COLUMNS if c in columns), None)
    if text_column is None:
        raise InputError(
            f"'{path.name}' needs a text column: one of {', '.join(TEXT_COLUMNS)}"
        )
    uri_column = next((columns[c] for c in URI_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    used = {text_column, uri_column, label_column, columns.get("id")}
    for n, row in enumerate(reader, start=1):
        text = _text_or_skip(row[text_column], f"{path.name}:{n + 1}", stats)
        if text is None:
            continue
        yield RawDocument(
            text,
            uris=[_strip(u) for u in (row[uri_column] or "").split()]
            if uri_column
            else [],
            labels=_split_labels(row[label_column] or "") if label_column else [],
            id=row.get(columns.get("id", ""), None) or f"{path.name}:{n + 1}",
            metadata={k: v for k, v in row.items() if k not in used and v},
        )


def _split_labels(value: str) -> list[str]:
    return [x.strip() for x in SEPARATORS.split(value) if x.strip()]


def _completion_labels(completion, where: str) -> list[str]:
    """Positive labels of an LLM-platform completion: {"Label": 1, "Other": 0}."""
    if isinstance(completion, str):
        try:
            completion = json.loads(completion)
        except json.JSONDecodeError:
            return _split_labels(completion)
    if isinstance(completion, dict):
        return [
            str(k) for k, v in completion.items() if v in (1, True, "1", "true", 1.0)
        ]
    if isinstance(completion, list):
        return [str(x) for x in completion]
    raise InputError(f"{where}: completion must be an object of label: 0/1")


def _read_jsonl(path: Path, stats: CorpusStats) -> Iterator[RawDocument]:
    for lineno, line in _text_lines(path, stats):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: each line must be a JSON object")
        if "prompt" in record and "completion" in record:
            text = _text_or_skip(record["prompt"], where, stats)
            if text is None:
                continue
            yield RawDocument(
                text,
                labels=_completion_labels(record["completion"], where),
                id=str(record.get("id", where)),
            )
            continue
        text_key = next((k for k in TEXT_COLUMNS if k in record), None)
        if text_key is None:
            raise InputError(
                f"{where}: no text field (one of {', '.join(TEXT_COLUMNS)})"
            )
        uri_key = next((k for k in URI_COLUMNS if k in record), None)
        label_key = next((k for k in LABEL_COLUMNS if k in record), None)
        known = {text_key, "id", "metadata", *URI_COLUMNS, *LABEL_COLUMNS}
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InputError(f"{where}: 'metadata' must be a JSON object")
        metadata = {**metadata, **{k: v for k, v in record.items() if k not in known}}
        labels = _strings(record, label_key, where)
        text = _text_or_skip(record[text_key], where, stats)
        if text is None:
            continue
        yield RawDocument(
            text,
            uris=[_strip(u) for u in _strings(record, uri_key, where, str.split)],
            labels=_split_labels(labels[0])
            if isinstance(record.get(label_key), str)
            else labels,
            id=str(record.get("id") or where),
            metadata=metadata,
        )


def _strings(record: dict, key: str | None, where: str, split=lambda s: [s]):
    """The strings of `record[key]`: a list of strings, or one string (`split`)."""
    value = record.get(key) if key else None
    if value is None:
        return []
    if isinstance(value, str):
        return split(value)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    raise InputError(
        f"{where}: '{key}' must be a string or a list of strings, not "
        f"{json.dumps(value)[:60]}"
    )


def decode_document(data: bytes, source: str = "the document") -> str:
    """UTF-8 text of a single document, or a clear error for empty/binary input."""
    nul = data.find(b"\x00", 0, SNIFF_BYTES)
    if nul >= 0:
        raise InputError(
            f"{source} looks binary (a NUL byte at byte offset {nul}): give plain "
            "UTF-8 text"
        )
    text = decode_text(data, source)
    if not text.strip():
        raise InputError(f"{source} is empty: give some text to index")
    return text

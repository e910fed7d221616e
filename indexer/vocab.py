"""A loaded vocabulary: compact on-disk index of concepts with stable integer ids."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from indexer.errors import InputError, NotFoundError, UsageError
from indexer.locking import ResourceLock
from indexer.rdfsafe import gc_paused
from indexer.skos import ConceptRecord, read_vocabulary_file
from indexer.skosrows import UNTAGGED
from indexer.storage import atomic_directory

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Concept:
    """A read-only view of one concept in one language."""

    id: int
    uri: str
    label: str
    notation: str
    alt_labels: list[str]
    note: str
    deprecated: bool
    broader: list[int]
    narrower: list[int]
    related: list[int]


class Vocabulary:
    """A vocabulary stored under `data/vocabs/<id>/`, opened lazily per language.

    Ids are positions in `uris.json`; reloading a changed source keeps every old
    id (new concepts are appended, vanished ones stay as deprecated), so models
    trained on an older version remain valid.
    """

    def __init__(self, vocab_id: str, path: Path, lock: ResourceLock | None = None):
        self.vocab_id = vocab_id
        self.path = Path(path)
        # data/vocabs/ID -> data/locks/vocab-ID.lock
        self.lock = lock or ResourceLock.for_vocabulary(self.path.parents[1], vocab_id)

    # -- opening ---------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.path / "vocab.json").is_file()

    @cached_property
    def info(self) -> dict:
        if not self.exists:
            raise NotFoundError(
                f"Vocabulary '{self.vocab_id}' is not loaded: run "
                f"`indexer load-vocab {self.vocab_id} FILE`"
            )
        return json.loads((self.path / "vocab.json").read_text())

    @cached_property
    def uris(self) -> list[str]:
        self.info  # noqa: B018 - raises the helpful error when not loaded
        return json.loads((self.path / "uris.json").read_text())

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {uri: i for i, uri in enumerate(self.uris)}

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "concepts.npz", allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    def __len__(self) -> int:
        return int(self.info["size"])

    @property
    def languages(self) -> list[str]:
        return list(self.info["languages"])

    @cached_property
    def deprecated(self) -> np.ndarray:
        """Boolean mask over ids."""
        return self._arrays["deprecated"].astype(bool)

    @cached_property
    def notations(self) -> list[str]:
        return json.loads((self.path / "notations.json").read_text())

    def _language_file(self, lang: str) -> dict:
        cache = self.__dict__.setdefault("_lang_cache", {})
        if lang not in cache:
            path = self.path / f"labels-{lang}.json"
            cache[lang] = json.loads(path.read_text()) if path.is_file() else None
        return cache[lang]

    def has_language(self, lang: str) -> bool:
        return lang in self.languages

    def check_label_language(self, lang: str) -> str:
        """`lang` when the vocabulary has labels in it, else a UsageError that
        lists the languages it has."""
        if lang not in self.languages:
            raise UsageError(
                f'Language "{lang}" not supported by vocabulary '
                f"'{self.vocab_id}'. Languages: {', '.join(self.languages)}"
            )
        return lang

    # -- lookups ---------------------------------------------------------
    def id_of(self, uri: str) -> int | None:
        """The id of `uri` (angle brackets allowed), or None."""
        uri = uri.strip()
        if uri.startswith("<") and uri.endswith(">"):
            uri = uri[1:-1]
        return self._ids.get(uri)

    def _fallbacks(self, lang: str) -> list[str]:
        order = [lang, UNTAGGED, *self.languages]
        return list(dict.fromkeys(x for x in order if x in self.languages))

    def pref_labels(self, lang: str) -> list[str]:
        """prefLabel of every id in `lang`, falling back to another language."""
        cache = self.__dict__.setdefault("_pref_cache", {})
        if lang not in cache:
            labels: list[str | None] = [None] * len(self)
            for fallback in self._fallbacks(lang):
                table = self._language_file(fallback)["pref"]
                labels = [
                    a if a is not None else b
                    for a, b in zip(labels, table, strict=True)
                ]
            cache[lang] = [
                label if label is not None else uri
                for label, uri in zip(labels, self.uris, strict=True)
            ]
        return cache[lang]

    def label(self, concept_id: int, lang: str) -> str:
        return self.pref_labels(lang)[concept_id]

    def labels_in(
        self, lang: str
    ) -> tuple[list[str | None], list[list[str]], list[str | None]]:
        """(prefLabels, altLabels, notes) in exactly `lang`, without fallback."""
        table = self._language_file(lang) or {}
        n = len(self)
        return (
            table.get("pref", [None] * n),
            table.get("alt", [[] for _ in range(n)]),
            table.get("note", [None] * n),
        )

    def relation(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) of `broader`, `narrower` or `related`."""
        return self._arrays[f"{name}_indptr"], self._arrays[f"{name}_indices"]

    def _related_ids(self, name: str, concept_id: int) -> list[int]:
        indptr, indices = self.relation(name)
        return indices[indptr[concept_id] : indptr[concept_id + 1]].tolist()

    def concept(self, concept_id: int, lang: str) -> Concept:
        """Everything about one concept, labels in `lang` (with fallback)."""
        pref, alt, note = self.labels_in(lang)
        return Concept(
            id=concept_id,
            uri=self.uris[concept_id],
            label=self.label(concept_id, lang),
            notation=self.notations[concept_id],
            alt_labels=list(alt[concept_id]),
            note=note[concept_id] or "",
            deprecated=bool(self.deprecated[concept_id]),
            broader=self._related_ids("broader", concept_id),
            narrower=self._related_ids("narrower", concept_id),
            related=self._related_ids("related", concept_id),
        )

    def search(self, query: str, lang: str, limit: int = 20) -> list[int]:
        """Ids whose pref or alt label in `lang` contains `query` (exact first)."""
        query = query.casefold().strip()
        pref, alt, _ = self.labels_in(lang)
        exact, partial = [], []
        for i, (p, a) in enumerate(zip(pref, alt, strict=True)):
            names = [x.casefold() for x in ([p] if p else []) + a]
            if query in names:
                exact.append(i)
            elif any(query in x for x in names):
                partial.append(i)
        return (exact + partial)[:limit]

    # -- building --------------------------------------------------------
    def refresh(self) -> None:
        """Forget what was read from disk (another process may have reloaded)."""
        for key in ("info", "uris", "_ids", "_arrays", "deprecated", "notations"):
            self.__dict__.pop(key, None)
        self.__dict__.pop("_lang_cache", None)
        self.__dict__.pop("_pref_cache", None)

    def load_file(
        self, source: Path, language: str | None = None, wait: bool = False
    ) -> dict:
        """Parse `source` and store it, keeping the ids of a previous version.
        Holds the vocabulary's lock (BusyError when another load holds it)."""
        started = time.perf_counter()
        # gc_paused: a million records are a million containers without cycles
        with self.lock.hold(wait=wait), gc_paused():
            self.refresh()
            records = read_vocabulary_file(source, language)
            for record in records:
                _check_unicode(record, source)
            merged, added, removed = self._merge(records)
            with atomic_directory(self.path, self.lock) as tmp:
                _write_vocabulary(
                    tmp, self.vocab_id, merged, source_stamp(Path(source))
                )
            self.refresh()
        return {
            "concepts": len(merged),
            "added": added,
            "removed": removed,
            "languages": self.languages,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def _merge(self, new: list[ConceptRecord]) -> tuple[list[ConceptRecord], int, int]:
        """The stored version's concepts in their ids' order, each replaced by
        its `new` record (one that vanished is kept, deprecated), then the new
        concepts: (records, how many added, how many removed). Only vanished
        concepts are read back from disk."""
        by_uri = {}
        for record in new:
            if record.uri in by_uri:
                raise InputError(f"Concept <{record.uri}> is defined twice")
            by_uri[record.uri] = record
        if not self.exists:
            return new, len(new), 0
        merged, removed = [], 0
        for i, uri in enumerate(self.uris):
            record = by_uri.pop(uri, None)
            if record is None:
                record = self._stored_record(i)
                record.deprecated = True
                removed += 1
            merged.append(record)
        added = len(by_uri)
        merged.extend(by_uri.values())
        return merged, added, removed

    def _stored_record(self, i: int) -> ConceptRecord:
        """Concept `i` of the stored version, as a record."""
        uri = self.uris[i]
        record = ConceptRecord(uri, self.notations[i], bool(self.deprecated[i]))
        for lang in self.languages:
            table = self._language_file(lang)
            if table["pref"][i] is not None:
                record.pref[lang] = table["pref"][i]
            if table["alt"][i]:
                record.alt[lang] = table["alt"][i]
            if table["note"][i] is not None:
                record.note[lang] = table["note"][i]
        for name in ("broader", "related"):
            setattr(record, name, [self.uris[j] for j in self._related_ids(name, i)])
        return record


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _joined(pair: re.Match) -> str:
    return pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _check_unicode(record: ConceptRecord, source: Path) -> None:
    """Join the surrogate pairs that `\\u` escapes leave in rdflib's strings
    (`\\uD83D\\uDE00`, a character outside the BMP, as JSON writes it);
    a lone surrogate is no character, and no file can hold it: an InputError."""
    if not _has_surrogate(record):
        return

    def fixed(text: str, what: str) -> str:
        if text.isascii() or not _SURROGATE.search(text):
            return text
        text = _SURROGATE_PAIR.sub(_joined, text)
        lone = _SURROGATE.search(text)
        if lone is None:
            return text
        uri = record.uri.encode("utf-8", "backslashreplace").decode("utf-8")
        raise InputError(
            f"Vocabulary file '{source}': the {what} of <{uri}> holds "
            f"\\u{ord(lone.group()):04X}, a lone surrogate, which is no character; "
            "fix that escape in the file (a character beyond \\uFFFF is written "
            "\\U0001F600)"
        )

    record.uri = fixed(record.uri, "URI")
    record.notation = fixed(record.notation, "notation")
    record.pref = {
        fixed(k, "language"): fixed(v, "prefLabel") for k, v in record.pref.items()
    }
    record.alt = {
        fixed(k, "language"): [fixed(v, "altLabel") for v in values]
        for k, values in record.alt.items()
    }
    record.note = {
        fixed(k, "language"): fixed(v, "note") for k, v in record.note.items()
    }
    record.broader = [fixed(u, "skos:broader") for u in record.broader]
    record.related = [fixed(u, "skos:related") for u in record.related]


def _has_surrogate(record: ConceptRecord) -> bool:
    """Whether a string of `record` holds a surrogate (quick on ASCII)."""
    alt = [label for labels in record.alt.values() for label in labels]
    texts = "".join(
        [
            record.uri,
            record.notation,
            *record.pref,
            *record.pref.values(),
            *record.alt,
            *alt,
            *record.note,
            *record.note.values(),
            *record.broader,
            *record.related,
        ]
    )
    return not texts.isascii() and _SURROGATE.search(texts) is not None


def _csr(
    records: list[ConceptRecord], name: str, ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of the ids of each record's `name` URIs (those
    that are concepts of the vocabulary)."""
    get = ids.get
    indptr, flat = [0], []
    add, end = flat.append, indptr.append
    for record in records:
        for uri in getattr(record, name):
            target = get(uri)
            if target is not None:
                add(target)
        end(len(flat))
    return np.asarray(indptr, dtype=np.int64), np.asarray(flat, dtype=np.int32)


def _inverse(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of the inverse relation (narrower of broader), each row in id
    order."""
    sources = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.argsort(indices, kind="stable")
    counts = np.bincount(indices, minlength=len(indptr) - 1)
    inverse_indptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(counts, out=inverse_indptr[1:])
    return inverse_indptr, sources[order].astype(np.int32)


def source_stamp(source: Path) -> dict:
    """What identifies a version of a source file (to notice when it changed)."""
    stat = source.stat()
    return {"path": str(source.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def _write_vocabulary(
    tmp: Path, vocab_id: str, records: list[ConceptRecord], source: dict
) -> None:
    ids = {r.uri: i for i, r in enumerate(records)}
    languages = sorted({lang for r in records for lang in (*r.pref, *r.alt, *r.note)})
    if not languages:
        raise InputError("The vocabulary has concepts but no labels")
    arrays = {"deprecated": np.array([r.deprecated for r in records], dtype=np.uint8)}
    for name in ("broader", "related"):
        arrays[f"{name}_indptr"], arrays[f"{name}_indices"] = _csr(records, name, ids)
    arrays["narrower_indptr"], arrays["narrower_indices"] = _inverse(
        arrays["broader_indptr"], arrays["broader_indices"]
    )
    np.savez(tmp / "concepts.npz", **arrays)
    (tmp / "uris.json").write_text(json.dumps([r.uri for r in records]))
    (tmp / "notations.json").write_text(json.dumps([r.notation for r in records]))
    for lang in languages:
        table = {
            "pref": [r.pref.get(lang) for r in records],
            "alt": [r.alt.get(lang, []) for r in records],
            "note": [r.note.get(lang) for r in records],
        }
        (tmp / f"labels-{lang}.json").write_text(json.dumps(table, ensure_ascii=False))
    info = {
        "format": FORMAT_VERSION,
        "id": vocab_id,
        "size": len(records),
        "languages": languages,
        "source": source["path"],
        "source_stamp": source,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "vocab.json").write_text(json.dumps(info, indent=2))

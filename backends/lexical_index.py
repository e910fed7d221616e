"""The index of a vocabulary's labels that label matching looks phrases up in.

Each label goes through the project's analyzer once; the token sequences it
gives (phrases) are kept as arrays keyed by a 64-bit hash of the sequence, so
the index is linear in the labels, is saved as raw arrays and opens memory
mapped: a cold load reads nothing but a manifest, and processes serving the
same project share its pages. The arrays are built once per vocabulary
version, analyzer and label language and cached in the project's folder
(`cached_index`); a cache written for anything else is not trusted.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.storage import open_mappable, publish_mappable

#: bump when the arrays or the hashing change
INDEX_FORMAT = 2
QUALIFIER = re.compile(r"\s*\([^)]*\)")
# A word of the text matches a label word that differs only in its ending when
# they share a prefix this long that leaves at most this many letters of the
# label word and of the text word unmatched: the Snowball stemmers of
# inflecting languages leave stem alternations ("vaihdevuod"/"vaihdevuos").
FUZZY_MIN_PREFIX = 5
FUZZY_LABEL_REST = 2
FUZZY_TEXT_REST = 3
_SEED = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


# -- hashing -------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 18)
def token_hash(token: str) -> int:
    """A 64-bit hash of one token, the same in every process (unlike `hash`)."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def token_hashes(tokens: list[str]) -> np.ndarray:
    """`token_hash` of each token, as uint64."""
    return np.fromiter(map(token_hash, tokens), np.uint64, len(tokens))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def window_hashes(hashes: np.ndarray, length: int) -> np.ndarray:
    """The phrase hash of every run of `length` consecutive tokens."""
    n = len(hashes) - length + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    out = _mix(hashes[:n] ^ _SEED)
    for k in range(1, length):
        out = _mix(out ^ hashes[k : k + n])
    return out


def _phrase_hashes(token_rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Phrase hashes of padded rows of token hashes (`lengths` tokens each)."""
    out = _mix(token_rows[:, 0] ^ _SEED)
    for k in range(1, token_rows.shape[1]):
        longer = lengths > k
        out[longer] = _mix(out[longer] ^ token_rows[longer, k])
    return out


# -- building ------------------------------------------------------------
def build_arrays(vocab, analyzer, language: str) -> dict:
    """The index arrays of `vocab`'s labels in `language` (see `LabelIndex`)."""
    phrases, entries = _analyzed_labels(vocab, analyzer, language)
    words = sorted({t for p in phrases for t in p})
    word_keys = token_hashes(words)
    word_of = dict(zip(words, range(len(words)), strict=True))
    lengths = np.array([len(p) for p in phrases], np.int64)
    rows = np.zeros((len(phrases), max(lengths, default=1)), np.uint64)
    for i, p in enumerate(phrases):
        rows[i, : len(p)] = word_keys[[word_of[t] for t in p]]
    keys = _phrase_hashes(rows, lengths) if len(phrases) else np.zeros(0, np.uint64)
    order = np.argsort(keys, kind="stable")
    if np.any(keys[order][1:] == keys[order][:-1]):
        raise RuntimeError("Two label phrases share a 64-bit hash: report this")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    arrays = {
        "phrase_keys": keys[order],
        "phrase_lengths": lengths[order].astype(np.int32),
        **_entry_arrays(entries, rank, len(phrases)),
        **_partial_match_arrays(phrases, rank, word_keys, word_of),
        "neighbours": neighbour_matrix(vocab),
        **_fuzzy_arrays(words, word_keys),
    }
    key_order = np.argsort(word_keys)
    arrays["word_keys"] = word_keys[key_order]
    return arrays


def _analyzed_labels(vocab, analyzer, language: str):
    """Distinct token sequences of the labels in first-seen order, and
    (phrase, concept, is_pref) once each, in the order the labels come."""
    pref, alt, _ = vocab.labels_in(language)
    deprecated = vocab.deprecated
    phrase_ids: dict[tuple[str, ...], int] = {}
    entries: dict[tuple[int, int, bool], None] = {}
    for concept_id in range(len(vocab)):
        if deprecated[concept_id]:
            continue
        labels = ([(pref[concept_id], True)] if pref[concept_id] else []) + [
            (a, False) for a in alt[concept_id]
        ]
        for label, is_pref in labels:
            # "realism (art)" is also matched as "realism"
            for form in dict.fromkeys((label, QUALIFIER.sub("", label))):
                tokens = tuple(analyzer.tokens(form))
                if tokens:
                    phrase = phrase_ids.setdefault(tokens, len(phrase_ids))
                    entries[(phrase, concept_id, is_pref)] = None
    return list(phrase_ids), list(entries)


def _entry_arrays(entries: list, rank: np.ndarray, n_phrases: int) -> dict:
    """Each phrase's (concept, is_pref) entries as CSR rows, in concept order
    with the prefLabel first, and how many concepts share each phrase."""
    table = np.array(entries, np.int64).reshape(-1, 3)
    phrase, concept, pref = rank[table[:, 0]], table[:, 1], table[:, 2]
    order = np.lexsort((1 - pref, concept, phrase))
    phrase, concept, pref = phrase[order], concept[order], pref[order]
    indptr = np.zeros(n_phrases + 1, np.int64)
    np.cumsum(np.bincount(phrase, minlength=n_phrases), out=indptr[1:])
    new_concept = np.ones(len(phrase), bool)
    new_concept[1:] = (phrase[1:] != phrase[:-1]) | (concept[1:] != concept[:-1])
    senses = np.bincount(phrase[new_concept], minlength=n_phrases)
    return {
        "entry_indptr": indptr,
        "entry_concepts": concept.astype(np.int32),
        "entry_pref": pref.astype(np.uint8),
        "phrase_senses": senses.astype(np.int32),
    }


def _partial_match_arrays(phrases, rank, word_keys, word_of) -> dict:
    """Multi-word phrases (in first-seen order) x their distinct words as an
    idf-weighted terms x phrases matrix whose columns sum to 1. Terms are
    numbered as they first occur: a share is a float32 sum over the terms in
    that order, and a different order could round a full match below 1."""
    multi = [i for i, p in enumerate(phrases) if len(p) > 1]
    column_of: dict[str, int] = {}
    rows, cols = [], []
    for row, i in enumerate(multi):
        for token in dict.fromkeys(phrases[i]):
            rows.append(row)
            cols.append(column_of.setdefault(token, len(column_of)))
    terms = [word_of[t] for t in column_of]
    term_keys = word_keys[terms] if terms else np.zeros(0, np.uint64)
    term_order = np.argsort(term_keys)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(multi), len(terms))
    )
    df = np.asarray(matrix.sum(axis=0)).ravel()
    idf = np.log1p(len(multi) / np.maximum(df, 1)).astype(np.float32)
    weighted = matrix @ sp.diags(idf)
    totals = np.asarray(weighted.sum(axis=1)).ravel()
    totals[totals == 0] = 1
    return {
        "multi_phrases": rank[multi].astype(np.int64),
        "term_keys": term_keys[term_order],
        "term_columns": term_order.astype(np.int64),
        "multi_weights": sp.csr_matrix(sp.diags(1 / totals) @ weighted).T.tocsr(),
    }


def _fuzzy_arrays(words: list[str], word_keys: np.ndarray) -> dict:
    """The label words long enough for fuzzy matching, sorted, as one UTF-8
    buffer and offsets (UTF-8 sorts as the code points do)."""
    long = [w.encode("utf-8") for w in words if len(w) >= FUZZY_MIN_PREFIX]
    offsets = np.zeros(len(long) + 1, np.int64)
    np.cumsum([len(w) for w in long], out=offsets[1:])
    blob = np.frombuffer(b"".join(long), np.uint8) if long else np.zeros(0, np.uint8)
    return {"fuzzy_text": blob, "fuzzy_offsets": offsets}


def neighbour_matrix(vocab) -> sp.csr_matrix:
    """Concepts x concepts, 1 where one is broader, narrower or related to the
    other."""
    n = len(vocab)
    total = sp.csr_matrix((n, n), dtype=np.float32)
    for name in ("broader", "narrower", "related"):
        indptr, indices = vocab.relation(name)
        data = np.ones(len(indices), np.float32)
        total = total + sp.csr_matrix((data, indices, indptr), shape=(n, n))
    total = total + total.T
    total.data[:] = 1.0
    total.setdiag(0)
    total.eliminate_zeros()
    return total.tocsr()


# -- the cache -----------------------------------------------------------
def index_identity(vocab, analyzer_spec: str, language: str) -> dict:
    """What the index depends on: its format, the vocabulary version, the
    analyzer and the label language. The version is the one `vocab` read
    (its vocab.json as read, with the time it was loaded), not the one on
    disk now: a process that still holds an older version (a server while the
    vocabulary is reloaded) builds the index of its labels, which must not be
    cached as the new version's."""
    stamp = hashlib.sha256()
    stamp.update(str(vocab.path).encode())
    stamp.update(json.dumps(vocab.info, sort_keys=True).encode())
    return {
        "format": INDEX_FORMAT,
        "vocabulary": vocab.vocab_id,
        "vocabulary_digest": stamp.hexdigest(),
        "analyzer": analyzer_spec,
        "language": language,
    }


def cache_path(folder: Path, identity: dict) -> Path:
    """Where the index of `identity` is cached under `folder`."""
    text = json.dumps(identity, sort_keys=True).encode()
    return folder / hashlib.sha256(text).hexdigest()[:24]


def cached_index(folder: Path, identity: dict, build) -> LabelIndex:
    """The index of `identity` from its cache under `folder`, memory-mapped;
    when it is missing, damaged or partial, `build()` makes the arrays again
    and they are cached (atomically) for the next load. Older indexes of the
    folder are removed then."""
    path = cache_path(folder, identity)
    arrays = open_mappable(path, identity)
    if arrays is None:
        arrays = build()
        try:
            publish_mappable(path, arrays, identity, remove_siblings=True)
        except OSError:
            pass  # a read-only data folder: serve the index built in memory
        else:
            arrays = open_mappable(path, identity) or arrays
    return LabelIndex(arrays)


# -- looking up ----------------------------------------------------------
class LabelIndex:
    """Label phrases looked up by hash, with what matching needs of them."""

    def __init__(self, arrays: dict):
        # plain views of the mapped arrays: np.memmap's indexing wraps every
        # scalar and slice in a new memmap (a tenth of the matching time)
        arrays = {
            name: value.view(np.ndarray) if isinstance(value, np.memmap) else value
            for name, value in arrays.items()
        }
        self._keys = arrays["phrase_keys"]
        self.phrase_lengths = arrays["phrase_lengths"]
        self._indptr = arrays["entry_indptr"]
        self._concepts = arrays["entry_concepts"]
        self._pref = arrays["entry_pref"]
        self._senses = arrays["phrase_senses"]
        self.multi_phrases = arrays["multi_phrases"]
        self._term_keys = arrays["term_keys"]
        self._term_columns = arrays["term_columns"]
        self.multi_weights = arrays["multi_weights"]
        self.neighbours = arrays["neighbours"]
        self._word_keys = arrays["word_keys"]
        self._fuzzy = (arrays["fuzzy_text"], arrays["fuzzy_offsets"])
        #: the distinct numbers of tokens of the phrases, ascending
        self.lengths = np.unique(np.asarray(self.phrase_lengths)).tolist()

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The phrase of each hash, -1 where no label has it."""
        return _positions(self._keys, keys)

    def one_word_phrases(self, tokens: list[str]) -> np.ndarray:
        """The phrase that is each token alone, -1 where none is."""
        found = self.find(window_hashes(token_hashes(tokens), 1))
        hit = found >= 0
        hit[hit] = np.asarray(self.phrase_lengths)[found[hit]] == 1
        return np.where(hit, found, -1)

    def entries(self, phrase: int) -> list[tuple[int, bool]]:
        """The (concept, is_pref) pairs that have `phrase` as a label."""
        start, stop = int(self._indptr[phrase]), int(self._indptr[phrase + 1])
        concepts = self._concepts[start:stop].tolist()
        prefs = self._pref[start:stop].astype(bool).tolist()
        return list(zip(concepts, prefs, strict=True))

    def senses(self, phrase: int) -> int:
        """How many concepts share `phrase`."""
        return int(self._senses[phrase])

    def terms(self, hashes: np.ndarray) -> list[int]:
        """The distinct partial-match terms among the token hashes, ascending."""
        found = _positions(self._term_keys, hashes)
        return np.unique(self._term_columns[found[found >= 0]]).tolist()

    def are_words(self, tokens: list[str]) -> np.ndarray:
        """Whether each token is a word of some label."""
        return _positions(self._word_keys, token_hashes(tokens)) >= 0

    def fuzzy_words(self) -> FuzzyWords:
        """Finds label words that differ from a text word only in its ending."""
        return FuzzyWords(self, _Words(*self._fuzzy))


def _positions(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Where each key is in `sorted_keys`, -1 where it is not."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    at = np.searchsorted(sorted_keys, keys)
    at[at == len(sorted_keys)] = 0
    return np.where(sorted_keys[at] == keys, at, -1)


class _Words:
    """A sorted sequence of UTF-8 words read from a buffer and offsets."""

    def __init__(self, text: np.ndarray, offsets: np.ndarray):
        self._text, self._offsets = text, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self._text[self._offsets[i] : self._offsets[i + 1]].tobytes()


class FuzzyWords:
    """Finds the label word that a text word differs from only in its ending."""

    def __init__(self, index: LabelIndex, words: _Words):
        self._index = index
        self._sorted = words
        self._cache: dict[str, str | None] = {}

    def label_words(self, words: list[str]) -> list[str | None]:
        """For each word: itself when a label has it, else the label word it
        differs from only in its ending, else None."""
        known = self._index.are_words(words).tolist()
        return [
            word if is_known else self._label_word(word)
            for word, is_known in zip(words, known, strict=True)
        ]

    def _label_word(self, word: str) -> str | None:
        if word not in self._cache:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[word] = self._closest(word)
        return self._cache[word]

    def _closest(self, word: str) -> str | None:
        if len(word) < FUZZY_MIN_PREFIX:
            return None
        prefix = word[:FUZZY_MIN_PREFIX].encode("utf-8")
        words = self._sorted
        best, best_key = None, None
        for i in range(bisect.bisect_left(words, prefix), len(words)):
            raw = words[i]
            if not raw.startswith(prefix):
                break
            candidate = raw.decode("utf-8")
            shared = _common_prefix(word, candidate)
            if (
                len(candidate) - shared <= FUZZY_LABEL_REST
                and len(word) - shared <= FUZZY_TEXT_REST
            ):
                key = (shared, -abs(len(candidate) - len(word)))
                if best_key is None or key > best_key:
                    best, best_key = candidate, key
        return best


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

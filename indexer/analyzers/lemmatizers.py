"""Lemmatizing analyzers: simplemma, Voikko (Finnish) and
spaCy. Each is an optional extra, imported only when a project uses it; the
lemma of each word type is cached by the base class (bounded LRU)."""

from __future__ import annotations

import importlib
import threading

from indexer.analyzer import CACHE_SIZE, DEFAULT_MIN_LENGTH, VOIKKO_DEBIAN, Analyzer
from indexer.errors import ConfigError, DependencyError
from indexer.registry import DISTRIBUTION


def _require(module: str, analyzer: str, extra: str, also: str = ""):
    """Import `module` or raise a DependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(
            f"The {analyzer} analyzer needs the Python package {module}, which is "
            f"not installed: pip install '{DISTRIBUTION}[{extra}]'{also}"
        ) from None


class SimplemmaAnalyzer(Analyzer):
    """Dictionary lemmas from simplemma (pure Python, about 50 languages)."""

    name = "simplemma"

    def __init__(
        self,
        language: str,
        min_length: int = DEFAULT_MIN_LENGTH,
        cache_size: int = CACHE_SIZE,
    ):
        simplemma = _require("simplemma", "simplemma", "simplemma")
        super().__init__(language, False, min_length, cache_size)
        self._lang = language.split("-")[0]
        try:
            simplemma.lemmatize("a", lang=self._lang)
        except ValueError:
            raise ConfigError(
                f"analyzer = simplemma({language}): simplemma has no dictionary "
                f"for '{self._lang}'"
            ) from None
        self._lemmatize = simplemma.lemmatize

    def _normalize(self, word: str) -> str:
        return self._lemmatize(word, lang=self._lang).lower()


class VoikkoAnalyzer(Analyzer):
    """Finnish morphology from Voikko: the base form of each word (its first
    analysis). One Voikko handle per thread: the C library's handles are not
    safe to share."""

    name = "voikko"

    def __init__(
        self,
        language: str,
        min_length: int = DEFAULT_MIN_LENGTH,
        cache_size: int = CACHE_SIZE,
    ):
        also = f", and the Debian packages {VOIKKO_DEBIAN}"
        self._voikko = _require("libvoikko", "voikko", "voikko", also)
        super().__init__(language, False, min_length, cache_size)
        self._local = threading.local()
        self._handle()  # a missing library or dictionary shows now, not mid-run

    def _handle(self):
        handle = getattr(self._local, "voikko", None)
        if handle is not None:
            return handle
        from ctypes.util import find_library

        # checked first: libvoikko's Voikko() fails without it and then
        # prints an AttributeError from its __del__
        if find_library("voikko") is None:
            raise DependencyError(
                "The voikko analyzer needs the C library libvoikko, which is not "
                f"installed: apt-get install {VOIKKO_DEBIAN}"
            )
        try:
            handle = self._voikko.Voikko(self.language)
        except (self._voikko.VoikkoException, OSError) as exc:
            raise DependencyError(
                f"Voikko has no dictionary for '{self.language}' ({exc}): for "
                f"Finnish, apt-get install voikko-fi"
            ) from None
        self._local.voikko = handle
        return handle

    def _normalize(self, word: str) -> str:
        analyses = self._handle().analyze(word)
        if not analyses or "BASEFORM" not in analyses[0]:
            return word
        return analyses[0]["BASEFORM"].lower()


class SpacyAnalyzer(Analyzer):
    """Lemmas from a spaCy pipeline: an installed model package (its tagger
    and lemmatizer) or, given a language code, a blank pipeline with the
    lookup lemmas of spacy-lookups-data. Words are lemmatized one type at a
    time, so the cache serves repeated words (context-free lemmas)."""

    name = "spacy"

    def __init__(
        self,
        model: str,
        min_length: int = DEFAULT_MIN_LENGTH,
        cache_size: int = CACHE_SIZE,
    ):
        spacy = _require("spacy", "spacy", "spacy")
        super().__init__(model, False, min_length, cache_size)
        self._nlp = _spacy_pipeline(spacy, model)
        self._lock = threading.Lock()  # a pipeline is not documented thread-safe

    def _normalize(self, word: str) -> str:
        with self._lock:
            doc = self._nlp(word)
        return "".join(t.lemma_ or t.text for t in doc).lower() or word


def _spacy_pipeline(spacy, model: str):
    """The pipeline `model` names: an installed package or directory, else a
    blank pipeline of that language with lookup lemmas."""
    try:
        return spacy.load(model, exclude=["ner", "parser", "senter", "textcat"])
    except OSError:
        pass
    try:
        spacy.util.get_lang_class(model)
    except ImportError:
        raise DependencyError(
            f"spaCy model '{model}' is not installed: install its package (see "
            "https://spacy.io/models), or name a language code such as "
            "spacy(en) for a blank pipeline with lookup lemmas"
        ) from None
    nlp = spacy.blank(model)
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    try:
        nlp.initialize()
    except ValueError as exc:  # E955: no lookup table for the language
        raise DependencyError(
            f"analyzer = spacy({model}): spaCy has no lookup lemmas for '{model}' "
            f"({str(exc).split('.')[0]}). spacy-lookups-data (pip install "
            f"'{DISTRIBUTION}[spacy]') has them for some languages only: "
            "otherwise name an installed spaCy model package"
        ) from None
    return nlp


LEMMATIZERS = {
    "simplemma": SimplemmaAnalyzer,
    "voikko": VoikkoAnalyzer,
    "spacy": SpacyAnalyzer,
}

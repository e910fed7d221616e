"""Language-aware tokenisation and stemming (Snowball, works offline)."""

from __future__ import annotations

import re
import threading
from functools import cache

SNOWBALL = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "nl": "dutch",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
# Snowball leaves some case endings of agglutinative languages half removed
# (Finnish "arkeologian" -> "arkeologia" but "arkeologia" -> "arkeolog");
# trimming final vowels after stemming makes both sides meet.
TRIM_FINAL_VOWELS = {"fi", "et"}
FINAL_VOWELS = "aeiouyäöõü"
#: what a `language` setting may look like: en, fi, pt-BR, zh-Hant
LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
TOKEN = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
# Snowball stemmers keep per-word state: the pure-Python ones return wrong stems
# or crash when two threads of a server stem at once, so each thread has its own
_THREAD_STEMMERS = threading.local()


class Analyzer:
    """Splits text into lower-cased, stemmed tokens for one language."""

    def __init__(self, language: str, stem: bool = True, min_length: int = 2):
        self.language = language
        self.min_length = min_length
        self._stem = _stemmer(language) if stem else None
        self._trim = stem and language.split("-")[0].lower() in TRIM_FINAL_VOWELS
        self._cache: dict[str, str] = {}

    def words(self, text: str) -> list[str]:
        """Lower-cased word tokens, hyphenated words split into their parts too."""
        words = []
        for match in TOKEN.finditer(text.lower()):
            word = match.group()
            if "-" in word or "'" in word:
                words.extend(p for p in re.split(r"[-']", word) if p)
            else:
                words.append(word)
        return [w for w in words if len(w) >= self.min_length or w.isdigit()]

    def stem(self, word: str) -> str:
        stem = self._cache.get(word)
        if stem is None:
            stem = self._stem(word) if self._stem else word
            if self._trim and len(stem) > 4:
                stem = stem[:3] + stem[3:].rstrip(FINAL_VOWELS)
            if len(self._cache) < 500_000:
                self._cache[word] = stem
        return stem

    def tokens(self, text: str) -> list[str]:
        """Stemmed tokens of `text` in order."""
        return [self.stem(w) for w in self.words(text)]

    def __call__(self, text: str) -> list[str]:
        return self.tokens(text)


def is_language_tag(language: str) -> bool:
    """Whether `language` looks like a language tag (en, fi, pt-BR)."""
    return LANGUAGE_TAG.fullmatch(language) is not None


def has_stemmer(language: str) -> bool:
    """Whether documents in `language` are stemmed (a Snowball stemmer exists)."""
    return _stemmer(language) is not None


def stemmer_languages() -> list[str]:
    """The language codes whose documents are stemmed."""
    return [code for code in sorted(SNOWBALL) if has_stemmer(code)]


@cache
def _stemmer(language: str):
    import snowballstemmer

    name = SNOWBALL.get(language.split("-")[0].lower())
    if name is None or name not in snowballstemmer.algorithms():
        return None

    def stem_word(word: str) -> str:
        stemmers = _THREAD_STEMMERS.__dict__
        if name not in stemmers:
            stemmers[name] = snowballstemmer.stemmer(name)
        return stemmers[name].stemWord(word)

    return stem_word


@cache
def get_analyzer(language: str, stem: bool = True) -> Analyzer:
    """A shared analyzer per language (its stem cache is reused)."""
    return Analyzer(language, stem)

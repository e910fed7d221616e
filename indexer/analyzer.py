"""Language-aware tokenisation: words normalised by Snowball stemming (the
default, works offline) or by a lemmatizer (indexer.analyzers.lemmatizers).

A project chooses its analyzer with the `analyzer` setting, written as Annif
writes it: `snowball(finnish)`, `simplemma(fi)`, `voikko(fi)`,
`spacy(en_core_web_sm)`, optionally with options such as
`simplemma(fi, token_min_length=3)`. Without one, a project uses Snowball in
its own language.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from functools import cache

from indexer.errors import ConfigError

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


#: word types whose normalised form each analyzer remembers (least recently
#: used first out); lemmatizers are slow in pure Python, so this is their speed
CACHE_SIZE = 200_000


class Analyzer:
    """Splits text into lower-cased tokens for one language, each word stemmed
    with Snowball; lemmatizers subclass it and override `_normalize`. The
    normalised form of each word type is cached in a bounded, thread-safe LRU
    (functools.lru_cache) per analyzer."""

    name = "snowball"

    def __init__(
        self,
        language: str,
        stem: bool = True,
        min_length: int = 2,
        cache_size: int = CACHE_SIZE,
    ):
        self.language = language
        self.min_length = min_length
        self._stem = _stemmer(language) if stem else None
        self._trim = stem and language.split("-")[0].lower() in TRIM_FINAL_VOWELS
        self.stem = functools.lru_cache(maxsize=cache_size)(self._normalize)

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

    def _normalize(self, word: str) -> str:
        """The token of one lower-cased word (uncached: `stem` caches it)."""
        stem = self._stem(word) if self._stem else word
        if self._trim and len(stem) > 4:
            stem = stem[:3] + stem[3:].rstrip(FINAL_VOWELS)
        return stem

    def tokens(self, text: str) -> list[str]:
        """Normalised tokens of `text` in order."""
        stem = self.stem
        return [stem(w) for w in self.words(text)]

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
    """A shared Snowball analyzer per language (its stem cache is reused)."""
    return Analyzer(language, stem)


# -- the `analyzer` setting -----------------------------------------------
#: analyzer name -> (what its argument is, the extra that installs it)
ANALYZERS = {
    "snowball": ("a language code or Snowball name: snowball(fi)", None),
    "simplemma": ("a language code: simplemma(fi)", "simplemma"),
    "voikko": ("a language code: voikko(fi)", "voikko"),
    "spacy": (
        "an installed spaCy model, or a language code for a blank pipeline "
        "with lookup lemmas: spacy(en_core_web_sm), spacy(en)",
        "spacy",
    ),
}
DEFAULT_MIN_LENGTH = 2
#: the Debian packages of Voikko's C library and Finnish dictionary
VOIKKO_DEBIAN = "libvoikko1 voikko-fi"
#: options every analyzer takes (Annif's names): name -> (minimum, changes tokens)
OPTIONS = {"token_min_length": (1, True), "cache_size": (0, False)}
SPEC = re.compile(r"\s*(\w+)\s*\(\s*([^,()\s]+)\s*((?:,[^()]*)?)\)\s*")


@dataclass(frozen=True)
class AnalyzerSpec:
    """A parsed `analyzer` setting: name, argument and options."""

    name: str
    argument: str
    options: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        """The canonical setting: only the options that change the tokens."""
        shown = [f",{k}={v}" for k, v in self.options if OPTIONS[k][1]]
        return f"{self.name}({self.argument}{''.join(shown)})"

    def option(self, name: str, default: int) -> int:
        return dict(self.options).get(name, default)


def default_analyzer(language: str) -> AnalyzerSpec:
    """What a project without an `analyzer` setting uses: Snowball in its language."""
    return AnalyzerSpec("snowball", language)


def parse_analyzer(text: str, where: str = "") -> AnalyzerSpec:
    """The `analyzer` setting `text` parsed and checked (no import: a missing
    package is reported when the analyzer is first used); a ConfigError names
    what is wrong and the valid forms."""
    match = SPEC.fullmatch(text)
    forms = "; ".join(f"{name}: {form}" for name, (form, _) in ANALYZERS.items())
    if match is None:
        raise ConfigError(
            f"{where}analyzer = {text} is not NAME(ARGUMENT[, OPTION=VALUE...]). "
            f"Analyzers: {forms}"
        )
    name, argument, rest = match.group(1).lower(), match.group(2), match.group(3)
    if name not in ANALYZERS:
        raise ConfigError(f"{where}analyzer '{name}' is unknown. Analyzers: {forms}")
    if name == "snowball":
        argument = _snowball_language(argument, where)
    elif name in ("simplemma", "voikko"):
        if not is_language_tag(argument.lower()):
            raise ConfigError(
                f"{where}analyzer = {text}: '{argument}' is not a language code "
                f"({ANALYZERS[name][0]})"
            )
        argument = argument.lower()
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = (x.strip() for x in item.partition("="))
        if key == "lowercase" and value.lower() in ("1", "true", "yes", "on"):
            continue  # Annif's spaCy option; tokens are always lower-cased here
        if key not in OPTIONS or not equals:
            raise ConfigError(
                f"{where}analyzer = {text}: unknown option '{item}'. Options: "
                f"{', '.join(f'{k}=N' for k in OPTIONS)}"
            )
        minimum = OPTIONS[key][0]
        if not value.isdigit() or int(value) < minimum:
            raise ConfigError(
                f"{where}analyzer = {text}: {key} must be an integer >= {minimum}"
            )
        if not (key == "token_min_length" and int(value) == DEFAULT_MIN_LENGTH):
            options[key] = int(value)
    return AnalyzerSpec(name, argument, tuple(sorted(options.items())))


def _snowball_language(argument: str, where: str) -> str:
    """A language code for Snowball's `argument` (a code or an algorithm name)."""
    lowered = argument.lower()
    by_name = {}
    for code, algorithm in SNOWBALL.items():
        by_name.setdefault(algorithm, code)
    if lowered in by_name:
        return by_name[lowered]
    if is_language_tag(argument):
        return argument
    raise ConfigError(
        f"{where}analyzer = snowball({argument}): '{argument}' is neither a "
        f"language code nor a Snowball algorithm ({', '.join(sorted(by_name))})"
    )


@cache
def build_analyzer(spec: AnalyzerSpec) -> Analyzer:
    """The shared analyzer of a parsed setting (its cache is reused); a
    DependencyError names the extra (or Debian packages) to install."""
    min_length = spec.option("token_min_length", DEFAULT_MIN_LENGTH)
    cache_size = spec.option("cache_size", CACHE_SIZE)
    if spec.name == "snowball":
        return Analyzer(spec.argument, min_length=min_length, cache_size=cache_size)
    from indexer.analyzers import lemmatizers

    cls = lemmatizers.LEMMATIZERS[spec.name]
    return cls(spec.argument, min_length=min_length, cache_size=cache_size)


def analyzer_for(setting: str | AnalyzerSpec) -> Analyzer:
    """The shared analyzer of an `analyzer` setting (text or parsed)."""
    if isinstance(setting, str):
        setting = parse_analyzer(setting)
    return build_analyzer(setting)

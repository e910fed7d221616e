"""Which of some candidate languages a text is in (py3langid: a naive Bayes
model over byte n-grams, shipped in its wheel as npz; nothing is downloaded).

py3langid was measured against simplemma's detector and lingua on the shared
corpora (benchmarks/language.py): as accurate as lingua, far smaller and
faster, and more accurate than simplemma on short titles.
"""

from __future__ import annotations

import functools
import re

from indexer.errors import UsageError

_LETTER = re.compile(r"[^\W\d_]")


@functools.cache
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:  # pragma: no cover - a core dependency
        from indexer.errors import DependencyError

        raise DependencyError(
            "Language detection needs py3langid: pip install py3langid"
        ) from None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def supported_languages() -> list[str]:
    """The language codes the detector knows."""
    return sorted(_identifier().labels)


def detect_languages(
    text: str, candidates: list[str]
) -> list[tuple[str | None, float]]:
    """(language, probability) for each candidate, most likely first; a text
    without letters gives [(None, 1.0)], as Annif answers for an unknown one."""
    languages = list(dict.fromkeys(c.strip().lower() for c in candidates))
    if not languages or not all(languages):
        raise UsageError("Give at least one candidate language, e.g. en,fi,sv")
    known = set(supported_languages())
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        raise UsageError(
            f"Unsupported candidate languages: {', '.join(unknown)}. "
            "Use ISO 639-1 codes such as en, fi, sv, de"
        )
    if not _LETTER.search(text):
        return [(None, 1.0)]
    # the posterior over the candidates alone is the full one renormalised
    ranked = [(lang, p) for lang, p in _identifier().rank(text) if lang in languages]
    total = sum(p for _, p in ranked) or 1.0
    return [(lang, round(float(p) / total, 4)) for lang, p in ranked]

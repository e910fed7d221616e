"""Language detection on the shared corpora: documents and short titles in
Finnish, German and English, for each offline detector installed.

    python benchmarks/language.py [--per-language 300]

Candidates are en, fi, sv, de (as an Annif user would list them). A title is
the text before the first ' ¤ ' or ' : ', at most 60 characters.
"""

from __future__ import annotations

import argparse
import random
import time

from common import DATASETS

CANDIDATES = ("en", "fi", "sv", "de")
SOURCES = {
    "fi": ["yso-kirjastonhoitaja/train.tsv", "ykl-makupalat/train.tsv"],
    "de": ["gnd-tibkat/train-de.tsv"],
    "en": ["gnd-tibkat/train-en.tsv"],
}


def texts(language: str, n: int, seed: int = 0) -> list[str]:
    lines = []
    for name in SOURCES[language]:
        path = DATASETS / name
        lines += [
            line.split("\t")[0]
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
    lines = [t for t in lines if len(t.split()) >= 3]
    random.Random(seed).shuffle(lines)
    return lines[:n]


def title(text: str) -> str:
    for sep in (" ¤ ", " : ", ". "):
        text = text.split(sep)[0]
    return text[:60]


def simplemma_detector():
    from simplemma import langdetect

    def detect(text):
        return max(langdetect(text, lang=CANDIDATES), key=lambda p: p[1])[0]

    return detect


def py3langid_detector():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(CANDIDATES))
    return lambda text: identifier.classify(text)[0]


def lingua_detector():
    from lingua import Language, LanguageDetectorBuilder

    names = {"en": "ENGLISH", "fi": "FINNISH", "sv": "SWEDISH", "de": "GERMAN"}
    langs = [getattr(Language, names[c]) for c in CANDIDATES]
    detector = LanguageDetectorBuilder.from_languages(*langs).build()
    codes = {getattr(Language, v): k for k, v in names.items()}

    def detect(text):
        found = detector.detect_language_of(text)
        return codes.get(found, "unk")

    return detect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-language", type=int, default=300)
    args = parser.parse_args()
    data = {lang: texts(lang, args.per_language) for lang in SOURCES}
    detectors = {
        "simplemma": simplemma_detector,
        "py3langid": py3langid_detector,
        "lingua": lingua_detector,
    }
    print("| detector | documents | titles | ms per document |")
    print("|---|---|---|---|")
    for name, make in detectors.items():
        try:
            detect = make()
        except ImportError:
            print(f"| {name} | not installed | | |")
            continue
        right = {"doc": 0, "title": 0}
        total = 0
        started = time.perf_counter()
        for lang, docs in data.items():
            for doc in docs:
                right["doc"] += detect(doc) == lang
                right["title"] += detect(title(doc)) == lang
                total += 1
        millis = 1000 * (time.perf_counter() - started) / (2 * total)
        print(
            f"| {name} | {right['doc'] / total:.3f} | {right['title'] / total:.3f} "
            f"| {millis:.2f} |"
        )


if __name__ == "__main__":
    main()

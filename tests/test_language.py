"""Language detection: the library function, the CLI command, and accuracy on
the shared corpora's documents and short titles."""

from __future__ import annotations

import pytest

from indexer.errors import UsageError
from indexer.language import detect_languages
from tests.conftest import shared_dataset


def test_scores_every_candidate_most_likely_first():
    ranked = detect_languages("Tämä on suomenkielinen lause kirjastosta", ["sv", "fi"])
    assert [lang for lang, _ in ranked] == ["fi", "sv"]
    assert ranked[0][1] > 0.99 and sum(p for _, p in ranked) == pytest.approx(1, 1e-3)


def test_a_text_without_letters_has_no_language():
    assert detect_languages("12 345 -- !!", ["en", "fi"]) == [(None, 1.0)]


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([], "Give at least one candidate language"),
        ([" "], "Give at least one candidate language"),
        (["en", "xx"], "Unsupported candidate languages: xx"),
    ],
)
def test_bad_candidates(candidates, message):
    with pytest.raises(UsageError, match=message):
        detect_languages("text", candidates)


def test_cli(run_cli, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Die Bibliothek hat viele Bücher über Geschichte", encoding="utf-8")
    result = run_cli("detect-language", "--languages", "en,de,sv", str(path))
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert [r[0] for r in rows] == ["de", "en", "sv"] and float(rows[0][1]) > 0.9
    empty = run_cli("detect-language", "--languages", ",", str(path))
    assert empty.exit_code == 2 and "at least one candidate" in empty.output
    missing = run_cli("detect-language", "--languages", "en", "nope.txt")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def _first_texts(path, n: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            text = line.split("\t")[0]
            if len(text.split()) >= 3:
                texts.append(text)
            if len(texts) == n:
                break
    return texts


@pytest.mark.parametrize(
    ("dataset", "language"),
    [
        ("yso-kirjastonhoitaja/train.tsv", "fi"),
        ("gnd-tibkat/train-de.tsv", "de"),
        ("gnd-tibkat/train-en.tsv", "en"),
    ],
)
def test_accuracy_on_real_documents_and_titles(dataset, language):
    texts = _first_texts(shared_dataset(dataset), 100)
    candidates = ["en", "fi", "sv", "de"]
    documents = sum(detect_languages(t, candidates)[0][0] == language for t in texts)
    titles = [t.split(" ¤ ")[0].split(" : ")[0][:60] for t in texts]
    short = sum(detect_languages(t, candidates)[0][0] == language for t in titles)
    assert documents >= 98 and short >= 95, (documents, short)

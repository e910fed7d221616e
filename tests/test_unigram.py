"""The unigram segmentation of the e5 tokenizer, on a small piece list."""

from __future__ import annotations

import pytest

from indexer.neural.unigram import METASPACE, Unigram

PIECES = [
    ("<unk>", 0.0),
    (METASPACE, -2.0),
    (METASPACE + "ki", -3.0),
    (METASPACE + "kirja", -4.0),
    ("sto", -3.5),
    ("t", -2.5),
    ("a", -2.0),
    ("k", -2.6),
    ("i", -2.4),
    ("r", -2.7),
    ("j", -2.8),
    ("s", -2.2),
    ("o", -2.1),
    (METASPACE + "a", -3.2),
]
TEXTS = [
    "kirjastot kirja a",
    "kirjastotkirjastotkirjastot " * 40,
    " ".join(["kirjastot"] * 300),
    METASPACE * 2 + "odd kirja",
    "xyz kirja",
]


@pytest.fixture(scope="module")
def unigram():
    return Unigram(PIECES, unk_id=0)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("limit", [1, 2, 7, 50, 510])
def test_a_limit_gives_the_first_pieces_of_the_whole_text(unigram, text, limit):
    assert unigram.encode(text, limit) == unigram.encode(text)[:limit]


def test_a_limit_segments_only_the_start_of_a_huge_word():
    unigram = Unigram(PIECES, unk_id=0)
    word = "kirjastot" * 20_000  # 180,000 characters, no space
    calls = []
    unigram.word = lambda piece: calls.append(len(piece)) or (1,) * len(piece)
    assert len(unigram.encode(word, 10)) == 10
    assert calls == [1 + 10 * unigram.longest]

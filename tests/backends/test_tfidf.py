from __future__ import annotations

import pytest

from indexer.analyzer import get_analyzer
from indexer.errors import InputError, NotTrainedError

from ..conftest import DATA


def top_uri(project, text):
    batch = project.suggest([text], limit=1)
    return project.vocab.uris[batch.row(0)[0].subject]


def test_untrained_project_says_how_to_train(projects):
    with pytest.raises(NotTrainedError, match="indexer train tfidf-en CORPUS"):
        projects.get("tfidf-en").suggest(["stars"])


def test_learns_subjects_from_documents(projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    assert (
        top_uri(project, "galaxies and telescopes") == "http://example.org/t/astronomy"
    )
    assert top_uri(project, "genes in cells") == "http://example.org/t/biology"


def test_suggests_only_subjects_seen_in_training(projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "fulltext"])
    seen = project.seen_subjects() > 0
    batch = project.suggest(["astronomy music history physics biology"], limit=10)
    assert all(seen[s.subject] for s in batch.row(0))


def test_corpus_without_known_subjects_is_rejected(projects, tmp_path):
    corpus = tmp_path / "c.tsv"
    corpus.write_text("some text\t<http://elsewhere/x>\n")
    with pytest.raises(
        InputError, match="No document of the training corpus has a subject"
    ):
        projects.get("tfidf-en").train([corpus])


def test_bigrams(workspace, projects):
    project = projects.get("tfidf-en")
    project.config.params["ngram"] = "2"
    info = project.train([DATA / "tiny.tsv"])
    # every distinct stem and every distinct pair of neighbouring stems
    analyzer = get_analyzer("en")
    words, pairs = set(), set()
    for line in (DATA / "tiny.tsv").read_text().splitlines():
        tokens = analyzer.tokens(line.split("\t")[0])
        words.update(tokens)
        pairs.update(zip(tokens, tokens[1:], strict=False))
    assert info["terms"] == len(words) + len(pairs)
    assert len(pairs) > 0

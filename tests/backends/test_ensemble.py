from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import ConfigError, NotFoundError

from ..conftest import DATA


def test_weighted_mean_of_sources(projects):
    projects.get("tfidf-en").train([DATA / "tiny.tsv"])
    text = ["Telescopes and the history of astronomy"]
    a = projects.get("tfidf-en").backend.suggest_batch(text).matrix.toarray()
    b = projects.get("lexical-en").backend.suggest_batch(text).matrix.toarray()
    fused = projects.get("ensemble-en").backend.suggest_batch(text).matrix.toarray()
    np.testing.assert_allclose(fused, (2 * a + b) / 3, rtol=1e-6)


def test_bad_sources(tmp_path):
    from indexer.project import Projects

    (tmp_path / "projects.cfg").write_text(
        f"[vocab:tiny]\nsource = {DATA}/tiny.ttl\n"
        "[e1]\nlanguage=en\nvocab=tiny\nbackend=ensemble\nsources = nothere:1\n"
        "[e2]\nlanguage=en\nvocab=tiny\nbackend=ensemble\nsources = e2:x\n"
        "[e3]\nlanguage=en\nvocab=tiny\nbackend=ensemble\n"
    )
    projects = Projects.from_path(tmp_path / "projects.cfg")
    with pytest.raises(NotFoundError, match="No project 'nothere'"):
        projects.get("e1").suggest(["text"])
    with pytest.raises(ConfigError, match="weight of source 'e2' must be a number"):
        projects.get("e2").suggest(["text"])
    with pytest.raises(ConfigError, match="set 'sources'"):
        projects.get("e3").suggest(["text"])


def test_unseen_slots_keep_a_subject_no_source_was_trained_on(projects, tmp_path):
    lines = (DATA / "tiny.tsv").read_text().splitlines(keepends=True)
    corpus = tmp_path / "no-music.tsv"
    corpus.write_text("".join(line for line in lines if "/music" not in line))
    projects.get("tfidf-en").train([corpus])
    music = projects.get("tfidf-en").vocab.id_of("http://example.org/t/music")
    text = ["Music in the history of astronomy, telescopes and stars"]

    def top(slots: int, depth: int) -> list[int]:
        project = projects.get("ensemble-en")
        project.config.params.update(unseen_slots=slots, unseen_depth=depth)
        project.unload()
        return [s.subject for s in project.suggest(text).row(0)]

    ranked = top(0, 1)
    assert music in ranked and ranked[0] != music
    assert top(1, 1)[0] == music
    assert sorted(top(1, 1)) == sorted(ranked)  # reordered, nothing lost


@pytest.mark.parametrize(
    ("setting", "counts", "slots"),
    [
        ("auto", None, 0),  # no source trained: every subject is unseen
        ("auto", [5, 5, 5, 5], 0),  # everything recurs: nothing new expected
        ("auto", [1, 1, 3, 5], 2),  # 2 of 10 assignments were singletons
        ("auto", [1, 1, 1, 1], 10),
        ("3", [5, 5, 5, 5], 3),
    ],
)
def test_unseen_slots_auto_is_the_good_turing_share(projects, setting, counts, slots):
    project = projects.get("ensemble-en")
    project.config.params["unseen_slots"] = setting
    seen = None if counts is None else np.array(counts)
    assert project.backend.unseen_slots(seen) == slots


def test_unseen_slots_must_be_auto_or_a_number(projects):
    project = projects.get("ensemble-en")
    project.config.params["unseen_slots"] = "some"
    with pytest.raises(ConfigError, match="unseen_slots must be 'auto' or a whole"):
        project.suggest(["text"])

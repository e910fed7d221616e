from __future__ import annotations

from ..conftest import DATA

T = "http://example.org/t/"


def suggested(project, text, limit=5):
    return [
        project.vocab.uris[s.subject].removeprefix(T)
        for s in project.suggest([text], limit=limit).row(0)
    ]


def test_suggests_without_training(projects):
    project = projects.get("lexical-en")
    assert not project.is_trained and project.is_ready
    assert suggested(project, "A history of music in Vienna")[:2] in (
        ["history", "music"],
        ["music", "history"],
    )


def test_matches_alt_labels_and_inflected_forms(projects):
    project = projects.get("lexical-en")
    assert suggested(project, "Advances in photovoltaic cells")[0] == "solar-power"
    assert "astronomy" in suggested(project, "An evening of stargazing")
    assert "biology" in suggested(project, "Research in the life science of cells")


def test_deprecated_concepts_are_not_suggested(projects):
    assert "alchemy" not in suggested(
        projects.get("lexical-en"), "alchemy and alchemy again"
    )


def test_earlier_and_repeated_matches_score_higher(projects):
    project = projects.get("lexical-en")
    batch = project.suggest(["Music, music and more music. A footnote on history."])
    scores = {
        project.vocab.uris[s.subject].removeprefix(T): s.score for s in batch.row(0)
    }
    assert scores["music"] > scores["history"]


def test_training_learns_weights_and_keeps_unseen_concepts_suggestible(projects):
    project = projects.get("lexical-en")
    project.train([DATA / "tiny.tsv"])
    assert project.is_trained
    weights = __import__("json").loads((project.model_dir / "weights.json").read_text())
    assert set(weights) >= {"exact", "coverage", "prior"}
    # "science" never occurs alone in training, it is still reachable
    seen = project.seen_subjects()
    assert suggested(project, "musical arts") == ["music"]
    assert seen[project.vocab.id_of(T + "solar-power")] > 0


def test_compound_heads_in_finnish(tmp_path):
    from indexer.project import Projects

    (tmp_path / "projects.cfg").write_text(
        f"[vocab:tiny]\nsource = {DATA}/tiny.ttl\n[fi]\nlanguage = fi\nvocab = "
        "tiny\nbackend = lexical\n"
    )
    project = Projects.from_path(tmp_path / "projects.cfg").get("fi")
    uris = [
        project.vocab.uris[s.subject]
        for s in project.suggest(["Kansanmusiikki ja historia"]).row(0)
    ]
    assert T + "music" in uris and T + "history" in uris


def test_explain_names_the_match(projects):
    project = projects.get("lexical-en")
    music = project.vocab.id_of(T + "music")
    why = project.backend.explain("Music and more music", [music])
    assert why[music]["occurrences"] == 2 and why[music]["exact"]


def _feature(project, text: str, name: str) -> dict[str, float]:
    from backends.lexical import FEATURES

    backend = project.backend
    backend._ensure_loaded()
    ids, x = backend._features(text)
    column = FEATURES.index(name)
    return {
        project.vocab.uris[c].removeprefix(T): float(x[row, column])
        for row, c in enumerate(ids)
    }


def test_a_label_two_concepts_share_is_ambiguous(tmp_path):
    from indexer.project import Projects

    ttl = (
        (DATA / "tiny.ttl")
        .read_text()
        .replace('"musical arts"@en', '"musical arts"@en, "stargazing"@en')
    )
    (tmp_path / "v.ttl").write_text(ttl)
    (tmp_path / "projects.cfg").write_text(
        "[vocab:v]\nsource = v.ttl\n"
        "[lex]\nlanguage = en\nvocab = v\nbackend = lexical\n"
    )
    project = Projects.from_path(tmp_path / "projects.cfg").get("lex")
    unambiguous = _feature(project, "Stargazing and music history", "unambiguous")
    assert unambiguous["history"] == 1.0
    assert unambiguous["astronomy"] == 0.5  # "stargazing" names both
    assert unambiguous["music"] == 1.0  # "music" itself is unambiguous


def test_matched_broader_narrower_and_related_concepts_count(projects):
    neighbours = _feature(
        projects.get("lexical-en"), "Physics, astronomy and music", "neighbours"
    )
    # physics is related to astronomy (and narrower than science, not matched)
    assert neighbours["physics"] > 0 and neighbours["astronomy"] > 0
    assert neighbours["music"] == 0

from __future__ import annotations

import mmap

import numpy as np
import pytest

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


def _project(tmp_path, ttl: str, language: str, **params):
    from indexer.project import Projects

    prefix = (
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
        "@prefix t: <http://example.org/t/> .\n"
    )
    (tmp_path / "v.ttl").write_text(prefix + ttl)
    settings = "".join(f"{k} = {v}\n" for k, v in params.items())
    (tmp_path / "projects.cfg").write_text(
        "[vocab:v]\nsource = v.ttl\n"
        f"[lex]\nlanguage = {language}\nvocab = v\nbackend = lexical\n{settings}"
    )
    return Projects.from_path(tmp_path / "projects.cfg").get("lex")


def test_one_mention_counts_once(tmp_path):
    project = _project(
        tmp_path,
        't:battery a skos:Concept ; skos:prefLabel "battery"@en ;'
        ' skos:altLabel "batteries"@en .\n'
        't:dig a skos:Concept ; skos:prefLabel "archaeological excavations"@en ;'
        ' skos:altLabel "excavations"@en .\n',
        "en",
    )
    backend = project.backend
    backend._ensure_loaded()
    text = "Batteries found in archaeological excavations"
    why = backend.explain(text, [0, 1])
    assert why[0]["occurrences"] == 1  # prefLabel and altLabel share a stem
    assert why[1]["occurrences"] == 1  # "excavations" inside the longer label
    assert backend.explain(text + ". More excavations.", [1])[1]["occurrences"] == 2


def test_stem_alternations_match_in_inflecting_languages(tmp_path):
    ttl = 't:menopause a skos:Concept ; skos:prefLabel "vaihdevuodet"@fi .\n'
    (tmp_path / "a").mkdir()
    project = _project(tmp_path / "a", ttl, "fi")
    # Snowball stems "vaihdevuodet" to "vaihdevuod", "vaihdevuosista" to "vaihdevuos"
    text = "Oireita vaihdevuosista"
    assert [s.subject for s in project.suggest([text]).row(0)] == [0]
    assert _feature_of(project, text, "fuzzy") == 1.0
    (tmp_path / "b").mkdir()
    strict = _project(tmp_path / "b", ttl, "fi", fuzzy="no")
    assert strict.suggest([text]).row(0) == []
    # a word that shares only a short prefix is no match
    assert project.suggest(["Vaihteleva sää"]).row(0) == []


def _feature_of(project, text: str, name: str) -> float:
    from backends.lexical import FEATURES

    backend = project.backend
    backend._ensure_loaded()
    ids, x = backend._features(text)
    return float(x[0, FEATURES.index(name)])


def test_trained_trees_score_and_reload_identically(projects, tmp_path):
    import numpy as np

    project = projects.get("lexical-en")
    # the first concept named is the subject; the one named in passing is not
    labels = ["physics", "biology", "astronomy", "history", "music"]
    lines = [
        f"{a.title()} today, with a note on {b}\t<{T}{a}>"
        for i, a in enumerate(labels)
        for b in labels[i + 1 :] + labels[:i]
    ]
    corpus = tmp_path / "big.tsv"
    corpus.write_text("\n".join(lines * 20) + "\n")
    project.config.params["scorer"] = "trees"
    project.unload()
    info = project.train([corpus])
    assert info["trees"] == 100
    assert (project.model_dir / "trees.npz").is_file()
    texts = ["Music history of Vienna", "Physics and astronomy at night"]
    before = project.suggest(texts).matrix.toarray()
    project.unload()
    after = project.suggest(texts).matrix.toarray()
    np.testing.assert_array_equal(before, after)
    assert suggested(project, "History, with a note on music")[0] == "history"
    assert suggested(project, "Music, with a note on history")[0] == "music"


def test_labels_in_another_language_need_label_language(tmp_path):
    from indexer.errors import ConfigError

    ttl = 't:dig a skos:Concept ; skos:prefLabel "Ausgrabung"@de .\n'
    (tmp_path / "a").mkdir()
    project = _project(tmp_path / "a", ttl, "en")
    with pytest.raises(ConfigError, match=r"no labels in 'en' \(it has: de\)"):
        project.suggest(["Ausgrabung in Rom"])
    (tmp_path / "b").mkdir()
    german = _project(tmp_path / "b", ttl, "en", label_language="de")
    assert [s.subject for s in german.suggest(["Ausgrabung in Rom"]).row(0)] == [0]


def test_a_document_in_an_unexpected_language_still_gets_an_answer(projects):
    project = projects.get("lexical-en")
    batch = project.suggest(["Musiikin historia (music)", "音楽の歴史"])
    assert [s.subject for s in batch.row(0)] == [project.vocab.id_of(T + "music")]
    assert batch.row(1) == []


# -- the label index, cached in the project's folder -------------------------
CACHE_TTL = (
    't:dig a skos:Concept ; skos:prefLabel "arkeologiset kaivaukset"@fi ;'
    ' skos:altLabel "kaivaukset (arkeologia)"@fi ; skos:related t:find .\n'
    't:find a skos:Concept ; skos:prefLabel "löydöt"@fi .\n'
    't:age a skos:Concept ; skos:prefLabel "vaihdevuodet"@fi .\n'
    't:war a skos:Concept ; skos:prefLabel "sotahistoria"@fi ;'
    ' skos:altLabel "historia"@fi .\n'
)
# an exact phrase, a compound head, a partial and a fuzzy match, a qualifier
CACHE_TEXT = (
    "Kaivaukset ja löydöt: kaivaukset arkeologiset, maailmanhistoria ja vaihdevuosista"
)


def _counting_builds(monkeypatch) -> list:
    import backends.lexical

    builds = []
    build = backends.lexical.build_arrays

    def counted(*args):
        builds.append(args)
        return build(*args)

    monkeypatch.setattr(backends.lexical, "build_arrays", counted)
    return builds


def _fresh(folder):
    """The project of `_project(folder, ...)` as a new process sees it."""
    from indexer.project import Projects

    return Projects.from_path(folder / "projects.cfg").get("lex")


def _rows(project, texts=(CACHE_TEXT,)):
    batch = project.suggest(list(texts), limit=20)
    return [[(s.subject, s.score) for s in batch.row(i)] for i in range(len(texts))]


def _mapped(array) -> bool:
    """Whether the array's memory is a mapped file (a view of a memmap too)."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_the_cached_index_suggests_what_a_fresh_build_does(tmp_path, monkeypatch):
    import backends.lexical_index

    project = _project(tmp_path, CACHE_TTL, "fi")
    cached = _rows(project)  # builds the index and caches it
    assert {s for s, _ in cached[0]} == {0, 1, 2, 3}
    reloaded = _fresh(tmp_path)
    assert _rows(reloaded) == cached
    assert _mapped(reloaded.backend._index.phrase_lengths)
    monkeypatch.setattr(backends.lexical_index, "open_mappable", lambda *a: None)
    rebuilt = _fresh(tmp_path)
    assert _rows(rebuilt) == cached
    assert not _mapped(rebuilt.backend._index.phrase_lengths)


def test_loading_twice_builds_the_index_once(tmp_path, monkeypatch):
    builds = _counting_builds(monkeypatch)
    project = _project(tmp_path, CACHE_TTL, "fi")
    first = _rows(project)
    assert _rows(_fresh(tmp_path)) == first
    assert _rows(_fresh(tmp_path)) == first
    assert len(builds) == 1


def test_a_vocabulary_reload_rebuilds_the_index(tmp_path, monkeypatch):
    builds = _counting_builds(monkeypatch)
    project = _project(tmp_path, CACHE_TTL, "fi")
    assert _rows(project, ["pronssikausi"]) == [[]]
    extra = 't:bronze a skos:Concept ; skos:prefLabel "pronssikausi"@fi .\n'
    reloaded = _project(tmp_path, CACHE_TTL + extra, "fi")  # autoloads the change
    bronze = reloaded.vocab.id_of(T + "bronze")
    assert bronze in {s for s, _ in _rows(reloaded, ["pronssikausi"])[0]}
    assert len(builds) == 2
    caches = list((reloaded.model_dir.parent / "lexical-index").iterdir())
    assert len(caches) == 1  # the outdated index is gone


def test_a_process_with_the_older_vocabulary_does_not_cache_it_as_the_new_one(
    tmp_path,
):
    """A server reloading its model after the vocabulary was reloaded elsewhere
    built the index of the labels it still held, and cached it under the new
    version's name: every process then matched the old labels."""
    stale = _project(tmp_path, CACHE_TTL, "fi")
    assert _rows(stale, ["pronssikausi"]) == [[]]
    extra = 't:bronze a skos:Concept ; skos:prefLabel "pronssikausi"@fi .\n'
    reloaded = _project(tmp_path, CACHE_TTL + extra, "fi")
    reloaded.vocab  # noqa: B018 - loads the new version, as another process
    stale.reload()  # the older version it holds, in a fresh backend
    fresh = _fresh(tmp_path)
    bronze = fresh.vocab.id_of(T + "bronze")
    assert bronze in {s for s, _ in _rows(fresh, ["pronssikausi"])[0]}


@pytest.mark.parametrize("damage", ["truncate", "no manifest", "other manifest"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch, damage):
    import json

    builds = _counting_builds(monkeypatch)
    project = _project(tmp_path, CACHE_TTL, "fi")
    expected = _rows(project)
    (cache,) = (project.model_dir.parent / "lexical-index").iterdir()
    if damage == "truncate":
        keys = cache / "phrase_keys.npy"
        keys.write_bytes(keys.read_bytes()[:-8])
    elif damage == "no manifest":
        (cache / "manifest.json").unlink()
    else:
        manifest = json.loads((cache / "manifest.json").read_text())
        manifest["files"]["entry_concepts.npy"]["shape"] = [1]
        (cache / "manifest.json").write_text(json.dumps(manifest))
    assert _rows(_fresh(tmp_path)) == expected
    assert len(builds) == 2
    assert _rows(_fresh(tmp_path)) == expected  # the rebuilt cache is whole
    assert len(builds) == 2


def test_the_scorer_learns_from_a_bounded_sample_and_the_statistics_count_all(
    projects, tmp_path, monkeypatch
):
    """Training memory does not grow with the corpus: the scorer's rows come
    from at most SCORER_DOCUMENTS documents (matched a chunk at a time), while
    every document counts in the per-concept match statistics."""
    import backends.lexical as lexical
    from indexer.storage import load_arrays

    labels = ["physics", "biology", "astronomy", "history", "music"]
    lines = [f"{a.title()} and {b}\t<{T}{a}>" for a in labels for b in labels]
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("\n".join(lines * 4) + "\n")  # 100 documents
    monkeypatch.setattr(lexical, "SCORER_DOCUMENTS", 10)
    monkeypatch.setattr(lexical, "MATCH_CHUNK", 7)
    project = projects.get("lexical-en")
    info = project.train([corpus])
    assert info["scorer_documents"] == 10
    assert info["candidates"] == 20  # two labels matched in each of the ten
    stats = load_arrays(project.model_dir / "match_stats.npz")
    assert int(stats["documents"]) == 100
    assert stats["counts"][project.vocab.id_of(T + "music")] == 20
    # the same sample, so the same scorer, on every run
    weights = (project.model_dir / "weights.json").read_text()
    project.train([corpus])
    assert (project.model_dir / "weights.json").read_text() == weights


def test_slots_drawn_ahead_give_the_sample_that_adding_gives():
    """Training draws a chunk's slots before matching it (features are made
    only for the documents with one): the sample must be the same as adding
    the documents one by one."""
    from backends.lexical import _Reservoir

    for size, seed in ((10, 0), (10, 3), (200, 1)):
        added, drawn = _Reservoir(size, seed), _Reservoir(size, seed)
        for i in range(1000):
            added.add(i)
        for chunk in range(0, 1000, 64):
            items = range(chunk, min(chunk + 64, 1000))
            slots = [drawn.slot() for _ in items]
            for item, slot in zip(items, slots, strict=True):
                if slot is not None:
                    drawn.put(slot, item)
        assert drawn.items == added.items
        assert sum(slot is not None for slot in slots) < len(slots)


def test_the_reservoir_keeps_everything_in_order_until_full_then_a_uniform_sample():
    from backends.lexical import _Reservoir

    small = _Reservoir(5)
    for i in range(4):
        small.add(i)
    assert small.items == [0, 1, 2, 3]
    counts = np.zeros(100)
    for seed in range(400):
        sample = _Reservoir(10, seed)
        for i in range(100):
            sample.add(i)
        assert len(set(sample.items)) == 10
        counts[sample.items] += 1
    # every item is kept about 40 times in 400 samples of 10 out of 100
    assert counts.min() > 15 and counts.max() < 70

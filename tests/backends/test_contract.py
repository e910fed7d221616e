"""The contract every registered backend must honour."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.backend import KINDS
from indexer.errors import ConfigError
from indexer.registry import BUILTIN

from ..conftest import DATA

PROJECT_OF = {name: f"{name}-en" for name in BUILTIN}
TEXTS = [
    "Telescopes show stars and galaxies: astronomy for beginners",
    "",
    "Solar energy from photovoltaics on rooftops, and the physics behind it",
]


@pytest.fixture(params=sorted(BUILTIN))
def project(request, dense_workspace):
    from indexer.project import Projects

    projects = Projects.from_path(dense_workspace / "projects.cfg")
    project = projects.get(PROJECT_OF[request.param])
    for source in _sources(project):
        source.train([DATA / "tiny.tsv"])
    return project


def _sources(project):
    if project.kind == "ensemble":
        return [p for p, _ in project.backend.sources()]
    return []


def _train(project):
    if not project.backend.trainable:
        with pytest.raises(ConfigError, match="nothing to train"):
            project.train([DATA / "tiny.tsv"])
    else:
        project.train([DATA / "tiny.tsv"])


def test_constructs_with_defaults_and_declares_kind(project):
    assert project.backend.kind in KINDS
    assert project.backend.name == project.config.backend


def test_search_space_names_valid_settings(project):
    space = project.backend.search_space
    for name, values in space.items():
        for value in values:  # each one is accepted by the parameter checks
            project.backend_class(project, {**project.config.params, name: value})


def test_scores_are_in_unit_interval_and_limit_is_respected(project):
    _train(project)
    batch = project.suggest(TEXTS, limit=2)
    assert len(batch) == 3
    assert batch.n_subjects == len(project.vocab)
    # the best of the backend's own scores (which SuggestionBatch keeps in
    # [0, 1] by refusing any other), unchanged by the limit
    full = project.backend.suggest_batch(TEXTS)
    for i, row in enumerate(batch):
        assert len(row) <= 2
        assert row == full.row(i)[: len(row)]
    assert batch.row(1) == []  # empty text, empty result
    assert batch.row(0), "a clear astronomy text gets suggestions"


def test_save_and_load_give_identical_suggestions(project):
    _train(project)
    before = project.backend.suggest_batch(TEXTS).matrix.toarray()
    project.unload()  # a fresh backend reads the saved model
    after = project.backend.suggest_batch(TEXTS).matrix.toarray()
    np.testing.assert_array_equal(before, after)


def test_training_writes_a_manifest_without_pickle(project):
    _train(project)
    if not project.backend.trainable:
        return
    manifest = project.backend.manifest
    assert manifest["backend"] == project.config.backend
    assert manifest["vocab"] == "tiny" and manifest["documents"] == 10
    files = [p.name for p in project.model_dir.iterdir()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    seen = project.seen_subjects()
    assert seen is not None and seen.sum() == 14


def test_retraining_on_the_same_data_gives_identical_suggestions(project):
    _train(project)
    first = project.backend.suggest_batch(TEXTS).matrix.toarray()
    _train(project)
    project.__dict__.pop("backend")
    second = project.backend.suggest_batch(TEXTS).matrix.toarray()
    np.testing.assert_array_equal(first, second)


GROWN = """
ex:volcanology a skos:Concept ; skos:inScheme ex:scheme ;
    skos:prefLabel "volcanology"@en, "vulkanologia"@fi ;
    skos:altLabel "volcanoes"@en .
"""


def _grow_and_shrink(project, tmp_path):
    """Reload the project's vocabulary with music removed and volcanology
    added, as a monthly vocabulary release would."""
    source = (DATA / "tiny.ttl").read_text()
    start = source.index("ex:music a skos:Concept")
    end = source.index("ex:solar-power a skos:Concept")
    changed = tmp_path / "tiny-next.ttl"
    changed.write_text(source[:start] + source[end:] + GROWN)
    info = project.vocab.load_file(changed)
    assert (info["added"], info["removed"]) == (1, 1)


def test_a_vocabulary_that_grows_and_shrinks_after_training(project, tmp_path):
    _train(project)
    _grow_and_shrink(project, tmp_path)
    for source in [*_sources(project), project]:
        source.unload()  # as a restarted server would
    vocab = project.vocab
    new = vocab.id_of("http://example.org/t/volcanology")
    removed = vocab.id_of("http://example.org/t/music")
    texts = [
        "Volcanoes and volcanology: lava, magma and eruptions",
        "Orchestras and symphonies: a history of classical music",
        TEXTS[0],
    ]
    batch = project.suggest(texts, limit=len(vocab))
    assert batch.n_subjects == len(vocab)
    suggested = [{s.subject for s in row} for row in batch]
    assert all(removed not in subjects for subjects in suggested)
    if project.kind == "lexical" or project.config.backend in ("embed", "llm_rank"):
        assert new in suggested[0], "a zero-shot backend suggests new concepts"
    if project.backend.learns_online:  # and learns the new concept
        corpus = tmp_path / "new.tsv"
        corpus.write_text(f"{texts[0]}\t<http://example.org/t/volcanology>\n")
        project.learn([corpus])
        suggested = {s.subject for s in project.suggest(texts[:1], limit=20).row(0)}
        assert removed not in suggested
        assert new in suggested, "a learned new concept is suggested"

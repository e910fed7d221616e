"""The cross-fitted calibrated fusion and its unseen slots chosen by
cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from backends.fusion import Candidates, FusionModel, HeldOut
from backends.fusion_crossfit import CrossFit, fold_of
from backends.fusion_cv import choose_unseen_slots, source_gains
from indexer.backend import Backend
from indexer.errors import ConfigError
from indexer.eval import evaluate_arrays
from indexer.suggestion import SuggestionBatch

from ..conftest import DATA
from .test_fusion import synthetic

FOLDS = 3


@pytest.fixture
def corpus(tmp_path):
    """30 documents: the tiny corpus thrice, worded apart so that copies of
    a text fall into different folds; one alone is about solar power."""
    lines = (DATA / "tiny.tsv").read_text(encoding="utf-8").splitlines()
    out = []
    for copy in range(3):
        for number, line in enumerate(lines):
            text, subjects = line.split("\t")
            if (copy, number) != (0, 5):
                subjects = " ".join(s for s in subjects.split() if "solar" not in s)
            out.append(f"{text} (part {copy})\t{subjects}")
    path = tmp_path / "corpus.tsv"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def cross_fitted(projects, folds: int = FOLDS):
    project = projects.get("calibrated-en")
    project.config.params["cross_fit"] = folds
    project.unload()
    return project


def test_every_document_is_scored_by_sources_that_did_not_see_it(projects, corpus):
    project = cross_fitted(projects)
    info = project.train([corpus])
    docs = list(project.corpus([corpus]))
    assert info["cross_fit"]["documents"] == len(docs) - 2 == 28
    assert info["cross_fit"]["sources"] == {
        "tfidf-en": "refit",
        "xmc-en": "refit",
        "lexical-en": "refit",
    }
    # the sources end trained on the whole corpus; the per-fold work is gone
    digest = project.corpus([corpus]).digest()
    for source in ("tfidf-en", "xmc-en", "lexical-en"):
        assert projects.get(source).backend.manifest["corpus_digest"] == digest
    assert not (project.model_dir.parent / "cross-fit").exists()

    # each candidate's frequency is that of its subject in the other folds
    held = HeldOut.load(project.model_dir / "heldout.npz")
    folds = np.array([fold_of(d.text, FOLDS) for d in docs])
    scored = [i for i, d in enumerate(docs) if d.subjects]
    order = [i for f in range(FOLDS) for i in scored if folds[i] == f]
    frequency = held.frequency(np.zeros(0))
    for c in range(len(held.candidates)):
        doc = order[held.candidates.docs[c]]
        subject = held.candidates.subjects[c]
        expected = sum(
            subject in d.subjects
            for d, f in zip(docs, folds, strict=True)
            if f != folds[doc]
        )
        assert frequency[c] == expected
    # solar power, held out with the only document about it, is unseen there
    solar = project.vocab.id_of("http://example.org/t/solar-power")
    unseen_gold = (frequency == 0) & (held.gold > 0)
    assert solar in held.candidates.subjects[unseen_gold]
    assert info["unseen_examples"] == held.unseen_examples() == unseen_gold.sum()
    fusion = json.loads((project.model_dir / "fusion.json").read_text())
    slots = fusion["info"]["unseen_slots"]
    assert slots["by"] == "cross-validation"
    assert [o["slots"] for o in slots["options"]] == list(range(11))
    project.unload()
    assert project.suggest(["Telescopes and galaxies"]).row(0)


def test_an_interrupted_cross_fit_resumes_with_the_next_fold(
    projects, corpus, monkeypatch
):
    project = cross_fitted(projects)
    calls, interrupted = [], []
    train_part = Backend.train_part

    def counted(self, corpus, directory, jobs=1):
        calls.append(directory.name)
        if directory.name == "fold-1-xmc-en" and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # interrupted in the second fold
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", counted)
    with pytest.raises(KeyboardInterrupt):
        project.train([corpus])
    workdir = project.model_dir.parent / "cross-fit"
    assert sorted(p.name for p in workdir.iterdir()) == ["fold-0.npz", "plan.json"]
    trained, train = [], Backend.train

    def sources_counted(self, *args, **kwargs):
        if self.project.id != project.id:
            trained.append(self.project.id)
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Backend, "train", sources_counted)
    calls.clear()
    project.train([corpus])
    assert trained == []  # the sources were already trained on this corpus
    assert not any(name.startswith("fold-0-") for name in calls)
    assert {name.split("-")[1] for name in calls} == {"1", "2"}


def test_a_changed_setting_starts_the_folds_afresh(projects, corpus, monkeypatch):
    project = cross_fitted(projects)
    workdir = project.model_dir.parent / "cross-fit"
    workdir.mkdir(parents=True)
    (workdir / "plan.json").write_text('{"folds": 3, "corpus": "another"}')
    (workdir / "fold-0.npz").write_bytes(b"stale")
    project.train([corpus])  # would fail to read the stale fold
    assert not workdir.exists()


def test_reused_sources_are_trained_once(projects, corpus, monkeypatch):
    project = cross_fitted(projects)
    project.config.params["cross_fit_reuse"] = "xmc-en"
    project.unload()
    calls = []
    train_part = Backend.train_part

    def counted(self, corpus, directory, jobs=1):
        calls.append(self.project.id)
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", counted)
    info = project.train([corpus])
    assert info["cross_fit"]["sources"]["xmc-en"] == "reuse"
    assert "xmc-en" not in calls and calls.count("tfidf-en") == FOLDS


def test_one_fold_is_refused(projects, corpus):
    project = projects.get("calibrated-en")
    with pytest.raises(ConfigError, match="at least 2 folds"):
        CrossFit(project.backend, project.backend.sources(), None, 1)


def test_cli_cross_fits_only_a_fusion(workspace, corpus, monkeypatch):
    from indexer.cli import cli

    monkeypatch.chdir(workspace)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["train", "calibrated-en", str(corpus), "--cross-fit", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "Trained 'calibrated-en' on 30 documents" in result.output
    result = runner.invoke(cli, ["train", "tfidf-en", str(corpus), "--cross-fit", "3"])
    assert result.exit_code == 2
    assert "fits a calibrated fusion" in result.output
    result = runner.invoke(
        cli, ["train", "calibrated-en", str(corpus), "--cross-fit", "1"]
    )
    assert result.exit_code == 2


# -- the unseen slots ---------------------------------------------------------


def grouped(seed: int, n_docs: int = 300):
    gold, a, b, frequency = synthetic(seed, n_docs=n_docs)
    candidates = Candidates.from_batches([a, b], per_source=50)
    held = HeldOut.of_group(candidates, gold, 50, frequency)
    return held, gold, a, b, frequency


def test_unseen_slots_keep_the_zero_shot_sources_unseen_recall():
    held, gold, a, b, frequency = grouped(6)
    model = FusionModel.fit(
        held.candidates, held.gold, held.frequency(np.zeros(0)), folds=5
    )
    choice = choose_unseen_slots(held, model.held_out_scores, 10, zero_shot=[1])
    zero_shot = evaluate_arrays(gold, b, seen=frequency)["unseen_recall@10"]
    assert choice["zero_shot_unseen_recall@10"] == pytest.approx(zero_shot)
    options = {o["slots"]: o for o in choice["options"]}
    chosen = options[choice["slots"]]
    assert chosen["unseen_recall@10"] >= 0.95 * zero_shot or all(
        o["unseen_recall@10"] <= chosen["unseen_recall@10"] for o in options.values()
    )
    # the figures of 0 slots are those of the held-out fused scores themselves
    c = held.candidates
    fused = SuggestionBatch(
        _matrix(c, model.held_out_scores, held.n_documents, c.n_subjects)
    )
    plain = evaluate_arrays(gold, fused, seen=frequency)
    assert options[0]["ndcg@10"] == pytest.approx(plain["ndcg@10"])
    assert options[0]["unseen_recall@10"] == pytest.approx(plain["unseen_recall@10"])
    # more slots: never less unseen recall
    recalls = [options[n]["unseen_recall@10"] for n in range(11)]
    assert recalls == sorted(recalls)


def test_a_group_the_zero_shot_source_suggests_nothing_for_counts_as_missed():
    """A learnt group where the zero-shot source suggested nothing: its gold
    subjects count as missed, as evaluating the sources on them would."""
    first, gold_a, _, b, frequency = grouped(11, n_docs=60)
    gold_b, a_b, _, _ = synthetic(12, n_docs=20)
    nothing = SuggestionBatch.empty(20, b.n_subjects)
    candidates = Candidates.from_batches([a_b, nothing], per_source=50)
    held = first.extend(HeldOut.of_group(candidates, gold_b, 50, frequency))
    rank = held.candidates.rank[:, 1]
    zero_shot_only = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)

    choice = choose_unseen_slots(held, zero_shot_only, 10, zero_shot=[1])

    expected = evaluate_arrays(
        gold_a + gold_b, SuggestionBatch.vstack([b, nothing]), seen=frequency
    )
    assert choice["zero_shot_unseen_recall@10"] == pytest.approx(
        expected["unseen_recall@10"]
    )
    assert choice["options"][0]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert choice["options"][0]["unseen_gold"] == expected["unseen_gold"]


def _matrix(candidates, scores, n_docs, n_subjects):
    import scipy.sparse as sp

    return sp.csr_matrix(
        (scores, (candidates.docs, candidates.subjects)), shape=(n_docs, n_subjects)
    )


def test_grouped_scores_save_load_and_extend(tmp_path):
    first, *_ = grouped(7, n_docs=40)
    second, *_ = grouped(8, n_docs=30)
    both = first.extend(second)
    assert both.n_documents == 70 and both.group_seen.shape[0] == 2
    np.testing.assert_array_equal(
        both.frequency(np.zeros(0)),
        np.concatenate([first.frequency(None), second.frequency(None)]),
    )
    both.save(tmp_path / "held.npz")
    loaded = HeldOut.load(tmp_path / "held.npz")
    assert loaded.doc_gold == both.doc_gold
    np.testing.assert_array_equal(loaded.doc_group, both.doc_group)
    np.testing.assert_array_equal(
        loaded.frequency(np.zeros(0)), both.frequency(np.zeros(0))
    )
    assert loaded.unseen_examples() == both.unseen_examples() > 0


def test_scores_saved_without_groups_still_load(tmp_path):
    from indexer.storage import save_arrays

    held, *_ = grouped(9, n_docs=20)
    c = held.candidates
    save_arrays(  # what earlier versions wrote
        tmp_path / "old.npz",
        {
            "docs": c.docs,
            "subjects": c.subjects,
            "raw": c.raw,
            "rank": c.rank,
            "gold": held.gold,
            "shape": np.asarray([held.n_documents, c.n_subjects, 50]),
        },
    )
    old = HeldOut.load(tmp_path / "old.npz")
    assert not old.grouped and not old.extend(held).grouped
    fallback = np.arange(c.n_subjects, dtype=float)
    np.testing.assert_array_equal(old.frequency(fallback), fallback[c.subjects])


def test_what_each_source_adds_is_measured_without_it():
    held, gold, a, b, frequency = grouped(10)

    def fit(candidates, gold, frequency):
        return FusionModel.fit(candidates, gold, frequency, folds=5)

    model = fit(held.candidates, held.gold, held.frequency(np.zeros(0)))
    gains = source_gains(held, fit, model.held_out_scores, ["associative", "zero"])
    assert set(gains) == {"associative", "zero"}
    # only the zero-shot source finds unseen subjects; both help the ranking
    assert gains["zero"]["unseen_recall@10"] > 0.3
    assert gains["associative"]["unseen_recall@10"] == pytest.approx(0, abs=0.05)
    assert gains["associative"]["ndcg@10"] > 0 and gains["zero"]["ndcg@10"] > 0


def test_the_fusion_records_what_each_source_adds(projects, corpus):
    project = cross_fitted(projects)
    project.config.params["measure_sources"] = True
    project.unload()
    project.train([corpus])
    fusion = json.loads((project.model_dir / "fusion.json").read_text())
    gains = fusion["info"]["source_gains"]
    assert set(gains) == {"tfidf-en", "xmc-en", "lexical-en"}
    assert all(
        set(g) == {"f1@5", "ndcg@10", "unseen_recall@10"} for g in gains.values()
    )

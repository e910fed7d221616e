"""The cross-fitted calibrated fusion and its unseen slots chosen by
cross-validation."""

from __future__ import annotations

import gc
import itertools
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from backends.fusion import Candidates, FusionModel, HeldOut
from backends.fusion_crossfit import CrossFit, folds_in_words
from backends.fusion_cv import choose_unseen_slots, source_gains
from backends.fusion_folds import CorpusSurvey, FitSample, fit_sample_key, fold_of
from indexer.backend import Backend
from indexer.corpus import Corpus, Document
from indexer.errors import BusyError, ConfigError, InputError
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


def test_a_large_corpus_is_fitted_on_a_sample_fixed_by_the_texts(
    projects, corpus, capsys
):
    project = cross_fitted(projects)
    project.config.params["fit_documents"] = 12
    project.unload()
    info = project.train([corpus])
    assert "fitted on, 12 of the 28 documents with known subjects" in (
        capsys.readouterr().err
    )
    assert info["cross_fit"]["documents"] == 12
    assert info["cross_fit"]["documents_with_subjects"] == 28
    # the 12 whose texts come first in the sample's order, fold by fold
    docs = [d for d in project.corpus([corpus]) if d.subjects]
    first = sorted(docs, key=lambda d: fit_sample_key(d.text))[:12]
    held = HeldOut.load(project.model_dir / "heldout.npz")
    assert held.n_documents == 12
    assert sorted(map(sorted, held.doc_gold)) == sorted(
        sorted(d.subjects) for d in first
    )
    # the sources are trained on every document all the same
    digest = project.corpus([corpus]).digest()
    for source in ("tfidf-en", "xmc-en", "lexical-en"):
        assert projects.get(source).backend.manifest["corpus_digest"] == digest


def test_show_project_says_the_fusion_was_fitted_on_a_sample(
    run_cli, workspace, corpus
):
    with open(workspace / "projects.cfg", "a") as cfg:  # the fusion's section
        cfg.write("cross_fit = 3\nfit_documents = 12\n")
    assert run_cli("train", "calibrated-en", str(corpus)).exit_code == 0
    result = run_cli("show-project", "calibrated-en")
    assert result.exit_code == 0, result.output
    # as after a fit on a tuning split: of how many documents the sample is
    assert "heldout_documents: 12" in result.output
    assert "documents_with_subjects: 28" in result.output


def test_the_sources_train_on_a_streamed_corpus_not_a_copy_of_it(
    projects, corpus, monkeypatch
):
    project = cross_fitted(projects)
    project.config.params["fit_documents"] = 6
    project.unload()
    alive, train_part = [], Backend.train_part

    def counted(self, corpus, directory, jobs=1):
        gc.collect()
        alive.append(sum(isinstance(o, Document) for o in gc.get_objects()))
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", counted)
    project.train([corpus])
    # the documents a fold's sources score (its share of the 6), not all 30
    assert len(alive) == FOLDS * 3 and max(alive) <= 6


def test_the_fit_sample_is_the_same_in_any_order_and_only_when_needed():
    keys = [fit_sample_key(f"document {n}") for n in range(1000)]
    sample = FitSample.of(keys, 100)
    assert sum(k <= sample.bound for k in keys) == 100 and sample.ties == 1
    assert FitSample.of(list(reversed(keys)), 100) == sample
    assert FitSample.of(keys, 1000) is None  # all of them: no sample
    assert FitSample.of(keys, 0) is None  # 0: no limit
    # every fold gets its share of the sample (the fold is from other bits)
    sampled = [n for n, k in enumerate(keys) if k <= sample.bound]
    shares = np.bincount([fold_of(f"document {n}", 5) for n in sampled], minlength=5)
    assert shares.min() >= 10


def a_text_sampled_first(texts) -> str:
    """A text about history whose `fit_sample_key` is below those of `texts`:
    the first the fit's sample takes."""
    lowest = min(fit_sample_key(t) for t in texts)
    for n in itertools.count():
        text = f"History of towns and empires, volume {n}"
        if fit_sample_key(text) < lowest:
            return text


def test_copies_of_a_text_fill_the_sample_only_to_its_size(projects, corpus):
    """A text repeated many times (a boilerplate abstract) where the sample
    ends: fit_documents of the copies, not every copy."""
    project = cross_fitted(projects)
    project.config.params["fit_documents"] = 12
    project.unload()
    lines = corpus.read_text(encoding="utf-8").splitlines()
    copy = a_text_sampled_first(line.split("\t")[0] for line in lines)
    lines += [f"{copy}\thttp://example.org/t/history"] * 20
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = project.train([corpus])
    assert info["cross_fit"]["documents"] == 12  # was 20: every copy
    assert info["cross_fit"]["documents_with_subjects"] == 48
    held = HeldOut.load(project.model_dir / "heldout.npz")
    assert held.n_documents == 12
    # and any stream of the corpus's documents takes the same copies
    docs = list(project.corpus([corpus]))
    sample = FitSample.of([fit_sample_key(d.text) for d in docs if d.subjects], 12)
    assert [d.text for d in sample.taken(docs)] == [copy] * 12
    assert [d.text for d in sample.taken(reversed(docs))] == [copy] * 12


def test_a_fold_with_no_document_of_the_sample_trains_nothing(
    projects, corpus, monkeypatch, capsys
):
    project = cross_fitted(projects)
    project.config.params["fit_documents"] = 1  # fewer than the folds
    project.unload()
    trained, train_part = [], Backend.train_part

    def counted(self, corpus, directory, jobs=1):
        trained.append(directory.name)
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", counted)
    info = project.train([corpus])  # was a ValueError from an empty fold
    labelled = [d.text for d in project.corpus([corpus]) if d.subjects]
    first = min(labelled, key=fit_sample_key)
    fold = fold_of(first, FOLDS)
    assert sorted(trained) == sorted(f"fold-{fold}-{s}" for s in SOURCES)
    others = folds_in_words([f for f in range(FOLDS) if f != fold])
    assert (
        f"Cross-fitting: the sample has no document in {others} of 3: nothing to "
        "score there"
    ) in capsys.readouterr().err
    assert info["cross_fit"]["documents"] == info["heldout_documents"] == 1
    held = HeldOut.load(project.model_dir / "heldout.npz")
    assert held.n_documents == 1 and len(held.candidates) > 0
    project.unload()
    assert project.suggest(["Telescopes and galaxies"]).row(0)


def test_sources_that_suggest_nothing_for_any_fold_are_a_clear_error(
    projects, corpus, served
):
    """Texts that share no word: sources trained on the other folds suggest
    nothing for a fold's documents, so the fusion has nothing to learn."""
    rng = np.random.default_rng(1)
    letters = list("bcdfghjklmnpqrstvwxz")
    lines = [
        " ".join("".join(rng.choice(letters, 8)) for _ in range(3))
        + "\thttp://example.org/t/history"
        for _ in range(30)
    ]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    project = cross_fitted(projects)
    project.config.params["sources"] = "tfidf-en, lexical-en"
    project.unload()
    with pytest.raises(InputError, match="The sources suggested nothing for the"):
        project.train([corpus])  # was a ValueError from the empty fit
    assert served_models(projects) == served  # nothing swapped in


class Generated(Corpus):
    """`n` documents made as they are read: a corpus that no list holds."""

    def __init__(self, vocab, n: int):
        super().__init__([], vocab, "en")
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield Document(f"document number {i}", [i % 3])


def test_the_survey_holds_a_few_bytes_for_each_document(projects):
    """At ten million records, a Python integer for each md5 (52 bytes, and
    44 more for each sample key taken from it) was a gigabyte."""
    import tracemalloc

    vocab = projects.get("calibrated-en").vocab
    n = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        survey = CorpusSurvey.of(Generated(vocab, n), len(vocab))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 24 * n  # the 16 bytes of each md5, and the counts
    assert survey.labelled == n
    assert survey.counts[:3].tolist() == [6667, 6667, 6666]
    texts = [d.text for d in Generated(vocab, n)]
    for folds in (FOLDS, 7, 2**70):  # 2**70: with Python's integers
        expected = [fold_of(text, folds) for text in texts]
        assert survey.folds_of(folds).tolist() == expected


def test_an_interrupted_cross_fit_resumes_with_the_next_fold(
    projects, corpus, monkeypatch, capsys
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
    assert sorted(p.name for p in workdir.iterdir()) == [
        "fold-0.npz",
        "model-lexical-en",
        "model-tfidf-en",
        "model-xmc-en",
        "plan.json",
    ]
    trained, train_into = [], Backend.train_into

    def sources_counted(self, *args, **kwargs):
        trained.append(self.project.id)
        return train_into(self, *args, **kwargs)

    monkeypatch.setattr(Backend, "train_into", sources_counted)
    calls.clear()
    capsys.readouterr()
    project.train([corpus])
    assert trained == []  # their models of the whole corpus were staged already
    assert not any(name.startswith("fold-0-") for name in calls)
    assert {name.split("-")[1] for name in calls} == {"1", "2"}
    # said so; without a terminal, a line per fold tells the progress
    err = capsys.readouterr().err
    assert "Resuming: fold 1 of 3 reused" in err
    assert "Cross-fitting: fold 1 of 3 done (reused)" in err
    assert "Cross-fitting: fold 3 of 3 done (" in err


SOURCES = ("tfidf-en", "xmc-en", "lexical-en")


def served_models(projects) -> dict:
    """Each source's serving model: the version its link names and the bytes
    of every file in it."""
    out = {}
    for source in SOURCES:
        link = projects.get(source).model_dir
        version = link.resolve()
        out[source] = (
            os.readlink(link),
            {
                str(f.relative_to(version)): f.read_bytes()
                for f in sorted(version.rglob("*"))
                if f.is_file()
            },
        )
    return out


@pytest.fixture
def served(projects, tmp_path):
    """The sources trained on 6 documents, not the corpus of any cross-fitting."""
    lines = (DATA / "tiny.tsv").read_text(encoding="utf-8").splitlines(True)
    (tmp_path / "six.tsv").write_text("".join(lines[:6]), encoding="utf-8")
    for source in SOURCES:
        projects.get(source).train([tmp_path / "six.tsv"])
    return served_models(projects)


@pytest.mark.parametrize("folds", [8, 1_000_000, 10**20])
def test_too_many_folds_are_refused_before_any_source_changes(projects, served, folds):
    small = DATA / "tiny.tsv"  # 10 documents: 3 of 8 folds stay empty
    project = cross_fitted(projects, folds)
    with pytest.raises(InputError) as refused:
        project.train([small])
    message = str(refused.value)
    assert message.startswith(f"Cannot cross-fit on {folds} folds: fold ")
    assert "would have no document with a known subject (10 documents have one)" in (
        message
    )
    workable = int(re.search(r"use --cross-fit (\d+) ", message).group(1))
    assert workable == 7  # the most that works: 8, 9 and 10 leave folds empty
    assert served_models(projects) == served
    assert not (project.model_dir.parent / "cross-fit").exists()
    assert not project.model_dir.exists()
    project.config.params["cross_fit"] = workable
    project.unload()
    project.train([small])  # the advice works


def test_a_failure_in_the_middle_leaves_every_source_as_it_was(
    projects, corpus, served, monkeypatch
):
    project = cross_fitted(projects)
    train_part = Backend.train_part

    def failing(self, corpus, directory, jobs=1):
        if directory.name == "fold-2-xmc-en":
            raise RuntimeError("out of memory")
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        project.train([corpus])
    assert served_models(projects) == served
    for source in SOURCES:  # and they serve it
        assert projects.get(source).backend.manifest["documents"] == 6
    monkeypatch.undo()
    project.train([corpus])  # resumed: now swapped in together
    digest = project.corpus([corpus]).digest()
    for source in SOURCES:
        assert projects.get(source).backend.manifest["corpus_digest"] == digest


def append_to_the_corpus_in_fold_2(corpus, monkeypatch) -> list[str]:
    """Append a document to `corpus` as tfidf starts training for the second
    fold; returns the folders of the trainings started (filled as they start)."""
    calls, train_part = [], Backend.train_part

    def appending(self, corpus_, directory, jobs=1):
        calls.append(directory.name)
        if directory.name == "fold-1-tfidf-en":
            with open(corpus, "a", encoding="utf-8") as f:
                f.write(
                    "Galaxies seen through telescopes\thttp://example.org/t/astronomy\n"
                )
        return train_part(self, corpus_, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", appending)
    return calls


def test_a_corpus_that_changes_while_it_is_cross_fitted_is_refused(
    projects, corpus, served, monkeypatch, capsys
):
    """The corpus is read again for every training: a file appended to
    meanwhile would leave sources and folds trained on different corpora."""
    project = cross_fitted(projects)
    calls = append_to_the_corpus_in_fold_2(corpus, monkeypatch)
    with pytest.raises(InputError, match="The corpus changed while it was cross-fit"):
        project.train([corpus])  # was trained on both, saying nothing
    # noticed as the fold it changed in is saved, not after every fold
    assert not (project.model_dir.parent / "cross-fit").exists()
    assert not any(c.startswith("fold-2-") for c in calls)
    assert served_models(projects) == served
    assert not project.model_dir.exists()
    monkeypatch.undo()
    capsys.readouterr()
    info = project.train([corpus])  # once it stays as it is: afresh
    assert "Resuming" not in capsys.readouterr().err
    assert info["documents"] == 31 and info["cross_fit"]["documents"] == 29
    digest = project.corpus([corpus]).digest()
    for source in SOURCES:
        assert projects.get(source).backend.manifest["corpus_digest"] == digest


def test_a_corpus_changed_back_after_a_refused_run_starts_afresh(
    projects, corpus, monkeypatch, capsys
):
    """The folds of a run refused for a changed corpus were scored by sources
    trained on either version: none of them is reused when the corpus is
    back as the run began with it."""
    project = cross_fitted(projects)
    original = corpus.read_text(encoding="utf-8")
    append_to_the_corpus_in_fold_2(corpus, monkeypatch)
    with pytest.raises(InputError, match="The corpus changed while it was cross-fit"):
        project.train([corpus])
    monkeypatch.undo()
    corpus.write_text(original, encoding="utf-8")
    capsys.readouterr()
    info = project.train([corpus])
    assert "Resuming" not in capsys.readouterr().err  # was: folds 1-3 reused
    assert info["documents"] == 30 and info["cross_fit"]["documents"] == 28
    digest = project.corpus([corpus]).digest()
    for source in SOURCES:
        assert projects.get(source).backend.manifest["corpus_digest"] == digest


def test_a_source_is_busy_while_the_fusion_cross_fits(
    projects, workspace, corpus, monkeypatch
):
    import threading

    from indexer.project import Projects

    project = cross_fitted(projects)
    elsewhere = Projects.from_path(workspace / "projects.cfg").get("tfidf-en")
    outcomes = []
    train_part = Backend.train_part

    def meanwhile(self, corpus, directory, jobs=1):
        if directory.name == "fold-1-tfidf-en":  # in the middle of the run
            for attempt in (
                elsewhere.clear,
                lambda: elsewhere.train([DATA / "tiny.tsv"]),
            ):
                thread = threading.Thread(target=lambda a=attempt: _catch(a, outcomes))
                thread.start()
                thread.join(30)
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", meanwhile)
    project.train([corpus])
    assert len(outcomes) == 2
    assert all(isinstance(e, BusyError) for e in outcomes), outcomes
    assert all("Project 'tfidf-en' is busy" in str(e) for e in outcomes)
    # the run's own model of the whole corpus is the one that serves
    digest = project.corpus([corpus]).digest()
    assert projects.get("tfidf-en").backend.manifest["corpus_digest"] == digest


def _catch(action, outcomes: list) -> None:
    try:
        action()
        outcomes.append(None)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        outcomes.append(exc)


def test_reordered_sources_start_the_folds_afresh(
    projects, corpus, monkeypatch, capsys
):
    project = cross_fitted(projects)
    calls, once, train_part = [], [], Backend.train_part

    def interrupted(self, corpus, directory, jobs=1):
        calls.append(directory.name)
        if directory.name.startswith("fold-1-") and not once:
            once.append(True)
            raise KeyboardInterrupt
        return train_part(self, corpus, directory, jobs)

    monkeypatch.setattr(Backend, "train_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        project.train([corpus])
    assert (project.model_dir.parent / "cross-fit" / "fold-0.npz").is_file()
    project.config.params["sources"] = "xmc-en, tfidf-en, lexical-en"
    project.unload()
    calls.clear()
    capsys.readouterr()
    project.train([corpus])
    assert {"fold-0-xmc-en", "fold-0-tfidf-en"} <= set(calls)  # scored again
    assert "Resuming" not in capsys.readouterr().err
    fusion = json.loads((project.model_dir / "fusion.json").read_text())
    assert fusion["info"]["sources"] == ["xmc-en", "tfidf-en", "lexical-en"]


def test_the_plan_names_each_source_in_order_with_its_language(projects, corpus):
    project = cross_fitted(projects)
    crossfit = CrossFit(project.backend, project.backend.sources(), None, FOLDS)
    survey = CorpusSurvey.of(project.corpus([corpus]), len(project.vocab))
    plan = crossfit._plan(survey)
    assert [(s[0], s[1]) for s in plan["sources"]] == [
        ("tfidf-en", "en"),
        ("xmc-en", "en"),
        ("lexical-en", "en"),
    ]


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
    tiny = str(DATA / "tiny.tsv")
    result = runner.invoke(cli, ["train", "calibrated-en", tiny, "--cross-fit", "8"])
    assert result.exit_code == 1
    assert "Error: Cannot cross-fit on 8 folds: fold" in result.output
    assert "Nothing was trained: use --cross-fit 7" in result.output
    assert "Traceback" not in result.output


def test_cross_fit_on_ray_without_ray_names_the_extra(
    run_cli, projects, corpus, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as uninstalled
    result = run_cli(
        "train", "calibrated-en", str(corpus), "--cross-fit", "3", "--engine", "ray"
    )
    assert result.exit_code == 1, result.output
    assert "pip install 'subject-indexer[distributed]'" in result.output
    assert "Traceback" not in result.output
    for source in ("tfidf-en", "xmc-en", "lexical-en"):
        assert not projects.get(source).is_trained


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

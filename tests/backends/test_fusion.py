from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from backends.fusion import Calibrator, Candidates, FusionModel, feature_names
from indexer.errors import NotTrainedError
from indexer.eval import evaluate_arrays
from indexer.suggestion import SuggestionBatch

from ..conftest import DATA, shared_dataset


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def batch(rows: list[dict[int, float]], n_subjects: int) -> SuggestionBatch:
    return SuggestionBatch.from_rows(
        [(list(r), list(r.values())) for r in rows], n_subjects
    )


# -- arithmetic on hand-made scores ------------------------------------------


def test_candidates_are_the_union_of_the_sources_suggestions():
    a = batch([{1: 0.5, 2: 0.25, 3: 0.1}, {}], 5)
    b = batch([{2: 1.0}, {4: 0.3}], 5)
    c = Candidates.from_batches([a, b], per_source=2)  # subject 3 is a's third
    pairs = list(zip(c.docs.tolist(), c.subjects.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 2), (1, 4)]
    np.testing.assert_allclose(c.raw, [[0.5, 0], [0.25, 1.0], [0, 0.3]])
    np.testing.assert_array_equal(c.rank, [[1, 0], [2, 1], [0, 1]])
    np.testing.assert_array_equal(c.gold([[2], [4, 1]]), [0, 1, 1])


def test_fused_score_is_the_logistic_of_weighted_calibrated_scores():
    a = batch([{1: 0.5, 2: 0.25}], 3)
    b = batch([{2: 1.0}], 3)
    candidates = Candidates.from_batches([a, b], per_source=10)
    names = feature_names(2, interactions=False)
    coef = np.zeros(len(names))
    coef[names.index("p0")] = 2.0
    coef[names.index("p1")] = 3.0
    coef[names.index("seen")] = 1.0
    model = FusionModel(
        [
            Calibrator("isotonic", [0, 1], [0, 1]),
            Calibrator("isotonic", [0, 0.5, 1], [0, 0.1, 0.2]),
        ],
        coef,
        -1.0,
        np.zeros(len(names)),
        np.ones(len(names)),
        per_source=10,
        interactions=False,
    )
    frequency = np.array([0.0, 5.0, 0.0])
    scores = model.predict(candidates, frequency)
    # subject 1: p0 = 0.5, not suggested by b, seen; subject 2: p0 = 0.25,
    # p1 = 0.2 (calibrated from 1.0), unseen
    np.testing.assert_allclose(
        scores, [sigmoid(2 * 0.5 + 1 - 1), sigmoid(2 * 0.25 + 3 * 0.2 - 1)]
    )


@pytest.mark.parametrize("kind", ["isotonic", "platt"])
def test_calibration_is_monotone_and_in_unit_interval(kind):
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 2000)
    gold = (rng.uniform(0, 1, 2000) < raw**2).astype(float)
    calibrator = Calibrator.fit(kind, raw, gold)
    grid = np.linspace(-0.5, 1.5, 401)
    values = calibrator(grid)
    assert np.all(np.diff(values) >= -1e-12)
    assert values.min() >= 0 and values.max() <= 1
    # and it is a calibration: about right where there is data
    assert abs(calibrator(np.array([0.8]))[0] - 0.64) < 0.12


def test_calibration_of_a_single_class_is_constant():
    for kind in ("isotonic", "platt"):
        calibrator = Calibrator.fit(kind, np.array([0.2, 0.9]), np.zeros(2))
        assert np.allclose(calibrator(np.array([0.0, 0.5, 1.0])), 0, atol=1e-3)


# -- fitting on a synthetic split -----------------------------------------------


def synthetic(seed: int, n_docs: int = 400, n_subjects: int = 150):
    """Gold subjects and two sources on different, miscalibrated scales: an
    associative one (precise, low raw scores, only 'seen' subjects) and a
    zero-shot one (high raw scores, half of them wrong, any subject)."""
    rng = np.random.default_rng(seed)
    n_seen = 100
    frequency = np.zeros(n_subjects)
    frequency[:n_seen] = rng.integers(1, 60, n_seen)
    gold, a_rows, b_rows = [], [], []
    for _ in range(n_docs):
        subjects = list(rng.choice(n_seen, 2, replace=False))
        if rng.uniform() < 0.5:
            subjects.append(int(rng.integers(n_seen, n_subjects)))
        gold.append([int(s) for s in subjects])
        a = {int(s): rng.uniform(0.02, 0.25) for s in rng.choice(n_seen, 15, False)}
        for s in subjects:
            if s < n_seen and rng.uniform() < 0.8:
                a[int(s)] = rng.uniform(0.15, 0.4)
        b = {int(s): rng.uniform(0.4, 1.0) for s in rng.choice(n_subjects, 8, False)}
        for s in subjects:
            if rng.uniform() < 0.6:
                b[int(s)] = rng.uniform(0.5, 1.0)
        a_rows.append(a)
        b_rows.append(b)
    return gold, batch(a_rows, n_subjects), batch(b_rows, n_subjects), frequency


def fit_and_predict(train, test, **options):
    gold, a, b, frequency = train
    candidates = Candidates.from_batches([a, b], per_source=50)
    model = FusionModel.fit(
        candidates, candidates.gold(gold), frequency[candidates.subjects], **options
    )
    test_gold, ta, tb, _ = test
    test_candidates = Candidates.from_batches([ta, tb], per_source=50)
    scores = model.predict(test_candidates, frequency)
    fused = SuggestionBatch(
        _matrix(test_candidates, scores, len(test_gold), ta.n_subjects)
    )
    return model, fused


def _matrix(candidates, scores, n_docs, n_subjects):
    import scipy.sparse as sp

    return sp.csr_matrix(
        (scores, (candidates.docs, candidates.subjects)), shape=(n_docs, n_subjects)
    )


@pytest.mark.parametrize("calibration", ["isotonic", "platt"])
def test_fusion_beats_the_weighted_mean_on_held_out_documents(calibration):
    train, test = synthetic(1), synthetic(2)
    _, fused = fit_and_predict(train, test, calibration=calibration)
    gold, a, b, frequency = test
    mean = SuggestionBatch((a.matrix + b.matrix) / 2)
    seen = frequency
    fused_metrics = evaluate_arrays(gold, fused, seen=seen)
    mean_metrics = evaluate_arrays(gold, mean, seen=seen)
    best_single = max(evaluate_arrays(gold, x, seen=seen)["ndcg@10"] for x in (a, b))
    assert fused_metrics["ndcg@10"] > mean_metrics["ndcg@10"]
    assert fused_metrics["ndcg@10"] > best_single
    assert fused_metrics["f1@5"] >= mean_metrics["f1@5"]
    # unseen subjects stay reachable through the zero-shot source
    assert fused_metrics["unseen_recall@10"] > 0.4


def test_small_tuning_sets_do_not_break_the_fit():
    gold, a, b, frequency = synthetic(3, n_docs=3)
    candidates = Candidates.from_batches([a, b], per_source=50)
    gold_flags, per_candidate = candidates.gold(gold), frequency[candidates.subjects]
    model = FusionModel.fit(candidates, gold_flags, per_candidate, folds=5)
    scores = model.predict(candidates, frequency)
    assert np.all((scores >= 0) & (scores <= 1))


def test_fitted_model_saves_and_loads_without_pickle(tmp_path):
    train = synthetic(4, n_docs=120)
    model, fused = fit_and_predict(train, synthetic(5, n_docs=50))
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fusion.json", "fusion.npz"]
    meta = json.loads((tmp_path / "fusion.json").read_text())
    assert set(meta["coefficients"]) == set(feature_names(2, interactions=True))
    with np.load(tmp_path / "fusion.npz", allow_pickle=False) as npz:
        assert {"x0", "y0", "x1", "y1", "coef", "mean", "scale"} <= set(npz.files)
    loaded = FusionModel.load(tmp_path)
    test = synthetic(5, n_docs=50)
    candidates = Candidates.from_batches([test[1], test[2]], per_source=50)
    np.testing.assert_array_equal(
        loaded.predict(candidates, test[3]), model.predict(candidates, test[3])
    )


# -- the backend ----------------------------------------------------------------


def train_sources(projects):
    for source in ("tfidf-en", "xmc-en"):
        projects.get(source).train([DATA / "tiny.tsv"])


def test_backend_trains_on_held_out_documents_and_saves_json_and_npz(projects):
    train_sources(projects)
    project = projects.get("calibrated-en")
    info = project.train([DATA / "fulltext", DATA / "tiny.tsv"])
    assert info["sources"] == ["tfidf-en", "xmc-en", "lexical-en"]
    names = sorted(p.name for p in project.model_dir.iterdir())
    assert names == [
        "fusion.json",
        "fusion.npz",
        "heldout.npz",
        "manifest.json",
        "subjects.npz",
    ]
    batch = project.suggest(["Telescopes, stars and galaxies"], limit=3)
    assert project.vocab.uris[batch.row(0)[0].subject].endswith("/astronomy")
    project.unload()  # the saved JSON and npz give back the same scores
    again = project.suggest(["Telescopes, stars and galaxies"], limit=3)
    assert again.row(0) == batch.row(0)


def test_a_large_tuning_corpus_is_scored_and_fitted_on_a_sample(projects, capsys):
    train_sources(projects)
    project = projects.get("calibrated-en")
    project.config.params["fit_documents"] = 4
    project.unload()
    info = project.train([DATA / "fulltext", DATA / "tiny.tsv"])
    assert info["heldout_documents"] == 4
    assert info["documents_with_subjects"] > 4
    assert f"fitted on, 4 of the {info['documents_with_subjects']} documents" in (
        capsys.readouterr().err
    )


def test_copies_of_a_text_fill_a_tuning_sample_only_to_its_size(
    projects, tmp_path, capsys
):
    """A text repeated many times (a boilerplate abstract) where the sample
    ends: fit_documents of the copies are scored, not every copy."""
    from backends.fusion_folds import fit_sample_key

    train_sources(projects)
    project = projects.get("calibrated-en")
    project.config.params["fit_documents"] = 4
    project.unload()
    lines = (DATA / "tiny.tsv").read_text(encoding="utf-8").splitlines()
    lowest = min(fit_sample_key(line.split("\t")[0]) for line in lines)
    copy = next(
        text
        for n in itertools.count()
        if fit_sample_key(text := f"History of towns and empires, volume {n}") < lowest
    )
    lines += [f"{copy}\thttp://example.org/t/history"] * 20
    (tmp_path / "tune.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = project.train([tmp_path / "tune.tsv"])
    assert info["heldout_documents"] == 4  # was 20: every copy
    assert "fitted on, 4 of the 30 documents" in capsys.readouterr().err


def test_seen_subjects_are_those_of_the_sources(projects):
    train_sources(projects)
    project = projects.get("calibrated-en")
    project.train([DATA / "tiny.tsv"])
    np.testing.assert_array_equal(
        project.seen_subjects(), projects.get("tfidf-en").seen_subjects()
    )


def test_untrained_source_is_named(projects):
    with pytest.raises(NotTrainedError, match="Source 'tfidf-en'.*indexer train"):
        projects.get("calibrated-en").train([DATA / "tiny.tsv"])


def test_changed_sources_need_retraining(projects):
    train_sources(projects)
    project = projects.get("calibrated-en")
    project.train([DATA / "tiny.tsv"])
    project.config.params["sources"] = "tfidf-en, lexical-en"
    project.unload()
    with pytest.raises(NotTrainedError, match="configured with tfidf-en, lexical-en"):
        project.suggest(["stars"])


@pytest.mark.slow
def test_not_worse_than_the_mean_ensemble_on_archaeology(tmp_path):
    from indexer.project import Projects

    data = shared_dataset("yso-archaeology")
    lines = (data / "train.tsv").read_text(encoding="utf-8").splitlines()
    fit = [line for i, line in enumerate(lines) if i % 5]
    (tmp_path / "fit.tsv").write_text("\n".join(fit), encoding="utf-8")
    (tmp_path / "tune.tsv").write_text("\n".join(lines[::5]), encoding="utf-8")
    (tmp_path / "projects.cfg").write_text(
        f"[vocab:yso]\nsource = {data / 'vocab.ttl'}\n"
        "[tfidf]\nlanguage = fi\nvocab = yso\nbackend = tfidf\n"
        "[xmc]\nlanguage = fi\nvocab = yso\nbackend = xmc\n"
        "[lexical]\nlanguage = fi\nvocab = yso\nbackend = lexical\n"
        "[mean]\nlanguage = fi\nvocab = yso\nbackend = ensemble\n"
        "sources = tfidf, xmc, lexical\n"
        "[fused]\nlanguage = fi\nvocab = yso\nbackend = calibrated\n"
        "sources = tfidf, xmc, lexical\n"
    )
    projects = Projects.from_path(tmp_path / "projects.cfg")
    for source in ("tfidf", "xmc", "lexical"):
        projects.get(source).train([tmp_path / "fit.tsv"])
    projects.get("fused").train([tmp_path / "tune.tsv"])
    docs = list(projects.get("fused").corpus([data / "test.tsv"]))
    gold, texts = [d.subjects for d in docs], [d.text for d in docs]
    results = {
        name: evaluate_arrays(gold, projects.get(name).backend.suggest_batch(texts))
        for name in ("mean", "fused")
    }
    assert results["fused"]["ndcg@10"] >= results["mean"]["ndcg@10"] - 0.005
    assert results["fused"]["f1@5"] >= results["mean"]["f1@5"] - 0.005

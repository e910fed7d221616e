from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import UsageError
from indexer.eval import evaluate_arrays
from indexer.hyperopt import hyperopt

from .conftest import DATA

CORPUS = [DATA / "tiny.tsv", DATA / "fulltext"]


@pytest.fixture
def trained(projects):
    for source in ("tfidf-en", "xmc-en"):
        projects.get(source).train([DATA / "tiny.tsv"])
    return projects


def test_ensemble_weights_improve_on_the_configured_ones(trained):
    result = hyperopt(trained.get("ensemble-en"), CORPUS, trials=30, seed=1)
    assert len(result.trials) == 30
    assert result.baseline.settings == {
        "sources": "tfidf-en:0.6667, lexical-en:0.3333",
        "exponent": 1.0,
    }
    assert result.best.score >= result.baseline.score
    weights = [
        float(item.split(":")[1]) for item in result.best.settings["sources"].split(",")
    ]
    assert abs(sum(weights) - 1) < 1e-3


def test_same_seed_same_result(trained):
    runs = [hyperopt(trained.get("ensemble-en"), CORPUS, 12, seed=7) for _ in "ab"]
    assert [t.settings for t in runs[0].trials] == [t.settings for t in runs[1].trials]


def test_best_settings_reproduce_their_score_in_the_ensemble(trained):
    """The search fuses cached scores itself: the snippet, applied to the
    project, must give the same metric."""
    result = hyperopt(trained.get("ensemble-en"), CORPUS, trials=15, metric="f1@5")
    project = trained.get("ensemble-en")
    project.config.params.update(result.best.settings)
    project.unload()
    docs = [d for d in project.corpus(CORPUS) if d.subjects]
    batch = project.backend.suggest_batch([d.text for d in docs])
    metrics = evaluate_arrays([d.subjects for d in docs], batch)
    assert metrics["f1@5"] == pytest.approx(result.best.score, abs=1e-6)


def test_snippet_is_a_config_section(trained):
    result = hyperopt(trained.get("ensemble-en"), CORPUS, trials=5)
    lines = result.snippet().splitlines()
    assert lines[0] == "[ensemble-en]"
    assert lines[1].startswith("sources = tfidf-en:") and "lexical-en:" in lines[1]
    assert lines[2].startswith("exponent = ")


def test_suggest_time_parameters_of_a_backend(trained):
    project = trained.get("xmc-en")
    project.config.params["preset"] = "bonsai"
    project.train([DATA / "tiny.tsv"])
    result = hyperopt(project, CORPUS, trials=10)
    tried = [t.settings["beam_size"] for t in result.trials]
    assert tried[0] == 10 and sorted(tried) == [5, 10, 20, 40]
    assert result.snippet().startswith("[xmc-en]\nbeam_size = ")


def test_a_random_sample_of_a_large_grid(trained):
    result = hyperopt(trained.get("lexical-en"), CORPUS, trials=6, seed=1)
    tried = [tuple(t.settings.values()) for t in result.trials]
    assert tried[0] == (0.6, 5)  # the configured setting comes first
    assert len(tried) == len(set(tried)) <= 6
    assert set(result.best.settings) == {"min_coverage", "compound_min_length"}


def test_nothing_to_tune(trained):
    with pytest.raises(UsageError, match="nothing that `indexer hyperopt` tunes"):
        hyperopt(trained.get("tfidf-en"), CORPUS)
    with pytest.raises(UsageError, match="indexer train calibrated-en CORPUS"):
        hyperopt(trained.get("calibrated-en"), CORPUS)


def test_unknown_metric(trained):
    with pytest.raises(UsageError, match="Unknown metric 'f2'. Metrics: .*ndcg@10"):
        hyperopt(trained.get("ensemble-en"), CORPUS, trials=2, metric="f2")


def test_cli_prints_a_snippet(run_cli, trained):
    result = run_cli("hyperopt", "ensemble-en", str(DATA / "tiny.tsv"), "--trials", "8")
    assert result.exit_code == 0, result.output
    assert "current settings:" in result.output
    assert "\n[ensemble-en]\nsources = tfidf-en:" in result.output
    bad = run_cli("hyperopt", "tfidf-en", str(DATA / "tiny.tsv"))
    assert bad.exit_code == 2 and "nothing that `indexer hyperopt` tunes" in bad.output


def test_optimize_works_for_ensembles(run_cli, trained):
    result = run_cli("optimize", "ensemble-en", str(DATA / "tiny.tsv"))
    assert result.exit_code == 0, result.output
    assert "Add to [ensemble-en]" in result.output
    assert np.isfinite(float(result.output.split("(F1 ")[1].split(")")[0]))

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from indexer.eval import Evaluator
from indexer.significance import (
    bootstrap,
    bootstrap_interval,
    interval_metrics,
    metrics_for_weights,
    paired_difference,
    resample_counts,
    subject_intervals,
)
from indexer.suggestion import SuggestionBatch

N_SUBJECTS = 15
SEEN = np.arange(N_SUBJECTS) < 11


def random_run(n_docs: int, seed: int, skill: float = 0.5):
    """Gold subjects and noisy suggestions: a better `skill` ranks gold higher."""
    rng = np.random.default_rng(seed)
    gold = [
        list(rng.choice(N_SUBJECTS, size=rng.integers(1, 4), replace=False))
        for _ in range(n_docs)
    ]
    gold[3] = []  # documents without gold subjects are skipped by the averages
    scores = rng.random((n_docs, N_SUBJECTS)) * (rng.random((n_docs, N_SUBJECTS)) < 0.5)
    for i, g in enumerate(gold):
        scores[i, g] = np.clip(scores[i, g] + skill, 0, 1)
    return gold, SuggestionBatch.from_dense(scores)


def evaluator_for(gold, batch, batch_size=7) -> Evaluator:
    evaluator = Evaluator(N_SUBJECTS, limit=3, threshold=0.3, seen=SEEN)
    for start in range(0, len(gold), batch_size):
        rows = slice(start, start + batch_size)
        evaluator.add(gold[rows], SuggestionBatch(batch.matrix[rows]))
    return evaluator


def test_per_document_values_average_to_the_metrics():
    gold, batch = random_run(40, 0)
    evaluator = evaluator_for(gold, batch)
    results = evaluator.results()
    per_doc = evaluator.per_document()
    assert np.isnan(per_doc["f1"][3])  # document 3 has no gold subjects
    for name, values in per_doc.items():
        assert np.nanmean(values) == pytest.approx(results[name]), name


def test_all_ones_weights_give_the_evaluator_results():
    gold, batch = random_run(40, 1)
    evaluator = evaluator_for(gold, batch)
    results = evaluator.results()
    point = metrics_for_weights(evaluator, np.ones(40))
    assert set(point) == set(interval_metrics(evaluator))
    assert "f1_macro" in point and "unseen_recall@5" in point
    for name, value in point.items():
        assert value == pytest.approx(results[name]), name


def test_resample_weights_equal_evaluating_the_drawn_documents():
    """A weight vector means 'this document drawn w times': evaluating the
    corpus made of the drawn documents must give the same metrics, macro F1 and
    unseen recall included."""
    gold, batch = random_run(30, 2)
    counts = np.random.default_rng(5).multinomial(30, np.full(30, 1 / 30))
    drawn = np.repeat(np.arange(30), counts)
    expected = evaluator_for(
        [gold[i] for i in drawn], SuggestionBatch(batch.matrix[drawn])
    ).results()
    weighted = metrics_for_weights(evaluator_for(gold, batch), counts)
    for name, value in weighted.items():
        assert value == pytest.approx(expected[name]), name


def test_bootstrap_is_seeded_and_brackets_the_point():
    gold, batch = random_run(200, 3)
    evaluator = evaluator_for(gold, batch)
    first = bootstrap(evaluator, n_boot=300, seed=7)
    assert bootstrap(evaluator, n_boot=300, seed=7) == first
    assert bootstrap(evaluator, n_boot=300, seed=8)["f1@5"] != first["f1@5"]
    for name, iv in first.items():
        assert iv.low <= iv.point <= iv.high, name
    f1 = first["f1@5"]
    assert 0 < f1.high - f1.low < 0.2
    assert bootstrap_interval(evaluator, "f1@5", n_boot=300, seed=7) == f1


def test_interval_narrows_with_more_documents():
    small = bootstrap(evaluator_for(*random_run(50, 4)), n_boot=400, metrics=["f1@5"])
    large = bootstrap(evaluator_for(*random_run(800, 4)), n_boot=400, metrics=["f1@5"])
    width = {
        n: iv["f1@5"].high - iv["f1@5"].low for n, iv in [("s", small), ("l", large)]
    }
    assert width["l"] < width["s"] / 2


def test_unknown_metric_names_the_choices():
    evaluator = evaluator_for(*random_run(20, 5))
    with pytest.raises(ValueError, match="f1_macro"):
        bootstrap(evaluator, n_boot=10, metrics=["f1@7"])


def test_paired_difference_of_a_system_with_itself_is_zero():
    evaluator = evaluator_for(*random_run(100, 6))
    diff = paired_difference(evaluator, evaluator, n_boot=200)
    assert diff["f1@5"].difference == 0
    assert (diff["f1@5"].low, diff["f1@5"].high) == (0, 0)
    assert diff["f1@5"].verdict == "no difference"


def test_paired_difference_finds_the_better_system():
    gold, good = random_run(150, 7, skill=0.6)
    rng = np.random.default_rng(0)
    noise = SuggestionBatch.from_dense(rng.random((150, N_SUBJECTS)))
    a, b = evaluator_for(gold, good), evaluator_for(gold, noise)
    diff = paired_difference(a, b, n_boot=300, metrics=["f1@5", "f1_macro"])
    assert diff["f1@5"].a == pytest.approx(a.results()["f1@5"])
    assert diff["f1@5"].b == pytest.approx(b.results()["f1@5"])
    assert diff["f1@5"].verdict == "A better"
    assert diff["f1@5"].low > 0
    assert paired_difference(b, a, n_boot=300)["f1@5"].verdict == "B better"


def test_paired_difference_is_tighter_than_unpaired():
    """Pairing cancels the per-document difficulty both systems share."""
    gold, batch = random_run(300, 8, skill=0.4)
    noisier = SuggestionBatch(batch.matrix * 0.97)  # same ranking, same metrics@k
    a, b = evaluator_for(gold, batch), evaluator_for(gold, noisier)
    diff = paired_difference(a, b, n_boot=200, metrics=["f1@5"])["f1@5"]
    single = bootstrap(a, n_boot=200, metrics=["f1@5"])["f1@5"]
    assert diff.high - diff.low < (single.high - single.low) / 10


def test_paired_difference_needs_the_same_documents():
    a = evaluator_for(*random_run(20, 9))
    b = evaluator_for(*random_run(21, 9))
    with pytest.raises(ValueError, match="same documents"):
        paired_difference(a, b, n_boot=10)


def test_subject_intervals_match_evaluating_each_resample():
    gold, batch = random_run(30, 10)
    evaluator = evaluator_for(gold, batch)
    intervals = subject_intervals(evaluator, n_boot=40, seed=3)
    subjects = [r["subject"] for r in evaluator.per_subject()]
    values = {n: [] for n in ("precision", "recall", "f1")}
    for counts in resample_counts(30, 40, seed=3):
        for row in counts:
            drawn = np.repeat(np.arange(30), row)
            resample = evaluator_for(
                [gold[i] for i in drawn], SuggestionBatch(batch.matrix[drawn])
            )
            tp, fp, fn = (
                resample.tp[subjects],
                resample.fp[subjects],
                resample.fn[subjects],
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                values["precision"].append(tp / (tp + fp))
                values["recall"].append(tp / (tp + fn))
                values["f1"].append(2 * tp / (2 * tp + fp + fn))
    for name, replicates in values.items():
        with warnings.catch_warnings():  # a subject no resample has: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(np.array(replicates), [2.5, 97.5], axis=0)
        assert intervals[f"{name}_low"] == pytest.approx(low, abs=1e-6, nan_ok=True), (
            name
        )
        assert intervals[f"{name}_high"] == pytest.approx(
            high, abs=1e-6, nan_ok=True
        ), name


def test_eval_bootstrap_prints_and_writes_intervals(run_cli, workspace, tiny_corpus):
    import json

    assert run_cli("train", "tfidf-en", str(tiny_corpus)).exit_code == 0
    metrics_file = workspace / "m.json"
    args = ("eval", "tfidf-en", str(tiny_corpus), "--bootstrap", "200")
    result = run_cli(*args, "--metrics-file", str(metrics_file))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("f1@5 "))
    value, low, high = (float(x.strip("[],")) for x in line.split()[1:])
    data = json.loads(metrics_file.read_text())
    interval = data["bootstrap"]["intervals"]["f1@5"]
    assert data["f1@5"] == pytest.approx(value, abs=1e-4)
    assert (interval["low"], interval["high"]) == pytest.approx((low, high), abs=1e-4)
    assert low <= value <= high and low < high
    assert data["bootstrap"]["replicates"] == 200
    assert run_cli(*args).stdout == result.stdout  # seeded: the same interval
    plain = run_cli("eval", "tfidf-en", str(tiny_corpus)).stdout
    assert "[" not in plain
    # per-subject intervals in the results TSV
    results = workspace / "r.tsv"
    assert run_cli(*args, "--results-file", str(results)).exit_code == 0
    header, *rows = (line.split("\t") for line in results.read_text().splitlines())
    assert header[-6:] == [
        "precision_low",
        "precision_high",
        "recall_low",
        "recall_high",
        "f1_low",
        "f1_high",
    ]
    history = next(r for r in rows if r[1] == "history")
    assert float(history[-2]) < float(history[8]) < float(history[-1])


def test_compare_gives_difference_interval_and_verdict(run_cli, tiny_corpus):
    assert run_cli("train", "tfidf-en", str(tiny_corpus)).exit_code == 0
    args = ("compare", "tfidf-en", "dummy-en", str(tiny_corpus), "--bootstrap", "300")
    result = run_cli(*args, "--metric", "recall@3", "--metric", "f1@5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("A = tfidf-en, B = dummy-en; 10 documents")
    assert [x.split()[0] for x in lines[2:]] == ["recall@3", "f1@5"]
    # tfidf trained on these very documents beats a constant 'physics' at
    # recall@3 (1.0 against 0.2); 10 documents cannot separate their F1@5
    assert lines[2].split()[1:4] == ["1.0000", "0.2000", "+0.8000"]
    assert lines[2].endswith("A better")
    assert lines[3].endswith("no difference")
    same = run_cli("compare", "tfidf-en", "tfidf-en", str(tiny_corpus))
    assert same.exit_code == 0
    assert all(x.endswith("no difference") for x in same.stdout.splitlines()[2:])


def test_compare_writes_its_table_as_json(run_cli, tiny_corpus, tmp_path):
    assert run_cli("train", "tfidf-en", str(tiny_corpus)).exit_code == 0
    out = tmp_path / "new" / "compare.json"
    args = ("compare", "tfidf-en", "dummy-en", str(tiny_corpus), "--bootstrap", "300")
    result = run_cli(*args, "--metric", "recall@3", "--results-file", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert (data["a"], data["b"], data["documents"]) == ("tfidf-en", "dummy-en", 10)
    assert (data["bootstrap"], data["seed"], data["confidence"]) == (300, 0, 0.95)
    recall = data["metrics"]["recall@3"]
    assert list(data["metrics"]) == ["recall@3"]
    assert (recall["a"], recall["b"]) == (1.0, 0.2)
    assert recall["low"] <= recall["difference"] <= recall["high"]
    assert recall["verdict"] == "A better"
    # a file under a file is refused before anything is evaluated
    blocked = run_cli(*args, "--results-file", str(out / "x.json"))
    assert blocked.exit_code == 2 and "is a file, not a folder" in blocked.output


def test_compare_errors(run_cli, workspace, tiny_corpus):
    from tests.conftest import DATA

    with open(workspace / "projects.cfg", "a") as f:
        f.write(
            f"\n[vocab:other]\nsource = {DATA / 'tiny-columns.csv'}\n\n"
            "[lexical-other]\nlanguage = en\nvocab = other\nbackend = lexical\n"
        )
    cases = [
        (("nope", "lexical-en"), 2, "No project 'nope'"),
        (("lexical-en", "lexical-other"), 2, "different vocabularies"),
        (("lexical-en", "dummy-en", "--metric", "f1@7"), 2, "Unknown metric 'f1@7'"),
        (("lexical-en", "tfidf-en"), 1, "not trained"),
    ]
    no_gold = ("lexical-en", "dummy-en", str(DATA / "nosubjects.tsv"))
    result = run_cli("compare", *no_gold)
    assert result.exit_code == 2 and "nothing to compare" in result.output
    for args, code, message in cases:
        result = run_cli("compare", *args[:2], str(tiny_corpus), *args[2:])
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_bootstrap_beyond_the_cap_is_a_usage_error(run_cli, tiny_corpus, command):
    from indexer.cli.evaluation import MAX_BOOTSTRAP

    # ten million resamples of ten documents took 55 s and 2.6 GB before
    projects = ["dummy-en"] if command == "eval" else ["dummy-en", "dummy-en"]
    args = (command, *projects, str(tiny_corpus), "--bootstrap")
    result = run_cli(*args, str(MAX_BOOTSTRAP + 1))
    assert result.exit_code == 2
    assert f"not in the range 1<=x<={MAX_BOOTSTRAP}" in result.output
    assert run_cli(*args, "0").exit_code == 2

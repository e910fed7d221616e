from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.errors import ConfigError, IndexerError, NotTrainedError

from ..conftest import DATA

ASTRONOMY = "http://example.org/t/astronomy"


def top_uri(project, text):
    batch = project.suggest([text], limit=1)
    return project.vocab.uris[batch.row(0)[0].subject]


def test_untrained_project_says_how_to_train(projects):
    with pytest.raises(NotTrainedError, match="indexer train xmc-en CORPUS"):
        projects.get("xmc-en").suggest(["stars"])


@pytest.mark.parametrize("preset", ["flat", "balanced", "bonsai", "parabel"])
def test_learns_subjects_from_documents(projects, preset):
    project = projects.get("xmc-en")
    project.config.params["preset"] = preset
    project.train([DATA / "tiny.tsv"])
    assert top_uri(project, "galaxies and telescopes") == ASTRONOMY
    assert top_uri(project, "genes in cells") == "http://example.org/t/biology"


def test_suggests_only_subjects_seen_in_training(projects):
    project = projects.get("xmc-en")
    project.train([DATA / "fulltext"])
    seen = project.seen_subjects() > 0
    batch = project.suggest(["astronomy music history physics biology"], limit=10)
    assert batch.row(0)
    assert all(seen[s.subject] for s in batch.row(0))


def test_text_without_known_terms_gets_nothing(projects):
    project = projects.get("xmc-en")
    project.train([DATA / "tiny.tsv"])
    assert project.suggest(["zzzz qqqq"]).row(0) == []


def test_presets_and_overrides_give_omikuji_hyper_parameters(projects):
    project = projects.get("xmc-en")
    flat = project.backend.hyper_params(n_labels=7)
    assert flat["n_trees"] == 1 and flat["min_branch_size"] > 7  # one level
    project.config.params.update(preset="bonsai", cluster_k="50", linear_c="2")
    project.unload()
    bonsai = project.backend.hyper_params(n_labels=7)
    assert bonsai["cluster_balanced"] is False and bonsai["max_depth"] == 3
    assert bonsai["cluster_k"] == 50 and bonsai["linear_c"] == 2.0


def test_auto_trains_flat_on_small_data_and_says_so(run_cli, projects, capfd):
    project = projects.get("xmc-en")
    assert project.backend.params.preset == "auto"
    project.train([DATA / "tiny.tsv"])
    assert "Layout: flat" in capfd.readouterr().err
    assert project.backend.manifest["info"]["layout"] == "flat"
    assert (project.model_dir / "weights.npz").is_file()  # the liblinear layer
    shown = run_cli("show-project", "xmc-en")
    assert shown.exit_code == 0 and "layout: flat" in shown.output


def test_auto_trains_balanced_trees_above_the_flat_work_limit(
    run_cli, projects, capfd, monkeypatch
):
    import backends.xmc

    project = projects.get("xmc-en")
    project.train([DATA / "tiny.tsv"])
    info = project.backend.manifest["info"]
    work = info["examples"] * info["subjects"]
    monkeypatch.setattr(backends.xmc, "FLAT_WORK_LIMIT", work - 1)
    project.train([DATA / "tiny.tsv"])
    assert "Layout: balanced" in capfd.readouterr().err
    info = project.backend.manifest["info"]
    assert info["layout"] == "balanced"
    assert info["omikuji"]["cluster_balanced"] is True
    assert (project.model_dir / "omikuji" / "tree0.cbor").is_file()
    assert top_uri(project, "galaxies and telescopes") == ASTRONOMY
    shown = run_cli("show-project", "xmc-en")
    assert shown.exit_code == 0 and "layout: balanced" in shown.output


def test_layout_rule():
    from backends.xmc import FLAT_WORK_LIMIT, choose_layout

    assert choose_layout("auto", 2_600, 4_000) == "flat"  # kirjastonhoitaja
    assert choose_layout("auto", 10_000, 15_000) == "balanced"  # 338 s flat
    assert choose_layout("auto", FLAT_WORK_LIMIT, 1) == "flat"
    assert choose_layout("auto", FLAT_WORK_LIMIT + 1, 1) == "balanced"
    assert choose_layout("flat", 10**6, 10**6) == "flat"  # explicit stays
    assert choose_layout("bonsai", 10**6, 10**6) == "bonsai"


def test_trees_auto_picks_at_scale_keep_every_leaf_small(projects):
    """A leaf trains one classifier per subject against all of its subjects'
    documents: with unbalanced clusters cut at depth 3, catalogue subjects
    piled up in leaves of over a thousand and training grew as documents^2.2.
    The layout `auto` picks at scale splits into equal clusters until a node
    holds fewer than omikuji's `min_branch_size` subjects."""
    import omikuji

    from backends.xmc import choose_layout

    layout = choose_layout("auto", 200_000, 120_000)
    hyper = projects.get("xmc-en").backend.hyper_params(120_000, layout)
    assert hyper["cluster_balanced"] is True
    k, min_branch = hyper["cluster_k"], omikuji.Model.default_hyper_param()
    # depth at which equal clusters of 120k subjects are below min_branch_size
    levels = 1
    while 120_000 / k ** (levels - 1) >= min_branch.min_branch_size:
        levels += 1
    assert hyper["max_depth"] >= levels


@pytest.fixture
def trained_groups(monkeypatch):
    """The number of trees of each omikuji training call, as they are made."""
    import omikuji

    trained = []
    train_on_data = omikuji.Model.train_on_data

    def counting(data, hp, n_threads=None):
        trained.append(hp.n_trees)
        return train_on_data(data, hp, n_threads=n_threads)

    monkeypatch.setattr(omikuji.Model, "train_on_data", counting)
    return trained


@pytest.mark.parametrize(
    ("trees_at_once", "jobs", "groups"),
    [(1, 2, [1, 1, 1]), (0, 2, [2, 1]), (0, 1, [1, 1, 1]), (5, 2, [3])],
)
def test_trees_are_trained_and_saved_a_few_at_a_time(
    projects, trained_groups, trees_at_once, jobs, groups
):
    """The forest grows with the training data (1.3 GB on disk at 200k
    documents): trained all at once, memory held every tree. Trees trained
    together (one per core by default) are saved before the next ones start,
    and the saved forest has them all."""
    project = projects.get("xmc-en")
    project.config.params.update(preset="bonsai", trees_at_once=str(trees_at_once))
    project.train([DATA / "tiny.tsv"], jobs=jobs)
    assert trained_groups == groups
    trees = sorted(p.name for p in (project.model_dir / "omikuji").glob("tree*"))
    assert trees == ["tree0.cbor", "tree1.cbor", "tree2.cbor"]
    project.unload()
    assert top_uri(project, "galaxies and telescopes") == ASTRONOMY


@pytest.mark.parametrize(
    ("free", "total", "groups"),
    [(2**40, 2**42, [2, 1]), (0, 2**42, [1, 1, 1]), (2**40, 0, [1, 1, 1])],
)
def test_by_default_trees_train_together_within_a_third_of_the_memory(
    projects, trained_groups, monkeypatch, capfd, free, total, groups
):
    """One tree per core, unless the memory that many need (estimated from
    the training data's size) is not free, or is more than a third of the
    machine's: at a million documents one tree took 6.3 GB, two at once
    9.3 GB for little less time."""
    import backends.xmc

    monkeypatch.setattr(backends.xmc, "available_memory", lambda: free)
    monkeypatch.setattr(backends.xmc, "total_memory", lambda: total)
    project = projects.get("xmc-en")
    project.config.params.update(preset="bonsai")
    project.train([DATA / "tiny.tsv"], jobs=2)
    assert trained_groups == groups
    assert f"({groups[0]} at a time, about " in capfd.readouterr().err


def test_trees_that_fit_the_free_memory():
    from backends.xmc import TrainingSize

    size = TrainingSize(examples=1_000_000, weights=87_000_000, subjects=200_000)
    one, two = size.peak_bytes(1), size.peak_bytes(2)
    assert 6e9 < one < two < 11e9  # measured at 1M documents: 6.3 and 9.3 GB
    assert size.trees_that_fit(two, most=4) == 2
    assert size.trees_that_fit(two - 1, most=4) == 1
    assert size.trees_that_fit(0, most=4) == 1  # one tree, however little is free
    assert size.trees_that_fit(2**50, most=3) == 3


def test_the_training_file_is_written_with_the_model_not_in_tmp(projects, monkeypatch):
    """omikuji reads its training data from a file (1.3 GB at a million
    documents): written into the model's work directory, it is removed with
    the leftovers of a killed training, and never fills a RAM-backed /tmp."""
    import omikuji

    seen = []
    train_on_data = omikuji.Model.train_on_data

    def recording(data, hp, n_threads=None):
        seen.append(Path(data))
        return train_on_data(data, hp, n_threads=n_threads)

    monkeypatch.setattr(omikuji.Model, "train_on_data", recording)
    project = projects.get("xmc-en")
    project.config.params.update(preset="bonsai", trees_at_once="3")
    project.train([DATA / "tiny.tsv"])
    model = project.model_dir.resolve()
    assert seen and all(p.parent.parent == model for p in seen)
    assert not any(model.glob(".train-*"))  # removed once trained


def test_flat_targets_are_sparse_columns():
    from backends.xmc import target_columns

    targets = target_columns([[3, 9], [9], [8]], np.array([3, 8, 9]))
    assert sp.issparse(targets) and targets.format == "csc"
    assert targets.toarray().tolist() == [
        [True, False, True],
        [False, False, True],
        [False, True, False],
    ]


def test_flat_classifiers_are_the_same_whatever_the_jobs():
    """liblinear's coordinate order comes from one generator per process:
    fitted on threads, the classifiers drew from it in turn and came out
    different from run to run."""
    from backends.xmc import fit_classifiers, with_bias

    rng = np.random.default_rng(3)
    x = with_bias(sp.random(1500, 400, density=0.05, format="csr", rng=rng))
    targets = sp.random(1500, 24, density=0.1, format="csc", rng=rng) > 0
    fits = [fit_classifiers(x, targets.tocsc(), 1.0, 0.0, 0, jobs) for jobs in (1, 2)]
    assert len(fits[0]) == len(fits[1]) == 24
    for (kept, weights), (kept_too, weights_too) in zip(*fits, strict=True):
        assert kept.tolist() == kept_too.tolist()
        assert weights.tobytes() == weights_too.tobytes()


def die(*_):
    os._exit(1)  # as the kernel's out-of-memory killer would end it


def test_a_flat_fit_process_that_dies_is_an_error_not_a_traceback(monkeypatch):
    from backends import xmc

    monkeypatch.setattr(xmc, "fit_columns", die)  # found by name in the process
    x = xmc.with_bias(sp.random(50, 20, density=0.2, format="csr", random_state=0))
    targets = sp.random(50, 4, density=0.3, format="csc", random_state=0) > 0
    with pytest.raises(IndexerError, match="died: out of memory, or killed"):
        xmc.fit_classifiers(x, targets.tocsc(), 1.0, 0.0, 0, jobs=2)


def test_bad_preset_lists_the_choices(projects):
    project = projects.get("xmc-en")
    project.config.params["preset"] = "forest"
    with pytest.raises(
        ConfigError, match="valid choices: auto, flat, balanced, bonsai, parabel"
    ):
        _ = project.backend


def test_model_is_json_and_cbor_not_pickle(projects):
    project = projects.get("xmc-en")
    project.config.params["preset"] = "bonsai"
    project.train([DATA / "tiny.tsv"])
    files = [p for p in project.model_dir.resolve().rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"settings.json", "tree0.cbor", "labels.npz", "manifest.json"} <= names
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]
    for path in files:
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks pickled"
    settings = project.model_dir / "omikuji" / "settings.json"
    assert json.loads(settings.read_text())["n_features"] > 0


def test_omikuji_logging_stays_off_stdout(projects, capfd):
    project = projects.get("xmc-en")
    project.train([DATA / "tiny.tsv"])
    project.unload()
    project.suggest(["stars and telescopes"])
    assert "INFO" not in capfd.readouterr().out


def test_libsvm_file_maps_subjects_to_label_positions(tmp_path):
    from backends.xmc import write_libsvm

    x = sp.csr_matrix(np.array([[0.5, 0, 0.25], [0, 0, 0], [0, 1.0, 0]]))
    labels = np.array([3, 8, 9])
    path = tmp_path / "train.txt"
    written = write_libsvm(path, x, [[8, 9], [3], [3]], labels)
    assert written == 2  # the document without features is left out
    assert path.read_text().splitlines() == ["2 3 3", "1,2 0:0.5 2:0.25", "0 1:1"]


def test_libsvm_file_is_written_as_it_goes(tmp_path):
    """omikuji's training file is streamed, never held whole in memory."""
    import tracemalloc

    from backends.xmc import write_libsvm

    rng = np.random.default_rng(0)
    x = sp.random(2000, 5000, density=0.04, format="csr", dtype=np.float32, rng=rng)
    subjects = [[int(s)] for s in rng.integers(0, 10, 2000)]
    path = tmp_path / "train.txt"
    tracemalloc.start()
    try:
        write_libsvm(path, x, subjects, np.arange(10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 2_000_000
    assert peak < path.stat().st_size / 10

"""`indexer train FUSION --cross-fit K --engine ray` against a real local Ray
cluster with 2 CPUs: each training of a source a Ray task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.batch.ray_engine import RETRIES
from indexer.project import Projects
from tests.batch.conftest import ROOT
from tests.batch.ray_training_hooks import HOOKS_ENV
from tests.conftest import DATA, PROJECTS_CFG

ray = pytest.importorskip("ray")

FOLDS = 3
SOURCES = ("tfidf-en", "xmc-en", "lexical-en")


@pytest.fixture(scope="module")
def hooks(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hooks")


@pytest.fixture(scope="module", autouse=True)
def cluster(hooks):
    """One local cluster for the module; its workers import this checkout and
    log (or fail) the trainings as `ray_training_hooks` says."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(ROOT), HOOKS_ENV: str(hooks)},
            "worker_process_setup_hook": "tests.batch.ray_training_hooks.install",
        },
    )
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_hooks_yet(hooks):
    for name in ("trainings.log", "running.log", "fail.json"):
        (hooks / name).unlink(missing_ok=True)


def trainings(hooks: Path) -> list[str]:
    """The trainings for folds the workers started, as "FOLD SOURCE" lines."""
    log = hooks / "trainings.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def corpus(tmp_path) -> Path:
    """The tiny corpus thrice, worded apart (30 documents, in 3 folds)."""
    lines = (DATA / "tiny.tsv").read_text(encoding="utf-8").splitlines()
    out = []
    for copy in range(3):
        for line in lines:
            text, subjects = line.split("\t")
            out.append(f"{text} (part {copy})\t{subjects}")
    path = tmp_path / "corpus.tsv"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def most_at_once(hooks: Path) -> int:
    """The most fold trainings that ran at the same time."""
    now = most = 0
    for line in (hooks / "running.log").read_text().splitlines():
        now += 1 if line == "+" else -1
        most = max(most, now)
    return most


def fusion_scores(projects: Projects, corpus: Path) -> np.ndarray:
    texts = [line.split("\t")[0] for line in corpus.read_text().splitlines()]
    texts += ["solar panels and wind power", "quantum physics of light"]
    return projects.get("calibrated-en").suggest(texts).matrix.toarray()


def trained_here(tmp_path: Path, corpus: Path, config: str = PROJECTS_CFG) -> Projects:
    """A workspace of its own, its fusion cross-fitted by the local engine."""
    local = tmp_path / "local"
    local.mkdir()
    (local / "projects.cfg").write_text(config.format(data=DATA))
    projects = Projects.from_path(local / "projects.cfg")
    fusion = projects.get("calibrated-en")
    fusion.config.params["cross_fit"] = FOLDS
    fusion.unload()
    fusion.train([corpus])
    return projects


def cross_fit_on_ray(run_cli, corpus: Path, workers: int):
    return run_cli(
        "train", "calibrated-en", str(corpus), "--cross-fit", str(FOLDS),
        "--engine", "ray", "--workers", str(workers),
    )  # fmt: skip


# the fusion is the last section: fitted on a sample of 20 of the 30 documents,
# which the Ray workers must score as the local engine does
SAMPLED_CFG = PROJECTS_CFG + "fit_documents = 20\n"


def test_ray_and_local_cross_fits_give_the_same_fusion(
    run_cli, workspace, projects, corpus, tmp_path, hooks
):
    (workspace / "projects.cfg").write_text(SAMPLED_CFG.format(data=DATA))
    result = cross_fit_on_ray(run_cli, corpus, workers=2)
    assert result.exit_code == 0, result.output
    # 3 whole-corpus trainings and 3 per fold, each a task
    assert f"{len(SOURCES) * (FOLDS + 1)} trainings ran on the Ray cluster" in (
        result.output
    )
    assert sorted(trainings(hooks)) == sorted(
        f"{fold} {source}" for fold in range(FOLDS) for source in SOURCES
    )
    assert "fitted on, 20 of the 30 documents" in result.output
    here = trained_here(tmp_path, corpus, SAMPLED_CFG)
    on_ray = fusion_scores(projects, corpus)
    assert on_ray.any()
    np.testing.assert_array_equal(on_ray, fusion_scores(here, corpus))
    # the sources serve models of the whole corpus, swapped in as here
    digest = projects.get("calibrated-en").corpus([corpus]).digest()
    for source in SOURCES:
        assert projects.get(source).backend.manifest["corpus_digest"] == digest
    assert not (workspace / "data" / "projects" / "cross-fit").exists()


def test_a_training_that_kills_its_worker_stops_the_run_naming_it_and_a_rerun_resumes(  # noqa: E501
    run_cli, workspace, projects, corpus, tmp_path, hooks
):
    last = FOLDS - 1
    (hooks / "fail.json").write_text(
        json.dumps({"fold": last, "source": "xmc-en", "how": "crash"})
    )
    # one worker: the whole-corpus trainings, then the folds in order
    result = cross_fit_on_ray(run_cli, corpus, workers=1)
    assert result.exit_code == 1, result.output
    assert (
        f"the training of 'xmc-en' for fold {FOLDS} of {FOLDS} lost its Ray "
        f"worker {RETRIES + 1} times (out of memory, or a crash)"
    ) in result.output
    assert f"folds 1-{FOLDS - 1} of {FOLDS} are kept: rerun" in result.output
    assert "Traceback" not in result.output
    # tried again a bounded number of times, then given up
    assert trainings(hooks).count(f"{last} xmc-en") == RETRIES + 1
    assert most_at_once(hooks) == 1  # --workers 1, on a cluster of 2 CPUs
    for source in SOURCES:  # nothing swapped in
        assert not projects.get(source).is_trained

    (hooks / "fail.json").unlink()
    (hooks / "trainings.log").unlink()
    result = cross_fit_on_ray(run_cli, corpus, workers=2)
    assert result.exit_code == 0, result.output
    assert f"Resuming: folds 1-{FOLDS - 1} of {FOLDS} reused" in result.output
    # only the last fold is trained again; the staged models were kept too
    assert sorted(trainings(hooks)) == sorted(f"{last} {s}" for s in SOURCES)
    assert f"{len(SOURCES)} trainings ran on the Ray cluster" in result.output
    here = trained_here(tmp_path, corpus)
    for source in SOURCES:
        projects.get(source).unload()
    np.testing.assert_array_equal(
        fusion_scores(projects, corpus), fusion_scores(here, corpus)
    )


def test_an_error_in_a_training_stops_the_run_at_once(run_cli, projects, corpus, hooks):
    (hooks / "fail.json").write_text(
        json.dumps({"fold": 0, "source": "tfidf-en", "how": "raise"})
    )
    result = cross_fit_on_ray(run_cli, corpus, workers=1)
    assert result.exit_code == 1, result.output
    assert (
        f"the training of 'tfidf-en' for fold 1 of {FOLDS} failed: ValueError: "
        "tfidf-en cannot train on fold 0"
    ) in result.output
    assert "no fold was finished" in result.output
    assert "Traceback" not in result.output
    # the same documents would fail again: not retried
    assert trainings(hooks).count("0 tfidf-en") == 1
    assert not projects.get("tfidf-en").is_trained


def test_a_worker_that_sees_another_corpus_refuses_it(projects, corpus, tmp_path):
    from backends.fusion_ray import Job, Training, train
    from indexer.batch.work import ProjectRef
    from indexer.errors import IndexerError

    fusion = projects.get("calibrated-en")
    ref = ProjectRef.of(fusion, str(corpus.parent / "projects.cfg"))
    digest = fusion.corpus([corpus]).digest()
    # what the driver read, before the node's copy of the corpus changed
    job = Job(ref, (str(corpus),), "en", digest, FOLDS, 32, 1)
    with open(corpus, "a") as f:
        f.write("a document only the workers see\thttp://example.org/t/physics\n")
    with pytest.raises(IndexerError, match=r"its digest differs\): the Ray"):
        train(job, Training("tfidf-en", 0, str(tmp_path / "fold-0-tfidf-en")))
    assert not (tmp_path / "fold-0-tfidf-en").exists()

"""Online learning: `Project.learn` and `indexer learn` update a trained model
from new documents without retraining, atomically, and the server reloads it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from backends.fusion import HeldOut
from indexer.errors import InputError, NotSupportedError, NotTrainedError
from indexer.project import Projects
from indexer.storage import load_arrays

from .conftest import DATA, shared_dataset

LINES = (DATA / "tiny.tsv").read_text().splitlines(keepends=True)
BIOLOGY = "http://example.org/t/biology"


@pytest.fixture
def halves(tmp_path):
    """tiny.tsv split in two: the first half has no biology document."""
    first = [line for line in LINES if BIOLOGY not in line]
    second = [line for line in LINES if BIOLOGY in line]
    paths = tmp_path / "first.tsv", tmp_path / "second.tsv"
    for path, lines in zip(paths, (first, second), strict=True):
        path.write_text("".join(lines))
    return paths


def suggested_uris(project, text, limit=3):
    batch = project.suggest([text], limit=limit)
    return [project.vocab.uris[s.subject] for s in batch.row(0)]


# -- tfidf -------------------------------------------------------------------------


def test_tfidf_learns_a_new_subject_and_records_it(projects, halves):
    project = projects.get("tfidf-en")
    project.train([halves[0]])
    assert BIOLOGY not in suggested_uris(project, "genes in living cells")
    first_version = os.readlink(project.model_dir)

    info = project.learn([halves[1]])

    assert info["documents"] == 2 and info["total_documents"] == len(LINES)
    assert suggested_uris(project, "genes in living cells")[0] == BIOLOGY
    manifest = project.backend.manifest
    assert manifest["documents"] == len(LINES)
    (learned,) = manifest["learned"]
    assert learned["documents"] == 2 and len(learned["corpus_digest"]) == 16
    assert manifest["corpus_digest"] != learned["corpus_digest"]
    assert manifest["updated_at"] == learned["learned_at"] >= manifest["trained_at"]
    assert project.seen_subjects()[project.vocab.id_of(BIOLOGY)] == 2
    # a new version replaced the old one, which is gone
    assert os.readlink(project.model_dir) != first_version
    assert not (project.model_dir.parent / first_version).exists()


def test_tfidf_subject_vectors_are_the_sums_over_all_documents(projects, halves):
    """Learning adds the new documents' vectors (with the trained terms and
    idf) to the subjects' sums: the same centroids as summing all at once."""
    from indexer.corpus import indexed_documents
    from indexer.features import TfidfFeatures, normalize_rows, subject_matrix

    project = projects.get("tfidf-en")
    project.train([halves[0]])
    project.learn([halves[1]])

    features = TfidfFeatures.load(project.model_dir)
    texts, subjects, _ = indexed_documents(project.corpus(halves))
    y = subject_matrix(subjects, len(project.vocab))
    expected = normalize_rows(y.T.tocsr() @ features.transform(texts)).toarray()
    from backends.tfidf import load_centroids

    learned = load_centroids(project.model_dir)[0].T  # terms x subjects
    np.testing.assert_allclose(learned.toarray(), expected, atol=1e-5)


def test_tfidf_model_without_norms_asks_for_one_retraining(projects, halves):
    import shutil

    from backends.tfidf import load_centroids
    from indexer.storage import save_arrays

    project = projects.get("tfidf-en")
    project.train([halves[0]])
    centroids = load_centroids(project.model_dir)[0].T.tocsr()
    shutil.rmtree(project.model_dir / "centroids")
    path = project.model_dir / "centroids.npz"
    save_arrays(path, {"centroids": centroids})  # the oldest layout
    version = os.readlink(project.model_dir)
    with pytest.raises(NotTrainedError, match="retrain it once"):
        project.learn([halves[1]])
    # the failed learn left the model as it was, and no half-written version
    assert os.readlink(project.model_dir) == version
    assert sorted(p.name for p in project.model_dir.parent.iterdir()) == [
        version,
        "model",
    ]


# -- errors ------------------------------------------------------------------------


# -- lexical -----------------------------------------------------------------------


def test_lexical_adds_the_documents_to_its_match_statistics(projects, halves):
    project = projects.get("lexical-en")
    project.train([halves[0]])
    biology = project.vocab.id_of(BIOLOGY)
    before = load_arrays(project.model_dir / "match_stats.npz")
    weights = (project.model_dir / "weights.json").read_text()
    assert before["hits"][biology] == 0

    info = project.learn([halves[1]])

    after = load_arrays(project.model_dir / "match_stats.npz")
    assert info["documents_learned"] == 2
    assert int(after["documents"]) == int(before["documents"]) + 2
    assert after["counts"][biology] == 2  # two documents, one names "biology"
    assert after["hits"][biology] == 1 and after["matched"][biology] == 1
    # the scorer learnt in training is kept
    assert (project.model_dir / "weights.json").read_text() == weights
    assert suggested_uris(project, "biology of cells")[0] == BIOLOGY


def test_backend_that_does_not_learn_says_retrain(projects):
    project = projects.get("xmc-en")
    with pytest.raises(NotSupportedError, match="does not learn online; retrain it"):
        project.learn([DATA / "tiny.tsv"])


def test_plain_ensemble_points_to_its_sources(projects):
    with pytest.raises(NotSupportedError, match=r"sources learn \(tfidf-en, lexical"):
        projects.get("ensemble-en").learn([DATA / "tiny.tsv"])


def test_untrained_project_must_be_trained_first(projects):
    with pytest.raises(NotTrainedError, match="indexer train tfidf-en CORPUS` first"):
        projects.get("tfidf-en").learn([DATA / "tiny.tsv"])


def test_documents_with_only_unknown_subjects_are_refused(projects, tmp_path):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    corpus = tmp_path / "unknown.tsv"
    corpus.write_text("stars and galaxies\t<http://elsewhere/x>\n")
    with pytest.raises(InputError, match="No document of the corpus to learn has a"):
        project.learn([corpus])
    assert "learned" not in project.backend.manifest


def test_unknown_subjects_are_reported(projects, tmp_path):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    corpus = tmp_path / "mixed.tsv"
    corpus.write_text(
        "stars and galaxies\t<http://example.org/t/astronomy> <http://elsewhere/x>\n"
    )
    info = project.learn([corpus])
    assert any("http://elsewhere/x" in w for w in info["warnings"])


# -- knn ---------------------------------------------------------------------------


@pytest.fixture
def dense_projects(dense_workspace):
    return Projects.from_path(dense_workspace / "projects.cfg")


def test_knn_adds_the_documents_to_its_index(dense_projects, dense_workspace, halves):
    project = dense_projects.get("knn-en")
    project.train([halves[0]])
    info = project.learn([halves[1]])
    assert info["documents_indexed"] == len(LINES)
    learned = project.backend.suggest_batch(["Genes and proteins in living cells"])

    # the same scores as training on all documents at once (exact index)
    reference = Projects.from_path(dense_workspace / "projects.cfg").get("knn-en")
    reference.train(halves)
    expected = reference.backend.suggest_batch(["Genes and proteins in living cells"])
    np.testing.assert_allclose(
        learned.matrix.toarray(), expected.matrix.toarray(), atol=1e-5
    )
    biology = project.vocab.id_of(BIOLOGY)
    why = project.backend.explain("Genes and proteins in living cells", [biology])
    assert why[biology]["documents"][0]["text"] == "Genes and proteins in living cells"


def test_knn_with_another_encoder_must_retrain(
    dense_projects, dense_workspace, halves, tmp_path
):
    project = dense_projects.get("knn-en")
    project.train([halves[0]])
    version = os.readlink(project.model_dir)
    cfg = dense_workspace / "projects.cfg"
    other = tmp_path / "other-encoder"
    other.symlink_to(project.config.params["model"])
    cfg.write_text(cfg.read_text().replace(project.config.params["model"], str(other)))
    changed = Projects.from_path(cfg).get("knn-en")
    with pytest.raises(NotTrainedError, match="trained with the encoder"):
        changed.learn([halves[1]])
    assert os.readlink(project.model_dir) == version


# -- calibrated fusion ---------------------------------------------------------------


def test_fusion_refits_on_all_held_out_scores(projects, workspace, halves):
    """Learning the second half gives the model trained on both halves."""
    for source in ("tfidf-en", "xmc-en"):
        projects.get(source).train([DATA / "tiny.tsv"])
    project = projects.get("calibrated-en")
    project.train([halves[0]])
    info = project.learn([halves[1]])
    assert info["heldout_documents"] == len(LINES)
    learned = load_arrays(project.model_dir / "fusion.npz")

    reference = Projects.from_path(workspace / "projects.cfg").get("calibrated-en")
    reference.clear()
    reference.train(halves)
    expected = load_arrays(reference.model_dir / "fusion.npz")
    assert sorted(learned) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(learned[key], expected[key], atol=1e-6)


ASTRONOMY = "http://example.org/t/astronomy"


def test_rest_learn_on_a_fusion_whose_zero_shot_source_suggests_nothing(workspace):
    """The zero-shot source suggests nothing for the taught text, so its
    group of held-out scores is empty: the learn answers 204, not a 500."""
    import json
    import urllib.request

    from indexer.rest import create_app

    from .test_rest import running_server

    projects = Projects.from_path(workspace / "projects.cfg")
    for source in ("tfidf-en", "xmc-en"):
        projects.get(source).train([DATA / "tiny.tsv"])
    projects.get("calibrated-en").train([DATA / "tiny.tsv"])
    text = "stars and telescopes, taught once"
    assert not projects.get("lexical-en").suggest([text]).row(0)

    app = create_app(workspace / "projects.cfg", api_key="k", check_interval=0)
    body = json.dumps([{"text": text, "subjects": [{"uri": ASTRONOMY}]}]).encode()
    with running_server(app) as base:
        request = urllib.request.Request(
            f"{base}/v1/projects/calibrated-en/learn",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "X-API-Key": "k"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 204
    manifest = projects.get("calibrated-en").backend.manifest
    assert manifest["documents"] == len(LINES) + 1
    assert manifest["learned"][0]["info"]["documents_learned"] == 1


def test_fusion_learns_a_document_no_source_suggests_anything_for(fusion, tmp_path):
    path = tmp_path / "nothing.tsv"
    path.write_text(f"zzzz qqqq\t<{ASTRONOMY}>\n")
    assert not any(
        fusion.projects.get(s).suggest(["zzzz qqqq"]).row(0)
        for s in ("tfidf-en", "xmc-en", "lexical-en")
    )
    info = fusion.learn([path])
    assert info["documents_learned"] == 1
    held = HeldOut.load(fusion.model_dir / "heldout.npz")
    assert held.n_documents == len(LINES) + 1
    assert held.doc_gold[-1] == [fusion.vocab.id_of(ASTRONOMY)]
    assert held.candidates.docs.max() < len(LINES)  # it added no candidate


def learn_one_at_a_time(project, tmp_path, learns: int):
    """Learn `learns` documents one per call (tiny.tsv's, reworded); the
    model's size in bytes and the learn's CPU seconds after each call."""
    import time

    sizes, seconds = [], []
    for i in range(learns):
        text, subjects = LINES[i % len(LINES)].rstrip("\n").split("\t")
        path = tmp_path / "one.tsv"
        path.write_text(f"{text} (learnt {i})\t{subjects}\n")
        started = time.process_time()
        project.learn([path])
        seconds.append(time.process_time() - started)
        version = project.model_dir.resolve()
        sizes.append(sum(f.stat().st_size for f in version.rglob("*") if f.is_file()))
    return sizes, seconds


@pytest.fixture
def fusion(projects):
    """calibrated-en fitted on tiny.tsv, keeping its 5 latest learnt documents."""
    for source in ("tfidf-en", "xmc-en"):
        projects.get(source).train([DATA / "tiny.tsv"])
    project = projects.get("calibrated-en")
    project.config.params["learn_window"] = 5
    project.unload()
    project.train([DATA / "tiny.tsv"])
    return project


def test_fusion_learning_one_document_at_a_time_keeps_the_model_flat(
    fusion, tmp_path, monkeypatch
):
    monkeypatch.setattr("backends.fusion.LEARN_HISTORY", 4)
    sizes, _ = learn_one_at_a_time(fusion, tmp_path, 10)
    held = HeldOut.load(fusion.model_dir / "heldout.npz")
    assert held.n_documents == len(LINES) + 5 and held.trained == len(LINES)
    assert held.group_seen.shape[0] == 1  # the sources never changed
    # the last five learnt documents are those kept
    assert held.doc_gold[-5:] == [
        [fusion.vocab.id_of(u.strip("<>")) for u in line.split("\t")[1].split()]
        for line in LINES[5:10]
    ]
    manifest = fusion.backend.manifest
    assert manifest["documents"] == len(LINES) + 10
    assert [x["info"]["documents_learned"] for x in manifest["learned"]] == [1] * 4
    assert manifest["learned_earlier"] == {"calls": 6, "documents": 6}
    assert max(sizes[5:]) - min(sizes[5:]) < 64  # flat, up to a digit or two


@pytest.mark.slow
def test_fusion_learning_200_times_keeps_size_and_learn_time_flat(fusion, tmp_path):
    sizes, seconds = learn_one_at_a_time(fusion, tmp_path, 200)
    assert sizes[-1] <= sizes[0] + 8 * 1024  # the window and history, filled
    assert max(sizes[25:]) - min(sizes[25:]) < 64
    early, late = np.median(seconds[25:45]), np.median(seconds[-20:])
    assert late < 1.5 * early + 0.02, (early, late)


def test_grouped_scores_learnt_with_unchanged_sources_stay_bounded():
    """200 learns of one document: one row of frequencies in all, and the
    documents beyond the window dropped (the oldest learnt first)."""
    from backends.fusion import Candidates

    def group(doc: int, seen) -> HeldOut:
        candidates = Candidates(
            np.zeros(3, np.int64),
            np.array([doc % 7, 7, 8]),
            np.full((3, 2), 0.5),
            np.ones((3, 2)),
            9,
        )
        return HeldOut.of_group(candidates, [[doc % 7]], 50, seen)

    seen = np.arange(9) % 3
    trained = group(0, seen).extend(group(1, seen + 1))
    held = trained
    for doc in range(200):
        held = held.extend(group(doc, seen), learned=True).latest_learned(10)
    assert held.n_documents == 12 and held.trained == 2
    assert held.group_seen.shape[0] == 2  # the trained ones; learns reuse the first
    assert held.doc_gold == [[0], [1]] + [[d % 7] for d in range(190, 200)]
    np.testing.assert_array_equal(held.doc_group, [0, 1] + [0] * 10)
    np.testing.assert_array_equal(held.candidates.docs, np.repeat(np.arange(12), 3))
    assert len(held.gold) == 36 and held.gold.sum() == 12


def test_a_fusion_learn_does_not_copy_the_model_it_replaces(fusion, tmp_path):
    stray = fusion.model_dir.resolve() / "stray.bin"
    stray.write_bytes(b"x" * 100_000)
    learn_one_at_a_time(fusion, tmp_path, 1)
    assert sorted(p.name for p in fusion.model_dir.resolve().iterdir()) == [
        "fusion.json",
        "fusion.npz",
        "heldout.npz",
        "manifest.json",
        "subjects.npz",
    ]


# -- the served model ----------------------------------------------------------------


def test_server_reloads_the_learned_model(workspace, halves):
    from indexer.rest.served import ServedProjects

    served = ServedProjects(
        Projects.from_path(workspace / "projects.cfg"), check_interval=0
    )
    Projects.from_path(workspace / "projects.cfg").get("tfidf-en").train([halves[0]])
    project = served.projects.get("tfidf-en")
    served.refresh(project)
    assert BIOLOGY not in suggested_uris(project, "genes in living cells")

    # another process (the CLI) learns; the server notices the new version
    Projects.from_path(workspace / "projects.cfg").get("tfidf-en").learn([halves[1]])
    served.refresh(project)
    assert suggested_uris(project, "genes in living cells")[0] == BIOLOGY


# -- the command -------------------------------------------------------------------


def test_cli_learn(run_cli, halves):
    assert run_cli("train", "tfidf-en", str(halves[0])).exit_code == 0
    result = run_cli("learn", "tfidf-en", str(halves[1]))
    assert result.exit_code == 0, result.output
    assert "Learned 2 documents into 'tfidf-en'" in result.output
    assert f"holds {len(LINES)} documents" in result.output
    shown = run_cli("show-project", "tfidf-en").output
    assert f"documents:  {len(LINES)}" in shown and "learned:    2 documents" in shown


def test_cli_learn_errors(run_cli, tmp_path):
    result = run_cli("learn", "xmc-en", str(DATA / "tiny.tsv"))
    assert result.exit_code == 1
    assert "Backend 'xmc' of project 'xmc-en' does not learn online; retrain it" in (
        result.output
    )
    assert run_cli("learn", "nope", str(DATA / "tiny.tsv")).exit_code == 2
    run_cli("train", "tfidf-en", str(DATA / "tiny.tsv"))
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("stars\t<http://elsewhere/x>\n")
    result = run_cli("learn", "tfidf-en", str(unknown))
    assert result.exit_code == 1
    assert "No document of the corpus to learn has a subject" in result.output
    assert "http://elsewhere/x" in result.output


def test_cli_learn_skips_records_without_a_text(run_cli, projects, tmp_path):
    """A JSONL `"text": null` (or 5, or ["a"]) is no document: it is skipped
    and reported with its line, never learnt as the text "None"."""
    run_cli("train", "tfidf-en", str(DATA / "tiny.tsv"))
    corpus = tmp_path / "new.jsonl"
    corpus.write_text(
        f'{{"text": null, "subjects": ["{BIOLOGY}"]}}\n'
        f'{{"text": 5, "subjects": ["{BIOLOGY}"]}}\n'
        f'{{"text": ["a"], "subjects": ["{BIOLOGY}"]}}\n'
        f'{{"text": "genes in living cells", "subjects": ["{BIOLOGY}"]}}\n'
    )
    result = run_cli("learn", "tfidf-en", str(corpus))
    assert result.exit_code == 0, result.output
    assert "Learned 1 documents into 'tfidf-en'" in result.output
    assert (
        "Warning: 3 records have no text and were skipped, e.g. new.jsonl:1 (no "
        "text); new.jsonl:2 (the text is 5, not a string); new.jsonl:3"
    ) in result.output
    assert projects.get("tfidf-en").backend.manifest["documents"] == len(LINES) + 1
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text('{"text": null}\n')
    refused = run_cli("learn", "tfidf-en", str(nothing))
    assert refused.exit_code == 1
    assert f"No record of '{nothing}' has a text, e.g. nothing.jsonl:1" in (
        refused.output
    )


def hold_elsewhere(project) -> int:
    """Take the project's lock as another process would (its own file
    description, not this thread's re-entrant hold); closing the fd frees it."""
    import fcntl
    import json

    project.lock.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(project.lock.path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    holder = {"pid": 4242, "command": "indexer train tfidf-en /data/x.tsv"}
    os.pwrite(fd, json.dumps({**holder, "since": "2026-01-01T00:00:00"}).encode(), 0)
    return fd


def test_cli_learn_on_a_busy_project_says_wait_and_can_wait(run_cli, projects, halves):
    import threading

    project = projects.get("tfidf-en")
    project.train([halves[0]])
    fd = hold_elsewhere(project)
    try:
        busy = run_cli("learn", "tfidf-en", str(halves[1]))
    finally:
        os.close(fd)
    assert busy.exit_code == 1
    assert "Project 'tfidf-en' is busy: process 4242 (indexer train" in busy.output
    assert busy.output.rstrip().endswith(
        "Wait for it to finish, or run again with --wait"
    )
    fd = hold_elsewhere(project)
    threading.Timer(0.5, os.close, [fd]).start()
    waited = run_cli("learn", "tfidf-en", str(halves[1]), "--wait")
    assert waited.exit_code == 0, waited.output
    assert "Waiting: Project 'tfidf-en' is busy" in waited.output
    assert "Learned 2 documents" in waited.output


# -- real data -----------------------------------------------------------------------


def test_tfidf_learning_a_fifth_matches_training_on_all_archaeology(tmp_path):
    from indexer.eval import Evaluator

    data = shared_dataset("yso-archaeology")
    lines = (data / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    first, rest = tmp_path / "first.tsv", tmp_path / "rest.tsv"
    first.write_text("".join(lines[i] for i in range(len(lines)) if i % 5))
    rest.write_text("".join(lines[i] for i in range(0, len(lines), 5)))
    scores = []
    for variant in ("all", "learned"):
        home = tmp_path / variant
        home.mkdir()
        (home / "projects.cfg").write_text(
            f"[vocab:arch]\nsource = {data / 'vocab.ttl'}\n"
            "[tfidf]\nlanguage = fi\nvocab = arch\nbackend = tfidf\n"
        )
        project = Projects.from_path(home / "projects.cfg").get("tfidf")
        if variant == "all":
            project.train([data / "train.tsv"])
        else:
            project.train([first])
            project.learn([rest])
        docs = list(project.corpus([data / "test.tsv"]))
        evaluator = Evaluator(len(project.vocab), limit=5)
        evaluator.add(
            [d.subjects for d in docs],
            project.backend.suggest_batch([d.text for d in docs]),
        )
        scores.append(evaluator.results()["f1@5"])
    assert abs(scores[0] - scores[1]) < 0.01 and scores[0] > 0.2

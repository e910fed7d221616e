from __future__ import annotations

import numpy as np
import pytest

from indexer.analyzer import get_analyzer
from indexer.errors import InputError, NotTrainedError

from ..conftest import DATA


def top_uri(project, text):
    batch = project.suggest([text], limit=1)
    return project.vocab.uris[batch.row(0)[0].subject]


def test_untrained_project_says_how_to_train(projects):
    with pytest.raises(NotTrainedError, match="indexer train tfidf-en CORPUS"):
        projects.get("tfidf-en").suggest(["stars"])


def test_learns_subjects_from_documents(projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    assert (
        top_uri(project, "galaxies and telescopes") == "http://example.org/t/astronomy"
    )
    assert top_uri(project, "genes in cells") == "http://example.org/t/biology"


def test_suggests_only_subjects_seen_in_training(projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "fulltext"])
    seen = project.seen_subjects() > 0
    batch = project.suggest(["astronomy music history physics biology"], limit=10)
    assert all(seen[s.subject] for s in batch.row(0))


def test_corpus_without_known_subjects_is_rejected(projects, tmp_path):
    corpus = tmp_path / "c.tsv"
    corpus.write_text("some text\t<http://elsewhere/x>\n")
    with pytest.raises(
        InputError, match="No document of the training corpus has a subject"
    ):
        projects.get("tfidf-en").train([corpus])


def test_bigrams(workspace, projects):
    project = projects.get("tfidf-en")
    project.config.params["ngram"] = "2"
    info = project.train([DATA / "tiny.tsv"])
    # every distinct stem and every distinct pair of neighbouring stems
    analyzer = get_analyzer("en")
    words, pairs = set(), set()
    for line in (DATA / "tiny.tsv").read_text().splitlines():
        tokens = analyzer.tokens(line.split("\t")[0])
        words.update(tokens)
        pairs.update(zip(tokens, tokens[1:], strict=False))
    assert info["terms"] == len(words) + len(pairs)
    assert len(pairs) > 0


def test_model_is_raw_npy_memory_mapped_when_loaded(projects):

    from backends.tfidf import load_centroids

    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    names = sorted(p.name for p in (project.model_dir / "centroids").iterdir())
    assert names == [
        "norms.npy",
        "weights.data.npy",
        "weights.indices.npy",
        "weights.indptr.npy",
        "weights.shape.npy",
    ]
    weights, _ = load_centroids(project.model_dir)
    for array in (weights.data, weights.indices, weights.indptr):
        assert memory_mapped(array) and not array.flags.writeable
    assert weights.shape == (info_terms(project), len(project.vocab))


def memory_mapped(array) -> bool:
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = getattr(array, "base", None)
    return False


def info_terms(project):
    return project.backend.manifest["info"]["terms"]


def test_model_of_the_older_npz_layout_gives_the_same_suggestions(projects):
    import shutil

    from backends.tfidf import load_centroids
    from indexer.storage import save_arrays

    project = projects.get("tfidf-en")
    project.train([DATA / "fulltext"])
    text = "stars, galaxies and the history of music"
    before = project.suggest([text], limit=5).row(0)
    weights, norms = load_centroids(project.model_dir)
    old = {"centroids": weights.T.tocsr(), "norms": np.asarray(norms)}
    shutil.rmtree(project.model_dir / "centroids")
    save_arrays(project.model_dir / "centroids.npz", old)  # subjects x terms
    project.unload()
    after = project.suggest([text], limit=5).row(0)
    assert [s.subject for s in after] == [s.subject for s in before]
    assert [s.score for s in after] == pytest.approx([s.score for s in before])


def test_vectorising_a_corpus_keeps_no_python_object_per_term_occurrence():
    """Training memory: per document, arrays of term ids and counts, not a dict
    (about 107 bytes per distinct term of a document, three times as much)."""
    import random
    import tracemalloc

    from indexer.features import TfidfFeatures

    rng = random.Random(0)
    words = [f"w{i}x" for i in range(3000)]
    texts = [" ".join(rng.choice(words) for _ in range(120)) for _ in range(800)]
    features = TfidfFeatures("en")
    tracemalloc.start()
    try:
        x = features.fit_transform(texts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / x.nnz < 60  # bytes per stored value


def test_fitting_keeps_no_string_for_terms_it_drops():
    """Bigrams are counted as integer codes: only the `max_features` terms
    kept become strings (a catalogue has millions of distinct bigrams)."""
    import random
    import tracemalloc

    from indexer.features import TfidfFeatures

    rng = random.Random(0)
    words = [f"w{i}x" for i in range(3000)]
    texts = [" ".join(rng.choice(words) for _ in range(120)) for _ in range(800)]
    features = TfidfFeatures("en", ngram=2)
    tracemalloc.start()
    try:
        features.fit_transform(texts, max_features=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / (120 * len(texts)) < 130  # bytes per word of the corpus


def test_fitted_vectors_are_those_of_transform():
    """The integer codes of fitting and the strings of `transform` agree."""
    from indexer.features import TfidfFeatures

    texts = [
        line.split("\t")[0] for line in (DATA / "tiny.tsv").read_text().split("\n")
    ]
    texts = [t for t in texts if t] * 2
    for ngram, min_df, max_features in ((1, 1, None), (2, 1, None), (2, 2, 20)):
        features = TfidfFeatures("en", ngram=ngram)
        fitted = features.fit_transform(texts, min_df=min_df, max_features=max_features)
        again = features.transform(texts)
        assert fitted.shape == again.shape and fitted.nnz == again.nnz > 0
        np.testing.assert_allclose(fitted.toarray(), again.toarray(), atol=1e-6)


def test_fitting_reads_a_stream_of_texts_once(monkeypatch):
    """The texts of a training come from a generator: fitting reads them once,
    a chunk at a time, with the vectors of a list of them."""
    import indexer.features as features_module
    from indexer.features import TfidfFeatures

    monkeypatch.setattr(features_module, "CHUNK", 3)
    texts = [
        line.split("\t")[0] for line in (DATA / "tiny.tsv").read_text().split("\n")
    ]
    texts = [t for t in texts if t]
    read = []

    def stream():
        for text in texts:
            read.append(text)
            yield text

    features = TfidfFeatures("en", ngram=2)
    streamed = features.fit_transform(stream(), min_df=1)
    assert read == texts  # once, in order
    listed = TfidfFeatures("en", ngram=2).fit_transform(texts, min_df=1)
    assert streamed.shape == listed.shape
    np.testing.assert_allclose(streamed.toarray(), listed.toarray(), atol=1e-7)


def test_training_streams_the_corpus_texts(projects, monkeypatch):
    """tfidf and xmc fit their features on the corpus's texts as they are
    read, not on a list of them all."""
    import indexer.features as features_module

    given = []
    fit = features_module.TfidfFeatures.fit_transform

    def recording(self, texts, *args, **kwargs):
        given.append(type(texts))
        return fit(self, texts, *args, **kwargs)

    monkeypatch.setattr(features_module.TfidfFeatures, "fit_transform", recording)
    for project_id in ("tfidf-en", "xmc-en"):
        projects.get(project_id).train([DATA / "tiny.tsv"])
    assert all(kind is not list for kind in given) and len(given) == 2

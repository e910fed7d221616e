from __future__ import annotations

import numpy as np

from indexer.neural.encoder import (
    EmbeddingCache,
    chunk_words,
    encode_cached,
    load_encoder,
)


def test_vectors_are_normalised_and_deterministic(tiny_encoder):
    encoder = load_encoder(str(tiny_encoder), max_length=16, batch_size=2)
    texts = ["stars and galaxies", "music", "the history of roman towns"]
    a = encoder.encode(texts)
    assert a.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, rtol=1e-5)
    # batching and ordering do not change a text's vector
    b = load_encoder(str(tiny_encoder), max_length=16, batch_size=3).encode(texts[::-1])
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)


def test_truncation_to_max_length(tiny_encoder):
    short = load_encoder(str(tiny_encoder), max_length=6)
    long_text = "stars " * 3 + "music " * 50
    np.testing.assert_allclose(
        short.encode([long_text]), short.encode(["stars stars stars music"]), atol=1e-5
    )


def test_cache_avoids_re_embedding(tiny_encoder, tmp_path):
    encoder = load_encoder(str(tiny_encoder), max_length=16)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    calls = []
    original = encoder.encode

    def counting(texts, role="passage", progress=False):
        calls.append(len(texts))
        return original(texts, role, progress)

    encoder.encode = counting
    first = encode_cached(encoder, ["stars", "music", "stars"], cache)
    again = encode_cached(
        encoder, ["music", "stars", "genes"], EmbeddingCache(tmp_path / "cache.sqlite")
    )
    assert calls == [2, 1]
    np.testing.assert_allclose(first[0], again[1])
    other = load_encoder(str(tiny_encoder), max_length=8)  # other settings, other key
    assert EmbeddingCache.key(other.identity, "passage", "x") != EmbeddingCache.key(
        encoder.identity, "passage", "x"
    )


def test_chunking():
    text = " ".join(str(i) for i in range(25))
    assert chunk_words(text, 10, 5) == [
        " ".join(map(str, range(0, 10))),
        " ".join(map(str, range(10, 20))),
        " ".join(map(str, range(20, 25))),
    ]
    assert len(chunk_words(text, 10, 2)) == 2
    assert chunk_words("", 10, 2) == [""]

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from convoplan.embed import SentenceEmbedder


def test_embeddings_are_unit_vectors_and_cached_on_disk(embedder: SentenceEmbedder, tmp_path: Path) -> None:
    texts = ["Lions live in prides.", "Penguins cannot fly.", "Lions live in prides."]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    similar = float(vectors[0] @ embedder.embed(["A lion lives in a pride."])[0])
    assert similar > float(vectors[0] @ vectors[1]), "the encoder should place paraphrases closer"

    cold = SentenceEmbedder(cache_dir=tmp_path, model_path=embedder.model_path)
    cold._model = embedder.model  # share the loaded model: the test is about the cache, not loading
    cold.embed(texts)
    assert cold.computed == 2  # two distinct texts
    warm = SentenceEmbedder(cache_dir=tmp_path)
    assert np.array_equal(warm.embed(texts), vectors) and warm.computed == 0  # no model needed


def test_corrupt_cache_shard_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"bad\.safetensors: not an embedding cache shard"):
        SentenceEmbedder(cache_dir=tmp_path)


def test_concurrent_callers_encode_each_new_text_once(embedder: SentenceEmbedder) -> None:
    texts = [f"a sentence no other test embeds, number {i}" for i in range(6)]
    before = embedder.computed
    start = threading.Barrier(8)

    def call() -> np.ndarray:
        start.wait(timeout=60)
        return embedder.embed(texts)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: call(), range(8)))
    assert embedder.computed - before == len(texts)  # not 8 x 6: the threads share the work
    assert all(np.array_equal(r, results[0]) for r in results)


def test_a_bounded_cache_keeps_the_newest_vectors(embedder: SentenceEmbedder) -> None:
    bounded = SentenceEmbedder(model=embedder.model, max_cached=3)
    texts = [f"bounded cache sentence {i}" for i in range(5)]
    vectors = bounded.embed(texts)  # more new texts in one call than the bound: all come back all the same
    assert vectors.shape == (5, 384) and bounded.computed == 5
    assert np.allclose(bounded.embed(texts[2:]), vectors[2:]) and bounded.computed == 5  # the newest 3 are kept
    bounded.embed(texts[:1])
    assert bounded.computed == 6  # the oldest was dropped and is encoded again

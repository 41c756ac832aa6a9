"""Deterministic train/validation/test splits by conversation.

Each conversation goes to a split by a keyed hash of its id: blake2b(f"{seed}:{id}") read as a number in [0, 1)
and compared with the cumulative fractions. So the split of a conversation never depends on which other
conversations are in the file, on their order, or on the machine: adding dialogues to a corpus leaves every
earlier assignment where it was, and the same seed gives the same split everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from convoplan.schema import Conversation

__all__ = ["split_of"]

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_of(conversation_id: str, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """The split ("train", "validation" or "test") of one conversation id."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    digest = hashlib.blake2b(f"{seed}:{conversation_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64
    bound = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        bound += fraction
        if point < bound:
            return name
    return SPLITS[-1]


def in_split(conversations: Iterable[Conversation], name: str, seed: int = 0) -> list[Conversation]:
    """The conversations of split `name`: their `meta.split`, else the hash split of their id."""
    return [c for c in conversations if (c.meta.get("split") or split_of(c.id, seed)) == name]


def assign_splits(
    conversations: Iterable[Conversation],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> None:
    """Set `meta["split"]` on every conversation."""
    for conversation in conversations:
        conversation.meta["split"] = split_of(conversation.id, seed, fractions)

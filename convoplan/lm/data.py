"""Training data of the language model: the train/validation split, and packing of token sequences into blocks.

Packing (as GPT-2 was trained): the conversations' token sequences, each starting with EOS, are concatenated into
one stream and cut into blocks, so no compute goes to padding. Consecutive blocks overlap by one token, so that
every token of the stream but the first is a target exactly once: block i holds stream[i*T : i*T + T + 1], its
inputs the first T tokens and its targets the last T. Only the final block is padded; its padding has no target.
A block may span the end of one conversation and the start of the next: the EOS between them marks the boundary.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convoplan.schema import Conversation

__all__ = ["Blocks", "pack", "split"]

IGNORE = -100
"""Target of a position that has none (padding); cross-entropy skips it."""


@dataclass(frozen=True)
class Blocks:
    """Packed token blocks: inputs and next-token targets, both [N, T]."""

    inputs: torch.Tensor  # [N, T] long
    targets: torch.Tensor  # [N, T] long, IGNORE where there is no next token

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.inputs.shape[1])

    def tokens(self, rows: torch.Tensor | None = None) -> int:
        """Targets (trained tokens) in all blocks or in the given rows."""
        targets = self.targets if rows is None else self.targets[rows]
        return int((targets != IGNORE).sum())


def pack(sequences: Sequence[Sequence[int]], block_size: int, pad_id: int) -> Blocks:
    """Concatenate `sequences` and cut the stream into blocks of `block_size` inputs (see the module docstring)."""
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    stream = torch.tensor([token for sequence in sequences for token in sequence], dtype=torch.long)
    n = max(0, len(stream) - 1 + block_size - 1) // block_size  # blocks needed for len(stream) - 1 targets
    # Pad the stream to n*T + 1 tokens; the padding positions are inputs with no target.
    padded = torch.full((n * block_size + 1,), pad_id, dtype=torch.long)
    padded[: len(stream)] = stream
    labels = padded.clone()
    labels[max(1, len(stream)) :] = IGNORE
    inputs = padded[:-1].view(n, block_size)  # [N, T]
    targets = labels[1:].view(n, block_size)  # [N, T]: targets[i, t] is the token after inputs[i, t]
    return Blocks(inputs.clone(), targets.clone())


def split(
    conversations: Sequence[Conversation], validation_fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, validation) by `meta.split`. Test conversations are never used. Without a validation split, a seeded
    `validation_fraction` of the training conversations is held out; conversations without a split count as train."""
    train = [c for c in conversations if c.meta.get("split", "train") not in ("validation", "test")]
    validation = [c for c in conversations if c.meta.get("split") == "validation"]
    if not validation and validation_fraction > 0 and len(train) > 1:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        held = set(order[: max(1, round(validation_fraction * len(train)))])
        validation = [c for i, c in enumerate(train) if i in held]
        train = [c for i, c in enumerate(train) if i not in held]
    return train, validation

"""Training data of the language model: the train/validation split, and packing of token sequences into blocks.

Packing (as GPT-2 was trained): the conversations' token sequences, each starting with EOS, are concatenated into
one stream and cut into blocks, so no compute goes to padding. Consecutive blocks overlap by one token, so that
every token of the stream but the first is a target exactly once: block i holds stream[i*T : i*T + T + 1], its
inputs the first T tokens and its targets the last T. Only the final block is padded; its padding has no target.
A block may span the end of one conversation and the start of the next: the EOS between them marks the boundary.
Tokens that are read but not learnt (the events of a conversation, `trained` False) are inputs with no target.

Samples (`samples`), for a grounded model: one row per message to learn, its prompt (history, grounding, the
agent's tags: exactly what inference builds) then the message; only the message's tokens are targets. Rows are
right-padded to the longest, and `Blocks.lengths` says how long each is, so that a batch of short rows is cut to
its longest row (`Blocks.width`) instead of computing the padding.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convoplan.schema import Conversation

__all__ = ["Blocks", "pack", "samples", "split"]

IGNORE = -100
"""Target of a position that has none (padding); cross-entropy skips it."""


@dataclass(frozen=True)
class Blocks:
    """Packed token blocks: inputs and next-token targets, both [N, T]."""

    inputs: torch.Tensor  # [N, T] long
    targets: torch.Tensor  # [N, T] long, IGNORE where there is no next token
    lengths: torch.Tensor | None = None
    """[N] long: the tokens of each row before its padding, for rows of different lengths (`samples`); None for
    packed blocks, which are full but the last."""

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.inputs.shape[1])

    def tokens(self, rows: torch.Tensor | None = None) -> int:
        """Targets (trained tokens) in all blocks or in the given rows."""
        targets = self.targets if rows is None else self.targets[rows]
        return int((targets != IGNORE).sum())

    def sample(self, count: int, seed: int) -> Blocks:
        """A seeded sample of `count` rows, in their order (all of them when there are no more)."""
        if count >= len(self):
            return self
        rows = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        lengths = None if self.lengths is None else self.lengths[rows]
        return Blocks(self.inputs[rows], self.targets[rows], lengths)

    def width(self, rows: torch.Tensor) -> int:
        """Columns the given rows need: their longest length (padding after it has no target and, the model being
        causal, no effect on what comes before), or the whole block for packed blocks."""
        if self.lengths is None or not len(rows):
            return self.block_size
        return int(self.lengths[rows].max())


def pack(
    sequences: Sequence[Sequence[int]],
    block_size: int,
    pad_id: int,
    trained: Sequence[Sequence[bool]] | None = None,
) -> Blocks:
    """Concatenate `sequences` and cut the stream into blocks of `block_size` inputs (see the module docstring).
    `trained`, one flag per token of `sequences`, leaves the tokens flagged False without a target."""
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    stream = torch.tensor([token for sequence in sequences for token in sequence], dtype=torch.long)
    n = max(0, len(stream) - 1 + block_size - 1) // block_size  # blocks needed for len(stream) - 1 targets
    # Pad the stream to n*T + 1 tokens; the padding positions are inputs with no target.
    padded = torch.full((n * block_size + 1,), pad_id, dtype=torch.long)
    padded[: len(stream)] = stream
    labels = padded.clone()
    if trained is not None:
        flags = torch.tensor([flag for sequence in trained for flag in sequence], dtype=torch.bool)
        if len(flags) != len(stream):
            raise ValueError(f"{len(flags)} trained flags for {len(stream)} tokens")
        labels[: len(stream)][~flags] = IGNORE
    labels[max(1, len(stream)) :] = IGNORE
    inputs = padded[:-1].view(n, block_size)  # [N, T]
    targets = labels[1:].view(n, block_size)  # [N, T]: targets[i, t] is the token after inputs[i, t]
    return Blocks(inputs.clone(), targets.clone())


def samples(rows: Sequence[tuple[Sequence[int], int]], pad_id: int) -> Blocks:
    """One row per (ids, prompt length): the ids right-padded to the longest row, the targets those of the ids after
    the prompt (the message and its end), IGNORE elsewhere. Row i's input t predicts ids[t + 1], as in `pack`."""
    if any(not 0 < prompt < len(ids) for ids, prompt in rows):
        raise ValueError("a sample holds a prompt and at least one token after it")
    width = max((len(ids) - 1 for ids, _ in rows), default=1)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N, T]
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # [N, T]
    for row, (ids, prompt) in enumerate(rows):
        sequence = torch.tensor(list(ids), dtype=torch.long)
        inputs[row, : len(ids) - 1] = sequence[:-1]
        # input t predicts ids[t + 1]: the message's tokens ids[prompt:] are predicted at inputs prompt - 1 onwards
        targets[row, prompt - 1 : len(ids) - 1] = sequence[prompt:]
    lengths = torch.tensor([len(ids) - 1 for ids, _ in rows], dtype=torch.long)
    return Blocks(inputs, targets, lengths)


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

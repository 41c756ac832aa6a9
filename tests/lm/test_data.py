"""Packing token sequences into blocks, and the train/validation split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convoplan.lm.data import IGNORE, pack, split
from convoplan.schema import Conversation


@given(st.lists(st.lists(st.integers(1, 50), max_size=20), max_size=8), st.integers(1, 9))
def test_every_token_after_the_first_is_a_target_exactly_once(sequences: list[list[int]], block_size: int) -> None:
    stream = [token for sequence in sequences for token in sequence]
    blocks = pack(sequences, block_size, pad_id=0)
    assert blocks.block_size == block_size
    targets = blocks.targets.flatten().tolist()
    assert [t for t in targets if t != IGNORE] == stream[1:]
    assert blocks.tokens() == max(0, len(stream) - 1)
    # each target is the token after its input: inputs and targets are the stream shifted by one
    inputs = blocks.inputs.flatten().tolist()
    assert inputs[: max(0, len(stream) - 1)] == stream[:-1]
    assert len(blocks) == -(-max(0, len(stream) - 1) // block_size)  # only the last block is partial
    if len(blocks):
        assert (blocks.targets[:-1] != IGNORE).all()


def test_split_follows_meta_and_never_uses_test(corpus: list[Conversation]) -> None:
    train, validation = split(corpus, 0.1, seed=0)
    assert {c.meta["split"] for c in train} == {"train"} and {c.meta["split"] for c in validation} == {"validation"}
    unsplit = [Conversation(id=c.id, domain=c.domain, turns=c.turns) for c in corpus]
    train, validation = split(unsplit, 0.25, seed=0)
    assert len(validation) == 12 and len(train) == 36 and not {c.id for c in train} & {c.id for c in validation}
    assert split(unsplit, 0.25, seed=0) == (train, validation)

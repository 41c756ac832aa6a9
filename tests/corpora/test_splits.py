from __future__ import annotations

from collections import Counter

import pytest

from convoplan.corpora.splits import SPLITS, assign_splits, split_of
from convoplan.schema import Conversation


def test_split_depends_only_on_id_and_seed() -> None:
    ids = [f"conv-{i}" for i in range(3000)]
    first = [split_of(i) for i in ids]
    assert first == [split_of(i) for i in reversed(ids)][::-1]
    assert first != [split_of(i, seed=1) for i in ids]


def test_split_fractions_are_close_to_requested() -> None:
    counts = Counter(split_of(f"id{i}", fractions=(0.7, 0.2, 0.1)) for i in range(20000))
    assert set(counts) == set(SPLITS)
    assert counts["train"] / 20000 == pytest.approx(0.7, abs=0.015)
    assert counts["validation"] / 20000 == pytest.approx(0.2, abs=0.015)


def test_assign_splits_sets_meta_and_rejects_bad_fractions() -> None:
    conversations = [Conversation(id=str(i), domain="d", turns=[]) for i in range(10)]
    assign_splits(conversations, seed=3)
    assert all(c.meta["split"] == split_of(c.id, seed=3) for c in conversations)
    with pytest.raises(ValueError, match="sum to 1"):
        split_of("x", fractions=(0.5, 0.5, 0.5))

"""The exemplar index (`convoplan.retrieval.exemplars`): what it holds (the train split's labelled agent messages,
never a test message), the nearest search against a brute-force reference, the most frequent message per action,
a save/load round trip, and one-line errors for a missing or damaged index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convoplan.embed import SentenceEmbedder
from convoplan.retrieval.exemplars import (
    ExemplarConfig,
    ExemplarIndex,
    context_text,
    load_exemplars,
)
from convoplan.schema import Conversation, Turn


def conversation(cid: str, split: str, pairs: list[tuple[str, str, str | None]]) -> Conversation:
    """(user text, agent text, agent action) exchanges."""
    turns = []
    for user, agent, action in pairs:
        turns += [Turn(speaker="user", text=user), Turn(speaker="agent", text=agent, action=action)]
    return Conversation(id=cid, domain="shop", turns=turns, meta={"split": split})


LOGS = [
    conversation(
        "a",
        "train",
        [("hi there", "Hello! How can I help?", "greet"), ("what does the blue kettle cost?", "It is $30.", "price")],
    ),
    conversation(
        "b",
        "train",
        [("hello", "Hello! How can I help?", "greet"), ("how much is the red toaster?", "That one is $45.", "price")],
    ),
    conversation("c", "train", [("good morning", "Hi, welcome!", "greet"), ("thanks, bye", "Bye!", None)]),
    conversation("t", "test", [("hey", "A test message, never a suggestion.", "greet")]),
]


@pytest.fixture(scope="module")
def index(embedder: SentenceEmbedder) -> ExemplarIndex:
    return ExemplarIndex.build(LOGS, embedder)


def test_the_index_holds_the_labelled_train_messages_only(index: ExemplarIndex) -> None:
    assert len(index) == 5 and index.known_actions == ["greet", "price"]
    assert "A test message, never a suggestion." not in index.texts and "Bye!" not in index.texts
    assert index.sources[index.texts.index("It is $30.")] == "a#3"
    assert index.vectors.shape == (5, 384)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-4)


def test_nearest_matches_a_brute_force_search(index: ExemplarIndex, embedder: SentenceEmbedder) -> None:
    history = [
        Turn(speaker="user", text="hi"),
        Turn(speaker="agent", text="Hello!"),
        Turn(speaker="user", text="how much is the green kettle?"),
    ]
    (found,) = index.nearest([history], ["price"], embedder, k=5)
    assert [e.action for e in found] == ["price", "price"]  # the action's messages only, and no more than it has
    query = embedder.embed([context_text(history, 2)])[0]
    expected = sorted(
        ((float(index.vectors[r] @ query), index.texts[r]) for r in range(len(index)) if index.actions[r] == "price"),
        reverse=True,
    )
    assert [(round(e.score, 5), e.text) for e in found] == [(round(s, 5), t) for s, t in expected]
    assert found[0].text == "It is $30."  # the kettle question is nearer to the kettle question
    (any_action,) = index.nearest([history], [None], embedder, k=1)
    assert any_action[0].text == "It is $30."
    assert index.nearest([history], ["refund"], embedder) == [[]]  # an action the index lacks


def test_a_batch_of_queries_gets_what_each_gets_alone(
    index: ExemplarIndex, embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries are scored per action in chunks: a batch mixing actions (None among them) across chunk boundaries
    finds exactly what each query finds alone."""
    import convoplan.retrieval.exemplars as exemplars

    monkeypatch.setattr(exemplars, "CHUNK", 2)
    turns = [Turn(speaker="user", text=text) for text in ("hi", "how much is the kettle?", "I want a refund", "bye")]
    histories = [turns[: i + 1] for i in range(4)] * 2
    actions = ["price", None, "price", "greet", None, "refund", "price", None]
    together = index.nearest(histories, actions, embedder, k=2)
    alone = [index.nearest([h], [a], embedder, k=2)[0] for h, a in zip(histories, actions, strict=True)]
    assert [[e.source for e in found] for found in together] == [[e.source for e in found] for found in alone]
    assert [e.score for found in together for e in found] == pytest.approx([e.score for f in alone for e in f])
    assert together[5] == [] and all(together[i] for i in (0, 1, 2, 3, 4, 6, 7))  # (no refund in the index)


def test_the_most_frequent_message_of_an_action(index: ExemplarIndex) -> None:
    assert index.most_frequent("greet") == "Hello! How can I help?"  # said twice
    assert index.most_frequent("price") == "It is $30."  # a tie: the first said
    assert index.most_frequent("refund") is None


def test_context_text_reads_the_last_turns() -> None:
    turns = [Turn(speaker="user", text="a"), Turn(speaker="agent", text="b"), Turn(speaker="user", text="c")]
    assert context_text(turns, 2) == "agent: b\nuser: c"
    assert context_text([], 2) == "(start)"


def test_save_and_load_give_the_same_answers(index: ExemplarIndex, embedder: SentenceEmbedder, tmp_path: Path) -> None:
    index.save(tmp_path / "exemplars")
    loaded = load_exemplars(tmp_path / "exemplars")
    assert loaded.texts == index.texts and loaded.actions == index.actions and loaded.sources == index.sources
    assert np.array_equal(loaded.vectors, index.vectors) and loaded.config == index.config
    history = [Turn(speaker="user", text="price of the toaster?")]
    assert loaded.nearest([history], ["price"], embedder, 2) == index.nearest([history], ["price"], embedder, 2)


def test_a_missing_or_damaged_index_is_one_line(index: ExemplarIndex, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no exemplar index \(build one with `convoplan lm index"):
        load_exemplars(tmp_path / "nothing")
    folder = index.save(tmp_path / "exemplars")
    record = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**record, "texts": record["texts"][:-1]}))
    with pytest.raises(ValueError, match=r"index.json: 4 texts, 5 actions"):
        load_exemplars(folder)
    (folder / "index.json").write_text(json.dumps({**record, "format": "other/1"}))
    with pytest.raises(ValueError, match=r"format 'other/1', expected 'convoplan-exemplars/1'"):
        load_exemplars(folder)
    (folder / "index.json").write_text(json.dumps({**record, "config": {"context_turns": 0}}))
    with pytest.raises(ValueError, match=r"context_turns: must be >= 1"):
        load_exemplars(folder)


def test_no_labelled_train_message_is_one_line(embedder: SentenceEmbedder) -> None:
    with pytest.raises(ValueError, match="no labelled agent messages in split 'train'"):
        ExemplarIndex.build([LOGS[-1]], embedder)
    unlabelled = ExemplarIndex.build(LOGS, embedder, ExemplarConfig(labelled_only=False))
    assert "Bye!" in unlabelled.texts


def test_ties_go_in_index_order_whatever_the_float_noise(embedder: SentenceEmbedder) -> None:
    """Openings share one context ("(start)"): their messages tie, and the first indexed win, also when the query's
    vector differs by float noise (embedded in another batch) from the rows'."""
    from convoplan.retrieval.exemplars import ExemplarConfig

    rng = np.random.default_rng(0)
    start = rng.normal(size=8).astype(np.float32)
    start /= np.linalg.norm(start)
    other = rng.normal(size=8).astype(np.float32)
    other /= np.linalg.norm(other)
    # Rows 1..6: the same context, each embedded in another batch (float noise).
    rows = np.stack([other, *[start + 1e-7 * rng.normal(size=8).astype(np.float32) for _ in range(6)], other])
    texts = [f"message {i}" for i in range(len(rows))]
    index = ExemplarIndex(texts, ["greeting"] * len(rows), [f"c#{i}" for i in range(len(rows))], rows, ExemplarConfig())
    for noise in (0.0, 1e-7, -1e-7):
        scores = rows @ (start + noise * rng.normal(size=8).astype(np.float32))
        found = index._best(scores, np.arange(len(rows)), 3)
        assert [e.text for e in found] == ["message 1", "message 2", "message 3"], noise
    assert [e.text for e in index._best(rows @ start, np.arange(len(rows)), 8)][:6] == [
        f"message {i}" for i in range(1, 7)
    ]

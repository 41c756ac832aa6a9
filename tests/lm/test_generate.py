"""Generation (`convoplan.lm.generate`): messages end at `<|end|>` and are never empty, left-padded batches and n
messages per prompt write what single prompts do, a shared history is read once and a `PrefixCache` reads only
what is new, streamed text adds up to the final messages, and a streaming callback or a cancel event can stop
generation."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from convoplan.lm.generate import Cancelled, PrefixCache, SamplingConfig, generate_messages
from convoplan.lm.model import LanguageModel
from convoplan.schema import Turn

from .conftest import Spy, synthetic

ACTIONS = ("greeting", "ask for sale", "thank")


@pytest.fixture
def history() -> list[Turn]:
    return synthetic()[-1].turns[:3]


def test_a_message_is_never_empty(lm: LanguageModel, history: list[Turn]) -> None:
    """Even a model that would end every message at once (an untuned base opening a conversation does) writes one
    token of text first."""
    bias = torch.zeros(len(lm.tokenizer))
    bias[[lm.codec.end, lm.codec.eos]] = 100.0  # the end of the message (or conversation) is all it would write
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        prompt = lm.codec.prompt(history, "greeting", lm.context - 10)
        [[message]] = generate_messages(lm, [prompt], SamplingConfig(do_sample=False, max_new_tokens=10))
    finally:
        handle.remove()
    assert len(message.tokens) == 2 and message.finished and message.tokens[0] not in (lm.codec.end, lm.codec.eos)


def test_a_left_padded_batch_generates_what_each_prompt_does_alone(lm: LanguageModel) -> None:
    conversation = synthetic()[-2]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=12)
    prompts = [lm.codec.prompt(conversation.turns[:k], "thank", 52) for k in (1, 3, 5)]
    assert len({len(p) for p in prompts}) == 3
    batched = [m.tokens for (m,) in generate_messages(lm, prompts, greedy)]
    alone = [generate_messages(lm, [p], greedy)[0][0].tokens for p in prompts]
    assert batched == alone
    with pytest.raises(ValueError, match="greedy"):
        generate_messages(lm, prompts, greedy, n=2)
    with pytest.raises(ValueError, match="exceeds the context"):
        generate_messages(lm, [[0] * 60], greedy)


def test_n_messages_per_prompt_are_those_of_the_prompt_repeated(lm: LanguageModel) -> None:
    # The prompts are read once and their cache copied to n sequences: with the same seed that samples what n
    # copies of each prompt (transformers' own path, no shared cache) sample. Prompts of two lengths: left padding.
    conversation = synthetic()[-2]
    sampling = SamplingConfig(seed=3, max_new_tokens=15)
    prompts = [lm.codec.prompt(conversation.turns[:k], "greeting", 49) for k in (2, 5)]
    shared = [[m.tokens for m in messages] for messages in generate_messages(lm, prompts, sampling, n=3)]
    repeated = generate_messages(lm, [p for p in prompts for _ in range(3)], sampling)
    assert shared == [[m.tokens for (m,) in repeated[i : i + 3]] for i in (0, 3)]


def test_a_history_shared_by_k_actions_is_read_once(
    lm: LanguageModel, history: list[Turn], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One history, three action tags: the history is read once as one sequence and branched to 3 x 2 rows, and
    # the messages are those of reading every prompt in full (greedy: the same tokens; sampled: the same seed).
    prompts = [lm.codec.prompt(history, action, 40) for action in ACTIONS]
    assert len({len(p) for p in prompts}) == 1 and len({tuple(p[:-1]) for p in prompts}) == 1
    spy = Spy(lm, monkeypatch)
    greedy = SamplingConfig(do_sample=False, max_new_tokens=12)
    shared = [m.tokens for (m,) in generate_messages(lm, prompts, greedy)]
    full = [m.tokens for (m,) in generate_messages(lm, prompts, greedy, share_prefix=False)]
    assert shared == full
    sampling = SamplingConfig(seed=5, max_new_tokens=12)
    branched = generate_messages(lm, prompts, sampling, n=2)
    repeated = generate_messages(lm, prompts, sampling, n=2, share_prefix=False)
    assert [[m.tokens for m in g] for g in branched] == [[m.tokens for m in g] for g in repeated]
    width = len(prompts[0])
    # shared: the history (all but the tag) in one row; full, n = 1: no cache; n = 2: a cache per prompt
    assert [(c["rows"], c["cached"]) for c in spy.calls] == [(3, width - 1), (0, 0), (6, width - 1), (6, width - 1)]


def test_a_prefix_cache_reads_only_what_is_new(lm: LanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # Composition steps of one bot turn: each step's history extends the last by a message.
    conversation = synthetic()[-2].turns
    greedy = SamplingConfig(do_sample=False, max_new_tokens=10)
    prefix = PrefixCache()
    for turns in (3, 4, 5):
        prompts = [lm.codec.prompt(conversation[:turns], action, 54) for action in ACTIONS]
        before = prefix.reused
        cached = [m.tokens for (m,) in generate_messages(lm, prompts, greedy, prefix=prefix)]
        assert cached == [m.tokens for (m,) in generate_messages(lm, prompts, greedy)]
        if turns > 3:  # the last step's whole history was there already (and its <|agent|> when an agent spoke next)
            last = len(lm.codec.prompt(conversation[: turns - 1], None, 54))  # that history and <|agent|>
            assert prefix.reused - before == last - (conversation[turns - 1].speaker == "user")
    assert prefix.reused > 0
    # Another conversation shares only its opening EOS: read afresh, and still the same messages.
    other = [lm.codec.prompt(synthetic()[-3].turns[:3], action, 54) for action in ACTIONS]
    assert [m.tokens for (m,) in generate_messages(lm, other, greedy, prefix=prefix)] == [
        m.tokens for (m,) in generate_messages(lm, other, greedy)
    ]


def test_a_prefix_cache_of_two_entries_keeps_two_conversations(lm: LanguageModel) -> None:
    """Two conversations served side by side, each a turn longer at every request: with two entries each request
    reads only its new turn; with one, each reads its whole history again (the other's evicted it)."""
    greedy = SamplingConfig(do_sample=False, max_new_tokens=4)
    one, two = synthetic()[-2].turns, synthetic()[-3].turns

    def serve(prefix: PrefixCache, conversations: list[list[Turn]]) -> int:
        for turns in (2, 3, 4):
            for conversation in conversations:
                generate_messages(lm, [lm.codec.prompt(conversation[:turns], "thank", 54)], greedy, prefix=prefix)
        return prefix.reused

    alone = serve(PrefixCache(1), [one]) + serve(PrefixCache(1), [two])  # each with a cache of its own
    # (at least: the first request of the second conversation also reuses the opening tokens of the first)
    assert serve(PrefixCache(2), [one, two]) >= alone > serve(PrefixCache(1), [one, two])
    with pytest.raises(ValueError, match="at least one entry"):
        PrefixCache(0)


def test_streamed_text_adds_up_to_the_messages(lm: LanguageModel, history: list[Turn]) -> None:
    prompts = [lm.codec.prompt(history, action, 40) for action in ACTIONS]
    pieces: dict[int, list[str]] = {}
    written = generate_messages(
        lm,
        prompts,
        SamplingConfig(seed=2, max_new_tokens=20),
        n=2,
        on_text=lambda row, text: pieces.setdefault(row, []).append(text),
    )
    messages = [m for group in written for m in group]
    assert sorted(pieces) == [row for row, m in enumerate(messages) if m.text]
    for row, message in enumerate(messages):
        assert "".join(pieces.get(row, [])) == message.text
    assert max(len(p) for p in pieces.values()) > 1  # text arrives in pieces, not at the end


def test_raising_in_the_stream_stops_generation(lm: LanguageModel, history: list[Turn]) -> None:
    heard: list[str] = []

    def hang_up(row: int, text: str) -> None:
        heard.append(text)
        raise ConnectionAbortedError("the client left")

    prompt = lm.codec.prompt(history, "greeting", 40)
    with pytest.raises(ConnectionAbortedError):
        generate_messages(lm, [prompt], SamplingConfig(seed=0, max_new_tokens=20), n=3, on_text=hang_up)
    assert len(heard) == 1


def test_a_cancelled_generation_stops_before_its_next_forward_pass(
    lm: LanguageModel, history: list[Turn], monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    passes: list[bool] = []  # per forward pass: whether cancel was set when it started
    forward = lm.model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(cancel.is_set())
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", counted)
    prompt = lm.codec.prompt(history, "greeting", 40)
    with pytest.raises(Cancelled):  # set by another thread in the server; here as the first text arrives
        generate_messages(
            lm, [prompt], SamplingConfig(seed=0, max_new_tokens=20), n=3, on_text=lambda *_: cancel.set(), cancel=cancel
        )
    assert passes and not any(passes)
    with pytest.raises(Cancelled):  # set before it starts: no pass at all
        generate_messages(lm, [prompt], SamplingConfig(seed=0, max_new_tokens=20), n=3, cancel=cancel)
    assert not any(passes)


def test_finished_messages_leave_the_batch(
    lm: LanguageModel, history: list[Turn], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    forward = lm.model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        batches.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", counted)
    prompts = [lm.codec.prompt(history, action, 40) for action in ACTIONS]
    written = generate_messages(lm, prompts, SamplingConfig(seed=4, max_new_tokens=20), n=3)
    lengths = sorted(len(m.tokens) for group in written for m in group)
    assert lengths[0] < lengths[-1]  # some ended before others ...
    decoding = batches[1:]  # (the first forward read the history, one row)
    assert decoding[0] == 9 and decoding == sorted(decoding, reverse=True) and decoding[-1] < 9  # ... and left
    # One step per token of the longest message; the batch at step t holds the messages longer than t.
    assert decoding == [sum(length > t for length in lengths) for t in range(lengths[-1])]

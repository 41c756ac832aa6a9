"""Suggestions: n messages from one batched generate call with the action's tag, the fallback to no action (no
next-action model, a low score, an action without a tag, a vanilla model), labelling of the history, stopping at
the end-of-message token, left-padded batches, and `convoplan suggest`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from convoplan.actions.protocols import ActionScore, Prediction
from convoplan.cli.lm import suggest_command
from convoplan.lm.generate import SamplingConfig, generate_messages
from convoplan.lm.model import LanguageModel, load_model
from convoplan.lm.suggest import SuggestConfig, Suggester, suggest
from convoplan.lm.tokenizer import Codec
from convoplan.lm.train import train
from convoplan.schema import Conversation, Turn, write_jsonl

from .conftest import TINY, synthetic

SEEDED = SuggestConfig(sampling=SamplingConfig(seed=0, max_new_tokens=20))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lm") / "model"
    train(synthetic(), out, replace(TINY, epochs=4, checkpoint_every=0))
    return out


@pytest.fixture(scope="module")
def lm(folder: Path) -> LanguageModel:
    return load_model(folder)


@pytest.fixture
def history() -> list[Turn]:
    return synthetic()[-1].turns[:3]


class Spy:
    """Records the calls of the model's generate while passing them on."""

    def __init__(self, lm: LanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        original: Callable[..., Any] = lm.model.generate  # type: ignore[assignment]

        def generate(**kwargs: Any) -> Any:
            cache = kwargs.get("past_key_values")
            self.calls.append({**kwargs, "cached": cache.get_seq_length() if cache is not None else 0})
            return original(**kwargs)

        monkeypatch.setattr(lm.model, "generate", generate)


class StubNBA:
    def __init__(self, ranking: list[ActionScore]) -> None:
        self.ranking = ranking
        self.seen: list[Conversation] = []

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        self.seen.extend(histories)
        return [list(self.ranking) for _ in histories]


class StubLabeller:
    version = "stub@1"

    def __init__(self) -> None:
        self.calls = 0

    def label(self, conversations: Sequence[Conversation]) -> list[list[Prediction | None]]:
        self.calls += 1
        return [
            [Prediction("greeting", 0.9, "greeting") if t.speaker == "agent" else None for t in c.turns]
            for c in conversations
        ]


def test_n_suggestions_from_one_generate_call_with_the_action_tag(
    lm: LanguageModel, history: list[Turn], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(lm, monkeypatch)
    suggestions = suggest(lm, history, "thank", n=3, config=SEEDED)
    assert len(suggestions) == 3 and all(s.action == "thank" and s.action_score is None for s in suggestions)
    assert all(isinstance(s.text, str) and s.score <= 0.0 for s in suggestions)
    (call,) = spy.calls  # one batched call: the n prompts are one prompt repeated, read once (a shared cache)
    prompt = call["input_ids"][0]
    assert call["input_ids"].shape[0] == 3 and all(torch.equal(row, prompt) for row in call["input_ids"])
    assert call["use_cache"] and call["cached"] == len(prompt) - 1  # all but the last token read before
    assert prompt[-1] == lm.codec.action_id("thank")  # <|agent|><|action:thank|> ends the prompt
    assert prompt[-2] == lm.tokenizer.convert_tokens_to_ids("<|agent|>")
    assert call["eos_token_id"] == [lm.codec.end, lm.codec.eos] and call["max_new_tokens"] == 20
    # The same seed gives the same suggestions.
    assert [s.text for s in suggest(lm, history, "thank", n=3, config=SEEDED)] == [s.text for s in suggestions]


def test_the_predicted_action_directs_and_a_low_score_falls_back(
    lm: LanguageModel, history: list[Turn], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(lm, monkeypatch)
    nba = StubNBA([ActionScore("ask for sale", 0.6), ActionScore("thank", 0.3)])
    suggestions = Suggester(lm, nba=nba, config=SEEDED).suggest(history, n=2)
    assert [(s.action, s.action_score) for s in suggestions] == [("ask for sale", 0.6)] * 2
    assert spy.calls[-1]["input_ids"][0, -1] == lm.codec.action_id("ask for sale")
    assert nba.seen[0].turns == history

    cautious = replace(SEEDED, threshold=0.7)
    suggester = Suggester(lm, nba=nba, config=cautious)
    plan = suggester.plan(history)
    assert plan.action is None and plan.proposed == "ask for sale" and "under the threshold" in plan.reason
    suggestions = suggester.suggest(history, n=2)
    assert [(s.action, s.action_score) for s in suggestions] == [(None, None)] * 2
    assert spy.calls[-1]["input_ids"][0, -1] == lm.tokenizer.convert_tokens_to_ids("<|agent|>")  # no action tag


@pytest.mark.parametrize(
    ("nba", "action", "reason"),
    [
        (None, None, "no next-action model"),
        (StubNBA([]), None, "predicts no action"),
        (StubNBA([ActionScore("dance", 0.99)]), None, "no tag for 'dance'"),
        (None, "dance", "no tag for 'dance'"),
    ],
)
def test_fallback_without_an_action(
    lm: LanguageModel, history: list[Turn], nba: StubNBA | None, action: str | None, reason: str
) -> None:
    suggester = Suggester(lm, nba=nba, config=SEEDED)
    plan = suggester.plan(history, action)
    assert plan.action is None and plan.source == "none" and reason in plan.reason
    suggestions = suggester.write(history, plan, n=2)
    assert len(suggestions) == 2 and all(s.action is None for s in suggestions)


def test_a_vanilla_model_writes_without_actions(lm: LanguageModel, history: list[Turn]) -> None:
    vanilla = LanguageModel(lm.model, lm.tokenizer, Codec(lm.tokenizer, vanilla=True), {"vanilla": True})
    plan = Suggester(vanilla, config=SEEDED).plan(history, "thank")
    assert plan.action is None and "vanilla" in plan.reason


def test_unlabelled_history_is_labelled_first(lm: LanguageModel) -> None:
    turns = [
        Turn(speaker="user", text="Hi."),
        Turn(speaker="agent", text="Hello there, nice to meet you."),
        Turn(speaker="user", text="Okay!"),
        Turn(speaker="agent", text="Thank you so much for your help.", action="thank"),
    ]
    labeller, nba = StubLabeller(), StubNBA([ActionScore("thank", 0.9)])
    suggester = Suggester(lm, labeller, nba, SEEDED)
    suggester.suggest(turns, n=1)
    (seen,) = nba.seen
    assert [t.action for t in seen.turns] == [None, "greeting", None, "thank"]  # the human label is kept
    assert seen.turns[1].action_source == "stub@1" and seen.turns[3].action_source is None
    assert labeller.calls == 1
    suggester.suggest(seen, n=1)  # nothing left to label: the labeller is not asked again
    assert labeller.calls == 1


def test_generation_stops_at_the_end_of_the_message(lm: LanguageModel, history: list[Turn]) -> None:
    config = replace(SEEDED, sampling=replace(SEEDED.sampling, max_new_tokens=30))
    suggestions = Suggester(lm, config=config).suggest(history, "greeting", n=8)
    prompt = lm.codec.prompt(history, "greeting", lm.context - 30)
    messages = generate_messages(lm, [prompt], replace(config.sampling, seed=1), 8)[0]
    assert any(m.finished for m in messages) and any(s.finished for s in suggestions)
    for message in messages:
        assert lm.codec.end not in message.tokens[:-1] and len(message.tokens) <= 30
        assert message.finished == (message.tokens[-1] == lm.codec.end)
        assert message.text == lm.codec.decode_text(message.tokens).strip() and "<|" not in message.text


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


def test_convoplan_suggest_prints_the_suggestions(folder: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(suggest_command)
    data = tmp_path / "conversation.jsonl"
    write_jsonl(data, synthetic()[-2:])
    arguments = ["--model", str(folder), "--conversation", str(data), "--turns", "3", "--seed", "0"]
    result = CliRunner().invoke(
        app, [*arguments, "--action", "thank", "--n", "2", "--set", "sampling.max_new_tokens=20"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "action: thank (given)" and lines[1].startswith("1. (") and lines[2].startswith("2. (")
    assert len(lines) == 3

    result = CliRunner().invoke(app, [*arguments, "--action", "dance", "--id", synthetic()[-1].id])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("action: none (the model has no tag for 'dance'")

    result = CliRunner().invoke(app, ["--model", str(tmp_path / "nope"), "--conversation", str(data)])
    assert (
        result.exit_code == 2
        and result.stderr.startswith("error: ")
        and "not a convoplan language model" in result.stderr
    )

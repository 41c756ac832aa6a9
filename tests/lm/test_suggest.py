"""Suggestions: n messages from one batched generate call with the action's tag, the fallback to no action (no
next-action model, a low score, an action without a tag, a vanilla model), labelling of the history, stopping at
the end-of-message token, left-padded batches, suggestions retrieved from the logs (no LM) or mixed with written
ones, and `convoplan suggest`."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from convoplan.actions.protocols import ActionScore, Prediction
from convoplan.cli.lm import suggest_command
from convoplan.embed import SentenceEmbedder
from convoplan.lm.generate import SamplingConfig, generate_messages
from convoplan.lm.model import LanguageModel
from convoplan.lm.suggest import SuggestConfig, Suggester, suggest
from convoplan.lm.tokenizer import Codec
from convoplan.retrieval.exemplars import ExemplarIndex
from convoplan.schema import Conversation, Turn, write_jsonl

from .conftest import Spy, synthetic

SEEDED = SuggestConfig(sampling=SamplingConfig(seed=0, max_new_tokens=20))


@pytest.fixture
def history() -> list[Turn]:
    return synthetic()[-1].turns[:3]


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
    assert call["rows"] == 3 and call["cached"] == len(prompt) - 1  # all but the last token read before, once
    assert prompt[-1] == lm.codec.action_id("thank")  # <|agent|><|action:thank|> ends the prompt
    assert prompt[-2] == lm.tokenizer.convert_tokens_to_ids("<|agent|>")
    assert call["config"].max_new_tokens == 20
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


# --- suggestions retrieved from the logs (the exemplar index) ------------------------------------------------------


@pytest.fixture(scope="module")
def index(embedder: SentenceEmbedder) -> ExemplarIndex:
    return ExemplarIndex.build(synthetic(), embedder)


def test_retrieved_suggestions_are_past_messages_of_the_action_and_run_no_lm(
    lm: LanguageModel, history: list[Turn], index: ExemplarIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = lm.model.forward
    passes: list[int] = []
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: passes.append(1) or forward(*a, **k))
    retrieved = Suggester(lm, config=SEEDED, exemplars=index, sources="exemplars").suggest(history, "thank", n=2)
    assert not passes  # no LM ran
    assert [s.origin for s in retrieved] == ["exemplar", "exemplar"] and all(s.action == "thank" for s in retrieved)
    rows = {index.sources[r]: r for r in range(len(index))}
    for suggestion in retrieved:
        assert suggestion.source is not None and index.texts[rows[suggestion.source]] == suggestion.text
        assert index.actions[rows[suggestion.source]] == "thank" and suggestion.finished
    assert retrieved[0].score >= retrieved[1].score  # nearest first

    both = Suggester(lm, config=SEEDED, exemplars=index, sources="both").suggest(history, "thank", n=3)
    assert [s.origin for s in both] == ["exemplar", "lm", "lm"] and both[0].text == retrieved[0].text
    assert passes  # the two written ones ran the LM
    written = Suggester(lm, config=SEEDED).suggest(history, "thank", n=2)
    assert [s.origin for s in written] == ["lm", "lm"] and all(s.source is None for s in written)


def test_retrieval_needs_an_index(lm: LanguageModel, folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"suggestions from 'both' need an exemplar index \(`convoplan lm index`\)"):
        Suggester(lm, sources="both")
    with pytest.raises(ValueError, match="no exemplar index"):
        Suggester.load(folder, sources="exemplars")


def test_convoplan_suggest_shows_where_a_suggestion_came_from(
    folder: Path, tmp_path: Path, index: ExemplarIndex
) -> None:
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    index.save(model / "exemplars")
    app = typer.Typer()
    app.command()(suggest_command)
    data = tmp_path / "conversation.jsonl"
    write_jsonl(data, synthetic()[-2:])
    arguments = ["--model", str(model), "--conversation", str(data), "--turns", "3", "--action", "thank", "--n", "2"]
    result = CliRunner().invoke(app, [*arguments, "--sources", "exemplars"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("[from the logs: c" in line for line in lines[1:])

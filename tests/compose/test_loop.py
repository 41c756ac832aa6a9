from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from convoplan.compose.fusion import ConcatFusion
from convoplan.compose.loop import STOP, Bot, ComposerConfig, DialogueState
from convoplan.compose.nlu import Lexicon
from convoplan.schema import Candidate


class Counting:
    """Proposes two fresh statements per step, and a question."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        n = len(state.turns)
        return [
            Candidate(text=f"Statement {n}a.", action="fact", provider="count", focus="lion"),
            Candidate(text=f"Statement {n}b.", action="fact", provider="count", focus="lion"),
            Candidate(text="Which animal next?", action="open_question", provider="ask", meta={"question": "open"}),
        ]


class Prefer:
    """Scores by a fixed table of actions; stop gets `stop_score`."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        return [self.scores.get(c.action or "", 0.0) for c in candidates]


def bot(dm: Prefer, config: ComposerConfig | None = None) -> Bot:
    return Bot([Counting()], dm, ConcatFusion(), Lexicon({"lion": ["lions"]}), lambda name: None, config)


def test_stop_wins_after_first_step() -> None:
    b = bot(Prefer({"fact": 2.0, STOP: 3.0}))
    b.hear("hi")
    response = b.respond()
    assert [t.action for t in response.steps] == ["fact", STOP]
    assert response.text == "Statement 1a."
    stop_step = response.steps[-1]
    assert [c.selected for c in stop_step.candidates] == [False, False, False, True]
    assert stop_step.text == response.text  # the closing message carries the fused response


def test_bound_and_question_close_the_response() -> None:
    b = bot(Prefer({"fact": 2.0, STOP: 1.0}), ComposerConfig(max_utterances=3))
    b.hear("hi")
    assert [t.action for t in b.respond().steps] == ["fact", "fact", "fact", STOP]
    only_stop = b.state.turns[-1].candidates
    assert [c.action for c in only_stop] == [STOP]

    b = bot(Prefer({"fact": 1.0, "open_question": 2.0, STOP: 0.0}))
    b.hear("hi")
    response = b.respond()
    assert [t.action for t in response.steps] == ["open_question", STOP]
    assert b.state.question is not None and b.state.question.kind == "open"
    b.hear("lions please")
    assert b.state.focus == "lion" and b.state.heard is not None and b.state.heard.answer == "lion"


def test_bot_ends_conversation_below_threshold() -> None:
    b = bot(Prefer({"fact": -1.0, "open_question": -2.0}), ComposerConfig(end_threshold=0.0))
    b.hear("hi")
    response = b.respond()
    assert response.ends_conversation and response.chosen == []


def test_exploration_logs_propensities() -> None:
    b = Bot(
        [Counting()],
        Prefer({"fact": 2.0, STOP: 3.0}),
        ConcatFusion(),
        Lexicon({}),
        lambda n: None,
        ComposerConfig(epsilon=0.3),
        random.Random(1),
    )
    b.hear("hi")
    first = b.respond().steps[0].candidates
    assert sum(c.propensity or 0.0 for c in first) == pytest.approx(1.0)
    assert max(c.propensity or 0.0 for c in first) == pytest.approx(0.7 + 0.1)
    assert all(c.score is not None and "step" in c.features for c in first)


def test_said_content_is_marked_repeated() -> None:
    b = bot(Prefer({"fact": 2.0, STOP: 3.0}))
    b.hear("hi")
    said = b.respond().chosen[0]
    state = b.state
    assert said.text in state.said and len(state.responses) == 1

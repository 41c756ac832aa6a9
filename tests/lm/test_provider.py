"""The action-directed LM as a content provider: the LM's view of the loop's logs, one candidate per action from
one generate call, and a composed turn made of LM candidates whose second step reads only the new message; with a
knowledge file, only candidates whose claims it supports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from convoplan.compose.fusion import ConcatFusion
from convoplan.compose.loop import STOP, Bot, ComposerConfig, DialogueState, Provider
from convoplan.lm.generate import SamplingConfig
from convoplan.lm.model import LanguageModel, load_model
from convoplan.lm.provider import QUESTION_KINDS, LMProvider, LMProviderConfig, lm_conversations, lm_turns
from convoplan.retrieval.knowledge import KnowledgeIndex
from convoplan.retrieval.support import check_support
from convoplan.schema import Candidate, Conversation, Turn
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.knowledge import knowledge_passages
from convoplan.worlds.animals.planning import HeuristicDM

from .conftest import Spy

SHORT = LMProviderConfig(sampling=SamplingConfig(do_sample=False, max_new_tokens=10), keep_unfinished=True)


@pytest.fixture(scope="module")
def logs() -> list[Conversation]:
    return list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=12, raters=1)))


@pytest.fixture(scope="module")
def lm(world_lm_dir: Path) -> LanguageModel:
    return load_model(world_lm_dir)


def test_the_lm_reads_user_and_step_messages_without_the_closing_stop(logs: list[Conversation]) -> None:
    turns = lm_turns(logs[0].turns)
    assert all(t.action != STOP for t in turns) and all(not t.candidates for t in turns)
    assert [t.text for t in turns] == [t.text for t in logs[0].turns if t.action != STOP]
    assert any(t.speaker == "agent" and t.action == "ack" for c in lm_conversations(logs) for t in c.turns)


def test_one_candidate_per_action_from_one_generate_call(
    lm: LanguageModel, logs: list[Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = LMProvider(lm, animals_world().lexicon, SHORT)
    as_provider: Provider = provider  # what the composition loop sees: the Provider protocol (checked by mypy)
    assert STOP not in provider.actions and {"fact", "quiz", "open_question"} <= set(provider.actions)
    spy = Spy(lm, monkeypatch)
    state = DialogueState(turns=logs[0].turns[:6], focus="lion")
    candidates = as_provider.propose(state)
    (call,) = spy.calls
    assert call["input_ids"].shape[0] == len(provider.actions)  # one prompt per action, in one batch
    assert [c.action for c in candidates] == [a for a in provider.actions if a in {c.action for c in candidates}]
    for candidate in candidates:
        assert candidate.provider == "lm" and candidate.text and "lm_score" in candidate.meta
        kind = QUESTION_KINDS.get(candidate.action or "")
        assert candidate.meta.get("question") == kind
        if kind is None:
            assert candidate.focus is not None  # content keeps the focus (or names another animal)


def test_unknown_actions_are_refused(lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="no tag"):
        LMProvider(lm, config=replace(SHORT, actions=("fact", "dance")))
    assert LMProvider(lm, config=replace(SHORT, actions=("fact",))).actions == ("fact",)


class Prefer:
    """Scores LM candidates by their action; anything else, and stop before two utterances, low."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        return [self.scores.get(c.action or "", 0.0) if c.provider in ("lm", STOP) else -1.0 for c in candidates]


def test_a_composed_turn_of_lm_candidates(lm: LanguageModel) -> None:
    world = animals_world()
    provider = LMProvider(lm, world.lexicon, SHORT)
    dm = Prefer({"attribute": 3.0, "sound": 2.0, "fact": 2.5, STOP: 1.0})
    bot = Bot([provider], dm, ConcatFusion(), world.lexicon, world.entity, ComposerConfig(max_utterances=2))
    bot.hear("tell me about lions")
    response = bot.respond()
    assert not response.ends_conversation and len(response.chosen) == 2
    assert all(c.provider == "lm" and c.action in ("attribute", "sound", "fact") for c in response.chosen)
    assert [t.action for t in response.steps][-1] == STOP and response.text
    assert response.chosen[0].text != response.chosen[1].text  # what was said is not offered again
    # The second step's history is the first's and its chosen message: the first's was not read again.
    heard = lm.codec.prompt([Turn(speaker="user", text="tell me about lions")], None, 100)  # EOS, message, <|agent|>
    assert provider.prefix.reused >= len(heard)


def test_with_knowledge_only_candidates_whose_claims_it_supports_are_offered(
    lm: LanguageModel, logs: list[Conversation]
) -> None:
    state = DialogueState(turns=logs[0].turns[:6], focus="lion")
    offered = LMProvider(lm, animals_world().lexicon, SHORT).propose(state)
    passages = [p for p in knowledge_passages() if p.entity in ("lion", *(c.focus for c in offered))]
    checked = LMProvider(lm, animals_world().lexicon, SHORT, knowledge=KnowledgeIndex(passages, "bm25"))
    kept = checked.propose(state)
    index = KnowledgeIndex(passages, "bm25")
    expected = [c for c in offered if check_support(c.text, index.of(c.focus or "") or passages).supported]
    assert [c.text for c in kept] == [c.text for c in expected]
    assert len(kept) < len(offered), "the tiny LM's sentences should not all be supported"
    unchecked = LMProvider(lm, animals_world().lexicon, replace(SHORT, check=False), knowledge=index)
    assert [c.text for c in unchecked.propose(state)] == [c.text for c in offered]

from __future__ import annotations

import random

from convoplan.compose.loop import DialogueState, step_features
from convoplan.compose.nlu import Question, interpret
from convoplan.schema import Candidate
from convoplan.worlds.animals.knowledge import load_knowledge_base
from convoplan.worlds.animals.providers import attribute_statements, default_providers
from convoplan.worlds.animals.world import animals_lexicon

KB = load_knowledge_base()


def propose(state: DialogueState) -> list[Candidate]:
    return [c for p in default_providers(KB, random.Random(0)) for c in p.propose(state)]


def test_every_provider_offers_on_a_focus_and_candidates_carry_their_metadata() -> None:
    state = DialogueState(focus="lion", mentioned=["lion"])
    candidates = propose(state)
    assert {c.provider for c in candidates} == {
        "acknowledgement",
        "sound",
        "fact",
        "attribute",
        "quiz",
        "focus_change",
        "open_question",
    }
    for candidate in candidates:
        assert candidate.text.strip() and candidate.action
        features = step_features(state, candidate)
        assert set(features) >= {"step", "response_length", "turn_index", "changes_focus", "is_question"}
    fact = next(c for c in candidates if c.action == "fact")
    assert fact.text.startswith('The convoplan animal guide says: "') and fact.focus == "lion"
    assert not fact.changes_focus
    quiz = next(c for c in candidates if c.action == "quiz")
    assert quiz.meta["answer"] == "lion" and "lion" in quiz.meta["options"] and len(quiz.meta["options"]) == 3
    for change in (c for c in candidates if c.action == "yes_no_question"):
        assert change.changes_focus and change.focus != "lion" and change.focus in KB.by_name


def test_content_is_not_repeated_and_no_focus_means_questions_only() -> None:
    state = DialogueState(focus="lion")
    first = [c for c in propose(state) if c.action == "fact"]
    state.said.update(c.text for c in first)
    again = [c for c in propose(state) if c.action == "fact"]
    assert again and not {c.text for c in first} & {c.text for c in again}
    assert {c.action for c in propose(DialogueState())} == {"ack", "yes_no_question", "open_question"}


def test_acknowledgement_reacts_to_the_quiz_answer() -> None:
    question = Question("quiz", options=("lion", "wolf", "cow"), answer="lion")
    state = DialogueState(focus="lion", question=question)
    state.heard = interpret("is it the wolf?", animals_lexicon(KB), "lion", question)
    ack = next(c for c in propose(state) if c.action == "ack")
    assert ack.text == "Not quite, it was the lion."


def test_attribute_statements_carry_units() -> None:
    statements = attribute_statements(KB["cheetah"])
    assert any("kilograms" in s for s in statements) and any("kilometres per hour" in s for s in statements)
    assert all(s.startswith("Cheetahs ") and s.endswith(".") for s in statements)

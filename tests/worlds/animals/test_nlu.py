"""The NLU against the team's hand-written table of user utterances (tests/worlds/animals/nlu_cases.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convoplan.compose.nlu import Question, interpret
from convoplan.worlds.animals.knowledge import load_knowledge_base
from convoplan.worlds.animals.world import animals_lexicon

CASES = [json.loads(line) for line in (Path(__file__).parent / "nlu_cases.jsonl").read_text().splitlines() if line]
LEXICON = animals_lexicon(load_knowledge_base())


def run(case: dict[str, Any]) -> dict[str, Any]:
    raw = case["question"]
    question = (
        None
        if raw is None
        else Question(raw["kind"], raw.get("about"), tuple(raw.get("options", ())), raw.get("answer"))
    )
    result = interpret(case["utterance"], LEXICON, case["previous_focus"], question)
    return {"focus": result.focus, "answer": result.answer, "feedback": result.feedback}


def test_table_is_large_and_varied() -> None:
    assert len(CASES) >= 150
    kinds = {(c["question"] or {}).get("kind") for c in CASES}
    assert kinds == {None, "yes_no", "open", "list", "quiz"}


def test_accuracy_on_the_table_is_at_least_95_percent() -> None:
    wrong = [(c["id"], c["utterance"], run(c), c["expected"]) for c in CASES if run(c) != c["expected"]]
    accuracy = 1 - len(wrong) / len(CASES)
    print(f"NLU accuracy on {len(CASES)} cases: {accuracy:.3f}")
    assert accuracy >= 0.95, wrong


@pytest.mark.parametrize(
    ("text", "focus", "question", "expected"),
    [
        ("tell me about hippos", None, None, ("hippopotamus", None)),
        ("what about killer whales?", "lion", None, ("orca", None)),
        ("how fast are they?", "cheetah", None, ("cheetah", None)),
        ("not lions, tigers please", None, Question("open"), ("tiger", "tiger")),
        ("no thanks", "lion", Question("yes_no", about="penguin"), ("lion", "no")),
        ("yes please", "lion", Question("yes_no", about="penguin"), ("penguin", "yes")),
        ("the second one", None, Question("quiz", options=("wolf", "lion", "cow"), answer="lion"), ("lion", "right")),
        ("is it the wolf?", None, Question("quiz", options=("wolf", "lion", "cow"), answer="lion"), ("lion", "wrong")),
        ("no idea", "cow", Question("quiz", options=("wolf", "lion", "cow"), answer="lion"), ("cow", "none")),
    ],
)
def test_examples(text: str, focus: str | None, question: Question | None, expected: tuple[str, str | None]) -> None:
    result = interpret(text, LEXICON, focus, question)
    assert (result.focus, result.answer) == expected


def test_requests_and_feedback() -> None:
    assert interpret("what sound does it make?", LEXICON, "lion", None).request == "sound"
    assert interpret("wow, thank you!", LEXICON, "lion", None).feedback == "positive"
    assert interpret("no thanks", LEXICON, "lion", None).feedback is None
    stop = interpret("stop, this is boring", LEXICON, "lion", None)
    assert stop.feedback == "negative" and stop.wants_to_stop


@pytest.mark.parametrize(
    ("text", "feedback"),
    [
        ("I have to go now, bye!", None),  # leaving politely is not a complaint ...
        ("ok bye", None),
        ("gotta go, see you", None),
        ("stop.", "negative"),  # ... telling the bot to stop is
        ("this is boring, bye", "negative"),
        ("shut up", "negative"),
        ("that's enough", "negative"),
    ],
)
def test_leaving_is_not_negative_feedback_but_telling_the_bot_to_stop_is(text: str, feedback: str | None) -> None:
    heard = interpret(text, LEXICON, "lion", None)
    assert heard.feedback == feedback
    assert heard.wants_to_stop == (text != "shut up")  # "shut up" complains, and may go on

"""The animals world's simulated agents (`convoplan.worlds.animals.agents`): what fits (true, what was asked, said
once, in the agent's form), what is edited, what is written anew, and how the two populations differ."""

from __future__ import annotations

import random

import pytest

from convoplan.schema import Candidate, Conversation, Turn
from convoplan.worlds.animals.agents import POPULATIONS, GuideAgent, agent_population

QUOTED = 'The convoplan animal guide says: "Polar bears are the largest land carnivores on Earth."'
WEIGHT = "Polar bears weigh between 150 and 650 kilograms."
LIFESPAN = "Polar bears live for about 15 to 25 years."


def agent(population: str = "thorough") -> GuideAgent:
    made = GuideAgent(random.Random(0), POPULATIONS[population])
    made.reads = 9
    return made


def chat(*texts: str) -> Conversation:
    return Conversation("c", "animals", [Turn("user" if k % 2 == 0 else "agent", t) for k, t in enumerate(texts)])


def test_a_true_new_fact_fits_and_a_false_or_repeated_one_does_not() -> None:
    thorough = agent()
    history = chat("tell me about polar bears")
    meant = Turn("agent", QUOTED, action="fact")
    assert thorough.fits(history, meant, Candidate(QUOTED, "fact"))
    for wrong in (
        'The convoplan animal guide says: "Polar bears can fly."',  # the check's near miss: not the guide's words
        "Polar bears weigh about 9000 kilograms.",  # a number the guide does not give
        QUOTED.replace("Polar bears", "Lions"),  # about another animal
    ):
        assert not thorough.fits(history, meant, Candidate(wrong, "fact")), wrong
    assert not thorough.fits(history, meant, Candidate(QUOTED, "attribute"))  # not the meant action
    said = chat("tell me about polar bears", QUOTED, "cool")
    assert not thorough.fits(said, meant, Candidate(QUOTED, "fact"))  # said already


def test_after_a_question_only_its_answer_fits() -> None:
    thorough = agent()
    asked = chat("how heavy is a polar bear?")
    meant = Turn("agent", WEIGHT, action="attribute")
    assert thorough.fits(asked, meant, Candidate(WEIGHT, "attribute"))
    assert not thorough.fits(asked, meant, Candidate(LIFESPAN, "attribute"))
    assert thorough.fits(
        chat("cool, polar bears"), meant, Candidate(LIFESPAN, "attribute")
    )  # no question: new is enough


def test_the_two_tastes_take_edit_and_write() -> None:
    history = chat("tell me about polar bears")
    meant = Turn("agent", QUOTED, action="fact")
    shown = [Candidate("Polar bears weigh about 9000 kilograms.", "fact"), Candidate(QUOTED, "fact")]
    assert agent().choose(history, meant, shown).__dict__ == {"text": QUOTED, "suggestion": 1}
    bare = QUOTED.split('"')[1]
    assert agent("terse").choose(history, meant, shown).__dict__ == {"text": bare, "suggestion": 1}  # unquoted
    # Nothing fits: the closest of the action is edited into the agent's words when close, else its own words.
    near = [Candidate(QUOTED.replace("land carnivores", "sea animals"), "fact")]
    assert agent().choose(history, meant, near).__dict__ == {"text": QUOTED, "suggestion": 0}
    assert agent().choose(history, meant, [Candidate("Hello!", "fact")]).__dict__ == {
        "text": QUOTED,
        "suggestion": None,
    }
    # Short messages of the same action do for each other; another action's never.
    ack = Turn("agent", "Awesome.", action="ack")
    assert agent().choose(history, ack, [Candidate("Cool.", "ack")]).suggestion == 0
    assert agent().choose(history, ack, [Candidate("Cool.", "greeting")]).suggestion is None


def test_an_agent_reads_only_its_first_suggestions_and_individuals_differ() -> None:
    reader = agent()
    reader.reads = 1
    history = chat("tell me about polar bears")
    meant = Turn("agent", QUOTED, action="fact")
    assert reader.choose(history, meant, [Candidate("Hello!", "fact"), Candidate(QUOTED, "fact")]).suggestion is None
    made = [agent_population("terse")(random.Random(seed)) for seed in range(5)]
    assert len({a.name for a in made}) == 5 and len({a.reads for a in made}) > 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown agent population 'lazy': expected one of thorough, terse"):
        agent_population("lazy")

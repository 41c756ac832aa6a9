"""What an agent did with the suggestions shown (`convoplan.lm.choices`): the outcome, its edit distance, and the
turn as it is stored."""

from __future__ import annotations

from convoplan.lm.choices import answered, outcome, shown_candidate
from convoplan.lm.suggest import Suggestion
from convoplan.schema import Candidate, Turn

SHOWN = [Candidate("Lions live in prides.", "fact", "lm"), Candidate("Lions roar.", "sound", "exemplar")]


def test_the_outcome_and_its_edit_distance() -> None:
    assert outcome(" Lions roar. ", SHOWN, 1) == ("taken", 0)
    assert outcome("Lions roar loudly.", SHOWN, 1) == ("edited", 7)
    assert outcome("Lions roar!", SHOWN, None) == ("own", 1)  # to the nearest shown
    assert outcome("Hello.", [], None) == ("own", None)
    turn = answered(Turn("agent", "Lions roar loudly."), "r1", SHOWN, 1, 3, 2.5)
    assert turn.action == "sound" and [c.selected for c in turn.candidates] == [False, True]
    assert turn.meta["choice"] == {
        "request": "r1",
        "outcome": "edited",
        "suggestion": 1,
        "shown_at": 3,
        "edit_distance": 7,
        "seconds": 2.5,
    }
    own = answered(Turn("agent", "Hi.", action="greeting"), "r2", SHOWN, None, 3, 1.0)
    assert own.action == "greeting" and not any(c.selected for c in own.candidates)


def test_a_suggestion_is_stored_as_shown() -> None:
    written = Suggestion("Lions roar.", "sound", None, -0.5, False, unsupported=("Lions roar.",), checked=True)
    assert shown_candidate(written) == Candidate(
        "Lions roar.",
        "sound",
        "lm",
        score=-0.5,
        meta={"unsupported": ["Lions roar."], "checked": True, "finished": False},
    )

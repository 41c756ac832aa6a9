"""What an agent did with the suggestions a suggest request showed: sent one as it was, edited one, or wrote their
own. The server, and the simulated agents of `convoplan.sim.assist`, file the answer with the agent's turn
(docs/format.md, "Agent choices"):

    turn.candidates   the suggestions shown, in their order (their numbers), the one the agent started from
                      `selected`; provider = the suggestion's origin ("lm" | "exemplar"), score as shown
    turn.meta.choice  {"request": id, "outcome": "taken" | "edited" | "own", "suggestion": its number or null,
                       "shown_at": turns before the suggestions were shown, "edit_distance": characters,
                       "seconds": from showing to sending}

`edit_distance` is the Levenshtein distance from the sent text to the suggestion it started from, or, for a message
of the agent's own, to the nearest suggestion shown; "taken" means the text sent is the suggestion's, up to
surrounding white space. `convoplan lm pairs` reads these back into preference pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from pydantic import JsonValue
from rapidfuzz.distance import Levenshtein

from convoplan.lm.suggest import Suggestion
from convoplan.schema import Candidate, Turn

__all__ = ["Outcome", "answered", "outcome", "shown_candidate"]

Outcome = Literal["taken", "edited", "own"]


def shown_candidate(s: Suggestion) -> Candidate:
    """A suggestion as shown, as the canonical candidate that is stored (the module docstring): its
    origin as `provider`, its score; in `meta` a retrieved one's `source`, `checked: true` where its claims were
    checked against the knowledge file, the passages (`sources`, ids) behind them, its `unsupported` claims, and
    `finished: false` for one cut at the token limit."""
    sources: list[JsonValue] = [p.id for p in s.sources]
    unsupported: list[JsonValue] = list(s.unsupported)
    fields = {"source": s.source, "sources": sources, "unsupported": unsupported}
    meta: dict[str, JsonValue] = {key: value for key, value in fields.items() if value}  # (the defaults left out)
    if s.checked:
        meta["checked"] = True
    if not s.finished:
        meta["finished"] = False
    return Candidate(text=s.text, action=s.action, provider=s.origin, score=s.score, meta=meta)


def outcome(sent: str, shown: Sequence[Candidate], chosen: int | None) -> tuple[Outcome, int | None]:
    """(what the agent did, the characters edited) for the text `sent` after `shown`, having started from suggestion
    number `chosen` (None: from none). The distance is None when nothing was shown."""
    text = sent.strip()
    if chosen is not None:
        distance = Levenshtein.distance(text, shown[chosen].text.strip())
        return ("taken" if distance == 0 else "edited"), distance
    return "own", min((Levenshtein.distance(text, c.text.strip()) for c in shown), default=None)


def answered(
    turn: Turn, request: str, shown: Sequence[Candidate], chosen: int | None, shown_at: int, seconds: float
) -> Turn:
    """The agent's `turn` with its answer to suggest request `request` filed (the module docstring); the action of
    the suggestion it started from where the agent named none."""
    what, distance = outcome(turn.text, shown, chosen)
    choice: dict[str, JsonValue] = {
        "request": request,
        "outcome": what,
        "suggestion": chosen,
        "shown_at": shown_at,
        "edit_distance": distance,
        "seconds": round(seconds, 3),
    }
    candidates = [replace(c, selected=k == chosen) for k, c in enumerate(shown)]
    action = turn.action if turn.action is not None or chosen is None else shown[chosen].action
    return replace(turn, action=action, candidates=candidates, meta={**turn.meta, "choice": choice})

"""Messages that perform several acts, mapped to the one action the canonical format allows per message.

Task-oriented corpora often annotate a system turn with several dialogue acts ("inform price", "request date"). A
converter keeps them all in the turn's `meta["acts"]` (a list of strings, in the order the corpus gives them) and
leaves `action` empty; `map_acts` then chooses the message's action by one of three rules:

- `first`: the first act. Few labels, but the acts after it are lost (a turn that informs and then books is an
  "inform").
- `priority`: the act that comes first in a priority list (domain knowledge: "book" before "inform" before
  "greet"); acts missing from the list rank after it, rarest first in the data (a rare act says more than a
  frequent one). Few labels, the important act kept.
- `combined`: every distinct act, joined with "+" in the corpus's order ("inform+request"). Nothing lost, but the
  label set grows with the combinations and most of them are rare: harder to learn and to predict.

bench/multi_act.py measures the trade-off on PersuasionForGood's persuader turns (docs/your-data.md has the table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from convoplan.schema import Conversation, Turn

__all__ = ["ActMapping", "map_acts", "turn_acts"]

ActMapping = Literal["first", "priority", "combined"]
SEPARATOR = "+"


def turn_acts(turn: Turn) -> list[str] | None:
    """The acts a converter stored in `meta["acts"]` (None when the turn has none); ValueError if not strings."""
    acts = turn.meta.get("acts")
    if acts is None:
        return None
    if not isinstance(acts, list) or not all(isinstance(a, str) and a for a in acts):
        raise ValueError(f"meta.acts: expected a list of non-empty strings, got {acts!r}")
    return [str(a) for a in acts]


def _rank(priority: Sequence[str], counts: Counter[str]) -> dict[str, tuple[int, int, str]]:
    listed = {act: i for i, act in enumerate(priority)}
    return {act: (listed.get(act, len(listed)), counts[act], act) for act in counts}


def map_acts(
    conversations: Sequence[Conversation], mode: ActMapping, priority: Sequence[str] = ()
) -> tuple[list[Conversation], Counter[str]]:
    """The conversations with every agent turn that has `meta["acts"]` given the action `mode` chooses (turns
    without acts are left as they are), and how many turns got each action. A turn whose `action` is already set
    keeps it: the corpus said which act counts. User turns keep their acts as they are."""
    counts: Counter[str] = Counter()
    for conversation in conversations:
        for i, turn in enumerate(conversation.turns):
            if turn.speaker != "agent":
                continue  # a user's acts (PersuasionForGood's persuadee) describe the user: never an action
            try:
                acts = turn_acts(turn)
            except ValueError as error:
                raise ValueError(f"{conversation.id}: turns[{i}].{error}") from None
            counts.update(acts or [])
    rank = _rank(priority, counts)
    mapped: list[Conversation] = []
    chosen: Counter[str] = Counter()
    for conversation in conversations:
        turns = []
        for turn in conversation.turns:
            acts = turn_acts(turn) if turn.speaker == "agent" else None
            if acts and turn.action is None:
                if mode == "first":
                    action = acts[0]
                elif mode == "priority":
                    action = min(acts, key=rank.__getitem__)
                else:
                    action = SEPARATOR.join(dict.fromkeys(acts))  # distinct, in order
                turn = replace(turn, action=action)
            if turn.speaker == "agent" and turn.action:
                chosen[turn.action] += 1
            turns.append(turn)
        mapped.append(replace(conversation, turns=turns))
    return mapped, chosen

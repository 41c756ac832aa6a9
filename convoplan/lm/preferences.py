"""Preference pairs from what agents did with suggestions: the data that preference tuning (DPO) learns from.

An agent turn stored after suggestions were shown (docs/format.md, "Agent choices") says which suggestions the agent
saw (its `candidates`) and what it did (`meta.choice.outcome`). Each such turn gives pairs (context, action, chosen,
rejected), all under the action of the text sent, since the LM writes for an action and a pair compares two texts
for the same prompt:

    taken    the suggestion sent  over  every other suggestion of its action shown
    edited   the text sent        over  the suggestion it started from, and every other one of its action shown
    own      the text sent        over  every suggestion of the turn's action shown

Left out, and counted (`PairCounts`): turns with no choice; choices where nothing was shown; choices about
suggestions shown for an earlier point of the conversation (the customer wrote in between: the context differs);
turns without an action (an own message the agent gave none); a rejected text equal to the chosen one; and pairs
already seen (the same context, action and texts).

The pairs file is JSON Lines, one pair per line: `{"id", "context" (the canonical conversation up to the turn),
"action", "chosen", "rejected", "kind"}`; `read_pairs` names file:line and the field of a bad line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, get_args

from pydantic import Field, TypeAdapter

from convoplan.atomic import atomic_write
from convoplan.lm.choices import Outcome
from convoplan.schema import Conversation, InvalidLine, Text, Turn, collect, iter_records, to_json

__all__ = ["PairCounts", "PreferencePair", "build_pairs", "read_pairs", "write_pairs"]


@dataclass(frozen=True)
class PreferencePair:
    """The agent preferred `chosen` to `rejected` as the message for `action` after `context`."""

    id: Annotated[str, Field(min_length=1)]
    """`conversation id#turn index#k`: where it comes from."""
    context: Conversation
    """The conversation before the agent's turn: its turns and the events up to it."""
    action: Annotated[str, Field(min_length=1)]
    chosen: Text
    rejected: Text
    kind: Outcome
    """What the agent did: sent a suggestion as it was, edited one, or wrote their own."""


_PAIR: TypeAdapter[PreferencePair] = TypeAdapter(PreferencePair)


@dataclass
class PairCounts:
    """What `build_pairs` read, made and left out."""

    choices: Counter[str] = field(default_factory=Counter)
    """Agent turns with a choice, by outcome."""
    pairs: Counter[str] = field(default_factory=Counter)
    """Pairs made, by kind."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Turns or pairs left out, by reason."""

    def lines(self) -> list[str]:
        """The counts as a person reads them, one line each."""

        def listed(counter: Counter[str]) -> str:
            return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "none"

        return [
            f"agent turns with a choice: {self.choices.total()} ({listed(self.choices)})",
            f"pairs: {self.pairs.total()} ({listed(self.pairs)})",
            f"left out: {listed(self.dropped)}",
        ]


def _context(conversation: Conversation, position: int) -> Conversation:
    """The conversation as it was before turn `position`."""
    events = [e for e in conversation.events if e.position <= position]
    return replace(conversation, turns=conversation.turns[:position], events=events, outcome=None)


def _turn_pairs(conversation: Conversation, position: int, turn: Turn, counts: PairCounts) -> Iterator[PreferencePair]:
    choice = turn.meta.get("choice")
    if not isinstance(choice, dict):
        return
    outcome = next((kind for kind in get_args(Outcome) if kind == choice.get("outcome")), None)
    if outcome is None:
        counts.dropped["a choice with an unknown outcome"] += 1
        return
    counts.choices[outcome] += 1
    if not turn.candidates:
        counts.dropped["nothing shown"] += 1
        return
    if choice.get("shown_at") != position:
        counts.dropped["shown for an earlier point of the conversation"] += 1
        return
    if turn.action is None:
        counts.dropped["no action (own words without one)"] += 1
        return
    context = _context(conversation, position)
    chosen = turn.text.strip()
    k = 0
    for candidate in turn.candidates:
        if candidate.action != turn.action:
            continue  # another action's suggestion: a planner's question, not the LM's
        rejected = candidate.text.strip()
        if rejected == chosen:
            if not candidate.selected:
                counts.dropped["a suggestion the same as the text sent"] += 1
            continue
        yield PreferencePair(f"{conversation.id}#{position}#{k}", context, turn.action, chosen, rejected, outcome)
        k += 1


def build_pairs(conversations: Iterable[Conversation]) -> tuple[list[PreferencePair], PairCounts]:
    """The preference pairs of every agent turn with a choice (the module docstring), duplicates left out."""
    counts = PairCounts()
    pairs: list[PreferencePair] = []
    seen: set[str] = set()
    for conversation in conversations:
        for position, turn in enumerate(conversation.turns):
            if turn.speaker != "agent":
                continue
            for pair in _turn_pairs(conversation, position, turn, counts):
                key = json.dumps([to_json(pair.context), pair.action, pair.chosen, pair.rejected])
                if key in seen:
                    counts.dropped["duplicate pair"] += 1
                    continue
                seen.add(key)
                counts.pairs[pair.kind] += 1
                pairs.append(pair)
    return pairs, counts


def write_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write pairs as JSON Lines, atomically; return how many."""
    count = 0
    with atomic_write(path) as stream:
        for pair in pairs:
            stream.write(_PAIR.dump_json(pair, exclude_defaults=True).decode() + "\n")
            count += 1
    return count


def read_pairs(
    path: str | Path, *, skip_invalid: bool = False, on_skip: Callable[[InvalidLine], None] | None = None
) -> list[PreferencePair]:
    """The pairs of a file in order. The first bad line raises FormatError naming file:line and the field (a
    repeated id names both lines); with `skip_invalid`, bad lines go to `on_skip` and the rest is read."""
    records = iter_records(path, _PAIR, lambda pair: pair.id)
    return collect((r if isinstance(r, InvalidLine) else r[1] for r in records), skip_invalid, on_skip)

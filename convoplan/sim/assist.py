"""Agent assist, simulated: logged conversations replayed with simulated human agents using the suggestions, their
choices filed as the server files them, and the measures of how often the suggestions were used.

`simulate_assist` replays each conversation with one agent (drawn from the factory, seeded by the conversation and
the run's seed). At each agent message whose action the LM knows, the agent is shown `n` suggestions for that
action (as after picking its chip in the console: what is measured is the writing, not the planner) after the
conversation so far, which holds what the agents sent and the customers' logged messages; its choice is stored
with `lm.choices.answered`. The result is what `convoplan data export` writes of a served store, so `convoplan lm
pairs` and `assist_summary` read both alike.

`assist_summary` counts the outcomes (taken as shown, edited, own), the edit distances, the share of suggestions
of the checked actions that the grounding check supports, and time to send where it was recorded.
`compare_assist` is the paired comparison of two runs on the same conversations and agents: the difference in the
share of messages where a suggestion was sent unedited, with its paired bootstrap interval over conversations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge

from convoplan.configs import Config
from convoplan.lm.choices import answered, shown_candidate
from convoplan.lm.suggest import Suggester
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation, Turn
from convoplan.sim.protocols import AgentFactory

__all__ = ["AssistComparison", "AssistConfig", "AssistSummary", "assist_summary", "compare_assist", "simulate_assist"]


@dataclass
class AssistConfig(Config):
    """A simulated agent-assist run."""

    n: Annotated[int, Ge(1)] = 3
    """Suggestions shown for each agent message."""
    seed: int = 0
    """Seed of the agents drawn (with each conversation's id): the same seed meets the same agents."""
    max_messages: Annotated[int, Ge(0)] = 0
    """Agent messages assisted per conversation (0: all); the conversation is cut after the last of them."""


def _choices(conversation: Conversation) -> list[tuple[Turn, dict[str, Any]]]:
    """The agent messages sent after suggestions were shown, each with its `meta.choice` (docs/format.md)."""
    return [
        (turn, choice)
        for turn in conversation.turns
        if turn.speaker == "agent" and isinstance(choice := turn.meta.get("choice"), dict)
    ]


def simulate_assist(
    conversations: Sequence[Conversation],
    suggester: Suggester,
    new_agent: AgentFactory,
    config: AssistConfig | None = None,
    progress: Progress | None = None,
) -> list[Conversation]:
    """The conversations replayed with agents using suggestions (the module docstring), each with its agent's name
    in `meta.agent`; agent messages whose action the LM does not know are kept as logged."""
    config = config or AssistConfig()
    known = set(suggester.lm.codec.actions)
    limit = config.max_messages or None

    def assisted(conversation: Conversation) -> int:
        return len([t for t in conversation.turns if t.speaker == "agent" and t.action in known][:limit])

    total = sum(assisted(c) for c in conversations)
    done = 0
    replayed = []
    for conversation in conversations:
        agent = new_agent(random.Random(f"{config.seed}:{conversation.id}"))
        turns: list[Turn] = []
        left = assisted(conversation)
        for position, meant in enumerate(conversation.turns):
            if not left:
                break
            if meant.speaker != "agent" or meant.action not in known:
                turns.append(meant)
                continue
            left -= 1
            events = [e for e in conversation.events if e.position <= position]
            history = replace(conversation, turns=list(turns), events=events, outcome=None)
            shown = [shown_candidate(s) for s in suggester.suggest(history, meant.action, config.n)]
            choice = agent.choose(history, meant, shown)
            sent = Turn("agent", choice.text, action=meant.action, action_source="agent")
            request = f"{conversation.id}#{position}"
            turns.append(answered(sent, request, shown, choice.suggestion, position, 0.0))
            done += 1
            if progress is not None:
                progress(Update("assisting", done, total, unit="messages"))
        meta = {**conversation.meta, "agent": agent.name, "mode": "assist"}
        replayed.append(replace(conversation, turns=turns, meta=meta))
    return replayed


@dataclass(frozen=True)
class AssistSummary:
    """How the suggestions of a run were used."""

    messages: int
    """Agent messages sent after suggestions were shown."""
    taken: float
    """Share sent as a suggestion was, unedited."""
    edited: float
    own: float
    mean_edit_distance: float
    """Characters changed, on average, from the suggestion started from (own: the nearest shown)."""
    supported: float
    """Share of the checked suggestions shown (those the grounding check looked at) with no unsupported claim; NaN
    when none was checked."""
    checked: int
    mean_seconds: float
    """From showing to sending (NaN in simulation, where it is not recorded)."""
    by_action: dict[str, float] = field(default_factory=dict)
    """Share taken unedited per action."""


def assist_summary(conversations: Sequence[Conversation]) -> AssistSummary:
    """The summary of every agent message with a choice in `conversations` (a simulated run or an export of a
    served store)."""
    pairs = [pair for conversation in conversations for pair in _choices(conversation)]
    outcome = [str(choice["outcome"]) for _, choice in pairs]
    distances = [float(choice["edit_distance"]) for _, choice in pairs if choice.get("edit_distance") is not None]
    seconds = [float(choice["seconds"]) for _, choice in pairs if choice.get("seconds")]
    checked = [c for turn, _ in pairs for c in turn.candidates if c.meta.get("checked")]
    supported = [not c.meta.get("unsupported") for c in checked]
    by_action: dict[str, list[bool]] = {}
    for (turn, _), what in zip(pairs, outcome, strict=True):
        by_action.setdefault(str(turn.action), []).append(what == "taken")

    def share(kind: str) -> float:
        return outcome.count(kind) / len(outcome) if outcome else math.nan

    return AssistSummary(
        messages=len(pairs),
        taken=share("taken"),
        edited=share("edited"),
        own=share("own"),
        mean_edit_distance=float(np.mean(distances)) if distances else math.nan,
        supported=float(np.mean(supported)) if supported else math.nan,
        checked=len(checked),
        mean_seconds=float(np.mean(seconds)) if seconds else math.nan,
        by_action={action: float(np.mean(values)) for action, values in sorted(by_action.items())},
    )


@dataclass(frozen=True)
class AssistComparison:
    """Run B against run A on the same conversations: the share of messages sent unedited from a suggestion."""

    conversations: int
    a: float
    b: float
    difference: float
    """b - a (the mean over conversations of each one's difference)."""
    low: float
    high: float
    """Paired bootstrap interval of the difference (percentile, conversations resampled)."""


def compare_assist(
    a: Sequence[Conversation], b: Sequence[Conversation], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> AssistComparison:
    """The paired comparison of two runs over the conversations both hold messages with choices in (by id)."""
    from scipy.stats import bootstrap

    def shares(run: Sequence[Conversation]) -> dict[str, float]:
        found = {}
        for conversation in run:
            outcomes = [choice["outcome"] for _, choice in _choices(conversation)]
            if outcomes:
                found[conversation.id] = outcomes.count("taken") / len(outcomes)
        return found

    first, second = shares(a), shares(b)
    ids = sorted(first.keys() & second.keys())
    if len(ids) < 2:
        raise ValueError(f"a paired comparison needs conversations in both runs; {len(ids)} in common")
    x, y = np.array([first[i] for i in ids]), np.array([second[i] for i in ids])
    result = bootstrap(
        (x, y),
        lambda p, q, axis=-1: np.mean(q - p, axis=axis),
        n_resamples=resamples,
        confidence_level=confidence,
        vectorized=True,
        paired=True,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return AssistComparison(
        len(ids), float(x.mean()), float(y.mean()), float((y - x).mean()), float(interval.low), float(interval.high)
    )

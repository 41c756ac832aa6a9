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

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge
from rapidfuzz import fuzz

from convoplan.configs import Config
from convoplan.lm.choices import answered, shown_candidate
from convoplan.lm.suggest import Suggester
from convoplan.progress import Progress, Update
from convoplan.schema import Candidate, Conversation, Turn
from convoplan.sim.metrics import bootstrap_interval, mean_difference
from convoplan.sim.protocols import AgentChoice, AgentFactory

__all__ = [
    "AssistComparison",
    "AssistConfig",
    "AssistReport",
    "AssistSummary",
    "LogAgent",
    "assist_report",
    "assist_summary",
    "compare_assist",
    "json_ready",
    "simulate_assist",
]


@dataclass
class AssistConfig(Config):
    """A simulated agent-assist run."""

    n: Annotated[int, Ge(1)] = 3
    """Suggestions shown for each agent message."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the agents drawn (with each conversation's id): the same seed meets the same agents."""
    max_messages: Annotated[int, Ge(0)] = 0
    """Agent messages assisted per conversation (0: all); the conversation is cut after the last of them."""


class LogAgent:
    """An agent of any corpus who means what the log says (`meant`): it sends the first suggestion that reads like
    the logged message (rapidfuzz ratio at least `take`), edits the closest into it when that is at least `edit`,
    and otherwise writes the logged message. Individuals differ by a few points in both, drawn from the rng."""

    def __init__(self, rng: random.Random, take: float = 80.0, edit: float = 50.0) -> None:
        self.take = take + rng.uniform(-5.0, 5.0)
        self.edit = edit + rng.uniform(-5.0, 5.0)
        self.name = f"log-{rng.randrange(10**6):06d}"

    def choose(self, history: Conversation, meant: Turn, shown: Sequence[Candidate]) -> AgentChoice:
        ratios = [(fuzz.ratio(c.text, meant.text), k) for k, c in enumerate(shown) if c.action == meant.action]
        for ratio, k in ratios:
            if ratio >= self.take:
                return AgentChoice(shown[k].text, k)
        best = max(ratios, default=None)
        return AgentChoice(meant.text, best[1] if best is not None and best[0] >= self.edit else None)


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
        events = [e for e in conversation.events if e.position <= len(turns)]  # (none past the cut)
        replayed.append(replace(conversation, turns=turns, events=events, meta=meta))
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
    """Run B against run A: the share of agent messages sent unedited from a suggestion, per conversation."""

    conversations: tuple[int, int]
    """Conversations of A and of B that have messages with choices."""
    a: float
    b: float
    """Each run's mean over its conversations."""
    difference: float
    """b - a."""
    low: float
    high: float
    """Bootstrap interval of the difference (percentile): paired where both runs hold the same conversations (a
    replay of one set: each resample takes a conversation with both its values), else each run resampled on its
    own (a live experiment, where each agent is in one arm)."""
    paired: bool


def _taken_shares(run: Sequence[Conversation]) -> dict[str, float]:
    found = {}
    for conversation in run:
        outcomes = [choice["outcome"] for _, choice in _choices(conversation)]
        if outcomes:
            found[conversation.id] = outcomes.count("taken") / len(outcomes)
    return found


def compare_assist(
    a: Sequence[Conversation], b: Sequence[Conversation], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> AssistComparison:
    """B against A (the class docstring); ValueError when either has fewer than two conversations with choices."""
    first, second = _taken_shares(a), _taken_shares(b)
    if min(len(first), len(second)) < 2:
        raise ValueError(
            f"a comparison needs two conversations with choices in each run; {len(first)} and {len(second)}"
        )
    paired = first.keys() == second.keys()
    ids = sorted(first)
    x = np.array([first[i] for i in ids])
    y = np.array([second[i] for i in (ids if paired else sorted(second))])
    low, high = bootstrap_interval(x, y, mean_difference, confidence, resamples, seed, paired)
    return AssistComparison(
        (len(x), len(y)), float(x.mean()), float(y.mean()), float(y.mean() - x.mean()), low, high, paired
    )


@dataclass(frozen=True)
class AssistReport:
    """The agent-assist A/B report: each arm's summary, and each arm against the control (`convoplan experiment
    report --assist`)."""

    control: str
    summaries: dict[str, AssistSummary]
    comparisons: dict[str, AssistComparison]
    """Every arm but the control, against it."""
    confidence: float

    def markdown(self) -> str:
        lines = [
            f"# Agent assist: {len(self.summaries)} arms, control {self.control}",
            "",
            "| arm | messages | taken unedited | edited | own | mean edit distance | supported | seconds to send | "
            "taken unedited vs control |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for arm, s in self.summaries.items():
            versus = "(control)"
            if arm in self.comparisons:
                c = self.comparisons[arm]
                kind = "paired" if c.paired else "unpaired"
                versus = f"{c.difference:+.1%} [{c.low:+.1%}, {c.high:+.1%}] ({kind})"
            lines.append(
                f"| {arm} | {s.messages} | {_share(s.taken)} | {_share(s.edited)} | {_share(s.own)} | "
                f"{_fixed(s.mean_edit_distance)} | {_share(s.supported)} | {_fixed(s.mean_seconds)} | {versus} |"
            )
        lines += [
            "",
            f"Intervals: {self.confidence:.0%} bootstrap over conversations of the per-conversation share of agent "
            "messages sent as a suggestion was; paired where the arms hold the same conversations.",
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        def clean(values: dict[str, Any]) -> dict[str, Any]:
            return {k: json_ready(v) for k, v in values.items()}

        return {
            "control": self.control,
            "confidence": self.confidence,
            "summaries": {arm: clean(dataclasses.asdict(s)) for arm, s in self.summaries.items()},
            "comparisons": {arm: clean(dataclasses.asdict(c)) for arm, c in self.comparisons.items()},
        }

    def png(self) -> bytes:
        """Each arm's share of messages sent unedited (a bar), labelled with its difference from the control and
        that difference's interval (per conversation, as in the table)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter

        from convoplan.report import figure_png

        arms = list(self.summaries)
        figure = Figure(figsize=(8.0, 1.2 + 0.5 * len(arms)), layout="constrained")
        axes = figure.add_subplot()
        for k, arm in enumerate(arms):
            share = self.summaries[arm].taken
            end = 0.0 if math.isnan(share) else share
            axes.barh(k, end, color=f"C{k % 10}")
            c = self.comparisons.get(arm)
            versus = "control" if c is None else f"{c.difference:+.1%} [{c.low:+.1%}, {c.high:+.1%}] vs {self.control}"
            axes.text(end, k, f"  {_share(share)}  ({versus})", va="center", fontsize=8)
        axes.set_yticks(range(len(arms)), arms)
        axes.invert_yaxis()
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_xlim(0, 1)
        axes.set_xlabel(
            f"agent messages sent as suggested; in brackets the {self.confidence:.0%} bootstrap interval of the "
            "difference per conversation"
        )
        return figure_png(figure, 120)


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _fixed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities as None, tuples as lists: what `json.dumps(allow_nan=False)` takes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [json_ready(v) for v in value]
    return value


def assist_report(
    arms: dict[str, list[Conversation]], control: str, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> AssistReport:
    """The report of agent-assist arms (conversations by arm: stored assist sessions, or simulated runs)."""
    if control not in arms:
        raise ValueError(f"control {control!r} is not one of the arms ({', '.join(arms)})")
    summaries = {arm: assist_summary(runs) for arm, runs in arms.items()}
    comparisons = {
        arm: compare_assist(arms[control], runs, confidence, resamples, seed)
        for arm, runs in arms.items()
        if arm != control
    }
    return AssistReport(control, summaries, comparisons, confidence)

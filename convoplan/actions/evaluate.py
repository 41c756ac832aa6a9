"""Evaluating next-action models: top-1 and top-3 accuracy of any `NextActionModel` on held-out conversations, and
the frequency baselines every model is compared with (the majority action, the most frequent successor)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from convoplan.actions.nba import history_prefixes
from convoplan.actions.protocols import ActionScore, NextActionModel
from convoplan.schema import Conversation

__all__ = ["FrequencyBaseline", "NextActionAccuracy", "evaluate_next_actions"]


@dataclass
class NextActionAccuracy:
    """How often the logged next action is among a model's first k."""

    top1: float
    top3: float
    targets: int
    """Labelled agent messages predicted."""
    conversations: int
    """Conversations they come from."""
    unseen: int
    """Targets whose action the model does not rank at all (never in its training set): always misses."""

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate_next_actions(
    model: NextActionModel, conversations: Sequence[Conversation], chunk: int = 512
) -> NextActionAccuracy:
    """Top-1 and top-3 accuracy of `model` on every labelled agent message of `conversations`, each predicted from
    the conversation before it (through `model.next_actions`)."""
    histories, actions = history_prefixes(conversations)
    top1 = top3 = unseen = 0
    for first in range(0, len(histories), chunk):
        rankings = model.next_actions(histories[first : first + chunk])
        for ranking, action in zip(rankings, actions[first : first + chunk], strict=True):
            ranked = [score.action for score in ranking]
            top1 += ranked[:1] == [action]
            top3 += action in ranked[:3]
            unseen += action not in ranked
    n = len(histories)
    used = sum(1 for c in conversations if any(t.speaker == "agent" and t.action for t in c.turns))
    return NextActionAccuracy(top1 / n if n else math.nan, top3 / n if n else math.nan, n, used, unseen)


class FrequencyBaseline:
    """Ranks actions by training counts: `order=0` by how often each action occurs (the majority baseline),
    `order=1` by how often it followed the previous labelled agent action (the first action of a conversation: by
    how often conversations open with it), ties and unseen contexts broken by the overall counts."""

    kind = "frequency"

    def __init__(self, order: Literal[0, 1] = 1) -> None:
        self.order = order
        self.overall: Counter[str] = Counter()
        self.following: dict[str | None, Counter[str]] = defaultdict(Counter)
        self._rankings: dict[str | None, list[ActionScore]] = {}

    def fit(self, conversations: Sequence[Conversation]) -> FrequencyBaseline:
        for conversation in conversations:
            previous: str | None = None
            for turn in conversation.turns:
                if turn.speaker == "agent" and turn.action:
                    self.overall[turn.action] += 1
                    self.following[previous][turn.action] += 1
                    previous = turn.action
        self._rankings = {}
        return self

    @property
    def actions(self) -> list[str]:
        return sorted(self.overall)

    def _ranking(self, previous: str | None) -> list[ActionScore]:
        if previous not in self._rankings:
            counts = self.following.get(previous, Counter()) if self.order == 1 else Counter()
            total = sum(counts.values()) or sum(self.overall.values()) or 1
            ordered = sorted(self.overall, key=lambda a: (-counts[a], -self.overall[a], a))
            base = counts if counts else self.overall
            self._rankings[previous] = [ActionScore(a, base[a] / total) for a in ordered]
        return self._rankings[previous]

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        rankings = []
        for history in histories:
            labelled = [t.action for t in history.turns if t.speaker == "agent" and t.action]
            rankings.append(list(self._ranking(labelled[-1] if labelled else None)))
        return rankings

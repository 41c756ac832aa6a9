"""The two seams of the action side: a Labeller names the action of agent messages, a NextActionModel ranks the
action the agent should take next. The action-directed LM (`convoplan.lm`) calls both; anything with these methods
plugs in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from convoplan.schema import Conversation

__all__ = ["ActionScore", "Labeller", "NextActionModel", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """A labeller's verdict on one agent message."""

    action: str | None
    """The predicted action; None when the best confidence is under the labeller's "no action" threshold."""
    confidence: float
    """Calibrated probability of the best action (reported even when it is under the threshold)."""
    best: str
    """The most probable action, whatever its confidence."""


@dataclass(frozen=True)
class ActionScore:
    action: str
    score: float
    """Higher is better; a probability for supervised models, a Q-value for outcome-driven ones."""


class Labeller(Protocol):
    version: str
    """Name and version recorded in `Turn.action_source` of every label it writes."""

    def label(self, conversations: Sequence[Conversation]) -> list[list[Prediction | None]]:
        """For every turn of every conversation: a Prediction for agent turns, None for user turns."""
        ...


class NextActionModel(Protocol):
    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        """For each conversation so far (its agent turns labelled), every known action ranked best first."""
        ...

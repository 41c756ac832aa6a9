"""Baseline dialogue managers that need no training."""

from __future__ import annotations

import random
from collections.abc import Sequence

from convoplan.compose.loop import DialogueState
from convoplan.schema import Candidate

__all__ = ["RandomDM"]


class RandomDM:
    """Scores every candidate uniformly at random in [0, 1): a uniform choice at each step."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random(0)

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        return [self.rng.random() for _ in candidates]

    def probabilities(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        """The policy its random scores draw from: uniform over the candidates (off-policy evaluation)."""
        return [1.0 / len(candidates)] * len(candidates)

"""Simulated raters: they score every candidate of every step, selected or not, on -3..7 (no 0).

Raters judge immediate fit only, as the RL paper's guidelines ask (sec. 4.5): does the candidate answer what the
user asked, is it in context, is it repeated. They do not know the user's hidden preferences and do not look
ahead, which is why a DM that maximises their score is myopic, and why RL can beat it on real engagement.
Each rater adds a personal bias and noise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

from convoplan.compose.loop import QUESTION_ACTIONS, STOP, DialogueState
from convoplan.configs import Config
from convoplan.schema import Candidate

__all__ = ["RaterConfig"]

CONTENT = ("sound", "fact", "attribute")
_BASE = {"fact": 5.0, "attribute": 4.0, "sound": 4.0, "quiz": 3.0, "yes_no_question": 2.0, "open_question": 2.0}


def immediate_fit(state: DialogueState, candidate: Candidate) -> float:
    """The noise-free rating of a careful, myopic rater, in [-3, 7]."""
    action = candidate.action
    heard = state.heard
    chosen = state.chosen
    if candidate.text in state.said:
        return -3.0  # repeats content
    if action == STOP:
        if chosen[-1].action in QUESTION_ACTIONS:
            return 5.0  # a response should end after its question
        content = sum(c.action in CONTENT for c in chosen)
        return (-2.0, 4.0, 6.0)[content] if content < 3 else 5.0
    if action == "ack":
        answered = heard is not None and heard.answer not in (None, "ignored", "none")
        return 5.0 if answered else 0.5
    fit = _BASE.get(action or "", 1.0)
    request = heard.request if heard is not None else None
    if request is not None:
        # "how heavy?" wants the weight; a candidate that does not say its attribute (an LM's) is taken at its word
        asked = heard.attribute if heard is not None else None
        answers = asked is None or candidate.meta.get("attribute", asked) == asked
        if action == request and candidate.focus == state.focus and answers:
            return 7.0  # answers the user's request
        if not any(c.action == request for c in chosen):
            fit -= 2.0  # ignores it
    if action in CONTENT and state.focus is not None and candidate.focus != state.focus:
        fit -= 4.0  # out of context
    if action in CONTENT and sum(c.action in CONTENT for c in chosen) >= 2:
        fit -= 1.5  # the response is already long enough
    if action in QUESTION_ACTIONS and not any(c.action in CONTENT or c.action == "ack" for c in chosen):
        fit -= 1.0  # a bare question, with nothing before it
    return max(-3.0, min(7.0, fit))


def to_rating(value: float) -> int:
    """Round onto the -3..7 scale, which has no 0 (a would-be 0 goes to the side its value was on)."""
    rating = max(-3, min(7, round(value)))
    return rating if rating != 0 else (1 if value >= 0 else -1)


@dataclass
class RaterConfig(Config):
    noise_sd: tuple[Annotated[float, Ge(0)], Annotated[float, Ge(0)]] = (0.5, 1.5)
    """Each rater's noise standard deviation is drawn uniformly from this range."""
    bias_sd: Annotated[float, Ge(0)] = 0.7
    """Each rater's constant bias (harsh or lenient) is drawn from N(0, bias_sd)."""


class AnimalRater:
    """A rater with its own bias and noise around `immediate_fit`."""

    def __init__(self, name: str, rng: random.Random, config: RaterConfig | None = None) -> None:
        config = config or RaterConfig()
        self.name = name
        self.rng = rng
        self.noise_sd = rng.uniform(*config.noise_sd)
        self.bias = rng.gauss(0.0, config.bias_sd)

    def rate(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[int]:
        return [to_rating(immediate_fit(state, c) + self.bias + self.rng.gauss(0.0, self.noise_sd)) for c in candidates]

"""Engagement metrics of conversations and their comparison between arms (the RL paper, sec. 6.2 and Table 3).

Everything is computed from canonical logs alone (the NLU's reading of each user message in the user turn's meta,
the bot's composed responses, the raters' ratings where present), so the same code serves simulated runs and the
stored sessions of a live experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from convoplan.schema import Conversation

__all__ = [
    "COOPERATIVE",
    "METRICS",
    "Comparison",
    "compare",
    "conversation_metrics",
    "metric_values",
]

NON_COOPERATIVE = frozenset({"no", "ignored", "none"})
"""Answers to a bot question that decline it or pass it by; any other answer (yes, a pick, a guess) cooperates."""
COOPERATIVE = "cooperative"

METRICS = (
    "length",
    "cooperative_answers",
    "non_cooperative_answers",
    "positive_feedback",
    "negative_feedback",
    "mean_rating",
)


def _mean_rating(conversation: Conversation) -> float:
    """Mean rating of the DM's decisions: the selected candidate of every rated composition step (stop included)."""
    ratings = [
        sum(c.ratings.values()) / len(c.ratings)
        for turn in conversation.agent_turns()
        for c in turn.candidates
        if c.selected and c.ratings
    ]
    return sum(ratings) / len(ratings) if ratings else math.nan


def conversation_metrics(conversation: Conversation) -> dict[str, float]:
    """Per-conversation counts: bot responses, answers to bot questions, explicit feedback, mean rating."""
    users = [turn.meta for turn in conversation.turns if turn.speaker == "user"]
    answers = [meta["answer"] for meta in users if meta.get("answer") is not None]
    return {
        "length": float(sum(turn.action == "stop" for turn in conversation.agent_turns())),
        "cooperative_answers": float(sum(answer not in NON_COOPERATIVE for answer in answers)),
        "non_cooperative_answers": float(sum(answer in NON_COOPERATIVE for answer in answers)),
        "positive_feedback": float(sum(meta.get("feedback") == "positive" for meta in users)),
        "negative_feedback": float(sum(meta.get("feedback") == "negative" for meta in users)),
        "mean_rating": _mean_rating(conversation),
    }


def metric_values(conversations: Sequence[Conversation], metric: str) -> np.ndarray:
    """One value per conversation (conversations where the metric is undefined, e.g. unrated, are left out)."""
    values = np.array([conversation_metrics(c)[metric] for c in conversations], dtype=float)
    return np.asarray(values[~np.isnan(values)])


@dataclass(frozen=True)
class Comparison:
    metric: str
    control_mean: float
    arm_mean: float
    relative_change: float
    """arm_mean / control_mean - 1."""
    low: float
    high: float
    """Bootstrap confidence interval of the relative change."""
    difference_low: float
    difference_high: float
    """Bootstrap confidence interval of arm_mean - control_mean."""


def _interval(
    control: np.ndarray,
    arm: np.ndarray,
    statistic: Callable[..., np.ndarray],
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    from scipy.stats import bootstrap

    result = bootstrap(
        (control, arm),
        statistic,
        n_resamples=resamples,
        confidence_level=confidence,
        vectorized=True,
        paired=False,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(
    control: Sequence[Conversation],
    arm: Sequence[Conversation],
    metric: str,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """The arm against the control on one metric, with bootstrap intervals (conversations resampled per arm)."""
    x, y = metric_values(control, metric), metric_values(arm, metric)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{metric}: need at least two conversations with a value in each arm")

    def relative(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(np.mean(b, axis=axis) / np.mean(a, axis=axis) - 1.0)

    def difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(np.mean(b, axis=axis) - np.mean(a, axis=axis))

    low, high = _interval(x, y, relative, confidence, resamples, seed)
    difference_low, difference_high = _interval(x, y, difference, confidence, resamples, seed)
    return Comparison(
        metric=metric,
        control_mean=float(x.mean()),
        arm_mean=float(y.mean()),
        relative_change=float(y.mean() / x.mean() - 1.0),
        low=low,
        high=high,
        difference_low=difference_low,
        difference_high=difference_high,
    )

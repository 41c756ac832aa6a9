"""Target policies over logged steps: what off-policy evaluation asks "how good would this DM have been?" about.

A target policy maps a Batch of logged composition steps to pi(a | s) over each step's offered candidates: a
tensor [S, C] whose rows sum to one over the candidates that exist (`batch.mask`) and are zero on padding. The
estimators only ever see these probabilities, so any DM that can be written this way can be evaluated:

- `GreedyPolicy`: the deterministic argmax of a scorer (a QNetwork: the supervised DM's ratings or SAQL/CAQL's
  Q-values), which is how the composition loop uses a DM with no exploration (ties: the first best candidate);
- `SoftmaxPolicy`: pi(a | s) proportional to exp(score(s, a) / temperature), a stochastic DM (a negative
  temperature prefers low scores);
- `UniformPolicy`: every offered candidate alike (the random DM);
- `EpsilonGreedyPolicy`: the greedy policy mixed with the uniform one, as the logging DMs explore.

Any other DM (a hand-written one, a cross-encoder, one's own by import path) is evaluated on the logged
conversations themselves: `dm_probabilities` replays each one through a bot (`Bot.replay_steps`) and asks the DM to
score the logged candidates in the state it would have seen.

Scorers are called under `torch.no_grad()`; put a network in eval mode (no dropout) before wrapping it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from convoplan.compose.loop import Bot
from convoplan.dm.data import Batch
from convoplan.schema import Conversation

__all__ = ["EpsilonGreedyPolicy", "GreedyPolicy", "SoftmaxPolicy", "TargetPolicy", "UniformPolicy", "dm_probabilities"]

Scorer = Callable[[Batch], torch.Tensor]
"""Scores every candidate of every step, [S, C] (a QNetwork is one)."""


class TargetPolicy(Protocol):
    """pi(batch) -> [S, C]: the probability of each offered candidate at each step (0 on padding)."""

    def __call__(self, batch: Batch) -> torch.Tensor: ...


def _scores(scorer: Scorer, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return scorer(batch).to(torch.float32)


def _greedy(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    best = scores.masked_fill(~mask, float("-inf")).argmax(dim=-1)  # the first maximum, as the composition loop
    return torch.nn.functional.one_hot(best, scores.shape[-1]).to(torch.float32)


def _uniform(mask: torch.Tensor) -> torch.Tensor:
    counts = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    return mask.to(torch.float32) / counts


class GreedyPolicy:
    """pi(a | s) = 1 for the first argmax of the scores over the offered candidates, 0 elsewhere."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, batch: Batch) -> torch.Tensor:
        return _greedy(_scores(self.scorer, batch), batch.mask)


class SoftmaxPolicy:
    """pi(a | s) = exp(score(s, a) / T) / sum_{b in A(s)} exp(score(s, b) / T); T < 0 prefers low scores."""

    def __init__(self, scorer: Scorer, temperature: float) -> None:
        if temperature == 0:
            raise ValueError("temperature must be nonzero (use GreedyPolicy for the argmax)")
        self.scorer = scorer
        self.temperature = temperature

    def __call__(self, batch: Batch) -> torch.Tensor:
        logits = _scores(self.scorer, batch) / self.temperature
        return torch.softmax(logits.masked_fill(~batch.mask, float("-inf")), dim=-1).nan_to_num(0.0)


class UniformPolicy:
    """pi(a | s) = 1 / |A(s)| for every offered candidate."""

    def __call__(self, batch: Batch) -> torch.Tensor:
        return _uniform(batch.mask)


class EpsilonGreedyPolicy:
    """pi(a | s) = epsilon / |A(s)| + (1 - epsilon) * [a is the first argmax]: the logging DMs' exploration."""

    def __init__(self, scorer: Scorer, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.scorer = scorer
        self.epsilon = epsilon

    def __call__(self, batch: Batch) -> torch.Tensor:
        greedy = _greedy(_scores(self.scorer, batch), batch.mask)
        return self.epsilon * _uniform(batch.mask) + (1.0 - self.epsilon) * greedy


def dm_probabilities(conversations: Sequence[Conversation], new_bot: Callable[[], Bot]) -> torch.Tensor:
    """pi(a | s) of the DM of `new_bot()` at every logged step of `conversations`, [S, C] in the order of
    `logged_steps` (C the most candidates of any step). Each conversation is replayed through a fresh bot; at every
    step the DM scores the logged candidates and, as the composition loop does, takes the first best (one-hot),
    unless it states its own probabilities with a `probabilities(state, candidates)` method (the random DM:
    uniform)."""
    rows: list[list[float]] = []
    stated_rows: list[bool] = []  # True where the row holds the DM's own probabilities, False where its scores
    for conversation in conversations:
        bot = new_bot()
        stated = getattr(bot.dm, "probabilities", None)
        for state, candidates in bot.replay_steps(conversation.turns):
            rows.append([float(v) for v in (stated if callable(stated) else bot.dm.score)(state, candidates)])
            stated_rows.append(callable(stated))
    width = max((len(row) for row in rows), default=1)
    values = torch.tensor([row + [0.0] * (width - len(row)) for row in rows], dtype=torch.float32).reshape(-1, width)
    mask = torch.tensor([[i < len(row) for i in range(width)] for row in rows], dtype=torch.bool).reshape(-1, width)
    return torch.where(torch.tensor(stated_rows).unsqueeze(-1), values, _greedy(values, mask))

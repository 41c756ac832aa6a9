"""Training the outcome-driven next-best-action model (`convoplan.actions.outcome`): SAQL of the dialogue managers
(`convoplan.dm.train.train_q`) over the action steps, the conversation's outcome as terminal reward."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convoplan.actions.nba import labelled_actions
from convoplan.actions.outcome import OutcomeConfig, OutcomeNBA, action_steps, outcome_reward
from convoplan.checkpoint import training_record
from convoplan.dm.data import FeatureSpace
from convoplan.dm.train import Dataset, train_q
from convoplan.embed import SentenceEmbedder
from convoplan.progress import Progress
from convoplan.schema import Conversation

__all__ = ["OutcomeTrainResult", "train_outcome"]


@dataclass
class OutcomeTrainResult:
    model: OutcomeNBA
    losses: list[float]
    """TD loss (+ CQL) of every optimiser step."""
    seconds: float
    steps: int
    """Steps (transitions) in the training table."""
    conversations: int
    """Conversations with an outcome and at least one step."""


def train_outcome(
    conversations: Sequence[Conversation],
    embedder: SentenceEmbedder,
    config: OutcomeConfig,
    progress: Progress | None = None,
) -> OutcomeTrainResult:
    """SAQL over the action set of `conversations` (those with the outcome `config.reward` needs)."""
    start = time.perf_counter()
    usable = [c for c in conversations if outcome_reward(c, config.reward) is not None]
    actions = labelled_actions(usable)
    if not actions:
        raise ValueError(
            f"no labelled agent messages in conversations with an outcome ({config.reward}): nothing to learn from"
        )
    space = FeatureSpace(actions=actions)
    steps = action_steps(usable, space, config)
    embeddings = torch.from_numpy(embedder.embed(steps.table.texts))
    result = train_q(Dataset(steps.table, embeddings), config.q, progress=progress)
    training = training_record(
        config,
        result.losses,
        result.seconds,
        conversations=steps.table.episodes,
        transitions=steps.table.steps,
        transitions_per_second=result.transitions_per_second,
    )
    model = OutcomeNBA(result.network, space, config, embedder, training)
    return OutcomeTrainResult(
        model, result.losses, time.perf_counter() - start, steps.table.steps, steps.table.episodes
    )

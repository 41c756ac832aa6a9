"""Training the supervised next-best-action model (`convoplan.actions.nba`).

Cross-entropy over every target of a batch of whole conversations, teacher-forced (the history holds the logged
previous actions), Adam; one epoch is one pass over the shuffled training conversations. After each epoch the loss
on the validation conversations decides early stopping, and the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convoplan.actions.nba import EncodedConversations, NBAConfig, NBANetwork, SupervisedNBA, labelled_actions
from convoplan.checkpoint import training_record
from convoplan.embed import SentenceEmbedder
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation

__all__ = ["NBATrainResult", "train_nba"]


# --- losses and metrics (pure) -----------------------------------------------------------------------------------


def next_action_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the logits [P, A] against the target classes [P]; targets < 0 (an action the model
    does not know) are left out. 0 (with a gradient path) when no target is known."""
    known = targets >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], targets[known], label_smoothing=label_smoothing)


def top_k_hits(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """[P] bool: is the target class [P] among the k highest scores [P, A]? False for unknown targets (< 0)."""
    k = min(k, scores.shape[-1])
    best = scores.topk(k, dim=-1).indices  # [P, k]
    return (best == targets.unsqueeze(-1)).any(dim=-1) & (targets >= 0)


# --- training ------------------------------------------------------------------------------------------------------


@dataclass
class NBATrainResult:
    model: SupervisedNBA
    losses: list[float]
    """Training loss of every optimiser step."""
    validation_losses: list[float] = field(default_factory=list)
    """Validation loss after each epoch (empty without validation data)."""
    validation_top1: list[float] = field(default_factory=list)
    """Validation top-1 accuracy after each epoch."""
    best_epoch: int = 0
    """The epoch (1-based) whose weights were kept."""
    seconds: float = 0.0


def _validate(
    network: NBANetwork, data: EncodedConversations, embeddings: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy over every known target of `data`, top-1 accuracy over all its targets), in eval mode."""
    network.eval()
    total, count, hits = 0.0, 0, 0
    with torch.no_grad():
        for first in range(0, data.episodes, batch_size * 4):
            batch = data.batch(list(range(first, min(first + batch_size * 4, data.episodes))), embeddings)
            logits = network(batch)  # [P, A]
            known = int((batch.targets >= 0).sum())
            hits += int(top_k_hits(logits, batch.targets, 1).sum())
            if known:
                total += float(next_action_loss(logits, batch.targets)) * known
                count += known
    return (total / count if count else math.nan), (hits / data.points if data.points else math.nan)


def train_nba(
    train: Sequence[Conversation],
    embedder: SentenceEmbedder,
    config: NBAConfig,
    validation: Sequence[Conversation] = (),
    progress: Progress | None = None,
) -> NBATrainResult:
    """Train on the labelled agent messages of `train`; early stopping on those of `validation` (if any)."""
    start = time.perf_counter()
    train = [c for c in train if any(t.speaker == "agent" and t.action for t in c.turns)]
    actions = labelled_actions(train)
    if not actions:
        raise ValueError("no labelled agent messages to learn from: agent turns need actions")
    torch.manual_seed(config.seed)
    network = NBANetwork(len(actions), config)
    model = SupervisedNBA(network, actions, config, embedder)
    data, embeddings = model.encode(train, "labelled")
    held_out = [c for c in validation if any(t.speaker == "agent" and t.action for t in c.turns)]
    val_data, val_embeddings = model.encode(held_out, "labelled")
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    draw = np.random.default_rng(config.seed)
    losses: list[float] = []
    validation_losses: list[float] = []
    validation_top1: list[float] = []
    best = (math.inf, 0, copy.deepcopy(network.state_dict()))
    total = config.epochs * math.ceil(data.episodes / config.batch_size)  # steps if no early stop
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = draw.permutation(data.episodes)
        for first in range(0, len(order), config.batch_size):
            batch = data.batch(order[first : first + config.batch_size].tolist(), embeddings)
            loss = next_action_loss(network(batch), batch.targets, config.label_smoothing)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(Update("training", len(losses), total, "steps", {"loss": losses[-1]}))
        if val_data.points == 0:
            best = (math.nan, epoch, network.state_dict())
            continue
        loss_, top1 = _validate(network, val_data, val_embeddings, config.batch_size)
        validation_losses.append(loss_)
        validation_top1.append(top1)
        if validation_losses[-1] < best[0]:
            best = (validation_losses[-1], epoch, copy.deepcopy(network.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    network.load_state_dict(best[2])
    network.eval()
    seconds = time.perf_counter() - start
    model.training = training_record(
        config,
        losses,
        seconds,
        conversations=data.episodes,
        targets=data.points,
        validation_conversations=val_data.episodes,
        epochs=len(validation_losses) or config.epochs,
        best_epoch=best[1],
        best_validation_loss=best[0],
        best_validation_top1=validation_top1[best[1] - 1] if validation_top1 else math.nan,
    )
    return NBATrainResult(model, losses, validation_losses, validation_top1, best[1], seconds)

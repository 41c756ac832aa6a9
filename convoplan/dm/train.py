"""Training the two-step dialogue managers: the supervised RNN DM, SAQL, CAQL and their CQL-regularised variants.

Batches are whole conversations (every step of each is trained), drawn at random with a seeded generator. The same
code runs in one process or under `torchrun --nproc_per_node N` (gloo, DistributedDataParallel): every rank draws
the same global batch, trains on its share of the conversations, and weights its loss by its share of the batch's
terms, so that the averaged gradient is the gradient of the whole batch's loss, as in one process.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from convoplan.checkpoint import training_record
from convoplan.distributed import all_sum, process_group
from convoplan.dm.checkpoint import save_policy
from convoplan.dm.configs import QConfig, RewardConfig, SupervisedConfig, ValidationConfig
from convoplan.dm.data import Batch, FeatureSpace, StepTable, build_steps
from convoplan.dm.losses import (
    cql_regulariser,
    gradient_ascent,
    masked_max,
    project_to_sphere,
    q_learning_loss,
    rating_loss,
    td_target,
)
from convoplan.dm.networks import QEnsemble, QModel, QNetwork, RNNConfig
from convoplan.dm.rewards import step_reward
from convoplan.embed import EMBEDDING_DIM, SentenceEmbedder
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation

__all__ = [
    "Dataset",
    "EarlyStopping",
    "TrainResult",
    "prepare",
    "split_episodes",
    "train_q",
    "train_supervised",
]


@dataclass
class Dataset:
    """Steps of a set of logs with the embedding of every text they contain."""

    table: StepTable
    embeddings: torch.Tensor  # [len(table.texts), 384]


@dataclass
class TrainResult:
    network: QModel
    losses: list[float]
    seconds: float
    transitions: int
    """Steps (transitions) trained on, summed over optimiser steps and ranks."""
    validation: dict[str, Any] = field(default_factory=dict)
    """The held-out rating error (EarlyStopping.record) when the config asked for validation."""

    @property
    def transitions_per_second(self) -> float:
        return self.transitions / self.seconds if self.seconds else math.nan

    def save(
        self, folder: str | Path, kind: str, config: SupervisedConfig | QConfig, space: FeatureSpace, **extra: Any
    ) -> Path:
        """Write the network as a DM folder with its training record; `extra` joins the record (the logs it read,
        ...)."""
        training = training_record(
            config,
            self.losses,
            self.seconds,
            transitions_per_second=self.transitions_per_second,
            validation=self.validation,
            **extra,
        )
        return save_policy(folder, kind, self.network, config.network, space, training)


def prepare(
    conversations: Sequence[Conversation],
    embedder: SentenceEmbedder,
    space: FeatureSpace | None = None,
    reward: RewardConfig | None = None,
) -> Dataset:
    """Build the step table (with a feature space fitted on these logs unless given, each step's reward as `reward`
    says: by default the mean rating) and embed its texts."""
    table = build_steps(
        conversations, space or FeatureSpace.fit(conversations), reward=step_reward(reward or RewardConfig())
    )
    if table.steps == 0:
        raise ValueError("no composition steps in these logs: agent turns need candidates with one selected")
    return Dataset(table, torch.from_numpy(embedder.embed(table.texts)))


# --- validation ------------------------------------------------------------------------------------------------


def split_episodes(episodes: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) conversation indices: a seeded `share` held out, at least one when share > 0."""
    order = np.random.default_rng(seed).permutation(episodes)
    held = min(episodes - 1, max(1, round(share * episodes))) if share > 0 else 0
    return np.sort(order[held:]), np.sort(order[:held])


class EarlyStopping:
    """A supervised DM's validation (ValidationConfig): the rating error on held-out conversations every `every`
    steps, the weights with the lowest error so far, and when to stop."""

    def __init__(self, config: ValidationConfig, model: nn.Module, error: Callable[[], float]) -> None:
        self.config, self.model, self.error = config, model, error
        self.history: list[tuple[int, float]] = []
        self.best, self.best_state, self.worse = math.inf, copy.deepcopy(model.state_dict()), 0

    def after(self, step: int, steps: int) -> bool:
        """After optimiser step `step` (0-based) of `steps`: measure if due; True when training should stop."""
        if (step + 1) % self.config.every and step + 1 < steps:
            return False
        was_training = self.model.training
        self.model.eval()
        error = self.error()
        self.model.train(was_training)
        self.history.append((step + 1, error))
        if error < self.best:
            self.best, self.best_state, self.worse = error, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.worse += 1
        return 0 < self.config.patience <= self.worse

    def metrics(self) -> dict[str, float]:
        """The last measurement, for progress lines."""
        return {"held-out rmse": self.history[-1][1]} if self.history else {}

    def finish(self, final_error: Callable[[], float] | None = None) -> dict[str, Any]:
        """Restore the best weights; the record: every measurement, the best, and `final_error` (all held-out
        steps) on the best weights, or the best again where the measurements read them all."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        best_step = min(self.history, key=lambda h: h[1])[0] if self.history else 0
        record: dict[str, Any] = {"rmse": self.history, "best_step": best_step, "best_rmse": self.best}
        record["final_rmse"] = final_error() if final_error is not None else self.best
        return record


@torch.no_grad()
def _rnn_rating_error(data: Dataset, network: QNetwork, episodes: np.ndarray) -> float:
    """RMSE of the supervised RNN DM's predicted ratings on every rated candidate of `episodes`."""
    squared, count = 0.0, 0
    for start in range(0, len(episodes), 64):  # conversations per forward pass: bounded memory
        batch = data.table.batch([int(e) for e in episodes[start : start + 64]], data.embeddings)
        rated = ~torch.isnan(batch.ratings)
        squared += float(((network(batch) - batch.ratings)[rated] ** 2).sum())
        count += int(rated.sum())
    return math.sqrt(squared / count) if count else math.nan


# --- distribution ----------------------------------------------------------------------------------------------


def _share(global_batch: np.ndarray, rank: int, world: int) -> list[int]:
    return [int(e) for e in global_batch[rank::world]]


def _wrap(network: QNetwork, world: int) -> nn.Module:
    return nn.parallel.DistributedDataParallel(network) if world > 1 else network


# --- the loops -------------------------------------------------------------------------------------------------


def _new_network(table: StepTable, config: RNNConfig, seed: int) -> QNetwork:
    torch.manual_seed(seed)
    return QNetwork(table.space.utterance_dim, table.space.candidate_dim, config)


def _loop(
    data: Dataset,
    network: QNetwork,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    batch_loss: Callable[[nn.Module, Batch, int, int], tuple[torch.Tensor, int]],
    progress: Progress | None,
    after_step: Callable[[int], None] | None = None,
    episodes: np.ndarray | None = None,
    stopping: EarlyStopping | None = None,
) -> TrainResult:
    """The shared optimisation loop; `batch_loss(model, batch, step, world)` -> (this rank's loss, its terms).
    Batches draw from `episodes` (default: all); `stopping` measures the held-out error and may end it early."""
    rank, world, _ = process_group()
    episodes = np.arange(data.table.episodes) if episodes is None else episodes
    model = _wrap(network, world)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    draw = np.random.default_rng(seed)
    torch.manual_seed(seed)  # dropout: the same run whatever ran before it in this process (e.g. a resumed pipeline)
    losses, transitions = [], 0
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        global_batch = episodes[draw.integers(0, len(episodes), size=batch_size)]
        batch = data.table.batch(_share(global_batch, rank, world), data.embeddings)
        loss, terms = batch_loss(model, batch, step, world)
        # Weight this rank's mean loss by its share of the batch's terms: DDP averages gradients over ranks, so the
        # result is the gradient of the mean over the whole global batch.
        scale = terms * world / max(1, int(all_sum([terms], world)[0]))
        optimiser.zero_grad()
        (loss * scale).backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
        transitions += int(all_sum([len(batch.chosen)], world)[0])
        losses.append(float(loss.detach()))
        if after_step is not None:
            after_step(step)
        stop = stopping is not None and stopping.after(step, steps)  # every rank measures the same weights alike
        if progress is not None and rank == 0:
            metrics = {"loss": losses[-1], **(stopping.metrics() if stopping is not None else {})}
            progress(Update("training", step + 1, steps, "steps", metrics))
        if stop:
            break
    network.eval()
    return TrainResult(network, losses, time.perf_counter() - start, transitions)


def train_supervised(data: Dataset, config: SupervisedConfig, progress: Progress | None = None) -> TrainResult:
    """The supervised RNN DM (Szpektor et al. 2020): predict every candidate's rating from (history, candidate).
    With `config.validation.share`, trained on the other conversations until the held-out error stops falling."""
    network = _new_network(data.table, config.network, config.seed)
    train, held_out = split_episodes(data.table.episodes, config.validation.share, config.seed)
    stopping = None
    if len(held_out):
        stopping = EarlyStopping(config.validation, network, lambda: _rnn_rating_error(data, network, held_out))

    def batch_loss(model: nn.Module, batch: Batch, step: int, world: int) -> tuple[torch.Tensor, int]:
        predicted = model(batch)  # [S, C]
        return rating_loss(predicted, batch.ratings), int((~torch.isnan(batch.ratings)).sum())

    result = _loop(
        data,
        network,
        config.steps,
        config.lr,
        config.batch_size,
        config.seed,
        batch_loss,
        progress,
        episodes=train,
        stopping=stopping,
    )
    if stopping is not None:
        result.validation = {"held_out_conversations": len(held_out), **stopping.finish()}  # measured on all of them
    return result


def behaviour_probabilities(batch: Batch, config: QConfig, supervised: QModel | None) -> torch.Tensor:
    """pi_beta(a|s) over each step's offered candidates, [S, C]."""
    if config.behaviour == "logged" or supervised is None:
        return nn.functional.one_hot(batch.chosen, batch.mask.shape[1]).to(torch.float32)
    with torch.no_grad():
        scores = supervised(batch) / config.behaviour_temperature
    return torch.softmax(scores.masked_fill(~batch.mask, float("-inf")), dim=-1)


def train_q(
    data: Dataset,
    config: QConfig,
    supervised: QModel | None = None,
    init: QModel | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """SAQL or CAQL (+ CQL when cql_alpha > 0). `init` warm-starts the network (e.g. from SAQL for its CQL variant);
    `supervised` is the behaviour policy of CQL. With `config.ensemble` > 1, an ensemble (`_train_ensemble`)."""
    if torch.isnan(torch.from_numpy(data.table.step_rewards())).any():
        raise ValueError(
            "Q-learning needs a reward on every step: some selected candidates have no ratings "
            "(logs without raters, e.g. exported live sessions: --set reward.source=reactions)"
        )
    if config.ensemble > 1:
        return _train_ensemble(data, config, supervised, init, progress)
    if isinstance(init, QEnsemble):
        raise ValueError(f"init is an ensemble of {len(init.members)} networks: set ensemble={len(init.members)}")
    network = copy.deepcopy(init) if init is not None else _new_network(data.table, config.network, config.seed)
    target = copy.deepcopy(network).eval().requires_grad_(False)
    if supervised is not None:
        supervised.eval()

    def next_values(batch: Batch) -> torch.Tensor:
        """max_{a'} Qbar(s', a') for every step, [S]; the realized set for SAQL, gradient ascent for CAQL."""
        has_next = ~batch.done
        following = batch.next_step.clamp(min=0)
        with torch.no_grad():
            state = target.state(batch)[following]  # [S, D_s]: s' of every step
            q_next = target.q(state, batch.candidates[following])  # [S, C]
        mask = batch.mask[following]
        best = masked_max(q_next, mask)
        if config.algorithm == "caql":
            start = batch.candidates[following, q_next.masked_fill(~mask, float("-inf")).argmax(-1)]  # [S, D_a]
            meta = start[:, EMBEDDING_DIM:]

            def q_of(embedding: torch.Tensor) -> torch.Tensor:
                action = torch.cat([project_to_sphere(embedding), meta], dim=-1).unsqueeze(1)
                return target.q(state, action).squeeze(1)

            best = gradient_ascent(q_of, start[:, :EMBEDDING_DIM], config.caql_steps, config.caql_step_size)
        return torch.where(has_next, best, torch.zeros_like(best))

    def batch_loss(model: nn.Module, batch: Batch, step: int, world: int) -> tuple[torch.Tensor, int]:
        q = model(batch)  # [S, C]
        q_taken = q.gather(1, batch.chosen.unsqueeze(1)).squeeze(1)
        # Discount per composition step (the paper), or only where a response closes: time counted in responses.
        gamma = config.gamma if config.discount == "step" else torch.where(batch.closes, config.gamma, 1.0)
        target_value = td_target(batch.reward, next_values(batch), batch.done, gamma)
        loss = q_learning_loss(q_taken, target_value)
        if config.cql_alpha > 0:
            loss = loss + config.cql_alpha * cql_regulariser(
                q, batch.mask, behaviour_probabilities(batch, config, supervised)
            )
        return loss, len(q_taken)

    def refresh_target(step: int) -> None:
        if (step + 1) % config.target_every == 0:
            target.load_state_dict(network.state_dict())

    return _loop(
        data, network, config.steps, config.lr, config.batch_size, config.seed, batch_loss, progress, refresh_target
    )


def _train_ensemble(
    data: Dataset, config: QConfig, supervised: QModel | None, init: QModel | None, progress: Progress | None
) -> TrainResult:
    """`config.ensemble` networks trained one after another, member k with seed `config.seed + k`, warm-started from
    member k of an ensemble `init` (or all from one network `init`); the result acts on their mean Q-value."""
    size = config.ensemble
    if isinstance(init, QEnsemble) and len(init.members) != size:
        raise ValueError(f"init is an ensemble of {len(init.members)} networks, not {size}: set ensemble accordingly")
    results = []
    for k in range(size):
        start = init.networks[k] if isinstance(init, QEnsemble) else init
        member = replace(config, ensemble=1, seed=config.seed + k)
        results.append(train_q(data, member, supervised, start, _member_progress(progress, k, config)))
    return TrainResult(
        QEnsemble([cast(QNetwork, r.network) for r in results]),  # each member is one network (ensemble=1)
        [float(np.mean(step)) for step in zip(*(r.losses for r in results), strict=True)],  # the members' mean
        sum(r.seconds for r in results),
        sum(r.transitions for r in results),
    )


def _member_progress(progress: Progress | None, k: int, config: QConfig) -> Progress | None:
    """Member k's updates counted in the steps of the whole ensemble, with the member's number."""
    if progress is None:
        return None
    report = progress

    def member(update: Update) -> None:
        report(
            replace(
                update,
                done=k * config.steps + update.done,
                total=config.ensemble * config.steps,
                metrics={**update.metrics, "member": k + 1},
            )
        )

    return member

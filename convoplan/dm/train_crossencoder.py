"""Training the transformer cross-encoder DMs: the supervised transformer DM and E2E (RL paper sec. 4.2, 4.4).

Supervised: regress the mean rating of (history, candidate) pairs drawn from every rated candidate, with BERT's
fine-tuning schedule (AdamW, linear warm-up then linear decay to zero). E2E: Q(s, a) = MLP(Transformer([history ;
candidate])) fine-tuned under the SAQL loss over the realized next candidate set, plus the CQL term with the logged
choice as behaviour, warm-started from the supervised transformer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from convoplan.checkpoint import training_record
from convoplan.configs import Config
from convoplan.dm.checkpoint import save_cross_encoder
from convoplan.dm.configs import ValidationConfig
from convoplan.dm.crossencoder import CrossEncoder, TransformerConfig, pair_batch
from convoplan.dm.data import FeatureSpace, StepTable
from convoplan.dm.losses import cql_regulariser, masked_max, q_learning_loss, rating_loss, td_target
from convoplan.dm.train import Dataset, EarlyStopping, split_episodes
from convoplan.progress import Progress, Update

__all__ = [
    "CrossEncoderResult",
    "E2EConfig",
    "SupervisedTransformerConfig",
    "train_e2e",
    "train_supervised_transformer",
]


@dataclass
class SupervisedTransformerConfig(Config):
    model: TransformerConfig = field(default_factory=TransformerConfig)
    """The cross-encoder's architecture."""
    lr: Annotated[float, Gt(0)] = 5e-5
    """Peak AdamW learning rate (BERT fine-tuning range)."""
    warmup: Annotated[float, Interval(ge=0, le=1)] = 0.1
    """Share of the steps with a linear warm-up; then linear decay to zero (BERT's schedule)."""
    batch_size: Annotated[int, Ge(1)] = 32
    """(history, candidate) pairs per batch, as whole steps: steps are drawn (every rated candidate of each) until
    the batch holds at least this many."""
    steps: Annotated[int, Ge(1)] = 400
    """Optimiser steps (the most, with validation; the learning-rate schedule spans them)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Held-out conversations and early stopping."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and sampling."""


@dataclass
class E2EConfig(Config):
    model: TransformerConfig = field(default_factory=TransformerConfig)
    """The cross-encoder's architecture and input; must match the model it is warm-started from."""
    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.8
    """Discount factor (the paper trains E2E with a lower one than SAQL, for stability)."""
    cql_alpha: Annotated[float, Ge(0)] = 0.5
    """Weight of the CQL term (behaviour: the logged choice); 0 turns it off."""
    lr: Annotated[float, Gt(0)] = 2e-5
    """Peak AdamW learning rate."""
    warmup: Annotated[float, Interval(ge=0, le=1)] = 0.1
    """Share of the steps with a linear warm-up; then linear decay to zero."""
    batch_size: Annotated[int, Ge(1)] = 4
    """Composition steps per batch (every candidate of each is scored)."""
    steps: Annotated[int, Ge(1)] = 300
    """Optimiser steps."""
    target_every: Annotated[int, Ge(1)] = 50
    """Steps between copies of the online model into the target model."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of sampling."""


@dataclass
class CrossEncoderResult:
    model: CrossEncoder
    tokenizer: Any
    losses: list[float]
    seconds: float
    examples: int
    """Pairs (supervised) or transitions (E2E) trained on."""
    validation: dict[str, Any] = field(default_factory=dict)
    """The held-out rating error (EarlyStopping.record) when the config asked for validation."""

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else math.nan

    def save(
        self,
        folder: str | Path,
        kind: str,
        config: SupervisedTransformerConfig | E2EConfig,
        space: FeatureSpace,
        **extra: Any,
    ) -> Path:
        """Write the model as a DM folder with its training record; `config.model` is its architecture (E2E's
        is set to its warm start's); `extra` joins the record (the logs it read, ...)."""
        training = training_record(
            config,
            self.losses,
            self.seconds,
            examples_per_second=self.examples_per_second,
            validation=self.validation,
            **extra,
        )
        return save_cross_encoder(folder, kind, self.model, self.tokenizer, config.model, space, training)


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from convoplan.embed import default_model_path

    return AutoTokenizer.from_pretrained(str(default_model_path()))


def _optimiser(model: nn.Module, lr: float, warmup: float, steps: int) -> tuple[Any, Any]:
    from transformers import get_linear_schedule_with_warmup

    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    return optimiser, get_linear_schedule_with_warmup(optimiser, int(warmup * steps), steps)  # type: ignore[no-untyped-call]


def _rated_counts(table: StepTable) -> np.ndarray:
    """[S] how many rated candidates each composition step has."""
    rated_candidates = np.flatnonzero(~np.isnan(table.candidate_rating))
    return np.bincount(np.searchsorted(table.candidate_offsets, rated_candidates, "right") - 1, minlength=table.steps)


def _rated_steps(table: StepTable, episodes: np.ndarray) -> np.ndarray:
    """The composition steps of `episodes` with at least one rated candidate."""
    chosen = np.zeros(table.steps, dtype=bool)
    for e in episodes:
        chosen[table.episode_steps[e] : table.episode_steps[e + 1]] = True
    return np.flatnonzero((_rated_counts(table) > 0) & chosen)


def _rated_pairs(table: StepTable, steps: Sequence[int]) -> tuple[list[list[int]], torch.Tensor]:
    """Per step, the columns of its rated candidates; and their ratings, [N] in that order."""
    offsets = table.candidate_offsets
    columns = [np.flatnonzero(~np.isnan(table.candidate_rating[offsets[s] : offsets[s + 1]])).tolist() for s in steps]
    flat = [offsets[s] + c for s, cs in zip(steps, columns, strict=True) for c in cs]
    return columns, torch.from_numpy(table.candidate_rating[flat])


@torch.no_grad()
def _transformer_rating_error(
    model: CrossEncoder, tokenizer: Any, table: StepTable, steps: np.ndarray, config: TransformerConfig
) -> float:
    """RMSE of the predicted ratings over every rated candidate of `steps`, 32 steps per forward pass."""
    squared, count = 0.0, 0
    for start in range(0, len(steps), 32):
        chunk = steps[start : start + 32].tolist()
        columns, ratings = _rated_pairs(table, chunk)
        squared += float(((model(pair_batch(table, chunk, tokenizer, config, only=columns)) - ratings) ** 2).sum())
        count += len(ratings)
    return math.sqrt(squared / count) if count else math.nan


def train_supervised_transformer(
    data: Dataset, config: SupervisedTransformerConfig, progress: Progress | None = None
) -> CrossEncoderResult:
    """The supervised transformer DM: predict every rated candidate's mean rating from (history ; candidate).
    With `config.validation.share`, trained on the other conversations until the held-out error stops falling."""
    table = data.table
    torch.manual_seed(config.seed)
    model, tokenizer = CrossEncoder(table.space.candidate_dim, config.model), _tokenizer()
    train, held_out = split_episodes(table.episodes, config.validation.share, config.seed)
    steps_of_train = _rated_steps(table, train)
    if len(steps_of_train) == 0:
        raise ValueError("the supervised transformer DM needs rated candidates")
    stopping, measured = None, _rated_steps(table, held_out)
    if len(held_out):
        sample = np.sort(np.random.default_rng(config.seed).permutation(measured)[: config.validation.most])
        stopping = EarlyStopping(
            config.validation, model, lambda: _transformer_rating_error(model, tokenizer, table, sample, config.model)
        )
    optimiser, schedule = _optimiser(model, config.lr, config.warmup, config.steps)
    draw = np.random.default_rng(config.seed)
    rated_counts = _rated_counts(table)
    order, cursor = draw.permutation(steps_of_train), 0  # passes over the training steps in a seeded order
    losses, pairs, start = [], 0, time.perf_counter()
    model.train()
    for step in range(config.steps):
        chosen: list[int] = []
        count = 0
        while count < config.batch_size:  # whole steps until the batch holds batch_size rated pairs
            if cursor == len(order):
                order, cursor = draw.permutation(steps_of_train), 0
            chosen.append(int(order[cursor]))
            count += int(rated_counts[chosen[-1]])
            cursor += 1
        columns, ratings = _rated_pairs(table, chosen)
        loss = rating_loss(model(pair_batch(table, chosen, tokenizer, config.model, only=columns)), ratings)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        pairs += len(ratings)
        stop = stopping is not None and stopping.after(step, config.steps)
        if progress is not None:
            metrics = {"loss": losses[-1], **(stopping.metrics() if stopping is not None else {})}
            progress(Update("training", step + 1, config.steps, "steps", metrics))
        if stop:
            break
    model.eval()
    result = CrossEncoderResult(model, tokenizer, losses, time.perf_counter() - start, pairs)
    if stopping is not None:
        final = stopping.finish(lambda: _transformer_rating_error(model, tokenizer, table, measured, config.model))
        result.validation = {"held_out_conversations": len(held_out), **final}
    return result


def train_e2e(
    data: Dataset, config: E2EConfig, init: CrossEncoder | None = None, progress: Progress | None = None
) -> CrossEncoderResult:
    """E2E: the cross-encoder as Q-function, trained with the SAQL target and the CQL term."""
    table = data.table
    rewards = table.step_rewards()
    if np.isnan(rewards).any():
        raise ValueError("Q-learning needs a reward on every step: some selected candidates have no ratings")
    torch.manual_seed(config.seed)
    model = copy.deepcopy(init) if init is not None else CrossEncoder(table.space.candidate_dim, config.model)
    tokenizer, target = _tokenizer(), copy.deepcopy(model).eval().requires_grad_(False)
    episode_end = table.episode_steps[1:][np.searchsorted(table.episode_steps, np.arange(table.steps), "right") - 1]
    optimiser, schedule = _optimiser(model, config.lr, config.warmup, config.steps)
    draw = np.random.default_rng(config.seed)
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(config.steps):
        steps = draw.choice(table.steps, size=min(config.batch_size, table.steps), replace=False)
        now = pair_batch(table, steps.tolist(), tokenizer, config.model)
        q = now.spread(model(now))  # [B, C], -inf where no candidate
        mask = torch.isfinite(q)
        chosen = torch.from_numpy(table.step_chosen[steps])
        following = steps + 1
        done = torch.from_numpy(following >= episode_end[steps])
        with torch.no_grad():
            after = pair_batch(table, np.where(done.numpy(), steps, following).tolist(), tokenizer, config.model)
            q_next = after.spread(target(after))
        target_value = td_target(
            torch.from_numpy(rewards[steps]), masked_max(q_next, torch.isfinite(q_next)), done, config.gamma
        )
        q_safe = q.masked_fill(~mask, 0.0)
        loss = q_learning_loss(q_safe.gather(1, chosen[:, None])[:, 0], target_value)
        if config.cql_alpha > 0:
            logged = nn.functional.one_hot(chosen, q.shape[1]).to(q.dtype)
            loss = loss + config.cql_alpha * cql_regulariser(q_safe, mask, logged)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if (step + 1) % config.target_every == 0:
            target.load_state_dict(model.state_dict())
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(Update("training", step + 1, config.steps, "steps", {"loss": losses[-1]}))
    model.eval()
    return CrossEncoderResult(model, tokenizer, losses, time.perf_counter() - start, config.steps * len(steps))

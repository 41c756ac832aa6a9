"""The configs of the DMs trained on rated logs (the supervised RNN DM, SAQL, CAQL, CQL): plain dataclasses, apart
from the training code, so that loading a model that records one (an outcome-driven next-best-action model) never
imports training code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Interval

from convoplan.configs import UNBOUNDED, Config
from convoplan.dm.networks import RNNConfig

__all__ = ["QConfig", "RewardConfig", "SupervisedConfig", "ValidationConfig"]


@dataclass
class ValidationConfig(Config):
    """Held-out conversations on which a supervised DM's rating error (RMSE) is measured while it trains; training
    stops once the error has stopped falling, and the weights with the lowest error are kept."""

    share: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    """Share of the conversations held out (seeded); 0: none, every step trains on all the logs."""
    every: Annotated[int, Ge(1)] = 50
    """Optimiser steps between two measurements."""
    patience: Annotated[int, Ge(0)] = 4
    """Measurements in a row without a lower error after which training stops; 0: train all the steps."""
    most: Annotated[int, Ge(1)] = 400
    """Most held-out composition steps a measurement reads (a fixed sample; the error reported at the end reads
    them all): bounds the transformer's measurement time."""


@dataclass
class SupervisedConfig(Config):
    """The supervised RNN DM: regress the mean rating of every rated candidate, selected or not."""

    network: RNNConfig = field(default_factory=RNNConfig)
    """State encoder and Q-head sizes."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate (the paper uses 1e-4 over many more steps than a CPU run affords)."""
    batch_size: Annotated[int, Ge(1)] = 16
    """Conversations per batch (paper: 16)."""
    steps: Annotated[int, Ge(1)] = 600
    """Optimiser steps (the most, with validation)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Held-out conversations and early stopping."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and batch sampling."""


@dataclass
class RewardConfig(Config):
    """The reward of a composition step (Q-learning)."""

    source: Literal["ratings", "reactions", "mixed"] = "ratings"
    """ratings: the mean rating of the selected candidate (the paper); reactions: the user's reaction to each
    response (no raters needed: live sessions); mixed: both, weighted."""
    rating_weight: Annotated[float, Ge(0)] = 1.0
    """mixed: weight of the mean rating (a 1-5 scale) against the reaction."""
    continued: Annotated[float, UNBOUNDED] = 1.0
    """The user wrote again after a response, and did not leave."""
    left: Annotated[float, UNBOUNDED] = -3.0
    """The user's next message said goodbye or told the bot to stop."""
    cooperative: Annotated[float, UNBOUNDED] = 1.0
    """The user answered the response's question."""
    non_cooperative: Annotated[float, UNBOUNDED] = -1.0
    """The user declined or ignored it."""
    positive: Annotated[float, UNBOUNDED] = 2.0
    """Explicit positive feedback (words or a button)."""
    negative: Annotated[float, UNBOUNDED] = -2.0
    """Explicit negative feedback."""


@dataclass
class QConfig(Config):
    """SAQL or CAQL, optionally with the CQL regulariser (RL paper sec. 4.3)."""

    algorithm: Literal["saql", "caql"] = "saql"
    """SAQL: max over the realized next candidate set; CAQL: gradient ascent over the action embedding."""
    network: RNNConfig = field(default_factory=RNNConfig)
    """State encoder and Q-head sizes."""
    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    """Discount factor."""
    discount: Literal["step", "response"] = "step"
    """What gamma discounts: every composition step (the paper), or every response (steps within a response are
    not discounted): a reward paid once per response (reactions) then does not favour short responses."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """What a step is worth: the raters' mean rating (default), the user's reaction, or both
    (`convoplan.dm.rewards`)."""
    lr: Annotated[float, Gt(0)] = 5e-4
    """Adam learning rate."""
    batch_size: Annotated[int, Ge(1)] = 16
    """Conversations per batch."""
    steps: Annotated[int, Ge(1)] = 1500
    """Optimiser steps."""
    target_every: Annotated[int, Ge(1)] = 100
    """Steps between copies of the online network into the target network Qbar."""
    cql_alpha: Annotated[float, Ge(0)] = 0.0
    """Weight of the CQL regulariser; 0 turns it off."""
    behaviour: Literal["logged", "supervised"] = "supervised"
    """pi_beta of CQL: softmax over the supervised DM's scores, or the logged choice (one-hot)."""
    behaviour_temperature: Annotated[float, Gt(0)] = 1.0
    """Temperature of the softmax over the supervised DM's scores."""
    caql_steps: Annotated[int, Ge(0)] = 5
    """CAQL: gradient-ascent steps of the inner max over the action embedding."""
    caql_step_size: Annotated[float, Gt(0)] = 0.1
    """CAQL: gradient-ascent step size eta."""
    ensemble: Annotated[int, Ge(1)] = 1
    """Networks trained independently on the same logs (seeds seed, seed+1, ...); the DM acts on their mean Q-value
    (`QEnsemble`). Each costs a whole training: K times the time, less variance of training."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and batch sampling."""

"""Weighted importance sampling with the logged propensities (Precup, Sutton & Singh, "Eligibility Traces for
Off-Policy Policy Evaluation", ICML 2000; the per-decision weighted form as in Thomas, "Safe Reinforcement
Learning", 2015, sec. 3.7), the classical baseline beside DualDICE and FQE.

With rho_t = pi(a_t | s_t) / mu(a_t | s_t), mu the logging DM's probability of the logged choice (the propensity the
composition loop records), and w_{i,t} = prod_{k <= t} rho_{i,k} for conversation i, the per-decision estimate is

    value = (1 - gamma) * sum_t gamma^t * sum_i w_{i,t} r_{i,t} / sum_i w_{i,t},

and the trajectory-wise one (1 - gamma) * sum_i w_{i,T_i} G_i / sum_i w_{i,T_i}, G_i = sum_t gamma^t r_{i,t}.
A conversation that has ended keeps its last weight and contributes reward 0 (an absorbing state that every policy
takes alike), so each step t is normalised over all conversations, as in the ordinary WIS of equal-length episodes.

A deterministic target (a greedy DM) has pi(a_t | s_t) = 0 wherever the logged choice differs from its argmax: the
weight of that conversation is 0 from that step on, so only conversations that agree with the target so far count
at each step. If no conversation agrees at some step t (every w_{., t} = 0), the estimate has no evidence there
and the step's term is taken as 0; `unsupported_steps` counts such steps and `ess` (Kish's effective sample size
of the final weights) says how many conversations the estimate effectively rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Interval

from convoplan.configs import Config
from convoplan.ope.steps import LoggedSteps, step_positions

__all__ = ["WISConfig", "WISResult", "importance_weights", "weighted_importance_sampling"]


@dataclass
class WISConfig(Config):
    """Weighted importance sampling over whole conversations."""

    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    """Discount factor of the value being estimated."""
    per_decision: bool = True
    """Per-decision weights (w_{i,t} for the reward of step t) or one weight per conversation (trajectory-wise)."""


@dataclass
class WISResult:
    value: float
    """The weighted importance sampling estimate (1 - gamma) * E[sum_t gamma^t r_t]."""
    ess: float
    """Kish's effective sample size (sum w)^2 / sum w^2 of the conversations' final weights."""
    unsupported_steps: int
    """Steps t at which every conversation's weight is 0 (their term is taken as 0)."""


def importance_weights(steps: LoggedSteps, target: torch.Tensor) -> torch.Tensor:
    """rho_t = pi(a_t | s_t) / mu(a_t | s_t) at every logged step, [S] (float64)."""
    if bool(torch.isnan(steps.propensity).any()) or bool((steps.propensity <= 0).any()):
        raise ValueError("importance sampling needs the logged propensity (> 0) of every chosen candidate")
    pi = target[torch.arange(steps.steps), steps.chosen].to(torch.float64)
    return pi / steps.propensity.to(torch.float64)


def weighted_importance_sampling(steps: LoggedSteps, target: torch.Tensor, config: WISConfig) -> WISResult:
    """Estimate the value of the target policy whose probabilities over every logged step's candidates are
    `target` [S, C]."""
    if steps.steps == 0:
        raise ValueError("importance sampling needs logged steps")
    rho = importance_weights(steps, target)
    episode = steps.episode.long()
    episodes = int(episode.max()) + 1
    t = step_positions(episode)
    horizon = int(t.max()) + 1
    # [E, T] matrices; past its end a conversation keeps its weight (rho = 1) and earns 0.
    ratios = torch.ones(episodes, horizon, dtype=torch.float64)
    rewards = torch.zeros(episodes, horizon, dtype=torch.float64)
    ratios[episode, t] = rho
    rewards[episode, t] = steps.reward.to(torch.float64)
    weights = ratios.cumprod(dim=1)
    discount = torch.pow(torch.tensor(config.gamma, dtype=torch.float64), torch.arange(horizon))
    final = weights[:, -1]
    if config.per_decision:
        totals = weights.sum(dim=0)
        per_step = (weights * rewards).sum(dim=0) / totals.clamp(min=1e-300)
        value = float((discount * torch.where(totals > 0, per_step, 0.0)).sum())
        unsupported = int((totals <= 0).sum())
    else:
        returns = (rewards * discount).sum(dim=1)
        value = float((final * returns).sum() / final.sum()) if float(final.sum()) > 0 else 0.0
        unsupported = horizon if float(final.sum()) <= 0 else 0
    ess = float(final.sum() ** 2 / final.square().sum()) if float(final.square().sum()) > 0 else 0.0
    return WISResult(value=(1 - config.gamma) * value, ess=ess, unsupported_steps=unsupported)

"""DualDICE (Nachum, Chow, Dai & Li, "DualDICE: Behavior-Agnostic Estimation of Discounted Stationary Distribution
Corrections", NeurIPS 2019), as the RL paper (Cohen et al. 2022, sec. 5, "DM Off-policy Evaluation") uses it to
estimate the value of a DM from the supervised DM's logs without knowing the logging policy.

The estimator learns nu(s, a) and zeta(s, a) by the saddle point of (eq. 9 of DualDICE with f(x) = x^2 / 2)

    J(nu, zeta) = E_D[(nu(s, a) - gamma * nu(s', a')) * zeta(s, a) - zeta(s, a)^2 / 2]
                  - (1 - gamma) * E_{s0, a0 ~ pi}[nu(s0, a0)],        min over nu, max over zeta,

a' ~ pi(. | s') over the realized next candidate set A(s'). The inner maximum is reached at zeta = the Bellman
residual nu - gamma * P^pi nu, and the outer minimum where that residual equals the correction ratio
d^pi(s, a) / d^D(s, a), d^pi the discounted state-action occupancy of the target policy and d^D the distribution of
the logged steps. The expectation over a' is taken exactly, as sum_{a'} pi(a' | s') nu(s', a') over the realized
set, rather than by sampling a'. nu and zeta are small MLPs over [state; action], the state coming from a fixed
(frozen) encoder and the action being the candidate's vector (`convoplan.ope.steps`); the logging propensities are
never used.

Terminal steps (the end of a conversation): the episode restarts at an initial state, as in the DICE papers'
treatment of finite episodes, i.e. s' ~ the distribution of initial states and a' ~ pi there. In the loss the
next value of a terminal step is therefore E_{s0, a0 ~ pi}[nu(s0, a0)], estimated by the same minibatch of logged
initial steps as the (1 - gamma) term.

Value. The normalised estimate (the RL paper's E_D[zeta * r], self-normalised)

    value = sum_i zeta_i r_i / sum_i zeta_i

is the per-step value (1 - gamma) * E[sum_k gamma^k r_k] of the *restarting* process (episode after episode).
It exceeds the value of a single conversation by the factor 1 / (1 - E_pi[gamma^T]), T the conversation's length
in steps (about 1% at gamma = 0.9 and forty steps). If episode j starts at time tau_j, i.i.d. episodes give
value = (1 - gamma) * E[G] * E[sum_j gamma^tau_j], G the discounted return of one conversation, while the
occupancy of episode starts is d_start = (1 - gamma) * E[sum_j gamma^tau_j] = (1 - gamma) + gamma * d_end, d_end
the occupancy of terminal steps, estimated by E_D[zeta * done] (termination depends on (s, a) only through its
probability, so this holds where the same state can end a conversation or not). Hence the value of one
conversation, on the scale of FQE, importance sampling and the on-policy truth (`convoplan.ope.steps`):

    episode_value = (1 - gamma) * sum_i zeta_i r_i / ((1 - gamma) * sum_i zeta_i + gamma * sum_{i done} zeta_i).

Both are reported.

Training alternates Adam steps on minibatches of logged steps: ascent for zeta (the faster player, `zeta_steps` per
round) with nu fixed, then descent for nu against the updated zeta; the learning rates decay at the end, and zeta
is averaged over the last part of training, which damps the oscillation of the saddle-point dynamics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from convoplan.ope.networks import PairMLP
from convoplan.ope.steps import LoggedSteps

__all__ = ["DualDiceConfig", "DualDiceResult", "dualdice", "dualdice_objective", "expected_under"]


@dataclass
class DualDiceConfig:
    """DualDICE's saddle point, its networks and its optimisation."""

    gamma: float = 0.9
    """Discount factor of the value being estimated."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layers of the nu and zeta MLPs."""
    nu_lr: float = 1e-4
    """Adam learning rate of nu (minimising player)."""
    zeta_lr: float = 1e-3
    """Adam learning rate of zeta (maximising player)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates of both players."""
    weight_decay: float = 1e-4
    """Adam weight decay of both networks."""
    positive_zeta: bool = False
    """Constrain zeta >= 0 (softplus output), as the density ratio it estimates; the saddle point is unchanged."""
    zeta_steps: int = 1
    """zeta's updates per nu update, on the same minibatch (zeta is the faster player, near its best response)."""
    decay: float = 0.5
    """Share of the last steps over which the learning rates fall linearly."""
    final_lr: float = 0.1
    """Learning rates at the end, as a share of their initial value."""
    batch_size: int = 512
    """Logged steps per minibatch."""
    initial_batch_size: int = 128
    """Logged initial steps per minibatch (for the (1 - gamma) term and the restart of terminal steps)."""
    steps: int = 4000
    """Optimiser steps of each player."""
    average_last: float = 0.25
    """Share of the last steps over which zeta is averaged (evaluated every `eval_every` steps)."""
    eval_every: int = 25
    """Steps between evaluations of zeta on every logged step during the averaging window."""
    seed: int = 0
    """Seed of initialisation and minibatch sampling."""


@dataclass
class DualDiceResult:
    value: float
    """sum(zeta r) / sum(zeta): the per-step value of the restarting process."""
    episode_value: float
    """(1 - gamma) * sum(zeta r) / ((1 - gamma) * sum(zeta) + gamma * sum(zeta on terminal steps)): the value of one
    conversation (the truth's scale)."""
    zeta: torch.Tensor
    """[S] the averaged correction ratio d^pi / d^D at every logged step."""
    mean_zeta: float
    """mean(zeta) over the logged steps: 1 when the ratio is exactly normalised."""
    residual_value: float
    """The normalised value with nu's Bellman residual (one sampled s' per step) as the ratio instead of zeta (the
    RL paper's description of the estimate): a check on zeta."""
    objective: list[float] = field(default_factory=list)
    """J(nu, zeta) on each minibatch."""
    seconds: float = 0.0


def expected_under(values: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """E_{a ~ pi(. | s)}[f(s, a)] = sum_a pi(a | s) f(s, a): [S, C], [S, C] -> [S] (padding has probability 0)."""
    return (probabilities * values.masked_fill(probabilities == 0, 0.0)).sum(dim=-1)


def dualdice_objective(
    nu: torch.Tensor,
    nu_next: torch.Tensor,
    done: torch.Tensor,
    nu_initial: torch.Tensor,
    zeta: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """J(nu, zeta) of DualDICE (eq. 9, f(x) = x^2 / 2) on a minibatch, with restarts at terminal steps.

    nu [B] = nu(s, a) of the logged steps; nu_next [B] = E_{a' ~ pi} nu(s', a') (ignored where `done`);
    done [B] bool; nu_initial [B0] = E_{a0 ~ pi} nu(s0, a0) of logged initial steps; zeta [B] = zeta(s, a).
    Where `done`, the next value is the restart value mean(nu_initial).
    """
    restart = nu_initial.mean()
    following = torch.where(done, restart.expand_as(nu_next), nu_next)
    residual = nu - gamma * following
    return (residual * zeta - zeta.square() / 2).mean() - (1 - gamma) * restart


def _estimates(steps: LoggedSteps, zeta: torch.Tensor, gamma: float) -> tuple[float, float]:
    reward = steps.reward.to(torch.float64)
    zeta64 = zeta.to(torch.float64)
    weighted = float((zeta64 * reward).sum())
    total = float(zeta64.sum())
    starts = (1 - gamma) * total + gamma * float(zeta64[steps.done].sum())
    value = weighted / total if total != 0 else float("nan")
    episode_value = (1 - gamma) * weighted / starts if starts != 0 else float("nan")
    return value, episode_value


def _decay(optimiser: torch.optim.Optimizer, config: DualDiceConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning rate constant, then falling linearly to `final_lr` times its value over the last `decay` share."""
    decay_steps = max(1, int(config.steps * config.decay))
    flat = config.steps - decay_steps

    def factor(step: int) -> float:
        return 1.0 - (1.0 - config.final_lr) * min(1.0, max(0, step - flat) / decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def dualdice(
    steps: LoggedSteps,
    target: torch.Tensor,
    config: DualDiceConfig,
    progress: Callable[[int, float], None] | None = None,
) -> DualDiceResult:
    """Estimate the value of the target policy whose probabilities over every logged step's candidates are
    `target` [S, C] (`convoplan.ope.steps.policy_probabilities`) from `steps`; `progress(step, J)` after each step."""
    if steps.steps == 0 or not bool(steps.initial.any()):
        raise ValueError("DualDICE needs logged steps, with at least one initial step")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    # Both start where the logged distribution is the target's: zeta = 1 and nu = 1 / (1 - gamma), whose residual
    # nu - gamma * P^pi nu is 1 everywhere (restarts included); nu moves on its own scale, 1 / (1 - gamma).
    nu = PairMLP(steps, config.hidden, scale=1 / (1 - config.gamma), offset=1.0)
    zeta = PairMLP(steps, config.hidden, scale=1.0, offset=1.0, positive=config.positive_zeta)
    nu_optimiser = torch.optim.Adam(
        nu.parameters(), lr=config.nu_lr, betas=config.betas, weight_decay=config.weight_decay
    )
    zeta_optimiser = torch.optim.Adam(
        zeta.parameters(), lr=config.zeta_lr, betas=config.betas, weight_decay=config.weight_decay
    )
    schedulers = [_decay(nu_optimiser, config), _decay(zeta_optimiser, config)]
    gamma = config.gamma
    draw = torch.Generator().manual_seed(config.seed)
    initial_steps = torch.nonzero(steps.initial).squeeze(1)
    chosen = steps.chosen_actions
    done = steps.done
    following = steps.next_step.clamp(min=0)

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        """zeta(s, a) and nu's Bellman residual nu(s, a) - gamma * E_{a' ~ pi} nu(s', a') at every logged step."""
        with torch.no_grad():
            parts = torch.split(torch.arange(steps.steps), 2048)
            ratios = torch.cat([zeta.taken(steps.states[i], chosen[i]) for i in parts])
            nu_all = torch.cat([nu(steps.states[i], steps.actions[i]) for i in parts])  # [S, C]
            expected = expected_under(nu_all, target)
            taken = nu_all[torch.arange(steps.steps), steps.chosen]
            restart = expected[initial_steps].mean()
            residuals = taken - config.gamma * torch.where(done, restart, expected[following])
        return ratios, residuals

    averaged, evaluations, objective = torch.zeros(steps.steps), 0, []
    averaged_residual = torch.zeros(steps.steps)
    window = max(1, int(config.steps * config.average_last))
    for step in range(config.steps):
        batch = torch.randint(steps.steps, (config.batch_size,), generator=draw)
        initial = initial_steps[torch.randint(len(initial_steps), (config.initial_batch_size,), generator=draw)]
        after = following[batch]
        nu_taken = nu.taken(steps.states[batch], chosen[batch])
        nu_next = expected_under(nu(steps.states[after], steps.actions[after]), target[after])
        nu_initial = expected_under(nu(steps.states[initial], steps.actions[initial]), target[initial])
        # zeta's move(s) first, nu held fixed: ascend J towards the best response zeta = nu - gamma * P^pi nu.
        fixed = (nu_taken.detach(), nu_next.detach(), done[batch], nu_initial.detach())
        for _ in range(config.zeta_steps):
            ascent = -dualdice_objective(*fixed, zeta=zeta.taken(steps.states[batch], chosen[batch]), gamma=gamma)
            zeta_optimiser.zero_grad()
            ascent.backward()  # type: ignore[no-untyped-call]
            zeta_optimiser.step()
        # nu's move against the updated zeta: descend J.
        with torch.no_grad():
            zeta_taken = zeta.taken(steps.states[batch], chosen[batch])
        value = dualdice_objective(nu_taken, nu_next, done[batch], nu_initial, zeta_taken, gamma)
        nu_optimiser.zero_grad()
        value.backward()  # type: ignore[no-untyped-call]
        nu_optimiser.step()
        for scheduler in schedulers:
            scheduler.step()
        objective.append(float(value.detach()))
        if progress is not None:
            progress(step + 1, objective[-1])
        remaining = config.steps - 1 - step
        if remaining < window and (remaining % config.eval_every == 0):
            ratios, residuals = evaluate()
            averaged += ratios
            averaged_residual += residuals
            evaluations += 1
    ratio = averaged / max(1, evaluations)
    value_, episode_value = _estimates(steps, ratio, config.gamma)
    residual_value, _ = _estimates(steps, averaged_residual / max(1, evaluations), config.gamma)
    return DualDiceResult(
        value=value_,
        episode_value=episode_value,
        zeta=ratio,
        mean_zeta=float(ratio.mean()),
        residual_value=residual_value,
        objective=objective,
        seconds=time.perf_counter() - start,
    )

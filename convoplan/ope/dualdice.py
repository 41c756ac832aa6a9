"""DualDICE (Nachum, Chow, Dai & Li, "DualDICE: Behavior-Agnostic Estimation of Discounted Stationary Distribution
Corrections", NeurIPS 2019), as the RL paper (Cohen et al. 2022, sec. 5, "DM Off-policy Evaluation") uses it to
estimate the value of a DM from the supervised DM's logs without knowing the logging policy.

The estimator learns nu(s, a) and zeta(s, a) by the saddle point of (DualDICE eq. 9 with f(x) = x^2 / 2)

    J(nu, zeta) = E_D[(nu(s, a) - gamma * nu(s', a')) * zeta(s, a) - zeta(s, a)^2 / 2]
                  - (1 - gamma) * E_{s0, a0 ~ pi}[nu(s0, a0)],        min over nu, max over zeta,

a' ~ pi(. | s') over the realized next candidate set A(s'). The inner maximum is reached at zeta = the Bellman
residual nu - gamma * P^pi nu, and the outer minimum where that residual equals the correction ratio
d^pi(s, a) / d^D(s, a), d^pi the discounted state-action occupancy of the target policy and d^D the distribution of
the logged steps. The expectation over a' is taken exactly, as sum_{a'} pi(a' | s') nu(s', a') over the realized
set, rather than by sampling a'. nu and zeta are small MLPs over [state; action], the state coming from a fixed
(frozen) encoder and the action being the candidate's vector (`convoplan.ope.steps`); the logging propensities are
never used.

Terminal steps (the end of a conversation), `DualDiceConfig.terminal`:

- "restart" (default; the DICE papers' treatment of finite episodes): the episode restarts at an initial state,
  i.e. s' ~ the distribution of initial states and a' ~ pi there; in the loss the next value of a terminal step
  is E_{s0, a0 ~ pi}[nu(s0, a0)], estimated by the same minibatch of logged initial steps as the (1 - gamma) term.
  d^pi is then the occupancy of the restarting process (episode after episode), a distribution: sum d^pi = 1.
- "absorb": the episode ends in an absorbing state of reward 0 that the ratio does not need to cover: the next
  value of a terminal step is 0 (as in FQE). d^pi is then the occupancy of one episode,
  (1 - gamma) * sum_{t < T} gamma^t P(s_t, a_t), of total mass 1 - E_pi[gamma^T].

Value. The normalised estimate (the RL paper's E_D[zeta * r], self-normalised)

    value = sum_i zeta_i r_i / sum_i zeta_i

is, in both cases, the per-step value of the restarting process, (1 - gamma) * E[sum_k gamma^k r_k] over episode
after episode. The value of *one* conversation, the scale of FQE, importance sampling and the on-policy truth
(`convoplan.ope.steps`), is smaller by the factor 1 - E_pi[gamma^T], T the conversation's length in steps (10% at
gamma = 0.9 in the animals world, where some users leave after a few steps), and is reported as `episode_value`:

- with "absorb", the unnormalised estimate mean_i(zeta_i r_i), since sum d^pi = 1 - E_pi[gamma^T];
- with "restart", (1 - gamma) * sum_i zeta_i r_i / sum_{i initial} zeta_i: with i.i.d. episodes started at times
  tau_j, value = (1 - gamma) * E[G] * E[sum_j gamma^tau_j] (G the discounted return of one conversation) while
  the occupancy of initial states is (1 - gamma) * E[sum_j gamma^tau_j]. This needs initial states that are never
  revisited, as the first step of a conversation (no history yet); the occupancy of terminal steps gives the same
  identity but is a far smaller mass (about 1%), too noisy to divide by.

How closely each reading tracks the on-policy truth in the animals world, beside FQE and weighted importance
sampling: BENCHMARKS.md, "Off-policy evaluation against the on-policy truth" (bench/ope.py).

Training alternates Adam steps on minibatches of logged steps: ascent for zeta (the faster player, `zeta_steps` per
round) with nu fixed, then descent for nu against the updated zeta; the learning rates decay at the end, and zeta
is averaged over the last part of training, which damps the oscillation of the saddle-point dynamics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Interval

from convoplan.configs import Config
from convoplan.ope.networks import PairMLP
from convoplan.ope.steps import LoggedSteps
from convoplan.progress import Progress, Update

__all__ = ["DualDiceConfig", "DualDiceResult", "dualdice", "dualdice_objective", "expected_under"]


@dataclass
class DualDiceConfig(Config):
    """DualDICE's saddle point, its networks and its optimisation."""

    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    """Discount factor of the value being estimated."""
    terminal: Literal["restart", "absorb"] = "restart"
    """After the last step of a conversation: restart at an initial state, or absorb (next value 0)."""
    hidden: tuple[Annotated[int, Ge(1)], ...] = (64,)
    """Hidden layers of the nu and zeta MLPs."""
    nu_lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate of nu (minimising player)."""
    zeta_lr: Annotated[float, Gt(0)] = 1e-2
    """Adam learning rate of zeta (maximising player)."""
    betas: tuple[Annotated[float, Interval(ge=0, lt=1)], Annotated[float, Interval(ge=0, lt=1)]] = (0.9, 0.999)
    """Adam's moment decay rates of both players."""
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    """Adam weight decay of both networks."""
    positive_zeta: bool = False
    """Constrain zeta >= 0 (softplus output), as the density ratio it estimates; the saddle point is unchanged."""
    initial_share: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    """Share of each minibatch drawn from the initial steps alone: d^D becomes that mixture (the estimates weight
    steps accordingly), so that zeta is learned as well where conversations start, which "restart" divides by."""
    policy_feature: bool = True
    """Append pi(a | s) to each candidate's vector: d^pi / d^D factors as d^pi(s) / d^D(s) * pi(a | s) / mu(a | s),
    and the target's probabilities are known (the logging policy's stay unknown: still behaviour-agnostic)."""
    zeta_steps: Annotated[int, Ge(1)] = 3
    """zeta's updates per nu update, on the same minibatch (zeta is the faster player, near its best response)."""
    decay: Annotated[float, Interval(ge=0, le=1)] = 0.5
    """Share of the last steps over which the learning rates fall linearly."""
    final_lr: Annotated[float, Interval(ge=0, le=1)] = 0.1
    """Learning rates at the end, as a share of their initial value."""
    batch_size: Annotated[int, Ge(1)] = 512
    """Logged steps per minibatch."""
    initial_batch_size: Annotated[int, Ge(1)] = 128
    """Logged initial steps per minibatch (for the (1 - gamma) term and the restart of terminal steps)."""
    steps: Annotated[int, Ge(1)] = 4000
    """Rounds of updates (each: `zeta_steps` for zeta, one for nu)."""
    average_last: Annotated[float, Interval(gt=0, le=1)] = 0.25
    """Share of the last steps over which zeta is averaged (evaluated every `eval_every` steps)."""
    eval_every: Annotated[int, Ge(1)] = 25
    """Steps between evaluations of zeta on every logged step during the averaging window."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and minibatch sampling."""


@dataclass
class DualDiceResult:
    value: float
    """sum(zeta r) / sum(zeta): the per-step value of the restarting process."""
    episode_value: float
    """The value of one conversation (the truth's scale): mean(zeta r) ("absorb") or (1 - gamma) * sum(zeta r) /
    sum(zeta on initial steps) ("restart")."""
    zeta: torch.Tensor
    """[S] the averaged correction ratio d^pi / d^D at every logged step."""
    mean_zeta: float
    """E_D[zeta] over the logged steps: 1 ("restart") or 1 - E_pi[gamma^T] ("absorb") for the exact ratio."""
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
    restart: bool = True,
) -> torch.Tensor:
    """J(nu, zeta) of DualDICE (eq. 9, f(x) = x^2 / 2) on a minibatch.

    nu [B] = nu(s, a) of the logged steps; nu_next [B] = E_{a' ~ pi} nu(s', a') (ignored where `done`);
    done [B] bool; nu_initial [B0] = E_{a0 ~ pi} nu(s0, a0) of logged initial steps; zeta [B] = zeta(s, a).
    Where `done`, the next value is the restart value mean(nu_initial) (`restart`) or 0 (absorbing end).
    """
    start = nu_initial.mean()
    end = start.expand_as(nu_next) if restart else torch.zeros_like(nu_next)
    residual = nu - gamma * torch.where(done, end, nu_next)
    return (residual * zeta - zeta.square() / 2).mean() - (1 - gamma) * start


def _weights(steps: LoggedSteps, config: DualDiceConfig) -> torch.Tensor:
    """d^D of every logged step, [S] (float64): uniform, or mixed with the initial steps (`initial_share`)."""
    weights = torch.full((steps.steps,), (1 - config.initial_share) / steps.steps, dtype=torch.float64)
    initial = steps.initial
    weights[initial] += config.initial_share / int(initial.sum())
    return weights


def _estimates(steps: LoggedSteps, zeta: torch.Tensor, config: DualDiceConfig) -> tuple[float, float]:
    """(normalised value, value of one conversation) of the ratio `zeta` [S] (sums weighted by d^D)."""
    weighted_zeta = zeta.to(torch.float64) * _weights(steps, config)
    weighted = float((weighted_zeta * steps.reward.to(torch.float64)).sum())
    total = float(weighted_zeta.sum())
    value = weighted / total if total != 0 else float("nan")
    if config.terminal == "absorb":
        return value, weighted
    initial = float(weighted_zeta[steps.initial].sum())
    return value, (1 - config.gamma) * weighted / initial if initial != 0 else float("nan")


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
    progress: Progress | None = None,
) -> DualDiceResult:
    """Estimate the value of the target policy whose probabilities over every logged step's candidates are
    `target` [S, C] (`convoplan.ope.steps.policy_probabilities`) from `steps`; `progress` after each step."""
    if steps.steps == 0 or not bool(steps.initial.any()):
        raise ValueError("DualDICE needs logged steps, with at least one initial step")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.policy_feature:  # pi(a | s) as one more component of every candidate's vector
        steps = replace(steps, actions=torch.cat([steps.actions, target.unsqueeze(-1).to(steps.actions.dtype)], -1))
    # Both start where the logged distribution is the target's: zeta = 1 and nu = 1 / (1 - gamma), whose residual
    # nu - gamma * P^pi nu is 1 wherever the episode goes on; nu moves on its own scale, 1 / (1 - gamma).
    nu = PairMLP(steps, config.hidden, scale=1 / (1 - config.gamma), offset=1.0)
    zeta = PairMLP(steps, config.hidden, scale=1.0, offset=1.0, positive=config.positive_zeta)
    nu_optimiser = torch.optim.Adam(
        nu.parameters(), lr=config.nu_lr, betas=config.betas, weight_decay=config.weight_decay
    )
    zeta_optimiser = torch.optim.Adam(
        zeta.parameters(), lr=config.zeta_lr, betas=config.betas, weight_decay=config.weight_decay
    )
    schedulers = [_decay(nu_optimiser, config), _decay(zeta_optimiser, config)]
    gamma, restart = config.gamma, config.terminal == "restart"
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
            end = expected[initial_steps].mean() if restart else torch.zeros(())
            residuals = taken - gamma * torch.where(done, end, expected[following])
        return ratios, residuals

    averaged, evaluations, objective = torch.zeros(steps.steps), 0, []
    averaged_residual = torch.zeros(steps.steps)
    window = max(1, int(config.steps * config.average_last))
    for step in range(config.steps):
        batch = torch.randint(steps.steps, (config.batch_size,), generator=draw)
        from_initial = torch.rand(config.batch_size, generator=draw) < config.initial_share
        drawn = torch.randint(len(initial_steps), (int(from_initial.sum()),), generator=draw)
        batch[from_initial] = initial_steps[drawn]
        initial = initial_steps[torch.randint(len(initial_steps), (config.initial_batch_size,), generator=draw)]
        after = following[batch]
        nu_taken = nu.taken(steps.states[batch], chosen[batch])
        nu_next = expected_under(nu(steps.states[after], steps.actions[after]), target[after])
        nu_initial = expected_under(nu(steps.states[initial], steps.actions[initial]), target[initial])
        # zeta's move(s) first, nu held fixed: ascend J towards the best response zeta = nu - gamma * P^pi nu.
        fixed = (nu_taken.detach(), nu_next.detach(), done[batch], nu_initial.detach())
        for _ in range(config.zeta_steps):
            zeta_taken = zeta.taken(steps.states[batch], chosen[batch])
            ascent = -dualdice_objective(*fixed, zeta=zeta_taken, gamma=gamma, restart=restart)
            zeta_optimiser.zero_grad()
            ascent.backward()  # type: ignore[no-untyped-call]
            zeta_optimiser.step()
        # nu's move against the updated zeta: descend J.
        with torch.no_grad():
            zeta_taken = zeta.taken(steps.states[batch], chosen[batch])
        value = dualdice_objective(nu_taken, nu_next, done[batch], nu_initial, zeta_taken, gamma, restart)
        nu_optimiser.zero_grad()
        value.backward()  # type: ignore[no-untyped-call]
        nu_optimiser.step()
        for scheduler in schedulers:
            scheduler.step()
        objective.append(float(value.detach()))
        if progress is not None:
            progress(Update("fitting DualDICE", step + 1, config.steps, "steps", {"objective": objective[-1]}))
        remaining = config.steps - 1 - step
        if remaining < window and (remaining % config.eval_every == 0):
            ratios, residuals = evaluate()
            averaged += ratios
            averaged_residual += residuals
            evaluations += 1
    ratio = averaged / max(1, evaluations)
    value_, episode_value = _estimates(steps, ratio, config)
    residual_value, _ = _estimates(steps, averaged_residual / max(1, evaluations), config)
    return DualDiceResult(
        value=value_,
        episode_value=episode_value,
        zeta=ratio,
        mean_zeta=float((ratio.to(torch.float64) * _weights(steps, config)).sum()),
        residual_value=residual_value,
        objective=objective,
        seconds=time.perf_counter() - start,
    )

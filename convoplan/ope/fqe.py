"""Fitted Q evaluation (FQE; Le, Voloshin & Yue, "Batch Policy Learning under Constraints", ICML 2019): regress the
target policy's action value on the logged steps by repeated Bellman backups,

    Q_{k+1}(s, a) <- r + gamma * E_{a' ~ pi(. | s')}[Qbar_k(s', a')]        (0 at the end of a conversation),

the expectation over a' taken exactly over the realized next candidate set A(s'), Qbar_k a target network copied
from Q every `target_every` optimiser steps. The value is reported on the per-step scale of DualDICE and the
on-policy truth:

    value = (1 - gamma) * E_{s0}[sum_{a0} pi(a0 | s0) Q(s0, a0)],

s0 ranging over the logged initial steps. Q is a small MLP over [state; action] on top of the same frozen state
encoder as DualDICE (`convoplan.ope.networks`), whose output is scaled by mean|r| / (1 - gamma) so that its
weights stay of order one; the squared Bellman error is measured in that unit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval

from convoplan.configs import Config
from convoplan.ope.dualdice import expected_under
from convoplan.ope.networks import PairMLP
from convoplan.ope.steps import LoggedSteps
from convoplan.progress import Progress, Update

__all__ = ["FQEConfig", "FQEResult", "fqe"]


@dataclass
class FQEConfig(Config):
    """Fitted Q evaluation: the Q network and its optimisation."""

    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    """Discount factor of the value being estimated."""
    hidden: tuple[Annotated[int, Ge(1)], ...] = (64,)
    """Hidden layers of the Q MLP."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate."""
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    """Adam weight decay."""
    batch_size: Annotated[int, Ge(1)] = 512
    """Logged steps per minibatch."""
    steps: Annotated[int, Ge(1)] = 2000
    """Optimiser steps."""
    target_every: Annotated[int, Ge(1)] = 50
    """Optimiser steps between copies of Q into the target network Qbar (one Bellman backup each)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation and minibatch sampling."""


@dataclass
class FQEResult:
    value: float
    """(1 - gamma) * E_{s0}[E_{a0 ~ pi} Q(s0, a0)]."""
    initial_q: torch.Tensor
    """[E0] E_{a0 ~ pi} Q(s0, a0) at every logged initial step (the return's scale)."""
    losses: list[float] = field(default_factory=list)
    """Mean squared Bellman error on each minibatch (in the training scale)."""
    seconds: float = 0.0


def fqe(
    steps: LoggedSteps,
    target: torch.Tensor,
    config: FQEConfig,
    progress: Progress | None = None,
) -> FQEResult:
    """Estimate the value of the target policy whose probabilities over every logged step's candidates are
    `target` [S, C] from `steps`; `progress` after each optimiser step."""
    if steps.steps == 0 or not bool(steps.initial.any()):
        raise ValueError("FQE needs logged steps, with at least one initial step")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    scale = max(float(steps.reward.abs().mean()), 1e-8) / (1 - config.gamma)
    # Q starts at mean(r) / (1 - gamma), the value of an endless episode of average rewards, not at 0: fewer
    # backups are needed to reach the fixed point (each one shrinks the distance to it by gamma).
    q = PairMLP(steps, config.hidden, scale=scale, offset=float(steps.reward.mean()) / scale / (1 - config.gamma))
    q_bar = copy.deepcopy(q).requires_grad_(False)
    optimiser = torch.optim.Adam(q.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    draw = torch.Generator().manual_seed(config.seed)
    reward = steps.reward / scale
    chosen = steps.chosen_actions
    done = steps.done
    following = steps.next_step.clamp(min=0)
    losses = []
    for step in range(config.steps):
        batch = torch.randint(steps.steps, (config.batch_size,), generator=draw)
        after = following[batch]
        with torch.no_grad():
            next_value = expected_under(q_bar(steps.states[after], steps.actions[after]), target[after]) / scale
            bootstrap = reward[batch] + config.gamma * torch.where(done[batch], 0.0, next_value)
        loss = F.mse_loss(q.taken(steps.states[batch], chosen[batch]) / scale, bootstrap)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))
        if (step + 1) % config.target_every == 0:
            q_bar.load_state_dict(q.state_dict())
        if progress is not None:
            progress(Update("fitting FQE", step + 1, config.steps, "steps", {"loss": losses[-1]}))
    initial = torch.nonzero(steps.initial).squeeze(1)
    with torch.no_grad():
        initial_q = expected_under(q(steps.states[initial], steps.actions[initial]), target[initial])
    return FQEResult(
        value=(1 - config.gamma) * float(initial_q.mean()),
        initial_q=initial_q,
        losses=losses,
        seconds=time.perf_counter() - start,
    )

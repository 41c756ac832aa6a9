"""The small functions of (state, action) that the estimators learn: nu and zeta of DualDICE, Q of FQE.

f(s, a) = MLP([standardise(state); standardise(action)]), with the first layer applied as W_s s + W_a a + b (the
same function as W [s; a] + b) so that the state's part is computed once per step and not once per candidate.
Standardisation uses the mean and standard deviation of the logged states and offered candidates, fixed at
construction.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from convoplan.ope.steps import LoggedSteps

__all__ = []


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if len(values) == 0:
        return torch.zeros(values.shape[-1]), torch.ones(values.shape[-1])
    mean = values.mean(dim=0)
    return mean, values.std(dim=0, correction=0).clamp(min=1e-4)


class PairMLP(nn.Module):
    """f(s, a): states [N, D_s] and actions [N, C, D_a] -> [N, C]; `hidden` () makes it linear.

    The output is `scale * (MLP(...) + offset)` with the last layer initialised at zero, so that f starts at the
    constant `scale * offset` (e.g. DualDICE's zeta = 1, the ratio of the behaviour policy itself) and an optimiser
    step moves it on the scale of its targets. With `positive`, the output is `scale * softplus(MLP(...) + c)`, c
    chosen so that it starts at `scale * offset` (offset > 0): a function that cannot go negative, as a ratio of
    densities.
    """

    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor

    def __init__(
        self,
        steps: LoggedSteps,
        hidden: tuple[int, ...],
        scale: float = 1.0,
        offset: float = 0.0,
        positive: bool = False,
    ) -> None:
        super().__init__()
        state_mean, state_std = _moments(steps.states)
        action_mean, action_std = _moments(steps.actions[steps.mask])
        self.register_buffer("state_mean", state_mean)
        self.register_buffer("state_std", state_std)
        self.register_buffer("action_mean", action_mean)
        self.register_buffer("action_std", action_std)
        first = hidden[0] if hidden else 1
        self.state_in = nn.Linear(steps.states.shape[-1], first)
        self.action_in = nn.Linear(steps.actions.shape[-1], first, bias=False)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(hidden):
            layers += [nn.ReLU(), nn.Linear(a, b)]
        if hidden:
            out = nn.Linear(hidden[-1], 1)
            layers += [nn.ReLU(), out]
            zeroed = [out.weight, out.bias]
        else:  # linear: the input layer is the output layer
            zeroed = [self.state_in.weight, self.state_in.bias, self.action_in.weight]
        for parameter in zeroed:
            nn.init.zeros_(parameter)
        self.head = nn.Sequential(*layers)  # empty: the identity
        self.scale = scale
        self.positive = positive
        if positive and offset <= 0:
            raise ValueError("a positive PairMLP needs a positive starting value (offset > 0)")
        self.offset = math.log(math.expm1(offset)) if positive else offset  # softplus(log(e^o - 1)) = o

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        s = (states - self.state_mean) / self.state_std
        a = (actions - self.action_mean) / self.action_std
        hidden = self.state_in(s).unsqueeze(1) + self.action_in(a)  # [N, C, first]
        raw = self.head(hidden).squeeze(-1) + self.offset
        return self.scale * (F.softplus(raw) if self.positive else raw)

    def taken(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """f(s, a) for one action per state: states [N, D_s], actions [N, D_a] -> [N]."""
        return self.forward(states, actions.unsqueeze(1)).squeeze(1)

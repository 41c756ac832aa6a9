"""The small functions of (state, action) that the estimators learn: nu and zeta of DualDICE, Q of FQE.

f(s, a) = MLP([standardise(state); standardise(action)]), with the first layer applied as W_s s + W_a a + b (the
same function as W [s; a] + b) so that the state's part is computed once per step and not once per candidate.
Standardisation uses the mean and standard deviation of the logged states and offered candidates, fixed at
construction.
"""

from __future__ import annotations

import torch
from torch import nn

from convoplan.ope.steps import LoggedSteps

__all__ = ["PairMLP"]


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if len(values) == 0:
        return torch.zeros(values.shape[-1]), torch.ones(values.shape[-1])
    mean = values.mean(dim=0)
    return mean, values.std(dim=0, correction=0).clamp(min=1e-4)


class PairMLP(nn.Module):
    """f(s, a): states [N, D_s] and actions [N, C, D_a] -> [N, C]; `hidden` () makes it linear."""

    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor

    def __init__(self, steps: LoggedSteps, hidden: tuple[int, ...]) -> None:
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
        for a, b in zip(hidden, [*hidden[1:], 1], strict=True) if hidden else ():
            layers += [nn.ReLU(), nn.Linear(a, b)]
        self.head = nn.Sequential(*layers)  # empty: the identity

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        s = (states - self.state_mean) / self.state_std
        a = (actions - self.action_mean) / self.action_std
        hidden = self.state_in(s).unsqueeze(1) + self.action_in(a)  # [N, C, first]
        return self.head(hidden).squeeze(-1)  # type: ignore[no-any-return]

    def taken(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """f(s, a) for one action per state: states [N, D_s], actions [N, D_a] -> [N]."""
        return self.forward(states, actions.unsqueeze(1)).squeeze(1)

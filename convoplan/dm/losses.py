"""The losses of the dialogue managers, as small pure functions on tensors (S steps, C candidates per step).

Notation (docs/dm.md): s state, a candidate, A(s) the realized candidate set, r reward (mean rating), gamma discount.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = []


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """max over the candidates that exist: [S, C], [S, C] bool -> [S] (-inf where a step has none)."""
    return values.masked_fill(~mask, float("-inf")).max(dim=-1).values


def masked_logsumexp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")), dim=-1)


def td_target(
    reward: torch.Tensor, next_max: torch.Tensor, done: torch.Tensor, gamma: float | torch.Tensor
) -> torch.Tensor:
    """r + gamma * max_{a' in A(s')} Qbar(s', a'), with no bootstrap at terminal steps: all [S] (gamma a scalar,
    or [S]: a discount per step)."""
    return reward + gamma * torch.where(done, torch.zeros_like(next_max), next_max)


def q_learning_loss(q_taken: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAQL / CAQL: E_D[(target - Q(s, a))^2]; the target carries no gradient."""
    return F.mse_loss(q_taken, target.detach())


def cql_regulariser(q: torch.Tensor, mask: torch.Tensor, behaviour: torch.Tensor) -> torch.Tensor:
    """CQL (Kumar et al. 2020): E_s[logsumexp_{a in A(s)} Q(s, a) - E_{a ~ pi_beta(.|s)} Q(s, a)].

    q [S, C], mask [S, C] bool, behaviour [S, C] probabilities of pi_beta over the offered candidates.
    """
    expected = (behaviour * q.masked_fill(~mask, 0.0)).sum(dim=-1)
    return (masked_logsumexp(q, mask) - expected).mean()


def rating_loss(predicted: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
    """Supervised DM: mean squared error over every rated candidate, selected or not (nan = unrated)."""
    rated = ~torch.isnan(ratings)
    return F.mse_loss(predicted[rated], ratings[rated])


def project_to_sphere(vectors: torch.Tensor) -> torch.Tensor:
    """The feasible set of normalised sentence embeddings: the unit sphere."""
    norms: torch.Tensor = vectors.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return vectors / norms


def gradient_ascent(
    q_of: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int, step_size: float
) -> torch.Tensor:
    """CAQL's inner max: a_{k+1} = proj(a_k + eta * grad_a Q(a_k)), from `start` [S, D]; returns the best value seen
    along the path, [S] (so a too-long step never makes the target worse than the start point)."""
    action = start.detach().clone()
    best = q_of(action).detach()
    for _ in range(steps):
        action.requires_grad_(True)
        value = q_of(action)
        (grad,) = torch.autograd.grad(value.sum(), action)
        action = project_to_sphere(action.detach() + step_size * grad)
        best = torch.maximum(best, q_of(action).detach())
    return best

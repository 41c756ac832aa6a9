"""The DM losses against small numpy references."""

from __future__ import annotations

import numpy as np
import torch

from convoplan.dm.losses import (
    cql_regulariser,
    gradient_ascent,
    masked_max,
    project_to_sphere,
    q_learning_loss,
    rating_loss,
    td_target,
)

Q = np.array([[1.0, 5.0, -2.0], [0.5, 9.0, 3.0], [-1.0, -4.0, 0.0]], dtype=np.float32)
MASK = np.array([[True, True, True], [True, False, True], [True, False, False]])


def test_masked_max_ignores_padded_candidates() -> None:
    reference = [max(q for q, m in zip(row, keep, strict=True) if m) for row, keep in zip(Q, MASK, strict=True)]
    assert masked_max(torch.from_numpy(Q), torch.from_numpy(MASK)).tolist() == reference == [5.0, 3.0, -1.0]


def test_td_target_does_not_bootstrap_at_terminal_steps() -> None:
    reward, next_max, done = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), np.array([False, True, False])
    reference = reward + 0.9 * np.where(done, 0.0, next_max)
    got = td_target(torch.tensor(reward), torch.tensor(next_max), torch.tensor(done), 0.9)
    assert np.allclose(got.numpy(), reference) and np.allclose(reference, [10.0, 2.0, 30.0])


def test_td_target_takes_a_discount_per_step() -> None:
    """Discounting per response: gamma only where a step closes its response, 1 inside it."""
    reward, next_max, done = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]), torch.tensor([False] * 3)
    closes = torch.tensor([False, True, False])
    got = td_target(reward, next_max, done, torch.where(closes, 0.5, 1.0))
    assert got.tolist() == [11.0, 12.0, 33.0]


def test_q_learning_loss_is_mse_without_gradient_through_the_target() -> None:
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    target = torch.tensor([2.0, 0.0], requires_grad=True)
    loss = q_learning_loss(q, target)
    loss.backward()  # type: ignore[no-untyped-call]
    assert float(loss.detach()) == np.mean([(2 - 1) ** 2, (0 - 2) ** 2])
    assert target.grad is None and q.grad is not None


def test_cql_term_matches_reference() -> None:
    behaviour = np.array([[0.2, 0.5, 0.3], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32)
    reference = np.mean(
        [
            np.log(np.sum(np.exp(row[keep]))) - np.sum(b[keep] * row[keep])
            for row, keep, b in zip(Q, MASK, behaviour, strict=True)
        ]
    )
    got = cql_regulariser(torch.from_numpy(Q), torch.from_numpy(MASK), torch.from_numpy(behaviour))
    assert np.isclose(float(got), reference, atol=1e-5)
    assert float(got) >= 0  # logsumexp >= max >= any expectation


def test_rating_loss_uses_every_rated_candidate() -> None:
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ratings = torch.tensor([[2.0, float("nan")], [3.0, 0.0]])
    assert np.isclose(float(rating_loss(predicted, ratings)), np.mean([1.0, 0.0, 16.0]))


def test_gradient_ascent_step_climbs_and_stays_on_the_sphere() -> None:
    goal = project_to_sphere(torch.tensor([[0.0, 1.0, 1.0]]))

    def q_of(a: torch.Tensor) -> torch.Tensor:
        return (a * goal).sum(-1)  # maximised on the sphere at `goal`

    start = torch.tensor([[1.0, 0.0, 0.0]])
    one = gradient_ascent(q_of, start, steps=1, step_size=0.5)
    # reference: a1 = (a0 + 0.5 * goal) / |a0 + 0.5 * goal|, value = a1 . goal
    a1 = start.numpy() + 0.5 * goal.numpy()
    a1 /= np.linalg.norm(a1)
    assert np.isclose(float(one[0]), float((a1 @ goal.numpy().T)[0, 0]), atol=1e-6)
    many = gradient_ascent(q_of, start, steps=50, step_size=0.5)
    assert float(many[0]) > float(one[0]) and np.isclose(float(many[0]), 1.0, atol=1e-3)

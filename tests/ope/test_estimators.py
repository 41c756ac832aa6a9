"""The estimators on a two-state chain whose value is known exactly (tests/ope/chain.py), and DualDICE's loss
against a numpy reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from convoplan.ope import (
    DualDiceConfig,
    FQEConfig,
    WISConfig,
    dualdice,
    episode_values,
    fqe,
    weighted_importance_sampling,
)
from convoplan.ope.dualdice import dualdice_objective, expected_under
from convoplan.ope.importance import importance_weights
from tests.ope import chain

GAMMA = 0.9
BEHAVIOUR = np.array([[0.5, 0.5], [0.5, 0.5]])
TARGET = np.array([[0.8, 0.2], [0.6, 0.4]])


@pytest.fixture(scope="module")
def logs() -> tuple[chain.LoggedSteps, np.ndarray]:
    return chain.sample(BEHAVIOUR, episodes=2000, seed=0)


def reference_objective(
    nu: np.ndarray,
    nu_next: np.ndarray,
    done: np.ndarray,
    nu_initial: np.ndarray,
    zeta: np.ndarray,
    gamma: float,
    restart: bool,
) -> float:
    """J(nu, zeta) written out term by term."""
    start = float(np.mean(nu_initial))
    total = 0.0
    for i in range(len(nu)):
        following = (start if restart else 0.0) if done[i] else nu_next[i]
        total += (nu[i] - gamma * following) * zeta[i] - zeta[i] ** 2 / 2
    return total / len(nu) - (1 - gamma) * start


@pytest.mark.parametrize("restart", [True, False])
def test_dualdice_objective_matches_numpy(restart: bool) -> None:
    rng = np.random.default_rng(1)
    nu, nu_next, zeta = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    done = np.array([False, True, False, False, True])
    nu_initial = rng.normal(size=3)
    expected = reference_objective(nu, nu_next, done, nu_initial, zeta, 0.8, restart)
    tensors = [torch.from_numpy(v) for v in (nu, nu_next, done, nu_initial, zeta)]
    assert float(dualdice_objective(*tensors, gamma=0.8, restart=restart)) == pytest.approx(expected, rel=1e-12)


def test_zeta_best_response_is_the_bellman_residual() -> None:
    """dJ/dzeta = 0 where zeta = nu - gamma * nu' (the inner maximum of the saddle point)."""
    nu, nu_next = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.0, 4.0])
    done, nu_initial = torch.tensor([False, True, False]), torch.tensor([2.0, 4.0])
    residual = nu - 0.9 * torch.where(done, nu_initial.mean(), nu_next)
    zeta = residual.clone().requires_grad_(True)
    dualdice_objective(nu, nu_next, done, nu_initial, zeta, 0.9).backward()  # type: ignore[no-untyped-call]
    assert zeta.grad is not None and torch.allclose(zeta.grad, torch.zeros(3), atol=1e-7)


def test_expected_under_ignores_padding() -> None:
    values = torch.tensor([[1.0, 3.0, float("nan")], [2.0, 4.0, 6.0]])
    probabilities = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    assert expected_under(values, probabilities).tolist() == [2.5, 5.0]


def test_chain_values_are_consistent() -> None:
    """The analytic values of the chain: a deterministic two-step policy, by hand."""
    always_first = np.array([[1.0, 0.0], [1.0, 0.0]])  # s0 -> s1 -> end, rewards 1 then 2
    assert chain.true_value(always_first, GAMMA) == pytest.approx((1 - GAMMA) * (1 + GAMMA * 2))
    assert chain.discount_at_end(always_first, GAMMA) == pytest.approx(GAMMA**2)


def test_wis_equals_the_on_policy_average_when_target_is_behaviour() -> None:
    behaviour = np.array([[0.7, 0.3], [0.4, 0.6]])
    steps, states = chain.sample(behaviour, episodes=300, seed=2)
    target = chain.probabilities(behaviour, states)
    assert torch.allclose(importance_weights(steps, target), torch.ones(steps.steps, dtype=torch.float64))
    on_policy = float(episode_values(steps.reward, steps.episode, GAMMA).mean())
    for per_decision in (True, False):
        result = weighted_importance_sampling(steps, target, WISConfig(gamma=GAMMA, per_decision=per_decision))
        assert result.value == pytest.approx(on_policy, rel=1e-9)
        assert result.ess == pytest.approx(300)


def test_wis_recovers_the_chain_value(logs: tuple[chain.LoggedSteps, np.ndarray]) -> None:
    steps, states = logs
    result = weighted_importance_sampling(steps, chain.probabilities(TARGET, states), WISConfig(gamma=GAMMA))
    assert result.value == pytest.approx(chain.true_value(TARGET, GAMMA), rel=0.1)


def test_wis_gives_zero_weight_where_a_greedy_target_disagrees(logs: tuple[chain.LoggedSteps, np.ndarray]) -> None:
    steps, states = logs
    greedy = np.array([[1.0, 0.0], [1.0, 0.0]])
    rho = importance_weights(steps, chain.probabilities(greedy, states))
    assert bool((rho[steps.chosen == 1] == 0).all()) and bool((rho[steps.chosen == 0] == 2).all())
    result = weighted_importance_sampling(steps, chain.probabilities(greedy, states), WISConfig(gamma=GAMMA))
    assert result.value == pytest.approx(chain.true_value(greedy, GAMMA), rel=1e-6)  # s0 -> s1 -> end: no variance
    assert 0 < result.ess < steps.episode.max() + 1


def test_fqe_recovers_the_chain_value(logs: tuple[chain.LoggedSteps, np.ndarray]) -> None:
    steps, states = logs
    config = FQEConfig(gamma=GAMMA, hidden=(), lr=3e-2, batch_size=256, steps=600, target_every=20)
    result = fqe(steps, chain.probabilities(TARGET, states), config)
    assert result.value == pytest.approx(chain.true_value(TARGET, GAMMA), rel=0.05)


def test_dualdice_recovers_the_chain_value(logs: tuple[chain.LoggedSteps, np.ndarray]) -> None:
    """Behaviour-agnostic: the propensities are not used. Both scales: one conversation, and the restarting chain."""
    steps, states = logs
    steps = replace(steps, propensity=torch.full_like(steps.propensity, float("nan")))
    config = DualDiceConfig(gamma=GAMMA, hidden=(), nu_lr=3e-3, zeta_lr=3e-2, batch_size=256, steps=500, zeta_steps=3)
    result = dualdice(steps, chain.probabilities(TARGET, states), config)
    truth = chain.true_value(TARGET, GAMMA)
    assert result.episode_value == pytest.approx(truth, rel=0.05)
    assert result.value == pytest.approx(truth / (1 - chain.discount_at_end(TARGET, GAMMA)), rel=0.05)
    assert result.mean_zeta == pytest.approx(1.0, abs=0.05)

"""Target policies on a hand-built batch, and logged steps extracted from a few simulated conversations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convoplan.dm.data import Batch, FeatureSpace, build_steps
from convoplan.dm.networks import QNetwork, RNNConfig
from convoplan.ope import (
    GreedyPolicy,
    SoftmaxPolicy,
    UniformPolicy,
    episode_values,
    logged_steps,
    policy_probabilities,
    reduce_dimensions,
    with_position,
)
from convoplan.ope.policies import EpsilonGreedyPolicy
from convoplan.ope.steps import Projection, step_positions
from convoplan.schema import Conversation
from tests.ope import chain

SCORES = torch.tensor([[1.0, 3.0, 3.0], [2.0, -1.0, 9.0], [0.5, 7.0, 7.0]])
MASK = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])


def hand_built_batch() -> Batch:
    steps, width = 3, 3
    zeros = torch.zeros(steps)
    return Batch(
        history=torch.zeros(1, 1, 4),
        history_lengths=torch.ones(1, dtype=torch.long),
        step_episode=torch.zeros(steps, dtype=torch.long),
        step_prefix=torch.zeros(steps, dtype=torch.long),
        last_user=torch.zeros(steps, 4),
        context=torch.zeros(steps, 2),
        candidates=torch.zeros(steps, width, 4),
        mask=MASK,
        chosen=torch.zeros(steps, dtype=torch.long),
        reward=zeros,
        ratings=torch.zeros(steps, width),
        next_step=torch.tensor([1, 2, -1]),
        propensity=zeros,
        closes=torch.zeros(steps, dtype=torch.bool),
    )


def scorer(batch: Batch) -> torch.Tensor:
    return SCORES


def test_greedy_takes_the_first_best_offered_candidate() -> None:
    probabilities = GreedyPolicy(scorer)(hand_built_batch())
    assert probabilities.tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0]]  # ties: first; padding (9.0, 7.0) never


def test_softmax_sums_to_one_over_the_offered_candidates() -> None:
    batch = hand_built_batch()
    for temperature in (0.5, 2.0, -1.0):
        probabilities = SoftmaxPolicy(scorer, temperature)(batch)
        assert torch.allclose(probabilities.sum(-1), torch.ones(3))
        assert bool((probabilities[~MASK] == 0).all())
    hot, cold = SoftmaxPolicy(scorer, 100.0)(batch), SoftmaxPolicy(scorer, 0.01)(batch)
    assert torch.allclose(hot[0], torch.full((3,), 1 / 3), atol=0.01) and cold[1].tolist() == pytest.approx([1, 0, 0])
    assert SoftmaxPolicy(scorer, -0.01)(batch)[0].tolist() == pytest.approx([1, 0, 0])  # prefers the lowest score
    with pytest.raises(ValueError, match="nonzero"):
        SoftmaxPolicy(scorer, 0.0)


def test_uniform_and_epsilon_greedy() -> None:
    batch = hand_built_batch()
    expected = torch.tensor([[1 / 3] * 3, [0.5, 0.5, 0], [1, 0, 0]])
    assert torch.allclose(UniformPolicy()(batch), expected)
    mixed = EpsilonGreedyPolicy(scorer, 0.2)(batch)
    assert mixed[0].tolist() == pytest.approx([0.2 / 3, 0.8 + 0.2 / 3, 0.2 / 3])
    assert mixed[1].tolist() == pytest.approx([0.9, 0.1, 0.0])


def test_step_positions_and_episode_values() -> None:
    episode = torch.tensor([0, 0, 0, 1, 2, 2])
    assert step_positions(episode).tolist() == [0, 1, 2, 0, 0, 1]
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    values = episode_values(rewards, episode, 0.5, episodes=4)
    assert values.tolist() == pytest.approx([0.5 * (1 + 1 + 0.75), 0.5 * 4, 0.5 * (5 + 3), 0.0])


def test_projection_and_position_features() -> None:
    steps, _ = chain.sample(np.array([[0.5, 0.5], [0.5, 0.5]]), episodes=20, seed=0)
    reduced = with_position(reduce_dimensions(steps, 1, 3))
    assert reduced.states.shape == (steps.steps, 1 + 2) and reduced.actions.shape == (steps.steps, 2, 3)
    assert torch.equal(reduced.states[:, -2], steps.initial.float())
    assert torch.allclose(reduced.states[:, -1], torch.log1p(step_positions(steps.episode).float()))
    # The four one-hot action vectors span 3 dimensions after centring: all their variance is kept.
    assert Projection.fit(steps.actions[steps.mask], 3).explained == pytest.approx(1.0)
    assert torch.equal(reduced.reward, steps.reward) and torch.equal(reduced.next_step, steps.next_step)


def test_logged_steps_follow_the_step_table(animal_logs: list[Conversation]) -> None:
    space = FeatureSpace.fit(animal_logs)
    table = build_steps(animal_logs, space)
    embeddings = torch.randn(len(table.texts), 384)
    torch.manual_seed(0)
    network = QNetwork(space.utterance_dim, space.candidate_dim, RNNConfig(hidden=8, head=(8,), dropout=0.0)).eval()
    steps = logged_steps(table, embeddings, network.state, episodes_per_batch=5)
    whole = table.batch(list(range(table.episodes)), embeddings)
    assert steps.steps == table.steps
    with torch.no_grad():
        assert torch.allclose(steps.states, network.state(whole), atol=1e-5)
    width = steps.mask.shape[1]
    assert torch.equal(steps.mask[:, : whole.mask.shape[1]], whole.mask) and width == whole.mask.shape[1]
    assert torch.equal(steps.next_step, whole.next_step)  # whole conversations: the same global links
    assert torch.equal(steps.reward, torch.from_numpy(table.step_rewards()))
    assert steps.initial.sum() == table.episodes and bool(steps.initial[0])
    assert bool((steps.next_step[steps.initial.roll(-1)] == -1).all())  # the step before each start is terminal
    assert torch.equal(steps.chosen_actions, whole.candidates[torch.arange(steps.steps), whole.chosen])
    probabilities = policy_probabilities(table, embeddings, GreedyPolicy(network), episodes_per_batch=5)
    assert probabilities.shape == steps.mask.shape
    assert torch.allclose(probabilities.sum(-1), torch.ones(steps.steps))
    assert torch.equal(probabilities, GreedyPolicy(network)(whole))
    manual = [
        (1 - 0.9) * sum(0.9**t * float(r) for t, r in enumerate(steps.reward[steps.episode == e]))
        for e in range(table.episodes)
    ]
    assert episode_values(steps.reward, steps.episode, 0.9).numpy() == pytest.approx(np.asarray(manual))

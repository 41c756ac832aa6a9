"""Rewards from what users do (`convoplan.dm.rewards`): the reaction to each response, paid on its stop step, checked
on a hand-made conversation; mixed with ratings; Q-learning on logs without raters (as exported live sessions
are), where the ratings reward refuses to train; and `convoplan dm train --set reward.source=reactions`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.dm.configs import QConfig, RewardConfig
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QNetwork, RNNConfig
from convoplan.dm.rewards import step_reward
from convoplan.dm.train import prepare, train_q
from convoplan.embed import SentenceEmbedder
from convoplan.schema import Candidate, Conversation, Turn, write_jsonl
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.planning import HeuristicDM

TINY = RNNConfig(hidden=16, head=(32,), dropout=0.0)


def step(action: str, rating: float, **meta: object) -> Turn:
    chosen = Candidate(text=action, action=action, selected=True, ratings={"r": rating})
    other = Candidate(text="other", action="fact", ratings={"r": 1.0})
    return Turn(speaker="agent", text=action, action=action, candidates=[chosen, other], meta=meta)  # type: ignore[arg-type]


def user(text: str, **meta: object) -> Turn:
    return Turn(speaker="user", text=text, meta=meta)  # type: ignore[arg-type]


CONVERSATION = Conversation(
    id="c",
    domain="animals",
    turns=[
        user("hi"),
        step("yes_no_question", 4.0),
        step("stop", 3.0),
        user("yes please, thanks!", answer="yes", feedback="positive"),  # continued, cooperative, praise: 1 + 1 + 2
        step("fact", 2.0),
        step("stop", 5.0, feedback="negative"),  # the console's thumbs down on this response: -2
        user("I have to go now, bye", stop=True),  # left: -3
        step("fact", 1.0),
        step("stop", 2.0),  # nothing follows: 0
    ],
)


def test_the_reaction_is_paid_on_the_response_stop_step() -> None:
    space = FeatureSpace.fit([CONVERSATION])
    reactions = build_steps([CONVERSATION], space, reward=step_reward(RewardConfig(source="reactions")))
    assert reactions.step_rewards().tolist() == [0.0, 4.0, 0.0, -5.0, 0.0, 0.0]
    mixed = build_steps([CONVERSATION], space, reward=step_reward(RewardConfig(source="mixed", rating_weight=0.5)))
    assert mixed.step_rewards().tolist() == pytest.approx([2.0, 5.5, 1.0, -2.5, 0.5, 1.0])
    ratings = build_steps([CONVERSATION], space, reward=step_reward(RewardConfig()))
    assert ratings.step_rewards().tolist() == [4.0, 3.0, 2.0, 5.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def unrated() -> list[Conversation]:
    return list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=16, raters=0, seed=3)))


def test_q_learning_on_reactions_needs_no_raters(unrated: list[Conversation], embedder: SentenceEmbedder) -> None:
    config = QConfig(network=TINY, steps=60, batch_size=4, lr=3e-3, target_every=20)
    with pytest.raises(ValueError, match=r"reward\.source=reactions"):
        train_q(prepare(unrated, embedder), config)
    data = prepare(unrated, embedder, reward=RewardConfig(source="reactions"))
    assert (data.table.step_rewards() != 0).any()
    torch.manual_seed(0)
    before = [
        p.detach().clone()
        for p in QNetwork(data.table.space.utterance_dim, data.table.space.candidate_dim, TINY).parameters()
    ]
    result = train_q(data, config)
    k = len(result.losses) // 5
    assert sum(result.losses[-k:]) < sum(result.losses[:k])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, result.network.parameters(), strict=True))
    # Discounted per response, the same data trains to other values: steps inside a response are not discounted.
    closes = data.table.step_closes
    assert closes.any() and not closes.all()
    per_response = train_q(data, replace(config, discount="response"))
    k = len(per_response.losses) // 5
    assert sum(per_response.losses[-k:]) < sum(per_response.losses[:k])
    batch = data.table.batch(list(range(data.table.episodes)), data.embeddings)
    with torch.no_grad():
        assert not torch.allclose(result.network(batch), per_response.network(batch))


def test_dm_train_takes_the_reward_from_the_command_line(unrated: list[Conversation], tmp_path: Path) -> None:
    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, unrated)
    arguments = ["dm", "train", str(logs), "--algorithm", "saql", "--out", str(tmp_path / "saql")]
    small = ["--set", "steps=20", "--set", "network.hidden=16", "--set", "batch_size=4"]
    refused = CliRunner().invoke(app, [*arguments, *small])
    assert refused.exit_code != 0 and "reward.source=reactions" in refused.output
    result = CliRunner().invoke(app, [*arguments, *small, "--set", "reward.source=reactions"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "saql" / "config.json").is_file()

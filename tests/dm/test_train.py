"""Training the dialogue managers: losses fall, parameters move, checkpoints round-trip, policies plug in."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.dm.checkpoint import RNNPolicy, load_policy, save_policy
from convoplan.dm.configs import QConfig, SupervisedConfig, ValidationConfig
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QEnsemble, QModel, QNetwork, RNNConfig
from convoplan.dm.train import Dataset, _rnn_rating_error, prepare, split_episodes, train_q, train_supervised
from convoplan.embed import SentenceEmbedder
from convoplan.progress import Update
from convoplan.schema import Conversation, write_jsonl
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world

TINY = RNNConfig(hidden=16, head=(32,), dropout=0.0)


@pytest.fixture(scope="module")
def data(animal_logs: list[Conversation], embedder: SentenceEmbedder) -> Dataset:
    return prepare(animal_logs, embedder)


def parameters(network: QModel) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in network.parameters()])


def early_late(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 5)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def test_steps_follow_the_logs(animal_logs: list[Conversation], data: Dataset) -> None:
    table = data.table
    steps = sum(1 for c in animal_logs for t in c.turns if t.candidates)
    assert table.steps == steps and table.episodes == len(animal_logs)
    batch = table.batch([0, 1], data.embeddings)
    first = animal_logs[0]
    assert batch.done.sum() == 2  # one terminal step per conversation
    n0 = sum(1 for t in first.turns if t.candidates)
    assert batch.next_step[: n0 - 1].tolist() == list(range(1, n0)) and int(batch.next_step[n0 - 1]) == -1
    chosen = [next(c for c in t.candidates if c.selected) for t in first.turns if t.candidates]
    expected = [sum(c.ratings.values()) / len(c.ratings) for c in chosen]
    assert batch.reward[:n0].tolist() == pytest.approx(expected)
    assert (batch.mask.sum(1)[:n0].tolist()) == [len(t.candidates) for t in first.turns if t.candidates]


def test_supervised_dm_learns_the_ratings(data: Dataset) -> None:
    result = train_supervised(data, SupervisedConfig(network=TINY, steps=60, batch_size=4, lr=3e-3))
    start, end = early_late(result.losses)
    assert end < 0.5 * start, result.losses
    assert result.transitions > 0


def test_split_episodes_holds_out_a_seeded_share() -> None:
    train, held = split_episodes(20, 0.25, seed=3)
    assert len(held) == 5 and sorted([*train, *held]) == list(range(20))
    assert (held == split_episodes(20, 0.25, seed=3)[1]).all() and not (held == split_episodes(20, 0.25, 4)[1]).all()
    assert len(split_episodes(20, 0.0, 0)[1]) == 0 and len(split_episodes(1, 0.5, 0)[0]) == 1  # never all held out


def test_supervised_dm_validation_stops_and_keeps_the_best_weights(data: Dataset) -> None:
    validation = ValidationConfig(share=0.3, every=5, patience=2)
    config = SupervisedConfig(network=TINY, steps=400, batch_size=4, lr=3e-2, validation=validation)
    result = train_supervised(data, config)
    record = result.validation
    errors = [error for _, error in record["rmse"]]
    assert len(result.losses) < 400 and len(errors) == len(result.losses) // 5  # stopped early
    assert errors[0] > record["best_rmse"] == min(errors) and min(errors[-2:]) >= record["best_rmse"]
    _, held = split_episodes(data.table.episodes, 0.3, config.seed)
    assert record["held_out_conversations"] == len(held)
    # the network returned is the best one, not the last
    assert _rnn_rating_error(data, result.network, held) == pytest.approx(record["best_rmse"])
    assert record["final_rmse"] == pytest.approx(record["best_rmse"])


@pytest.mark.parametrize("algorithm", ["saql", "caql"])
def test_q_learning_loss_falls_and_parameters_move(data: Dataset, algorithm: str) -> None:
    config = QConfig(
        algorithm=algorithm,
        network=TINY,
        steps=60,
        batch_size=4,
        lr=3e-3,
        target_every=20,  # type: ignore[arg-type]
        caql_steps=2,
    )
    torch.manual_seed(0)
    before = parameters(QNetwork(data.table.space.utterance_dim, data.table.space.candidate_dim, TINY))
    result = train_q(data, config)
    start, end = early_late(result.losses)
    assert end < start, result.losses
    assert not torch.allclose(before, parameters(result.network))


def test_cql_pulls_values_toward_the_behaviour_policy(data: Dataset) -> None:
    """From the same SAQL start and for the same steps, training with the CQL term (behaviour = the logged choice)
    leaves unlogged candidates less ahead of the logged one than training without it."""
    base = QConfig(network=TINY, steps=40, batch_size=4, lr=3e-3, seed=1, behaviour="logged")
    start = train_q(data, base).network
    plain = train_q(data, base, init=start).network
    regularised = train_q(data, replace(base, cql_alpha=10.0), init=start).network
    batch = data.table.batch(list(range(data.table.episodes)), data.embeddings)

    def lead(network: QNetwork) -> float:
        with torch.no_grad():
            q = network(batch)
        best = q.masked_fill(~batch.mask, -1e9).max(1).values
        return float((best - q.gather(1, batch.chosen[:, None])[:, 0]).mean())

    assert lead(regularised) < lead(plain)


def test_an_ensemble_is_independent_members_acting_on_their_mean_q(data: Dataset, tmp_path: Path) -> None:
    """Member k is exactly the network one training with seed + k gives; the ensemble's Q is the members' mean; its
    state encodes like one network's; progress counts every member's steps; it saves and loads as one DM."""
    config = QConfig(network=TINY, steps=20, batch_size=4, lr=3e-3, target_every=10, seed=3, ensemble=3)
    updates: list[Update] = []
    result = train_q(data, config, progress=updates.append)
    ensemble = result.network
    assert isinstance(ensemble, QEnsemble) and len(ensemble.members) == 3
    singles = [train_q(data, replace(config, ensemble=1, seed=3 + k)) for k in range(3)]
    for member, single in zip(ensemble.networks, singles, strict=True):
        assert torch.equal(parameters(member), parameters(single.network))
    assert not torch.allclose(parameters(ensemble.networks[0]), parameters(ensemble.networks[1]))
    expected_losses = torch.tensor([s.losses for s in singles]).mean(0)
    assert torch.allclose(torch.tensor(result.losses), expected_losses)

    batch = data.table.batch([0, 1], data.embeddings)
    with torch.no_grad():
        mean = torch.stack([s.network(batch) for s in singles]).mean(0)
        assert torch.allclose(ensemble(batch), mean, atol=1e-6)
        assert torch.allclose(ensemble.q(ensemble.state(batch), batch.candidates), mean, atol=1e-6)
    assert [u.done for u in updates] == list(range(1, 61)) and {u.total for u in updates} == {60}
    assert [u.metrics["member"] for u in updates[19:21]] == [1, 2]

    folder = result.save(tmp_path / "ens", "saql", config, data.table.space)
    assert json.loads((folder / "config.json").read_text())["members"] == 3
    loaded = load_policy(folder)
    assert isinstance(loaded, RNNPolicy) and isinstance(loaded.network, QEnsemble)
    with torch.no_grad():
        assert torch.allclose(loaded.network(batch), mean, atol=1e-6)

    warm = train_q(data, replace(config, steps=2), init=ensemble).network  # member k from member k
    assert isinstance(warm, QEnsemble)
    distance = torch.cdist(
        torch.stack([parameters(w) for w in warm.networks]), torch.stack([parameters(m) for m in ensemble.networks])
    )  # [warm member, trained member]
    assert torch.equal(distance.argmin(1), torch.arange(3)) and (distance.diagonal() > 0).all()
    with pytest.raises(ValueError, match="init is an ensemble of 3 networks: set ensemble=3"):
        train_q(data, replace(config, ensemble=1), init=ensemble)
    with pytest.raises(ValueError, match="init is an ensemble of 3 networks, not 2"):
        train_q(data, replace(config, ensemble=2), init=ensemble)
    with pytest.raises(ValueError, match="ensemble: must be >= 1, got 0"):  # the config's range refuses it
        replace(config, ensemble=0)


def test_a_bad_ensemble_size_in_a_saved_dm_is_named(tmp_path: Path) -> None:
    space = FeatureSpace(["fact"], ["facts"], ["step"])
    folder = save_policy(tmp_path, "x", QNetwork(space.utterance_dim, space.candidate_dim, TINY), TINY, space, {})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "members": 0}))
    with pytest.raises(ValueError, match=r"config\.json: members: expected a positive integer, got 0"):
        load_policy(folder)


def test_checkpoint_round_trip_and_policy_plugs_into_the_loop(
    data: Dataset, embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    network = train_supervised(data, SupervisedConfig(network=TINY, steps=5, batch_size=2)).network
    save_policy(tmp_path / "dm", "supervised_rnn", network, TINY, data.table.space, {"steps": 5})
    policy = load_policy(tmp_path / "dm", embedder)
    batch = data.table.batch([0], data.embeddings)
    with torch.no_grad():
        assert torch.allclose(network(batch), policy.network(batch))
    (conversation,) = simulate(animals_world(), policy, SimulationConfig(conversations=1, max_turns=3))
    steps = [t for t in conversation.turns if t.candidates]
    assert steps and all(c.score is not None for t in steps for c in t.candidates)


def test_live_scoring_matches_the_training_view(
    animal_logs: list[Conversation], data: Dataset, embedder: SentenceEmbedder
) -> None:
    network = train_supervised(data, SupervisedConfig(network=TINY, steps=5, batch_size=2)).network
    policy = RNNPolicy(network, data.table.space, embedder)
    conversation = animal_logs[0]
    index = next(i for i, t in enumerate(conversation.turns) if t.candidates and i > 3)
    from convoplan.compose.loop import DialogueState

    live = policy.score(DialogueState(turns=conversation.turns[:index]), conversation.turns[index].candidates)
    table = build_steps([replace(conversation, turns=conversation.turns[: index + 1])], data.table.space)
    batch = table.batch([0], torch.from_numpy(embedder.embed(table.texts)))
    with torch.no_grad():
        offline = network(batch)[-1, : len(live)]
    assert live == pytest.approx(offline.tolist(), abs=1e-5)


def test_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json: not a convoplan DM checkpoint"):
        load_policy(tmp_path)
    space = FeatureSpace(["fact"], ["facts"], ["step"])
    save_policy(tmp_path, "x", QNetwork(space.utterance_dim, space.candidate_dim, TINY), TINY, space, {})
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot load the weights"):
        load_policy(tmp_path)


@pytest.mark.bad_input("6 checkpoint configs validated")
@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        ("network", {"hidden": "200"}, r"config\.json: network\.hidden: expected an integer, got \"200\""),
        ("network", {"head": "big"}, r"config\.json: network\.head: expected a list"),
        ("space", {"actions": [1, 2]}, r"config\.json: space\.actions\[0\]: expected a string"),
        ("network", {"layers": 3}, r"config\.json: network\.layers: no such field"),
    ],
)
def test_a_wrong_type_in_a_saved_dm_is_one_line_naming_the_field(
    tmp_path: Path, section: str, changes: dict[str, object], message: str
) -> None:
    space = FeatureSpace(["fact"], ["facts"], ["step"])
    folder = save_policy(
        tmp_path / "dm", "x", QNetwork(space.utterance_dim, space.candidate_dim, TINY), TINY, space, {}
    )
    config = json.loads((folder / "config.json").read_text())
    config[section].update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_policy(folder)
    result = CliRunner().invoke(app, ["chat", "--dm", str(folder)], input="hello\nquit\n")
    assert result.exit_code == 2 and result.stderr.startswith("error: --dm ")
    assert len(result.stderr.strip().splitlines()) == 1 and "config.json" in result.stderr


def test_dm_train_reports_the_held_out_error(animal_logs: list[Conversation], tmp_path: Path) -> None:
    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, animal_logs)
    small = ["--set", "steps=30", "--set", "network.hidden=16", "--set", "batch_size=4"]
    held = ["--set", "validation.share=0.25", "--set", "validation.every=10"]
    out = tmp_path / "sup"
    result = CliRunner().invoke(
        app, ["dm", "train", str(logs), "--algorithm", "supervised", "--out", str(out), *small, *held]
    )
    assert result.exit_code == 0, result.output
    assert "held-out rating error (RMSE" in result.output
    record = json.loads((out / "config.json").read_text())["training"]["validation"]
    assert record["held_out_conversations"] == round(0.25 * len(animal_logs)) and len(record["rmse"]) == 3

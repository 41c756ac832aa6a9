"""Next-best-action: the supervised model learns a deterministic successor, round-trips through disk, the outcome
Q-model prefers the action that converts, the CLI trains and evaluates, and both run on the real corpora."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from convoplan.actions.evaluate import FrequencyBaseline, evaluate_next_actions
from convoplan.actions.load import load_nba
from convoplan.actions.nba import EncodedConversations, NBAConfig, NBANetwork, SupervisedNBA, history_prefixes
from convoplan.actions.outcome import OutcomeConfig, OutcomeNBA, action_steps, action_text
from convoplan.actions.protocols import NextActionModel
from convoplan.actions.train_nba import next_action_loss, top_k_hits, train_nba
from convoplan.actions.train_outcome import train_outcome
from convoplan.cli.nba import nba_app
from convoplan.dm.configs import QConfig
from convoplan.dm.data import FeatureSpace
from convoplan.dm.networks import QEnsemble, RNNConfig
from convoplan.embed import SentenceEmbedder
from convoplan.schema import Conversation, Outcome, Turn, write_jsonl

ACTIONS = ["greet", "ask", "offer", "close"]
SAY = {
    "greet": "Hello, nice to meet you.",
    "ask": "What are you looking for today?",
    "offer": "I can give you a discount on this plan.",
    "close": "Thank you, goodbye.",
}
OPENERS = {a: f"Please start with {a}." for a in ACTIONS}
NEXT = {"greet": "ask", "ask": "offer", "offer": "close", "close": "greet"}
TINY = NBAConfig(hidden=32, action_dim=8, head=32, dropout=0.0, lr=1e-2, batch_size=8, epochs=25, patience=5)


def cycle_conversation(index: int, rng: random.Random, split: str = "train") -> Conversation:
    """The user names the first action; every next agent action is NEXT[previous]. One free-text agent message
    (no action) is sprinkled in, which must stay history only."""
    action = rng.choice(ACTIONS)
    turns = [Turn(speaker="user", text=OPENERS[action])]
    for step in range(rng.randint(3, 6)):
        turns.append(Turn(speaker="agent", text=SAY[action], action=action))
        if step == 1:
            turns.append(Turn(speaker="agent", text="Let me check that for you."))
        turns.append(Turn(speaker="user", text="ok"))
        action = NEXT[action]
    return Conversation(id=f"c{index}", domain="test", turns=turns, meta={"split": split})


@pytest.fixture(scope="module")
def cycles() -> dict[str, list[Conversation]]:
    rng = random.Random(0)
    return {
        split: [cycle_conversation(i + offset, rng, split) for i in range(count)]
        for split, count, offset in (("train", 48, 0), ("validation", 8, 100), ("test", 12, 200))
    }


@pytest.fixture(scope="module")
def trained(cycles: dict[str, list[Conversation]], embedder: SentenceEmbedder) -> tuple[SupervisedNBA, list[float]]:
    result = train_nba(cycles["train"], embedder, TINY, cycles["validation"])
    return result.model, result.losses


def flat(network: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in network.parameters()])


# --- pure parts ----------------------------------------------------------------------------------------------------


def test_loss_ignores_unknown_targets_and_top_k_counts_them_as_misses() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, 2.0, 5.0]])
    targets = torch.tensor([0, -1, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], targets[[0, 2]])
    assert torch.allclose(next_action_loss(logits, targets), expected)
    assert float(next_action_loss(logits, torch.tensor([-1, -1, -1]))) == 0.0
    assert top_k_hits(logits, targets, 1).tolist() == [True, False, False]
    assert top_k_hits(logits, targets, 2).tolist() == [True, False, True]


def test_encoding_predicts_labelled_agent_messages_only(cycles: dict[str, list[Conversation]]) -> None:
    conversation = cycles["train"][0]
    encoded = EncodedConversations.build([conversation], ACTIONS, "labelled")
    labelled = [t for t, turn in enumerate(conversation.turns) if turn.speaker == "agent" and turn.action]
    assert encoded.point_position.tolist() == labelled  # the free-text agent message is history, not a target
    assert encoded.points == len(history_prefixes([conversation])[0])
    end = EncodedConversations.build([conversation], ACTIONS, "end")
    assert end.point_position.tolist() == [len(conversation.turns)]


# --- supervised ----------------------------------------------------------------------------------------------------


def test_supervised_learns_the_successor_action(
    trained: tuple[SupervisedNBA, list[float]], cycles: dict[str, list[Conversation]]
) -> None:
    model, losses = trained
    k = max(1, len(losses) // 5)
    assert sum(losses[-k:]) / k < 0.2 * sum(losses[:k]) / k, losses
    torch.manual_seed(TINY.seed)
    assert not torch.allclose(flat(model.network), flat(NBANetwork(len(ACTIONS), TINY)))  # parameters moved
    accuracy = evaluate_next_actions(model, cycles["test"])
    assert accuracy.top1 >= 0.95 and accuracy.top3 == 1.0, accuracy
    assert accuracy.targets == sum(1 for c in cycles["test"] for t in c.turns if t.action)
    protocol: NextActionModel = model  # the seam the generator calls
    ranking = protocol.next_actions([replace(cycles["test"][0], turns=cycles["test"][0].turns[:2])])[0]
    assert sorted(s.action for s in ranking) == sorted(ACTIONS)
    assert ranking[0].action == NEXT[str(cycles["test"][0].turns[1].action)]
    assert sum(s.score for s in ranking) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.bad_input("6 checkpoint configs validated")
def test_save_and_load_give_identical_scores(
    trained: tuple[SupervisedNBA, list[float]],
    cycles: dict[str, list[Conversation]],
    embedder: SentenceEmbedder,
    tmp_path: Path,
) -> None:
    model, _ = trained
    model.save(tmp_path / "nba")
    loaded = load_nba(tmp_path / "nba", embedder)
    histories, _ = history_prefixes(cycles["test"])
    assert loaded.next_actions(histories) == model.next_actions(histories)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a convoplan next-best-action model"):
        load_nba(tmp_path / "other")
    config = json.loads((tmp_path / "nba" / "config.json").read_text())
    for changes, message in [
        ({"config": {**config["config"], "hidden": "256"}}, r"config\.json: config\.hidden: expected an integer"),
        ({"actions": "greet"}, r"config\.json: actions: expected a non-empty list of strings"),
        ({"kind": "magic"}, r"config\.json: kind: expected supervised or outcome, got 'magic'"),
    ]:
        (tmp_path / "nba" / "config.json").write_text(json.dumps({**config, **changes}))
        with pytest.raises(ValueError, match=message):
            load_nba(tmp_path / "nba")


def test_frequency_baselines(cycles: dict[str, list[Conversation]]) -> None:
    bigram = evaluate_next_actions(FrequencyBaseline(order=1).fit(cycles["train"]), cycles["test"])
    majority = evaluate_next_actions(FrequencyBaseline(order=0).fit(cycles["train"]), cycles["test"])
    # the successor is known once there is a previous action; the first action needs the user's words
    assert round(bigram.top1 * bigram.targets) >= bigram.targets - bigram.conversations
    assert majority.top1 < 0.5 < bigram.top1 and majority.top3 < bigram.top3 < 1.0


def test_training_without_labels_is_an_error(embedder: SentenceEmbedder) -> None:
    bare = Conversation(id="x", domain="d", turns=[Turn(speaker="agent", text="hi")])
    with pytest.raises(ValueError, match="no labelled agent messages"):
        train_nba([bare], embedder, TINY)


# --- outcome-driven ------------------------------------------------------------------------------------------------


def mdp_conversation(index: int, first: str, second: str) -> Conversation:
    """Two steps: the first action is irrelevant, the second converts iff it is "offer"."""
    turns = [
        Turn(speaker="user", text="Hi there."),
        Turn(speaker="agent", text=SAY[first], action=first),
        Turn(speaker="user", text="I see."),
        Turn(speaker="agent", text=SAY[second], action=second),
        Turn(speaker="user", text="Bye."),
    ]
    return Conversation(id=f"m{index}", domain="test", turns=turns, outcome=Outcome(converted=second == "offer"))


TINY_Q = QConfig(
    network=RNNConfig(hidden=16, head=(32,), dropout=0.0), gamma=0.9, lr=3e-3, batch_size=8, steps=250, target_every=25
)


def test_outcome_q_ranks_the_converting_action_first(embedder: SentenceEmbedder) -> None:
    logs = [
        mdp_conversation(i, first, second)
        for i, (first, second) in enumerate(
            (f, s) for f in ("greet", "ask") for s in ("offer", "close") for _ in range(6)
        )
    ]
    logs.append(Conversation(id="no-outcome", domain="test", turns=logs[0].turns))  # skipped: no outcome
    result = train_outcome(logs, embedder, OutcomeConfig(q=replace(TINY_Q, cql_alpha=0.0)))
    assert result.conversations == 24 and result.steps == 48
    model = result.model
    assert model.actions == ["ask", "close", "greet", "offer"]
    history = Conversation(id="h", domain="test", turns=logs[0].turns[:3])
    ranking = model.next_actions([history])[0]
    assert ranking[0].action == "offer", ranking
    q = dict((s.action, s.score) for s in ranking)
    assert q["offer"] == pytest.approx(1.0, abs=0.25) and q["close"] == pytest.approx(0.0, abs=0.25)
    # at the first step the discounted value of going on, gamma * 1 under the greedy policy, whatever is said
    first = model.q_values([Conversation(id="s", domain="test", turns=logs[0].turns[:1])])[0]
    assert float(first[model.actions.index("greet")]) == pytest.approx(0.9, abs=0.25)


def test_outcome_steps_reward_only_the_end_and_use_offered_sets(embedder: SentenceEmbedder) -> None:
    conversation = mdp_conversation(0, "greet", "offer")
    offered = replace(
        conversation.turns[3], meta={"action_options": ["offer", "close", "not-an-action"]}
    )  # the corpus recorded what was offered at the second step
    conversation = replace(conversation, turns=[*conversation.turns[:3], offered, *conversation.turns[4:]])
    space = FeatureSpace(actions=["ask", "close", "greet", "offer"])
    steps = action_steps([conversation], space, OutcomeConfig())
    assert steps.table.step_rewards().tolist() == [0.0, 1.0]
    assert steps.candidate_actions == [["ask", "close", "greet", "offer"], ["close", "offer"]]
    assert steps.width == 4 and steps.logged_probabilities().argmax(1).tolist() == [2, 1]
    assert {action_text(a) for a in space.actions} <= set(steps.table.texts)  # candidates: the actions in words
    assert action_text("inform_nothing-found") == "inform nothing found"
    everything = action_steps([conversation], space, OutcomeConfig(candidates="actions"))
    assert everything.candidate_actions[1] == ["ask", "close", "greet", "offer"]
    value = action_steps([conversation], space, OutcomeConfig(reward="value"))
    assert value.table.steps == 0  # the outcome has no value: skipped


@pytest.mark.parametrize("ensemble", [1, 2])
def test_outcome_save_load_and_greedy_policy(embedder: SentenceEmbedder, tmp_path: Path, ensemble: int) -> None:
    logs = [mdp_conversation(i, "greet", s) for i, s in enumerate(["offer", "close"] * 4)]
    model = train_outcome(logs, embedder, OutcomeConfig(q=replace(TINY_Q, steps=20, ensemble=ensemble))).model
    model.save(tmp_path / "q")
    loaded = load_nba(tmp_path / "q", embedder)
    assert isinstance(loaded, OutcomeNBA) and isinstance(loaded.network, QEnsemble) == (ensemble > 1)
    history = [Conversation(id="h", domain="test", turns=logs[0].turns[:3])]
    assert loaded.next_actions(history) == model.next_actions(history)
    steps = model.steps(logs)
    greedy = steps.greedy_probabilities(model)
    assert greedy.shape == (steps.table.steps, steps.width) and torch.equal(greedy.sum(1), torch.ones(len(greedy)))


# --- command line --------------------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(nba_app, name="nba")
    return app


def test_cli_trains_and_evaluates(
    cycles: dict[str, list[Conversation]],
    embedder: SentenceEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("convoplan.embed.SentenceEmbedder", lambda *args, **kwargs: embedder)
    logs = [
        replace(c, outcome=Outcome(converted=i % 2 == 0))
        for i, c in enumerate(cycles["train"][:16] + cycles["validation"] + cycles["test"])
    ]
    path = tmp_path / "logs.jsonl"
    write_jsonl(path, logs)
    runner = CliRunner()
    result = runner.invoke(
        cli(), ["nba", "train", str(path), "--out", str(tmp_path / "sup"), "--set", "epochs=2", "--set", "hidden=16"]
    )
    assert result.exit_code == 0, result.output
    assert "trained supervised" in result.stdout
    result = runner.invoke(cli(), ["nba", "eval", str(tmp_path / "sup"), str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = report["systems"]["supervised model"]
    assert report["kind"] == "supervised" and model["targets"] > 0 and 0.0 <= model["top1"] <= model["top3"] <= 1.0
    baselines = [report["systems"][name] for name in ("majority action", "most frequent after the previous action")]
    assert all(b["targets"] == model["targets"] and 0.0 <= b["top1"] <= b["top3"] <= 1.0 for b in baselines)

    result = runner.invoke(
        cli(),
        ["nba", "train", str(path), "--out", str(tmp_path / "q"), "--kind", "outcome", "--set", "q.steps=5"],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli(), ["nba", "eval", str(tmp_path / "q"), str(path), "--split", "validation"])
    assert result.exit_code == 0, result.output
    for system in ("outcome model", "majority action", "most frequent after the previous action"):
        assert system in result.stdout

    result = runner.invoke(cli(), ["nba", "train", str(path), "--out", str(tmp_path / "x"), "--show-config"])
    assert result.exit_code == 0 and "patience" in result.stdout


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "logs.jsonl"
    path.write_text('{"id": "a", "domain": "d", "turns": [{"speaker": "bot", "text": "hi"}]}\n')
    result = runner.invoke(cli(), ["nba", "train", str(path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and f"{path}:1: turns[0].speaker" in result.stderr
    result = runner.invoke(cli(), ["nba", "train", str(path), "--out", str(tmp_path / "m"), "--set", "nope=1"])
    assert result.exit_code == 2 and "no field 'nope'" in result.stderr
    write_jsonl(path, [Conversation(id="a", domain="d", turns=[Turn(speaker="agent", text="hi", action="greet")])])
    result = runner.invoke(cli(), ["nba", "train", str(path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no conversations with meta.split == 'train'" in result.stderr
    result = runner.invoke(cli(), ["nba", "eval", str(tmp_path), str(path)])
    assert result.exit_code == 2 and "not a convoplan next-best-action model" in result.stderr


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_an_empty_validation_split_is_refused_before_any_training(tmp_path: Path) -> None:
    turns = [Turn(speaker="agent", text="Hello!", action="greet"), Turn(speaker="user", text="Hi.")]
    turns += [Turn(speaker="agent", text="Anything else?", action="ask")]
    only_train = [Conversation(id=f"c{i}", domain="d", turns=turns, meta={"split": "train"}) for i in range(4)]
    path = tmp_path / "logs.jsonl"
    write_jsonl(path, only_train)
    cache, out = tmp_path / "never-embedded", tmp_path / "model"
    result = CliRunner().invoke(cli(), ["nba", "train", str(path), "--out", str(out), "--embedding-cache", str(cache)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {path}: the validation split is empty (no conversations with meta.split == 'validation' whose agent "
        "turns carry actions), and early stopping needs it: mark some conversations with that split, or name another "
        "with --validation-split\n"
    )
    assert not out.exists() and not cache.exists()
    write_jsonl(path, [*only_train, replace(only_train[0], id="v", meta={"split": "dev"})])  # the fix it names
    result = CliRunner().invoke(
        cli(), ["nba", "train", str(path), "--out", str(out), "--validation-split", "dev", "--set", "epochs=1"]
    )
    assert result.exit_code == 0 and "on 1 conversations" in result.stdout, result.output


# --- the real corpora ----------------------------------------------------------------------------------------------


def test_on_real_corpora(persuasion: list[Conversation], star: list[Conversation], embedder: SentenceEmbedder) -> None:
    annotated = [c for c in persuasion if c.meta.get("annotated")][:6]
    model = train_nba(annotated[:4], embedder, replace(TINY, epochs=1)).model
    accuracy = evaluate_next_actions(model, annotated[4:])
    # every persuader sentence of an annotated dialogue is labelled, so every one is a target
    assert accuracy.targets == sum(len(c.agent_turns()) for c in annotated[4:])
    assert 0.0 <= accuracy.top1 <= accuracy.top3 <= 1.0

    wizard = [c for c in star if c.outcome is not None and any(t.speaker == "agent" and not t.action for t in c.turns)]
    sample = wizard[:3]
    _, actions = history_prefixes(sample)
    assert len(actions) == sum(1 for c in sample for t in c.agent_turns() if t.action)  # free-text turns: history
    space = FeatureSpace(actions=sorted({t.action for c in star for t in c.turns if t.action}))
    steps = action_steps(sample, space, OutcomeConfig())
    assert steps.table.steps == len(actions)
    assert all(len(offered) <= 10 for offered in steps.candidate_actions)  # STAR's recorded suggestions
    rewards = steps.table.step_rewards()
    last = steps.table.episode_steps[1:] - 1
    assert rewards[last].tolist() == [float(bool(c.outcome and c.outcome.converted)) for c in sample]
    assert rewards.sum() == rewards[last].sum()  # the outcome is paid on the last step only

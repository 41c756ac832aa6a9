"""The action classifier: maths against references, training that learns, labelling rules, files, the CLI, Ray."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convoplan.actions.labeller import ActionClassifier, apply_labels, load_labeller, message_contexts
from convoplan.actions.train_labeller import (
    LabellerConfig,
    evaluate_labeller,
    expected_calibration_error,
    fit_temperature,
    labeller_loss,
    save_labeller,
    train_labeller,
)
from convoplan.cli import app
from convoplan.embed import SentenceEmbedder
from convoplan.schema import Conversation, Turn, write_jsonl

# Each action has its own wording; "Sure." depends on the context: after a question it answers, after thanks
# it closes. The previous action and the user message are what tell them apart.
PHRASES = {
    "greet": ["Hello there!", "Hi, welcome!", "Good morning to you."],
    "offer": ["Would you like our premium plan?", "I can offer you a discount today.", "May I suggest an upgrade?"],
    "answer": ["Sure.", "Sure."],
    "close": ["Sure.", "Sure."],
}
USER = {"greet": "Hi.", "offer": "What do you have?", "answer": "Is it cheap?", "close": "Thanks, bye."}


def synthetic(count: int, seed: int, split: str) -> list[Conversation]:
    rng = random.Random(seed)
    conversations = []
    for index in range(count):
        turns = []
        for action in ("greet", "offer", "answer", "close"):
            turns.append(Turn(speaker="user", text=USER[action]))
            turns.append(Turn(speaker="agent", text=rng.choice(PHRASES[action]), action=action))
        conversations.append(Conversation(id=f"{split}-{index}", domain="shop", turns=turns, meta={"split": split}))
    return conversations


@pytest.fixture(scope="module")
def trained(embedder: SentenceEmbedder) -> tuple[ActionClassifier, dict[str, object]]:
    config = LabellerConfig(epochs=30, patience=30, hidden=32, batch_size=16)
    return train_labeller(synthetic(24, 0, "train"), synthetic(6, 1, "validation"), config, embedder, "shop")


def test_loss_is_weighted_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    targets = torch.tensor([0, 2])
    weights = torch.tensor([0.5, 1.0, 2.0])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    expected = -(0.5 * math.log(p[0, 0]) + 2.0 * math.log(p[1, 2])) / (0.5 + 2.0)
    assert float(labeller_loss(logits, targets, weights)) == pytest.approx(expected, rel=1e-6)


def test_temperature_minimises_nll() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 5, generator=generator) * 4  # overconfident scores
    targets = torch.where(torch.rand(400, generator=generator) < 0.6, logits.argmax(1), torch.randint(0, 5, (400,)))
    fitted = fit_temperature(logits, targets)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 500))
    nll = [float(torch.nn.functional.cross_entropy(logits / t, targets)) for t in grid]
    assert fitted == pytest.approx(grid[int(np.argmin(nll))], rel=0.02)
    assert fitted > 1  # the scores were overconfident, so calibration softens them


def test_expected_calibration_error_by_hand() -> None:
    # Two messages at confidence 0.9 (one right), two at 0.6 (both right): ECE = 0.5*|0.9-0.5| + 0.5*|0.6-1|.
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    targets = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.4, abs=1e-6)


def test_contexts_name_the_neighbours() -> None:
    conversation = synthetic(1, 0, "train")[0]
    contexts = message_contexts([conversation])
    assert [c.ordinal for c in contexts] == [0, 1, 2, 3]
    assert contexts[2].user_text == "Is it cheap?"
    assert contexts[2].previous_text == conversation.turns[3].text
    assert contexts[0].previous_text == "" and contexts[0].gold == "greet"


def test_training_learns_the_context(trained: tuple[ActionClassifier, dict[str, float]]) -> None:
    classifier, record = trained
    assert record["final_loss_mean"] < record["first_loss"] / 2
    metrics = evaluate_labeller(classifier, synthetic(10, 2, "test"))
    assert metrics.messages == 40
    # "Sure." is both "answer" and "close": only the context separates them.
    assert metrics.accuracy >= 0.95
    assert metrics.per_label_f1["answer"] >= 0.9 and metrics.per_label_f1["close"] >= 0.9


def test_parameters_moved(embedder: SentenceEmbedder) -> None:
    from convoplan.actions.labeller import LabellerNetwork

    config = LabellerConfig(epochs=2, hidden=16)
    torch.manual_seed(config.seed)
    untrained = LabellerNetwork(4, config.hidden, config.action_dim, config.dropout).state_dict()
    classifier, _ = train_labeller(synthetic(8, 0, "train"), synthetic(2, 1, "validation"), config, embedder)
    moved = [not torch.equal(untrained[k], v) for k, v in classifier.network.state_dict().items()]
    assert all(moved)


def test_apply_keeps_human_labels_and_records_the_version(trained: tuple[ActionClassifier, object]) -> None:
    classifier = trained[0]
    conversation = synthetic(1, 5, "test")[0]
    turns = list(conversation.turns)
    turns[1] = Turn(speaker="agent", text="Hello there!", action="close")  # a (wrong) human label: kept
    turns[3] = Turn(speaker="agent", text=turns[3].text)  # unlabelled
    turns[7] = Turn(speaker="agent", text="Sure.", action="offer", action_source="old@0", action_confidence=0.2)
    conversation = Conversation(id="c", domain="shop", turns=turns)
    (labelled,), count = apply_labels([conversation], classifier)
    assert labelled.turns[1].action == "close" and labelled.turns[1].action_source is None
    assert labelled.turns[3].action == "offer" and labelled.turns[3].action_source == classifier.version
    assert labelled.turns[7].action_source == classifier.version  # a machine label is relabelled
    assert 0 < (labelled.turns[3].action_confidence or 0) <= 1
    assert count == 2  # turns 3 and 7; turns 1 and 5 are human
    assert [t.text for t in labelled.turns] == [t.text for t in conversation.turns]


def test_threshold_means_no_action(trained: tuple[ActionClassifier, object]) -> None:
    classifier = trained[0]
    strict = ActionClassifier(classifier.network, classifier.labels, classifier.temperature, 1.01, "strict@0")
    strict.embedder = classifier.embedder
    unlabelled = Conversation(id="u", domain="shop", turns=[Turn(speaker="agent", text="Hello there!")])
    (labelled,), count = apply_labels([unlabelled], strict)
    assert count == 0
    assert labelled.turns[0].action is None and labelled.turns[0].action_source == "strict@0"


def test_save_load_round_trip(trained: tuple[ActionClassifier, dict[str, object]], tmp_path: Path) -> None:
    classifier, record = trained
    save_labeller(tmp_path / "labeller", classifier, LabellerConfig(hidden=32), record)
    loaded = load_labeller(tmp_path / "labeller", classifier.embedder)
    conversations = synthetic(3, 9, "test")
    assert loaded.version == classifier.version
    assert torch.allclose(classifier.probabilities(conversations)[1], loaded.probabilities(conversations)[1])


def test_corrupt_weights_name_the_file(trained: tuple[ActionClassifier, dict[str, object]], tmp_path: Path) -> None:
    classifier, record = trained
    folder = save_labeller(tmp_path / "labeller", classifier, LabellerConfig(hidden=32), record)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot load the weights"):
        load_labeller(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a convoplan labeller"):
        load_labeller(folder)


def test_cli_train_eval_apply(embedder: SentenceEmbedder, tmp_path: Path) -> None:
    data = tmp_path / "shop.jsonl"
    unlabelled = [
        Conversation(id=f"u{i}", domain="shop", turns=[Turn(speaker=t.speaker, text=t.text) for t in c.turns])
        for i, c in enumerate(synthetic(3, 7, "test"))
    ]
    write_jsonl(data, synthetic(16, 0, "train") + synthetic(4, 1, "validation") + synthetic(4, 2, "test"))
    write_jsonl(tmp_path / "new.jsonl", unlabelled)
    cache = ["--embedding-cache", str(embedder.cache_dir)]
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(
        app, ["label", "train", str(data), "--out", str(model), *cache, "--set", "epochs=20", "--set", "hidden=32"]
    )
    assert result.exit_code == 0, result.output
    assert (model / "model.safetensors").is_file()
    result = runner.invoke(app, ["label", "eval", str(model), str(data), *cache, "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["messages"] == 16
    out = tmp_path / "labelled.jsonl"
    result = runner.invoke(app, ["label", "apply", str(model), str(tmp_path / "new.jsonl"), "--out", str(out), *cache])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    agent = [turn for row in rows for turn in row["turns"] if turn["speaker"] == "agent"]
    assert len(agent) == 12 and all(turn["action_source"].startswith("model@") for turn in agent)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data.jsonl"
    write_jsonl(data, synthetic(1, 0, "test"))
    result = runner.invoke(app, ["label", "apply", str(tmp_path / "missing"), str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no such file" in result.output and "config.json" in result.output
    result = runner.invoke(app, ["label", "apply", str(tmp_path), str(data), "--out", str(data)])
    assert result.exit_code == 2 and "is the input file" in result.output
    result = runner.invoke(app, ["label", "train", str(data), "--out", str(tmp_path / "m"), "--set", "epochs=1"])
    assert result.exit_code == 2 and "no human-labelled agent messages to train on" in result.output


def test_ray_engine_gives_the_local_labels(trained: tuple[ActionClassifier, dict[str, object]], tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'convoplan[ray]')")
    from convoplan.actions.ray_engine import apply_labels_ray

    classifier, record = trained
    folder = save_labeller(tmp_path / "labeller", classifier, LabellerConfig(hidden=32), record)
    conversations = [
        Conversation(id=c.id, domain="shop", turns=[Turn(speaker=t.speaker, text=t.text) for t in c.turns])
        for c in synthetic(12, 11, "test")
    ]
    local, local_count = apply_labels(conversations, load_labeller(folder, classifier.embedder))
    try:
        distributed, count = apply_labels_ray(conversations, folder, batch_size=4, cpus=2)
    finally:
        ray.shutdown()
    assert count == local_count == 48
    assert [c.id for c in distributed] == [c.id for c in local]
    for mine, theirs in zip(distributed, local, strict=True):
        assert [t.action for t in mine.turns] == [t.action for t in theirs.turns]
        confidences = [
            (t.action_confidence or 0.0, u.action_confidence or 0.0)
            for t, u in zip(mine.turns, theirs.turns, strict=True)
        ]
        assert all(abs(a - b) < 1e-4 for a, b in confidences)


def test_real_persuasion_labels(persuasion: list[Conversation], embedder: SentenceEmbedder) -> None:
    """A quick labeller on 60 annotated PersuasionForGood dialogues beats the majority class on 20 others."""
    annotated = [c for c in persuasion if c.meta.get("annotated")]
    train, validation, test = annotated[:50], annotated[50:60], annotated[60:80]
    classifier, _ = train_labeller(train, validation, LabellerConfig(epochs=8, hidden=64), embedder)
    metrics = evaluate_labeller(classifier, test)
    gold = [t.action for c in test for t in c.turns if t.speaker == "agent" and t.action]
    majority = max(gold.count(label) for label in set(gold)) / len(gold)
    assert metrics.messages == len(gold)
    assert metrics.accuracy > majority + 0.1


@pytest.mark.bad_input("6 checkpoint configs validated")
def test_a_wrong_type_in_a_saved_labeller_names_the_field(
    trained: tuple[ActionClassifier, dict[str, object]], tmp_path: Path
) -> None:
    classifier, record = trained
    folder = save_labeller(tmp_path / "labeller", classifier, LabellerConfig(hidden=32), record)
    config = json.loads((folder / "config.json").read_text())
    for field, value, message in [
        ("temperature", "1.0", r"config\.json: temperature: expected a number, got \"1\.0\""),
        ("labels", "greet", r"config\.json: labels: expected a list"),
        ("network", {"hidden": -1.5}, r"config\.json: network\.hidden: expected an integer"),
    ]:
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(ValueError, match=message):
            load_labeller(folder)


def test_a_validation_label_the_train_split_lacks_is_left_out_and_counted(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    validation = synthetic(4, 1, "validation")
    validation[0].turns[3].action = "other-action"  # a label no train message has
    config = LabellerConfig(epochs=2, hidden=16, batch_size=16)
    classifier, record = train_labeller(synthetic(8, 0, "train"), validation, config, embedder, "shop")
    assert record["validation_unseen_labels"] == {"other-action": 1}
    assert "other-action" not in classifier.labels
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [*synthetic(8, 0, "train"), *validation])
    options = ["--set", "epochs=2", "--embedding-cache", str(embedder.cache_dir)]
    result = CliRunner().invoke(app, ["label", "train", str(path), "--out", str(tmp_path / "m"), *options])
    assert result.exit_code == 0, result.output
    assert "left out of validation, labels the train split never has: other-action (1)" in result.stderr


def test_a_chosen_label_the_train_split_lacks_is_one_line_before_any_embedding(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [*synthetic(4, 0, "train"), *synthetic(2, 1, "validation")])
    options = ["--set", "labels=greet,refund", "--embedding-cache", str(tmp_path / "never")]
    result = CliRunner().invoke(app, ["label", "train", str(path), "--out", str(tmp_path / "m"), *options])
    assert result.exit_code == 2 and "labels: 'refund' never occur in the train split" in result.stderr
    assert not (tmp_path / "never").exists()  # failed before embedding anything

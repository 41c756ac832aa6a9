"""Preference tuning (`convoplan.lm.dpo`, `convoplan lm dpo`) on a tiny Llama: the loss falls, the adapter's weights
move, the tuned model prefers the chosen message more than the model it started from (the log-probability margin
computed here, from the model's own prompt), the folder loads like any other, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.dpo import DPOConfig, train_dpo
from convoplan.lm.grounding import Grounder
from convoplan.lm.model import INFO_FILE, LanguageModel, load_base, load_model, save_model
from convoplan.lm.preferences import PreferencePair, write_pairs
from convoplan.schema import Conversation, Turn

from .test_lora import tiny_llama

pytest.importorskip("trl")

runner = CliRunner()
CONTEXT = Conversation("c", "shop", [Turn("user", "hello there")])
CHOSEN, REJECTED = "Hi, how can I help?", "Go away."


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dpo")
    tiny_llama(root / "base", positions=96)
    tokenizer, network = load_base(str(root / "base"), ["greeting", "thank"])
    return save_model(root / "lm", network, tokenizer, {"vanilla": False})


def pairs(n: int = 8) -> list[PreferencePair]:
    return [PreferencePair(f"c#1#{k}", CONTEXT, "greeting", CHOSEN, REJECTED, "own") for k in range(n)]


def margin(lm: LanguageModel) -> float:
    """log p(chosen | prompt) - log p(rejected | prompt), each message as the model writes it (text, then end)."""
    prompt = Grounder(lm.codec).prompt(CONTEXT, "greeting", 64).ids
    scores = []
    for text in (CHOSEN, REJECTED):
        message = [*lm.codec.encode_texts([text])[0], lm.codec.end]
        ids = torch.tensor([prompt + message])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        scores.append(float(torch.log_softmax(logits, -1).gather(1, torch.tensor(message)[:, None]).sum()))
    return scores[0] - scores[1]


def test_dpo_learns_the_preference_and_writes_a_model_folder(model: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = DPOConfig(epochs=3, batch_size=4, lr=5e-3)
    result = train_dpo(model, pairs(), tmp_path / "tuned", config)
    assert result.pairs == 8 and result.left_out == 0 and len(result.losses) == 6
    assert result.losses[-1] < result.losses[0]  # from log 2 (no preference) down
    tuned = load_model(result.folder)
    assert margin(tuned) > margin(load_model(model)) + 0.1
    [record] = json.loads((result.folder / INFO_FILE).read_text())["dpo"]
    assert record["parameter_change"] > 0 and record["pairs"] == 8 and record["config"]["beta"] == 0.1
    assert record["steps"] == 6 and record["final_loss"] == result.losses[-1]


def test_the_cli_tunes_and_refuses_bad_input_in_one_line(model: Path, tmp_path: Path) -> None:
    shown = runner.invoke(app, ["lm", "dpo", "x.jsonl", "--model", str(model), "--out", "y", "--show-config"])
    assert shown.exit_code == 0 and "beta" in shown.output
    good = tmp_path / "pairs.jsonl"
    write_pairs(good, pairs(4))
    out = tmp_path / "tuned"
    result = runner.invoke(app, ["lm", "dpo", str(good), "--model", str(model), "--out", str(out), "--set", "epochs=1"])
    assert result.exit_code == 0, result.output
    assert "4 pairs, 1 steps" in result.output and (out / INFO_FILE).exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{oops\n")
    result = runner.invoke(app, ["lm", "dpo", str(bad), "--model", str(model), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "bad.jsonl:5: invalid JSON" in result.output
    unknown = tmp_path / "unknown.jsonl"
    write_pairs(unknown, [PreferencePair("u#1#0", CONTEXT, "refund", CHOSEN, REJECTED, "own")])
    result = runner.invoke(app, ["lm", "dpo", str(unknown), "--model", str(model), "--out", str(tmp_path / "u")])
    assert result.exit_code == 2 and "actions the model does not know: refund" in result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "u").exists()

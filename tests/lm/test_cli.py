"""`convoplan lm train`: trains and writes a model folder, shows and overrides its config, fails in one line; it
fine-tunes SmolLM2 unless told --from-scratch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import convoplan.lm.train as lm_train
from convoplan.cli.lm import lm_app
from convoplan.schema import Conversation, write_jsonl

runner = CliRunner()
TINY = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.n_positions=32",
    "vocab_size=280",
    "epochs=1",
    "batch_size=8",
    "device=cpu",
]


def options(overrides: list[str]) -> list[str]:
    """A small model from scratch (the default fine-tunes SmolLM2)."""
    return ["--from-scratch", *(argument for item in overrides for argument in ("--set", item))]


def test_train_writes_a_model_folder(tmp_path: Path, corpus: list[Conversation]) -> None:
    data = tmp_path / "data.jsonl"
    write_jsonl(data, corpus)
    result = runner.invoke(lm_app, ["train", str(data), "--out", str(tmp_path / "lm"), *options(TINY)])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'lm'}" in result.stdout and "tokens/s" in result.stdout
    info = json.loads((tmp_path / "lm" / "convoplan-lm.json").read_text())
    assert info["vanilla"] is False and info["training"]["config"]["model"]["n_embd"] == 16

    result = runner.invoke(lm_app, ["train", str(data), "--out", str(tmp_path / "v"), "--vanilla", *options(TINY)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "v" / "convoplan-lm.json").read_text())["actions"] == []


def test_show_config_lists_fields_with_their_meaning(tmp_path: Path) -> None:
    result = runner.invoke(lm_app, ["train", "x.jsonl", "--out", str(tmp_path), "--show-config", "--set", "lr=0.01"])
    assert result.exit_code == 0
    assert "model.n_layer" in result.stdout and "0.01" in result.stdout and "early stopping" in result.stdout


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path, corpus: list[Conversation]) -> None:
    data = tmp_path / "data.jsonl"
    write_jsonl(data, corpus)
    cases = [
        (["train", str(data), "--out", str(tmp_path / "a"), "--set", "epochs=many"], "epochs: cannot read 'many'"),
        (["train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "a")], "missing.jsonl"),
        (["train", str(data), "--out", str(tmp_path / "a"), "--resume"], "no interrupted run to resume"),
        (["train", str(data), "--out", str(tmp_path / "a"), "--resume", "--vanilla"], "leave out --set"),
        (["train", str(data), "--out", str(tmp_path / "a"), "--base-model", str(tmp_path / "nope")], "cannot load"),
        (["train", str(data), "--out", str(tmp_path / "a"), *options([*TINY, "model.n_head=3"])], "multiple of"),
    ]
    for arguments, message in cases:
        result = runner.invoke(lm_app, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_default_fine_tunes_smollm2_and_from_scratch_sizes_its_own(
    tmp_path: Path, corpus: list[Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data.jsonl"
    write_jsonl(data, corpus)
    bases: list[str | None] = []

    def recorded(*args: Any, base_model: str | None = None, **kwargs: Any) -> Any:
        bases.append(base_model)
        raise ValueError("stop here: the base is what this test checks")

    monkeypatch.setattr(lm_train, "train", recorded)
    for arguments in ([], ["--from-scratch"], ["--base-model", "gpt2"]):
        result = runner.invoke(lm_app, ["train", str(data), "--out", str(tmp_path / "lm"), *arguments])
        assert result.exit_code == 2 and "stop here" in result.stderr
    assert bases == ["smollm2", None, "gpt2"]
    cases = [
        (["--set", "model.n_layer=1"], "--set model.n_layer sizes a model trained from scratch (--from-scratch)"),
        (["--from-scratch", "--base-model", "gpt2"], "--from-scratch trains a new model; --base-model gpt2"),
    ]
    for arguments, message in cases:
        result = runner.invoke(lm_app, ["train", str(data), "--out", str(tmp_path / "lm"), *arguments])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

"""LM training under torchrun: two processes (gloo, DDP), each with half of every batch, train to the weights of one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from convoplan.schema import Conversation, write_jsonl

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_positions=32", "model.dropout=0"]
TINY += ["vocab_size=280", "epochs=2", "batch_size=6", "checkpoint_every=5", "lr=0.005", "device=cpu"]


def train(args: list[str], launcher: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [*launcher, "-m", "convoplan.cli.lm", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_two_processes_train_like_one(tmp_path: Path, corpus: list[Conversation]) -> None:
    data = tmp_path / "data.jsonl"
    write_jsonl(data, corpus)
    common = [str(data), "--from-scratch", *[a for item in TINY for a in ("--set", item)]]
    train([*common, "--out", str(tmp_path / "one")], [sys.executable])
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    output = train([*common, "--out", str(tmp_path / "two")], [torchrun, "--standalone", "--nproc_per_node", "2"])
    assert output.count("wrote") == 1  # only rank 0 reports

    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4, rtol=1e-3), name
    info = json.loads((tmp_path / "two" / "convoplan-lm.json").read_text())
    assert info["training"]["processes"] == 2
    assert (tmp_path / "one" / "tokenizer.json").read_text() == (tmp_path / "two" / "tokenizer.json").read_text()

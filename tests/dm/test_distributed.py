"""DM training under torchrun: two processes (gloo, DDP) train to the same weights as one, away from the start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from convoplan.dm.checkpoint import load_network
from convoplan.dm.networks import QNetwork, RNNConfig
from convoplan.schema import Conversation, write_jsonl

TINY = ["network.hidden=8", "network.head=16", "network.dropout=0", "steps=6", "batch_size=4", "target_every=3"]


def train(args: list[str], launcher: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [*launcher, "-m", "convoplan.cli", "dm", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_two_processes_train_like_one(tmp_path: Path, animal_logs: list[Conversation]) -> None:
    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, animal_logs)
    common = [str(logs), "--algorithm", "saql", *[a for item in TINY for a in ("--set", item)]]
    train([*common, "--out", str(tmp_path / "one")], [sys.executable])
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    train([*common, "--out", str(tmp_path / "two")], [torchrun, "--standalone", "--nproc_per_node", "2"])

    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4, rtol=1e-3), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.jsonl", "one", "two"]  # writes stay under --out
    _, space, saved = load_network(tmp_path / "one")
    torch.manual_seed(0)  # the seeded initialisation of both runs (config seed 0), untrained
    start = QNetwork(space.utterance_dim, space.candidate_dim, RNNConfig(**saved["network"])).state_dict()
    assert start.keys() == one.keys()
    assert any(not torch.allclose(start[name], one[name]) for name in one), "training did not move the weights"

"""Trained dialogue managers on disk, and the policy that scores live candidates with one.

A checkpoint is a folder: `config.json` (the kind of DM, its network and feature space, how it was trained) and
`model.safetensors` (the weights), both written atomically. Loading never unpickles anything and never imports
training code, so a server can load DMs without the training stack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from convoplan.atomic import atomic_folder
from convoplan.compose.loop import DialogueManager, DialogueState
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QNetwork, RNNConfig
from convoplan.embed import SentenceEmbedder, shared_embedder
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["RNNPolicy", "load_policy", "save_policy", "training_record"]

FORMAT = "convoplan-dm/1"


class RNNPolicy:
    """Scores the candidates of a composition step with a trained QNetwork (ratings or Q-values); the composition
    loop then takes the argmax over the candidates really offered."""

    def __init__(self, network: QNetwork, space: FeatureSpace, embedder: SentenceEmbedder | None = None) -> None:
        self.network = network.eval()
        self.space = space
        self.embedder = embedder or shared_embedder()

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        pending = Turn(speaker="agent", text="(pending)", candidates=list(candidates))
        live = Conversation(id="live", domain="", turns=[*state.turns, pending])
        table = build_steps([live], self.space, live=True)
        embeddings = torch.from_numpy(self.embedder.embed(table.texts))
        batch = table.batch([0], embeddings)
        with torch.no_grad():
            q = self.network(batch)[-1]  # the pending step is the last one
        return [float(v) for v in q[: len(candidates)]]


def training_record(config: Any, losses: list[float], seconds: float, **extra: Any) -> dict[str, Any]:
    """What a checkpoint's config.json says about how it was trained (`extra`: throughput, the logs used...)."""
    return {
        "config": asdict(config),
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "seconds": seconds,
        **extra,
    }


def save_policy(
    folder: str | Path,
    kind: str,
    network: QNetwork,
    network_config: RNNConfig,
    space: FeatureSpace,
    training: dict[str, Any],
) -> Path:
    """Write a trained RNN DM to `folder` as a whole (a half-written checkpoint never appears)."""
    from safetensors.torch import save_file

    config = {
        "format": FORMAT,
        "kind": kind,
        "architecture": "rnn",
        "network": asdict(network_config),
        "space": space.to_dict(),
        "training": training,
    }
    with atomic_folder(folder) as temp:
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, temp / "model.safetensors")
        (temp / "config.json").write_text(json.dumps(config, indent=2))
    return Path(folder)


def read_config(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json; ValueError naming the file if the folder is not a convoplan DM."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(
                f"format {config.get('format') if isinstance(config, dict) else None!r}, expected {FORMAT!r}"
            )
    except (OSError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a convoplan DM checkpoint ({error})") from None
    return config


def load_network(folder: str | Path) -> tuple[QNetwork, FeatureSpace, dict[str, Any]]:
    """The network, feature space and config of an RNN checkpoint; ValueError naming the file if it is not one."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    if config.get("architecture", "rnn") != "rnn":
        raise ValueError(f"{folder}: a {config['architecture']} DM, not an RNN one")
    try:
        space = FeatureSpace(**config["space"])
        network_config = RNNConfig(**{**config["network"], "head": tuple(config["network"]["head"])})
    except (KeyError, TypeError) as error:
        raise ValueError(f"{folder / 'config.json'}: not a convoplan DM checkpoint ({error})") from None
    network = QNetwork(space.utterance_dim, space.candidate_dim, network_config)
    try:
        network.load_state_dict(load_file(folder / "model.safetensors"))
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        raise ValueError(f"{folder / 'model.safetensors'}: cannot load the weights ({error})") from None
    return network.eval(), space, config


def load_policy(folder: str | Path, embedder: SentenceEmbedder | None = None) -> DialogueManager:
    """A trained DM of any architecture, ready for the composition loop."""
    config = read_config(folder)
    if config.get("architecture") == "transformer":
        from convoplan.dm.crossencoder import load_cross_encoder

        return load_cross_encoder(folder, config)
    network, space, _ = load_network(folder)
    return RNNPolicy(network, space, embedder)

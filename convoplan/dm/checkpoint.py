"""Trained dialogue managers on disk, and the policy that scores live candidates with one.

A checkpoint is a folder (`convoplan.checkpoint`): `config.json` (the kind of DM, its architecture, network and
feature space, how it was trained) and `model.safetensors` (the weights), plus `tokenizer/` for a cross-encoder,
written as a whole. Loading never unpickles anything and never imports
training code, so a server can load DMs without the training stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from convoplan.checkpoint import CONFIG_FILE, load_weights, read_config, write_folder
from convoplan.compose.loop import DialogueManager, DialogueState
from convoplan.configs import config_from_dict
from convoplan.dm.crossencoder import CrossEncoder, CrossEncoderPolicy, TransformerConfig
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QEnsemble, QModel, RNNConfig, q_model
from convoplan.embed import SentenceEmbedder, shared_embedder
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["RNNPolicy", "load_network", "load_policy", "save_cross_encoder", "save_policy"]

FORMAT = "convoplan-dm/1"


class RNNPolicy:
    """Scores the candidates of a composition step with a trained QNetwork or QEnsemble (ratings or Q-values); the
    composition loop then takes the argmax over the candidates really offered."""

    def __init__(self, network: QModel, space: FeatureSpace, embedder: SentenceEmbedder | None = None) -> None:
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


def save_policy(
    folder: str | Path,
    kind: str,
    network: QModel,
    network_config: RNNConfig,
    space: FeatureSpace,
    training: dict[str, Any],
) -> Path:
    """Write a trained RNN DM (one network, or an ensemble of `members` alike) to `folder` as a whole (a
    half-written checkpoint never appears)."""
    config = {
        "kind": kind,
        "architecture": "rnn",
        "network": asdict(network_config),
        "members": len(network.members) if isinstance(network, QEnsemble) else 1,
        "space": space.to_dict(),
        "training": training,
    }
    return write_folder(folder, FORMAT, config, network)


def read_dm_config(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json; ValueError naming the file if the folder is not a convoplan DM."""
    return read_config(folder, FORMAT, "DM checkpoint")


def load_network(folder: str | Path) -> tuple[QModel, FeatureSpace, dict[str, Any]]:
    """The network (or ensemble), feature space and config of an RNN checkpoint; ValueError naming the file if it is
    not one."""
    folder = Path(folder)
    config = read_dm_config(folder)
    if config.get("architecture", "rnn") != "rnn":
        raise ValueError(f"{folder}: a {config['architecture']} DM, not an RNN one")
    where = str(folder / CONFIG_FILE)
    space = config_from_dict(FeatureSpace, config.get("space"), where, "space")
    network_config = config_from_dict(RNNConfig, config.get("network"), where, "network")
    members = config.get("members", 1)
    if not isinstance(members, int) or members < 1:
        raise ValueError(f"{where}: members: expected a positive integer, got {members!r}")
    network = q_model(space.utterance_dim, space.candidate_dim, network_config, members)
    load_weights(folder, network)
    return network.eval(), space, config


def save_cross_encoder(
    folder: str | Path,
    kind: str,
    model: CrossEncoder,
    tokenizer: Any,
    config: TransformerConfig,
    space: FeatureSpace,
    training: dict[str, Any],
) -> Path:
    """Write a trained cross-encoder DM (config, weights, tokenizer) as one folder."""
    record = {
        "kind": kind,
        "architecture": "transformer",
        "transformer": asdict(config),
        "bert": model.bert.config.to_dict(),
        "space": space.to_dict(),
        "training": training,
    }
    return write_folder(
        folder, FORMAT, record, model, extra=lambda temp: tokenizer.save_pretrained(str(temp / "tokenizer"))
    )


def load_cross_encoder(folder: Path, config: dict[str, Any]) -> CrossEncoderPolicy:
    """The cross-encoder DM of a folder whose config.json is `config`."""
    from transformers import AutoTokenizer

    where = str(folder / CONFIG_FILE)
    space = config_from_dict(FeatureSpace, config.get("space"), where, "space")
    transformer = config_from_dict(TransformerConfig, config.get("transformer"), where, "transformer")
    if not isinstance(config.get("bert"), dict):
        raise ValueError(f"{where}: bert: expected an object")
    model = CrossEncoder(space.candidate_dim, transformer, bert_config=config["bert"])
    load_weights(folder, model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / 'tokenizer'}: cannot load the tokenizer ({error})") from None
    return CrossEncoderPolicy(model, tokenizer, space, transformer)


def load_policy(folder: str | Path, embedder: SentenceEmbedder | None = None) -> DialogueManager:
    """A trained DM of any architecture, ready for the composition loop."""
    config = read_dm_config(folder)
    if config.get("architecture") == "transformer":
        return load_cross_encoder(Path(folder), config)
    network, space, _ = load_network(folder)
    return RNNPolicy(network, space, embedder)

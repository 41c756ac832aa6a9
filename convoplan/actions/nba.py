"""Supervised next-best-action: which action should the agent take next, given the conversation so far?

Model. Each message of the history becomes one input vector

    x_t = [ e(text_t) ; speaker_t ; E[action_t] ; log(1 + t) ]

e is all-MiniLM-L6-v2 (384-d, computed once per unique text, batched, cached by `SentenceEmbedder`), speaker_t a
one-hot of (user, agent, start), E a learned embedding of the message's action with two extra slots: "no action"
(user messages, unlabelled agent messages) and "unknown" (an action the training set never had), and t the
message's index. A GRU reads a start vector and then the messages; its output after the start and the first t
messages goes through an MLP to logits over the training action set, p(action of message t | messages < t).

Targets. Every agent message that carries an action is a target; the model predicts the next *labelled* agent
action. Agent messages without an action (STAR's free-text wizard `utter` turns) stay in the history, as agent
messages in the "no action" slot, but are never targets. PersuasionForGood's 300 annotated dialogues label every
persuader sentence, so there every agent message is a target (the 717 unannotated dialogues have no labelled agent
message and are left out). A held-out action that training never saw cannot be predicted and counts as a miss.

`SupervisedNBA` implements `NextActionModel`: `next_actions(histories)` ranks every training action by its
probability for the agent message that would follow each history. Training is `convoplan.actions.train_nba`,
evaluation and the frequency baselines `convoplan.actions.evaluate`.

A trained model is a folder (`convoplan.checkpoint`, shared with the outcome-driven model of
`convoplan.actions.outcome`; `convoplan.actions.load.load_nba` reads either): `config.json` (format, kind,
actions, config, training record) and `model.safetensors`; loading never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from convoplan.actions.protocols import ActionScore
from convoplan.checkpoint import load_weights, read_config, write_folder
from convoplan.configs import Config, config_from_dict
from convoplan.embed import EMBEDDING_DIM, SentenceEmbedder, shared_embedder
from convoplan.schema import Conversation

__all__ = ["NBAConfig", "SupervisedNBA"]

FORMAT = "convoplan-nba/1"
NO_ACTION, UNKNOWN_ACTION = 0, 1
"""Input slots of the action embedding before the training actions (which start at 2)."""
USER, AGENT, START = 0, 1, 2
"""Speaker slots of the input one-hot."""


@dataclass
class NBAConfig(Config):
    """The supervised next-best-action model and its training."""

    hidden: Annotated[int, Ge(1)] = 256
    """GRU units."""
    action_dim: Annotated[int, Ge(1)] = 32
    """Size of the learned embedding of a message's action."""
    head: Annotated[int, Ge(0)] = 256
    """Hidden units of the MLP from the GRU state to the action logits (0: a linear layer)."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    """Dropout on the GRU input's sentence embeddings and on the MLP."""
    label_smoothing: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """Label smoothing of the cross-entropy."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate."""
    weight_decay: Annotated[float, Ge(0)] = 1e-5
    """Adam weight decay."""
    batch_size: Annotated[int, Ge(1)] = 32
    """Conversations per batch."""
    epochs: Annotated[int, Ge(1)] = 40
    """Most passes over the training conversations."""
    patience: Annotated[int, Ge(1)] = 4
    """Epochs without a lower validation loss before training stops (no early stopping without validation data)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation, dropout and batch order."""


# --- data ----------------------------------------------------------------------------------------------------------


def labelled_actions(conversations: Sequence[Conversation]) -> list[str]:
    """The sorted set of actions carried by agent messages."""
    return sorted({t.action for c in conversations for t in c.turns if t.speaker == "agent" and t.action})


@dataclass
class SequenceBatch:
    """Whole conversations padded for the GRU (B conversations, L = 1 + the most messages, P predictions)."""

    messages: torch.Tensor  # [B, L, 384] sentence embeddings; position 0 is the start (zeros)
    speaker: torch.Tensor  # [B, L] long: USER, AGENT or START (padding: START, never read)
    action: torch.Tensor  # [B, L] long: action slot of each message (NO_ACTION at the start and on padding)
    lengths: torch.Tensor  # [B] 1 + messages of each conversation
    rows: torch.Tensor  # [P] the conversation each prediction reads
    positions: torch.Tensor  # [P] t: the prediction reads the GRU output at index t (start + messages < t)
    targets: torch.Tensor  # [P] class of the action of message t (-1: unknown or none)


@dataclass
class EncodedConversations:
    """Conversations as flat arrays (U messages, E conversations, P prediction points) plus their unique texts."""

    texts: list[str]
    text: np.ndarray  # [U] index into texts
    speaker: np.ndarray  # [U]
    action: np.ndarray  # [U] action slot
    offsets: np.ndarray  # [E + 1] offsets into the messages
    point_episode: np.ndarray  # [P]
    point_position: np.ndarray  # [P] message index t (the history is messages < t)
    point_target: np.ndarray  # [P] class, -1 if unknown or none
    point_offsets: np.ndarray  # [E + 1] offsets into the prediction points

    @property
    def episodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def points(self) -> int:
        return len(self.point_position)

    @classmethod
    def build(
        cls, conversations: Sequence[Conversation], actions: Sequence[str], points: Literal["labelled", "end"]
    ) -> EncodedConversations:
        """`points="labelled"`: predict every labelled agent message (training, evaluation); `"end"`: predict the
        message that would follow each conversation (serving)."""
        index = {action: i for i, action in enumerate(actions)}
        text_ids: dict[str, int] = {}
        text, speaker, action = [], [], []
        offsets, episode, position, target, point_offsets = [0], [], [], [], [0]
        for e, conversation in enumerate(conversations):
            for t, turn in enumerate(conversation.turns):
                text.append(text_ids.setdefault(turn.text, len(text_ids)))
                speaker.append(AGENT if turn.speaker == "agent" else USER)
                if not turn.action:
                    slot = NO_ACTION
                else:
                    slot = 2 + index[turn.action] if turn.action in index else UNKNOWN_ACTION
                action.append(slot if turn.speaker == "agent" else NO_ACTION)
                if points == "labelled" and turn.speaker == "agent" and turn.action:
                    episode.append(e)
                    position.append(t)
                    target.append(index.get(turn.action, -1))
            if points == "end":
                episode.append(e)
                position.append(len(conversation.turns))
                target.append(-1)
            offsets.append(len(text))
            point_offsets.append(len(position))
        return cls(
            texts=list(text_ids),
            text=np.asarray(text, dtype=np.int64),
            speaker=np.asarray(speaker, dtype=np.int64),
            action=np.asarray(action, dtype=np.int64),
            offsets=np.asarray(offsets, dtype=np.int64),
            point_episode=np.asarray(episode, dtype=np.int64),
            point_position=np.asarray(position, dtype=np.int64),
            point_target=np.asarray(target, dtype=np.int64),
            point_offsets=np.asarray(point_offsets, dtype=np.int64),
        )

    def batch(self, episodes: Sequence[int], embeddings: torch.Tensor) -> SequenceBatch:
        """Pad `episodes` (with a start vector first) and collect their prediction points; `embeddings` is
        [len(texts), 384]."""
        chosen = np.asarray(episodes, dtype=np.int64)
        starts, counts = self.offsets[chosen], np.diff(self.offsets)[chosen]
        width = 1 + (int(counts.max()) if len(counts) else 0)
        columns = np.arange(width - 1)
        present = columns < counts[:, None]  # [B, L - 1]
        index = np.where(present, starts[:, None] + columns, 0)
        mask = torch.from_numpy(present)
        messages = torch.zeros(len(chosen), width, EMBEDDING_DIM)
        messages[:, 1:] = embeddings[torch.from_numpy(self.text[index])] * mask.unsqueeze(-1)
        speaker = torch.full((len(chosen), width), START, dtype=torch.long)
        speaker[:, 1:] = torch.where(mask, torch.from_numpy(self.speaker[index]), START)
        action = torch.full((len(chosen), width), NO_ACTION, dtype=torch.long)
        action[:, 1:] = torch.where(mask, torch.from_numpy(self.action[index]), NO_ACTION)
        p0, p1 = self.point_offsets[chosen], self.point_offsets[chosen + 1]
        ranges = [np.arange(a, b) for a, b in zip(p0, p1, strict=True)]
        points = np.concatenate(ranges).astype(np.int64) if ranges else np.zeros(0, dtype=np.int64)
        return SequenceBatch(
            messages=messages,
            speaker=speaker,
            action=action,
            lengths=torch.from_numpy(counts + 1),
            rows=torch.from_numpy(np.repeat(np.arange(len(chosen)), p1 - p0)),
            positions=torch.from_numpy(self.point_position[points]),
            targets=torch.from_numpy(self.point_target[points]),
        )


# --- the network ---------------------------------------------------------------------------------------------------


class NBANetwork(nn.Module):
    """GRU over [sentence embedding; speaker; action embedding; log(1 + t)], then an MLP to action logits."""

    def __init__(self, classes: int, config: NBAConfig) -> None:
        super().__init__()
        self.action_embedding = nn.Embedding(classes + 2, config.action_dim)
        self.message_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(EMBEDDING_DIM + 3 + config.action_dim + 1, config.hidden, batch_first=True)
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        if config.head > 0:
            layers += [nn.Linear(config.hidden, config.head), nn.ReLU(), nn.Dropout(config.dropout)]
        layers.append(nn.Linear(config.head if config.head > 0 else config.hidden, classes))
        self.head = nn.Sequential(*layers)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [P, classes] at every prediction point of the batch."""
        width = batch.messages.shape[1]
        position = torch.log1p(torch.arange(width, dtype=torch.float32)).expand(len(batch.messages), width)
        inputs = torch.cat(
            [
                self.message_dropout(batch.messages),  # [B, L, 384]
                F.one_hot(batch.speaker, 3).to(torch.float32),  # [B, L, 3]
                self.action_embedding(batch.action),  # [B, L, action_dim]
                position.unsqueeze(-1),  # [B, L, 1]
            ],
            dim=-1,
        )
        packed = pack_padded_sequence(inputs, batch.lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = self.gru(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True)  # [B, L, hidden]
        return self.head(outputs[batch.rows, batch.positions])  # type: ignore[no-any-return]


# --- the model -----------------------------------------------------------------------------------------------------


def history_prefixes(conversations: Sequence[Conversation]) -> tuple[list[Conversation], list[str]]:
    """(history, logged action) for every labelled agent message: the history is the conversation up to it,
    without outcome or events (what a live model would see)."""
    histories, actions = [], []
    for conversation in conversations:
        for t, turn in enumerate(conversation.turns):
            if turn.speaker == "agent" and turn.action:
                histories.append(replace(conversation, turns=conversation.turns[:t], outcome=None, events=[]))
                actions.append(turn.action)
    return histories, actions


class SupervisedNBA:
    """A trained supervised next-best-action model (a `NextActionModel`)."""

    kind = "supervised"

    def __init__(
        self,
        network: NBANetwork,
        actions: Sequence[str],
        config: NBAConfig,
        embedder: SentenceEmbedder | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.actions = list(actions)
        self.config = config
        self.embedder = embedder or shared_embedder()
        self.training = training or {}

    def encode(
        self, conversations: Sequence[Conversation], points: Literal["labelled", "end"]
    ) -> tuple[EncodedConversations, torch.Tensor]:
        """The conversations as arrays (see `EncodedConversations.build`) and the embedding of each unique text,
        [len(texts), 384]."""
        encoded = EncodedConversations.build(conversations, self.actions, points)
        return encoded, torch.from_numpy(self.embedder.embed(encoded.texts))

    def logits(self, conversations: Sequence[Conversation], points: Literal["labelled", "end"]) -> torch.Tensor:
        """Logits [P, actions] at the prediction points of `conversations` (in order), in eval mode."""
        encoded, embeddings = self.encode(conversations, points)
        self.network.eval()
        parts = []
        with torch.no_grad():
            for first in range(0, encoded.episodes, 256):
                episodes = list(range(first, min(first + 256, encoded.episodes)))
                parts.append(self.network(encoded.batch(episodes, embeddings)))
        return torch.cat(parts) if parts else torch.zeros(0, len(self.actions))

    def probabilities(self, histories: Sequence[Conversation]) -> torch.Tensor:
        """p(next agent action | history), [len(histories), actions]."""
        return torch.softmax(self.logits(histories, "end"), dim=-1)

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        return rank_actions(self.probabilities(histories), self.actions)

    def save(self, folder: str | Path) -> Path:
        record = {"kind": self.kind, "actions": self.actions, "config": asdict(self.config), "training": self.training}
        return write_folder(folder, FORMAT, record, self.network)


def rank_actions(scores: torch.Tensor, actions: Sequence[str]) -> list[list[ActionScore]]:
    """Every action of each row of `scores` [H, A], best first (ties: the first action)."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True).tolist()
    values = scores.tolist()
    return [[ActionScore(actions[i], float(row[i])) for i in ranks] for ranks, row in zip(order, values, strict=True)]


# --- on disk -------------------------------------------------------------------------------------------------------


def read_nba_config(folder: str | Path) -> dict[str, Any]:
    """A model folder's config.json; ValueError naming the file if it is not a convoplan next-best-action model."""
    return read_config(folder, FORMAT, "next-best-action model")


def load_supervised(folder: Path, record: dict[str, Any], embedder: SentenceEmbedder | None = None) -> SupervisedNBA:
    """The supervised model of a folder whose config.json is `record`; ValueError naming the file and field."""
    where = str(folder / "config.json")
    config = config_from_dict(NBAConfig, record.get("config"), where, "config")
    actions = record.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise ValueError(f"{where}: actions: expected a non-empty list of strings")
    network = NBANetwork(len(actions), config)
    load_weights(folder, network)
    return SupervisedNBA(network, actions, config, embedder, record.get("training", {}))

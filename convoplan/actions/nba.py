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

Training: cross-entropy over every target of a batch of whole conversations, teacher-forced (the history holds the
logged previous actions), Adam; one epoch is one pass over the shuffled training conversations. After each epoch
the loss on the validation conversations decides early stopping, and the best epoch's weights are kept.

`SupervisedNBA` implements `NextActionModel`: `next_actions(histories)` ranks every training action by its
probability for the agent message that would follow each history. `FrequencyBaseline` ranks by counts (the
majority action, or the most frequent successor of the previous action). `evaluate_next_actions` gives top-1 and
top-3 accuracy of any `NextActionModel` on every labelled agent message of a set of conversations.

A trained model is a folder (`save_nba` / `load_nba`, shared with the outcome-driven model of
`convoplan.actions.outcome`): `config.json` (format, kind, actions, config, training record) and
`model.safetensors`, written atomically; loading never unpickles anything.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from convoplan.actions.protocols import ActionScore, NextActionModel
from convoplan.atomic import atomic_folder
from convoplan.embed import EMBEDDING_DIM, SentenceEmbedder, shared_embedder
from convoplan.schema import Conversation

if TYPE_CHECKING:
    from convoplan.actions.outcome import OutcomeNBA

__all__ = [
    "FORMAT",
    "EncodedConversations",
    "FrequencyBaseline",
    "NBAConfig",
    "NBANetwork",
    "NBATrainResult",
    "NextActionAccuracy",
    "Progress",
    "SequenceBatch",
    "SupervisedNBA",
    "evaluate_next_actions",
    "history_prefixes",
    "labelled_actions",
    "load_nba",
    "load_weights",
    "next_action_loss",
    "rank_actions",
    "read_nba_config",
    "save_nba",
    "top_k_hits",
    "train_nba",
]

FORMAT = "convoplan-nba/1"
NO_ACTION, UNKNOWN_ACTION = 0, 1
"""Input slots of the action embedding before the training actions (which start at 2)."""
USER, AGENT, START = 0, 1, 2
"""Speaker slots of the input one-hot."""

Progress = Callable[[int, float], None]
"""(optimiser step, loss) after each step."""


@dataclass
class NBAConfig:
    """The supervised next-best-action model and its training."""

    hidden: int = 256
    """GRU units."""
    action_dim: int = 32
    """Size of the learned embedding of a message's action."""
    head: int = 256
    """Hidden units of the MLP from the GRU state to the action logits (0: a linear layer)."""
    dropout: float = 0.2
    """Dropout on the GRU input's sentence embeddings and on the MLP."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """Adam weight decay."""
    batch_size: int = 32
    """Conversations per batch."""
    epochs: int = 40
    """Most passes over the training conversations."""
    patience: int = 4
    """Epochs without a lower validation loss before training stops (no early stopping without validation data)."""
    seed: int = 0
    """Seed of initialisation, dropout and batch order."""


# --- losses and metrics (pure) -----------------------------------------------------------------------------------


def next_action_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the logits [P, A] against the target classes [P]; targets < 0 (an action the model
    does not know) are left out. 0 (with a gradient path) when no target is known."""
    known = targets >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], targets[known], label_smoothing=label_smoothing)


def top_k_hits(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """[P] bool: is the target class [P] among the k highest scores [P, A]? False for unknown targets (< 0)."""
    k = min(k, scores.shape[-1])
    best = scores.topk(k, dim=-1).indices  # [P, k]
    return (best == targets.unsqueeze(-1)).any(dim=-1) & (targets >= 0)


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
        return save_nba(
            folder, self.kind, self.network, {"actions": self.actions, "config": asdict(self.config)}, self.training
        )


def rank_actions(scores: torch.Tensor, actions: Sequence[str]) -> list[list[ActionScore]]:
    """Every action of each row of `scores` [H, A], best first (ties: the first action)."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True).tolist()
    values = scores.tolist()
    return [[ActionScore(actions[i], float(row[i])) for i in ranks] for ranks, row in zip(order, values, strict=True)]


# --- training ------------------------------------------------------------------------------------------------------


@dataclass
class NBATrainResult:
    model: SupervisedNBA
    losses: list[float]
    """Training loss of every optimiser step."""
    validation_losses: list[float] = field(default_factory=list)
    """Validation loss after each epoch (empty without validation data)."""
    validation_top1: list[float] = field(default_factory=list)
    """Validation top-1 accuracy after each epoch."""
    best_epoch: int = 0
    """The epoch (1-based) whose weights were kept."""
    seconds: float = 0.0


def _validate(
    network: NBANetwork, data: EncodedConversations, embeddings: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy over every known target of `data`, top-1 accuracy over all its targets), in eval mode."""
    network.eval()
    total, count, hits = 0.0, 0, 0
    with torch.no_grad():
        for first in range(0, data.episodes, batch_size * 4):
            batch = data.batch(list(range(first, min(first + batch_size * 4, data.episodes))), embeddings)
            logits = network(batch)  # [P, A]
            known = int((batch.targets >= 0).sum())
            hits += int(top_k_hits(logits, batch.targets, 1).sum())
            if known:
                total += float(next_action_loss(logits, batch.targets)) * known
                count += known
    return (total / count if count else math.nan), (hits / data.points if data.points else math.nan)


def train_nba(
    train: Sequence[Conversation],
    embedder: SentenceEmbedder,
    config: NBAConfig,
    validation: Sequence[Conversation] = (),
    progress: Progress | None = None,
) -> NBATrainResult:
    """Train on the labelled agent messages of `train`; early stopping on those of `validation` (if any)."""
    start = time.perf_counter()
    train = [c for c in train if any(t.speaker == "agent" and t.action for t in c.turns)]
    actions = labelled_actions(train)
    if not actions:
        raise ValueError("no labelled agent messages to learn from: agent turns need actions")
    torch.manual_seed(config.seed)
    network = NBANetwork(len(actions), config)
    model = SupervisedNBA(network, actions, config, embedder)
    data, embeddings = model.encode(train, "labelled")
    held_out = [c for c in validation if any(t.speaker == "agent" and t.action for t in c.turns)]
    val_data, val_embeddings = model.encode(held_out, "labelled")
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    draw = np.random.default_rng(config.seed)
    losses: list[float] = []
    validation_losses: list[float] = []
    validation_top1: list[float] = []
    best = (math.inf, 0, copy.deepcopy(network.state_dict()))
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = draw.permutation(data.episodes)
        for first in range(0, len(order), config.batch_size):
            batch = data.batch(order[first : first + config.batch_size].tolist(), embeddings)
            loss = next_action_loss(network(batch), batch.targets, config.label_smoothing)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(losses), losses[-1])
        if val_data.points == 0:
            best = (math.nan, epoch, network.state_dict())
            continue
        loss_, top1 = _validate(network, val_data, val_embeddings, config.batch_size)
        validation_losses.append(loss_)
        validation_top1.append(top1)
        if validation_losses[-1] < best[0]:
            best = (validation_losses[-1], epoch, copy.deepcopy(network.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    network.load_state_dict(best[2])
    network.eval()
    model.training = {
        "conversations": data.episodes,
        "targets": data.points,
        "validation_conversations": val_data.episodes,
        "epochs": len(validation_losses) or config.epochs,
        "best_epoch": best[1],
        "first_loss": losses[0] if losses else math.nan,
        "final_loss": losses[-1] if losses else math.nan,
        "best_validation_loss": best[0],
        "best_validation_top1": validation_top1[best[1] - 1] if validation_top1 else math.nan,
    }
    return NBATrainResult(model, losses, validation_losses, validation_top1, best[1], time.perf_counter() - start)


# --- evaluation ----------------------------------------------------------------------------------------------------


@dataclass
class NextActionAccuracy:
    """How often the logged next action is among a model's first k."""

    top1: float
    top3: float
    targets: int
    """Labelled agent messages predicted."""
    conversations: int
    """Conversations they come from."""
    unseen: int
    """Targets whose action the model does not rank at all (never in its training set): always misses."""

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate_next_actions(
    model: NextActionModel, conversations: Sequence[Conversation], chunk: int = 512
) -> NextActionAccuracy:
    """Top-1 and top-3 accuracy of `model` on every labelled agent message of `conversations`, each predicted from
    the conversation before it (through `model.next_actions`)."""
    histories, actions = history_prefixes(conversations)
    top1 = top3 = unseen = 0
    for first in range(0, len(histories), chunk):
        rankings = model.next_actions(histories[first : first + chunk])
        for ranking, action in zip(rankings, actions[first : first + chunk], strict=True):
            ranked = [score.action for score in ranking]
            top1 += ranked[:1] == [action]
            top3 += action in ranked[:3]
            unseen += action not in ranked
    n = len(histories)
    used = sum(1 for c in conversations if any(t.speaker == "agent" and t.action for t in c.turns))
    return NextActionAccuracy(top1 / n if n else math.nan, top3 / n if n else math.nan, n, used, unseen)


class FrequencyBaseline:
    """Ranks actions by training counts: `order=0` by how often each action occurs (the majority baseline),
    `order=1` by how often it followed the previous labelled agent action (the first action of a conversation: by
    how often conversations open with it), ties and unseen contexts broken by the overall counts."""

    kind = "frequency"

    def __init__(self, order: Literal[0, 1] = 1) -> None:
        self.order = order
        self.overall: Counter[str] = Counter()
        self.following: dict[str | None, Counter[str]] = defaultdict(Counter)
        self._rankings: dict[str | None, list[ActionScore]] = {}

    def fit(self, conversations: Sequence[Conversation]) -> FrequencyBaseline:
        for conversation in conversations:
            previous: str | None = None
            for turn in conversation.turns:
                if turn.speaker == "agent" and turn.action:
                    self.overall[turn.action] += 1
                    self.following[previous][turn.action] += 1
                    previous = turn.action
        self._rankings = {}
        return self

    @property
    def actions(self) -> list[str]:
        return sorted(self.overall)

    def _ranking(self, previous: str | None) -> list[ActionScore]:
        if previous not in self._rankings:
            counts = self.following.get(previous, Counter()) if self.order == 1 else Counter()
            total = sum(counts.values()) or sum(self.overall.values()) or 1
            ordered = sorted(self.overall, key=lambda a: (-counts[a], -self.overall[a], a))
            base = counts if counts else self.overall
            self._rankings[previous] = [ActionScore(a, base[a] / total) for a in ordered]
        return self._rankings[previous]

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        rankings = []
        for history in histories:
            labelled = [t.action for t in history.turns if t.speaker == "agent" and t.action]
            rankings.append(list(self._ranking(labelled[-1] if labelled else None)))
        return rankings


# --- on disk -------------------------------------------------------------------------------------------------------


def save_nba(
    folder: str | Path, kind: str, network: nn.Module, record: dict[str, Any], training: dict[str, Any]
) -> Path:
    """Write a next-best-action model to `folder` as a whole: config.json (format, kind, `record`, training) and
    model.safetensors."""
    from safetensors.torch import save_file

    config = {"format": FORMAT, "kind": kind, **record, "training": training}
    with atomic_folder(folder) as temp:
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, temp / "model.safetensors")
        (temp / "config.json").write_text(json.dumps(config, indent=2, default=_json_default))
    return Path(folder)


def _json_default(value: object) -> object:
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_nba_config(folder: str | Path) -> dict[str, Any]:
    """A model folder's config.json; ValueError naming the file if it is not a convoplan next-best-action model."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            found = config.get("format") if isinstance(config, dict) else None
            raise ValueError(f"format {found!r}, expected {FORMAT!r}")
    except (OSError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a convoplan next-best-action model ({error})") from None
    return config


def load_weights(folder: Path, network: nn.Module) -> None:
    from safetensors.torch import load_file

    try:
        network.load_state_dict(load_file(folder / "model.safetensors"))
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        raise ValueError(f"{folder / 'model.safetensors'}: cannot load the weights ({error})") from None


def load_nba(folder: str | Path, embedder: SentenceEmbedder | None = None) -> SupervisedNBA | OutcomeNBA:
    """A trained next-best-action model of either kind; ValueError naming the file if the folder is not one."""
    folder = Path(folder)
    record = read_nba_config(folder)
    if record.get("kind") == "outcome":
        from convoplan.actions.outcome import load_outcome

        return load_outcome(folder, record, embedder)
    if record.get("kind") != "supervised":
        raise ValueError(f"{folder / 'config.json'}: unknown kind {record.get('kind')!r}")
    try:
        config = NBAConfig(**record["config"])
        actions = [str(a) for a in record["actions"]]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{folder / 'config.json'}: not a convoplan next-best-action model ({error})") from None
    network = NBANetwork(len(actions), config)
    load_weights(folder, network)
    return SupervisedNBA(network, actions, config, embedder, record.get("training", {}))

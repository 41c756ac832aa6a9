"""The action classifier: which action does an agent message carry?

Each agent message is read with its context, as in the persuasion-strategy classifiers of Wang et al. (2019):

    x = [ e(message) ; e(preceding user message) ; e(previous agent message) ; E[previous action] ; position ]
    p(action | x) = softmax(MLP(x) / T)

e is all-MiniLM-L6-v2 (384-d, unit norm; zeros where there is no such message), E a learned embedding of the
previous agent message's action (a "start" slot before the first one), position three numbers (the message's
turn index and its ordinal among agent messages, both as log(1 + n) / 4, and whether it opens the agent's turn;
never the conversation's length, which a live conversation does not know yet). T is a temperature
fitted on held-out data after training (Guo et al., 2017), so that the confidence is calibrated; a message whose
best confidence is under the labeller's threshold gets no action.

The previous action is the human label where the conversation has one, otherwise the labeller's own prediction
for the previous message: messages are labelled in order, one agent-message ordinal at a time across the whole
batch of conversations.

A labeller is a folder: `config.json` (labels, sizes, temperature, threshold, version) and `model.safetensors`;
with a fine-tuned encoder also `encoder/` (a sentence-transformers folder, safetensors weights). Loading never
unpickles anything and never imports training code.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from convoplan.actions.protocols import Labeller, Prediction
from convoplan.checkpoint import CONFIG_FILE, load_weights, read_config
from convoplan.configs import Config, config_from_dict
from convoplan.embed import EMBEDDING_DIM, SentenceEmbedder, shared_embedder
from convoplan.schema import Conversation

__all__ = ["ActionClassifier", "apply_labels", "load_labeller", "message_contexts"]

FORMAT = "convoplan-labeller/1"
POSITION_FEATURES = 3


@dataclass(frozen=True)
class MessageContext:
    """One agent message and what the classifier reads around it."""

    conversation: int
    """Index of its conversation in the batch."""
    turn: int
    """Index of the message in `conversation.turns`."""
    ordinal: int
    """How many agent messages came before it in the conversation."""
    text: str
    user_text: str
    """The nearest preceding user message ("" if none)."""
    previous_text: str
    """The previous agent message ("" if none)."""
    position: tuple[float, float, float]
    gold: str | None
    """The human label, if the corpus has one (never a labeller's)."""


def with_targets(context: MessageContext, target: Callable[[str], str]) -> MessageContext:
    """The context with its human label renamed into a labeller's label set."""
    return context if context.gold is None else replace(context, gold=target(context.gold))


def message_contexts(conversations: Sequence[Conversation]) -> list[MessageContext]:
    """Every agent message of `conversations`, in conversation order, with its context."""
    contexts = []
    for index, conversation in enumerate(conversations):
        user_text, previous_text, ordinal = "", "", 0
        turns = conversation.turns
        for position, turn in enumerate(turns):
            if turn.speaker == "user":
                user_text = turn.text
                continue
            opens_turn = position == 0 or turns[position - 1].speaker == "user"
            contexts.append(
                MessageContext(
                    conversation=index,
                    turn=position,
                    ordinal=ordinal,
                    text=turn.text,
                    user_text=user_text,
                    previous_text=previous_text,
                    position=(math.log1p(position) / 4.0, math.log1p(ordinal) / 4.0, float(opens_turn)),
                    gold=turn.action if turn.action_source is None else None,
                )
            )
            previous_text, ordinal = turn.text, ordinal + 1
    return contexts


class LabellerNetwork(nn.Module):
    """MLP over [message ; user message ; previous message ; previous action ; position] -> action logits."""

    def __init__(self, labels: int, hidden: int, action_dim: int, dropout: float) -> None:
        super().__init__()
        # Action ids: 0..labels-1 the labels, `labels` = "no previous agent message", `labels + 1` = unknown.
        self.previous_action = nn.Embedding(labels + 2, action_dim)
        inputs = 3 * EMBEDDING_DIM + action_dim + POSITION_FEATURES
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(inputs, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, labels),
        )

    def forward(self, texts: torch.Tensor, previous: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """texts [n, 3, 384] (message, user message, previous message), previous [n] long, position [n, 3]
        -> logits [n, labels]."""
        x = torch.cat([texts.flatten(1), self.previous_action(previous), position], dim=1)
        logits: torch.Tensor = self.mlp(x)
        return logits


def embed_contexts(
    contexts: Sequence[MessageContext], embedder: SentenceEmbedder, message_embedder: SentenceEmbedder | None = None
) -> torch.Tensor:
    """[n, 3, 384]: the message (by `message_embedder` when the encoder was fine-tuned), the user message and the
    previous agent message; zeros for empty context. Each unique text is embedded once."""
    context_texts = [text for c in contexts for text in (c.user_text, c.previous_text) if text]
    vectors = dict(zip(context_texts, embedder.embed(context_texts), strict=True))
    messages = (message_embedder or embedder).embed([c.text for c in contexts])
    zero = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    stacked = (
        np.stack(
            [
                np.stack([message, vectors.get(c.user_text, zero), vectors.get(c.previous_text, zero)])
                for c, message in zip(contexts, messages, strict=True)
            ]
        )
        if contexts
        else np.zeros((0, 3, EMBEDDING_DIM), dtype=np.float32)
    )
    return torch.from_numpy(stacked)


def positions(contexts: Sequence[MessageContext]) -> torch.Tensor:
    return torch.tensor([c.position for c in contexts], dtype=torch.float32).reshape(len(contexts), POSITION_FEATURES)


def sequential_logits(
    network: LabellerNetwork,
    texts: torch.Tensor,
    position: torch.Tensor,
    contexts: Sequence[MessageContext],
    label_ids: dict[str, int],
) -> torch.Tensor:
    """Logits [n, labels] with the previous action taken from the human label where there is one and from the
    network's own prediction otherwise, one agent-message ordinal at a time (each step one batched forward)."""
    labels = len(label_ids)
    logits = torch.zeros(len(contexts), labels)
    chosen = torch.full((len(contexts),), labels, dtype=torch.long)  # what each message passes on to the next
    by_ordinal: dict[int, list[int]] = {}
    for row, context in enumerate(contexts):
        by_ordinal.setdefault(context.ordinal, []).append(row)
    previous_row = {(c.conversation, c.ordinal): row for row, c in enumerate(contexts)}
    for ordinal in sorted(by_ordinal):
        rows = torch.tensor(by_ordinal[ordinal])
        previous = torch.tensor(
            [
                int(chosen[previous_row[(contexts[r].conversation, ordinal - 1)]]) if ordinal else labels
                for r in by_ordinal[ordinal]
            ],
            dtype=torch.long,
        )
        logits[rows] = network(texts[rows], previous, position[rows])
        predicted = logits[rows].argmax(dim=1)
        gold = torch.tensor([label_ids.get(contexts[r].gold or "", labels + 1) for r in by_ordinal[ordinal]])
        # A human label outside the labeller's label set is "unknown" (labels + 1), not a guess.
        human = torch.tensor([contexts[r].gold is not None for r in by_ordinal[ordinal]])
        chosen[rows] = torch.where(human, gold, predicted)
    return logits


class ActionClassifier:
    """A trained labeller (the Labeller protocol): calibrated action probabilities for agent messages."""

    def __init__(
        self,
        network: LabellerNetwork,
        labels: list[str],
        temperature: float,
        threshold: float,
        version: str,
        other_label: str | None = None,
        embedder: SentenceEmbedder | None = None,
        message_embedder: SentenceEmbedder | None = None,
    ) -> None:
        self.network = network.eval()
        self.labels = labels
        self.other_label = other_label
        """Where the labeller was trained on a label subset: the class that stands for every other label."""
        self.temperature = temperature
        self.threshold = threshold
        self.version = version
        self.embedder = embedder or shared_embedder()
        self.message_embedder = message_embedder
        self.label_ids = {label: i for i, label in enumerate(labels)}

    def target(self, action: str) -> str:
        """A human label as this labeller's label set names it (labels outside a subset become `other_label`)."""
        return action if action in self.label_ids or self.other_label is None else self.other_label

    def probabilities(self, conversations: Sequence[Conversation]) -> tuple[list[MessageContext], torch.Tensor]:
        """Every agent message and its calibrated action distribution [n, labels]."""
        contexts = [with_targets(c, self.target) for c in message_contexts(conversations)]
        texts = embed_contexts(contexts, self.embedder, self.message_embedder)
        with torch.no_grad():
            logits = sequential_logits(self.network, texts, positions(contexts), contexts, self.label_ids)
        return contexts, torch.softmax(logits / self.temperature, dim=1)

    def label(self, conversations: Sequence[Conversation]) -> list[list[Prediction | None]]:
        contexts, probabilities = self.probabilities(conversations)
        out: list[list[Prediction | None]] = [[None] * len(c.turns) for c in conversations]
        confidence, best = probabilities.max(dim=1)
        for context, p, b in zip(contexts, confidence.tolist(), best.tolist(), strict=True):
            action = self.labels[b] if p >= self.threshold else None
            out[context.conversation][context.turn] = Prediction(action=action, confidence=p, best=self.labels[b])
        return out


def weights_version(name: str, state: dict[str, torch.Tensor]) -> str:
    """`name@hash`: the same weights always give the same version, which `Turn.action_source` records."""
    digest = hashlib.blake2b(digest_size=6)
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().contiguous().numpy().tobytes())
    return f"{name}@{digest.hexdigest()}"


@dataclass
class _Saved(Config):
    """What a labeller folder's config.json records besides its format (checked on load)."""

    version: str
    labels: list[str]
    temperature: Annotated[float, Gt(0)]
    threshold: Annotated[float, Interval(ge=0, le=1)]
    network: _NetworkSizes
    other_label: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class _NetworkSizes(Config):
    hidden: Annotated[int, Ge(1)]
    action_dim: Annotated[int, Ge(1)]
    dropout: Annotated[float, Interval(ge=0, lt=1)]


def load_labeller(folder: str | Path, embedder: SentenceEmbedder | None = None) -> ActionClassifier:
    """A saved labeller; ValueError naming the file if the folder is not one or its weights are corrupt."""
    folder = Path(folder)
    raw = read_config(folder, FORMAT, "labeller")
    saved = config_from_dict(_Saved, {k: v for k, v in raw.items() if k != "format"}, str(folder / CONFIG_FILE))
    sizes = saved.network
    network = LabellerNetwork(len(saved.labels), sizes.hidden, sizes.action_dim, sizes.dropout)
    load_weights(folder, network)
    encoder = folder / "encoder"
    message_embedder = SentenceEmbedder(model_path=encoder) if encoder.is_dir() else None
    return ActionClassifier(
        network,
        saved.labels,
        saved.temperature,
        saved.threshold,
        saved.version,
        saved.other_label,
        embedder,
        message_embedder,
    )


def apply_labels(conversations: Sequence[Conversation], labeller: Labeller) -> tuple[list[Conversation], int]:
    """Label every agent message that has no human label; return the conversations and how many got an action.

    Human labels (an action with no `action_source`) are never touched; a labeller's earlier labels are replaced.
    A message under the threshold keeps action None but records the confidence and the labeller's version, so
    that it reads as "looked at, no action" rather than "never labelled".
    """
    predictions = labeller.label(conversations)
    labelled, count = [], 0
    for conversation, verdicts in zip(conversations, predictions, strict=True):
        turns = []
        for turn, verdict in zip(conversation.turns, verdicts, strict=True):
            human = turn.action is not None and turn.action_source is None
            if verdict is None or human:
                turns.append(turn)
                continue
            turns.append(
                replace(
                    turn,
                    action=verdict.action,
                    action_confidence=round(verdict.confidence, 6),
                    action_source=labeller.version,
                )
            )
            count += verdict.action is not None
        labelled.append(replace(conversation, turns=turns))
    return labelled, count

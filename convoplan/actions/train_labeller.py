"""Training and evaluating the action classifier of `convoplan.actions.labeller`.

The head is trained with class-weighted cross-entropy (weights proportional to count^-balance, which trades
accuracy for macro-F1 on rare actions), with the gold previous action as input (teacher forcing) but replaced by
"unknown" with probability `previous_action_dropout`, so that the head does not lean on a context that is only
predicted at labelling time. Early stopping watches macro-F1 on the validation conversations, labelled the way
the labeller labels (previous actions predicted). Then a temperature is fitted on the same validation logits by
minimising the negative log-likelihood (Guo et al., 2017, "On calibration of modern neural networks").

With `finetune`, a second stage trains the sentence encoder of the message itself (not of its context) jointly
with the head for a few epochs at a small learning rate.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval

from convoplan.actions.labeller import (
    FORMAT,
    ActionClassifier,
    LabellerNetwork,
    MessageContext,
    embed_contexts,
    message_contexts,
    positions,
    sequential_logits,
    weights_version,
    with_targets,
)
from convoplan.checkpoint import training_record, write_folder
from convoplan.configs import Config
from convoplan.embed import SentenceEmbedder
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation

__all__ = ["LabellerConfig", "LabellerMetrics", "evaluate_labeller", "save_labeller", "train_labeller"]


@dataclass
class LabellerConfig(Config):
    """The action classifier (Wang et al., 2019 read sentences with their context; these are this project's
    settings, chosen on PersuasionForGood's validation dialogues)."""

    hidden: Annotated[int, Ge(1)] = 256
    """Width of the MLP's hidden layer."""
    action_dim: Annotated[int, Ge(1)] = 32
    """Size of the previous-action embedding."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.3
    """Dropout on the input and hidden layer."""
    epochs: Annotated[int, Ge(1)] = 60
    """Most passes over the training messages."""
    patience: Annotated[int, Ge(1)] = 10
    """Stop after this many epochs without a better validation macro-F1."""
    batch_size: Annotated[int, Ge(1)] = 64
    lr: Annotated[float, Gt(0)] = 1e-3
    """AdamW learning rate of the head."""
    weight_decay: Annotated[float, Ge(0)] = 1e-2
    balance: Annotated[float, Interval(ge=0, le=1)] = 0.5
    """Class weights proportional to count^-balance: 0 = plain cross-entropy, 1 = every class weighs the same."""
    previous_action_dropout: Annotated[float, Interval(ge=0, le=1)] = 0.6
    """Probability of hiding the gold previous action during training."""
    labels: list[str] = field(default_factory=list)
    """Train on these labels only and map every other one to `other_label`; empty = every label of the train split
    (a validation message whose label the train split never has is then left out of selection and calibration, and
    counted in the training record: no classifier can learn a label it never saw)."""
    other_label: str = "other-action"
    """The class that stands for labels outside `labels`."""
    threshold: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """"No action" below this calibrated confidence (0 = always label)."""
    finetune: bool = False
    """Also fine-tune the sentence encoder on the message texts (slow on CPU)."""
    finetune_epochs: Annotated[int, Ge(1)] = 2
    finetune_lr: Annotated[float, Gt(0)] = 2e-5
    seed: Annotated[int, Ge(0)] = 0


@dataclass
class LabellerMetrics:
    messages: int
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    expected_calibration_error: float
    coverage: float
    """Share of messages given an action (confidence at least the threshold)."""
    accuracy_covered: float
    """Accuracy on the covered messages."""


def labeller_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy: logits [n, labels], targets [n] -> scalar."""
    return F.cross_entropy(logits, targets, weight=class_weights)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimises NLL(softmax(logits / T), targets) (one-dimensional, bounded search)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), targets))

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return math.exp(float(result.x))


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 10) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges.tolist()):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += float(inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs())
    return error


def _label_set(contexts: Sequence[MessageContext], config: LabellerConfig) -> list[str]:
    """The classes: every label of the train split, or `config.labels` and `other_label`; ValueError (before any
    slow step) when a chosen label never occurs in the train split or the other label is one of them."""
    seen = sorted({c.gold for c in contexts if c.gold is not None})
    if not config.labels:
        return seen
    absent = [label for label in config.labels if label not in seen]
    if absent:
        raise ValueError(f"labels: {', '.join(map(repr, absent))} never occur in the train split")
    if config.other_label in config.labels:
        raise ValueError(f"other_label {config.other_label!r} is also one of labels")
    return [*config.labels, config.other_label]


def _teacher_forced_previous(contexts: Sequence[MessageContext], ids: dict[str, int]) -> torch.Tensor:
    """The gold previous action of every message ([n] long): start slot, label id, or unknown if unlabelled."""
    start, unknown = len(ids), len(ids) + 1
    previous = []
    for row, context in enumerate(contexts):
        if context.ordinal == 0:
            previous.append(start)
        else:
            gold = contexts[row - 1].gold  # contexts are in conversation order, so row - 1 is the previous message
            previous.append(ids.get(gold, unknown) if gold is not None else unknown)
    return torch.tensor(previous, dtype=torch.long)


class _Encoder:
    """A trainable sentence encoder for the fine-tuning stage (the message only; contexts stay frozen)."""

    def __init__(self) -> None:
        self.model = SentenceEmbedder().model  # a fresh copy of all-MiniLM-L6-v2, loaded offline and quietly

    def __call__(self, texts: list[str]) -> torch.Tensor:
        features = self.model.preprocess(texts)
        embeddings: torch.Tensor = self.model(features)["sentence_embedding"]
        return F.normalize(embeddings, dim=1)  # [n, 384], as the frozen embeddings are

    def embedder(self) -> SentenceEmbedder:
        """The encoder as it stands, for labelling (no cache: its vectors change while it trains)."""
        return SentenceEmbedder(model=self.model)


@dataclass
class _Examples:
    """The training messages as tensors; rows without a human label are context only."""

    contexts: list[MessageContext]
    texts: torch.Tensor
    """[n, 3, 384] message, user message, previous agent message."""
    position: torch.Tensor
    """[n, 3]"""
    previous: torch.Tensor
    """[n] gold previous action id (teacher forcing)."""
    targets: torch.Tensor
    """[n] label id, -1 where unlabelled."""
    rows: list[int]
    """The labelled rows."""
    class_weights: torch.Tensor
    """[labels]"""


def _examples(
    contexts: list[MessageContext], ids: dict[str, int], embedder: SentenceEmbedder, balance: float
) -> _Examples:
    labelled = [row for row, c in enumerate(contexts) if c.gold is not None]
    targets = torch.full((len(contexts),), -1, dtype=torch.long)
    targets[labelled] = torch.tensor([ids[str(contexts[row].gold)] for row in labelled], dtype=torch.long)
    counts = torch.bincount(targets[labelled], minlength=len(ids)).float()
    weights = counts.clamp(min=1) ** -balance
    weights = weights * len(labelled) / (weights * counts).sum()  # mean weight per message 1: lr keeps its meaning
    return _Examples(
        contexts,
        embed_contexts(contexts, embedder),
        positions(contexts),
        _teacher_forced_previous(contexts, ids),
        targets,
        labelled,
        weights,
    )


def train_labeller(
    train: Sequence[Conversation],
    validation: Sequence[Conversation],
    config: LabellerConfig,
    embedder: SentenceEmbedder,
    name: str = "labeller",
    progress: Progress | None = None,
) -> tuple[ActionClassifier, dict[str, Any]]:
    """Train on the human-labelled agent messages of `train`; select and calibrate on `validation`."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    start = time.perf_counter()
    train_contexts = message_contexts(train)
    labels = _label_set(train_contexts, config)
    ids = {label: i for i, label in enumerate(labels)}

    def target(action: str) -> str:
        return action if action in ids else config.other_label

    train_contexts = [with_targets(c, target) for c in train_contexts]
    val_contexts = message_contexts(validation)
    # With every train label a class (no `labels` chosen), a validation label the train split lacks has no class:
    # such messages stay as context (the previous message of the next one) but are not scored.
    unknown = set() if config.labels else {c.gold for c in val_contexts if c.gold is not None and c.gold not in ids}
    unseen = Counter(str(c.gold) for c in val_contexts if c.gold in unknown)
    val_contexts = [with_targets(replace(c, gold=None) if c.gold in unknown else c, target) for c in val_contexts]
    if not any(c.gold for c in train_contexts):
        raise ValueError("no human-labelled agent messages to train on")
    if not any(c.gold for c in val_contexts):
        raise ValueError("no human-labelled agent messages in the validation conversations")
    examples = _examples(train_contexts, ids, embedder, config.balance)
    val_position = positions(val_contexts)
    val_rows = [row for row, c in enumerate(val_contexts) if c.gold is not None]
    val_targets = torch.tensor([ids[str(val_contexts[row].gold)] for row in val_rows])

    network = LabellerNetwork(len(labels), config.hidden, config.action_dim, config.dropout)

    def validate(message_embedder: SentenceEmbedder | None = None) -> tuple[float, torch.Tensor]:
        """Macro-F1 and logits [validation messages, labels], previous actions predicted as when labelling."""
        texts = embed_contexts(val_contexts, embedder, message_embedder)
        network.eval()
        with torch.no_grad():
            logits = sequential_logits(network, texts, val_position, val_contexts, ids)[val_rows]
        network.train()
        return _macro_f1(logits.argmax(1), val_targets, len(labels)), logits

    def batches() -> list[list[int]]:
        order = examples.rows[:]
        rng.shuffle(order)
        return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    # Stage 1: the head on frozen sentence embeddings. One thread: batches of a small MLP gain nothing from more,
    # and on a busy machine extra threads spin against other processes (BENCHMARKS.md, "Action labelling").
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best_f1, best_state, waited, losses = -1.0, network.state_dict(), 0, []
        network.train()
        for epoch in range(config.epochs):
            for batch in batches():
                hide = torch.rand(len(batch)) < config.previous_action_dropout
                previous = examples.previous[batch].masked_fill(hide, len(labels) + 1)  # "unknown"
                logits = network(examples.texts[batch], previous, examples.position[batch])
                loss = labeller_loss(logits, examples.targets[batch], examples.class_weights)
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                losses.append(loss.item())
            f1, _ = validate()
            if progress is not None:
                progress(Update("training the head", epoch + 1, config.epochs, "epochs", {"validation macro-F1": f1}))
            if f1 > best_f1:
                best_f1, best_state, waited = f1, {k: v.clone() for k, v in network.state_dict().items()}, 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
    finally:
        torch.set_num_threads(threads)
    network.load_state_dict(best_state)

    # Stage 2 (optional): the message encoder and the head together, at a small learning rate.
    message_embedder = None
    if config.finetune:
        encoder = _Encoder()
        optimiser = torch.optim.AdamW(
            [
                {"params": encoder.model.parameters(), "lr": config.finetune_lr},
                {"params": network.parameters(), "lr": config.lr / 10},
            ],
            weight_decay=config.weight_decay,
        )
        for epoch in range(config.finetune_epochs):
            encoder.model.train()
            for batch in batches():
                message = encoder([examples.contexts[row].text for row in batch])  # [b, 384], with gradients
                texts = torch.cat([message.unsqueeze(1), examples.texts[batch, 1:]], dim=1)
                logits = network(texts, examples.previous[batch], examples.position[batch])
                loss = labeller_loss(logits, examples.targets[batch], examples.class_weights)
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                losses.append(loss.item())
            encoder.model.eval()
            f1, _ = validate(encoder.embedder())
            if progress is not None:
                metrics = {"validation macro-F1": f1}
                progress(Update("fine-tuning the encoder", epoch + 1, config.finetune_epochs, "epochs", metrics))
        message_embedder = encoder.embedder()

    best_f1, val_logits = validate(message_embedder)
    temperature = fit_temperature(val_logits, val_targets)
    network.eval()
    classifier = ActionClassifier(
        network,
        labels,
        temperature,
        config.threshold,
        weights_version(name, network.state_dict()),
        config.other_label if config.labels else None,
        embedder,
        message_embedder,
    )
    record = training_record(
        config,
        losses,
        time.perf_counter() - start,
        final_loss_mean=float(np.mean(losses[-max(1, len(losses) // 20) :])),  # the last 5% of steps: less noisy
        messages=len(examples.rows),
        validation_messages=len(val_rows),
        validation_macro_f1=best_f1,
        temperature=temperature,
        validation_unseen_labels=dict(unseen),
    )
    return classifier, record


def _macro_f1(predicted: torch.Tensor, targets: torch.Tensor, labels: int) -> float:
    from sklearn.metrics import f1_score

    return float(
        f1_score(targets.numpy(), predicted.numpy(), labels=list(range(labels)), average="macro", zero_division=0)
    )


def evaluate_labeller(classifier: ActionClassifier, conversations: Sequence[Conversation]) -> LabellerMetrics:
    """Accuracy, macro-F1 (over the labels present in gold or predictions), per-label F1 and calibration on the
    human-labelled agent messages, labelled the way `apply` labels them (previous actions predicted, except where
    a human label precedes)."""
    from sklearn.metrics import f1_score

    hidden = [_without_labels(c) for c in conversations]
    _, probabilities = classifier.probabilities(hidden)
    gold = [with_targets(c, classifier.target) for c in message_contexts(conversations)]
    rows = [i for i, c in enumerate(gold) if c.gold is not None and c.gold in classifier.label_ids]
    if not rows:
        raise ValueError("no human-labelled agent messages to evaluate on")
    targets = torch.tensor([classifier.label_ids[str(gold[i].gold)] for i in rows])
    probabilities = probabilities[rows]
    confidence, predicted = probabilities.max(dim=1)
    covered = confidence >= classifier.threshold
    names = classifier.labels
    present = sorted(set(targets.tolist()) | set(predicted.tolist()))
    per_label = f1_score(targets.numpy(), predicted.numpy(), labels=present, average=None, zero_division=0)
    return LabellerMetrics(
        messages=len(rows),
        accuracy=float((predicted == targets).float().mean()),
        macro_f1=float(np.mean(per_label)),
        per_label_f1={names[label]: float(f1) for label, f1 in zip(present, per_label, strict=True)},
        expected_calibration_error=expected_calibration_error(probabilities, targets),
        coverage=float(covered.float().mean()),
        accuracy_covered=float((predicted == targets)[covered].float().mean()) if covered.any() else float("nan"),
    )


def _without_labels(conversation: Conversation) -> Conversation:
    """The conversation with its agent actions removed, as the labeller meets unlabelled data."""
    return replace(conversation, turns=[replace(t, action=None) for t in conversation.turns])


def save_labeller(
    folder: str | Path, classifier: ActionClassifier, config: LabellerConfig, training: dict[str, Any]
) -> Path:
    """Write the labeller folder as a whole (config.json, model.safetensors and, if tuned, encoder/)."""
    record = {
        "version": classifier.version,
        "labels": classifier.labels,
        "other_label": classifier.other_label,
        "temperature": classifier.temperature,
        "threshold": classifier.threshold,
        "network": {"hidden": config.hidden, "action_dim": config.action_dim, "dropout": config.dropout},
        "config": asdict(config),
        "training": training,
    }
    encoder = classifier.message_embedder

    def save_encoder(temp: Path) -> None:
        if encoder is not None:
            encoder.model.save(str(temp / "encoder"), safe_serialization=True)

    return write_folder(folder, FORMAT, record, classifier.network, extra=save_encoder)

"""The transformer cross-encoder DM: one transformer reads (history ; candidate) and scores the candidate.

Input: `[CLS] history [SEP] candidate [SEP]`, the history being the most recent utterances before the step with
their speakers ("user: ...", "bot: ..."); the token states are mean-pooled (as all-MiniLM-L6-v2 is trained) and,
with the candidate's metadata, fed to an MLP. Initialised from the all-MiniLM-L6-v2 weights (its first
`layers` layers: a CPU budget; the paper's BERT-Medium has 8). Trained to regress ratings it is the supervised
transformer DM; fine-tuned under the SAQL (+ CQL) loss it is the E2E DM (RL paper sec. 4.2 and 4.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from convoplan.compose.loop import DialogueState
from convoplan.dm.data import FeatureSpace, StepTable, build_steps
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["CrossEncoder", "CrossEncoderPolicy", "TransformerConfig"]


@dataclass
class TransformerConfig:
    layers: int = 2
    """Transformer layers kept from all-MiniLM-L6-v2 (of 6): a CPU budget (the paper fine-tunes BERT-Medium)."""
    max_tokens: int = 128
    """Longest input in tokens; the history is truncated first."""
    history: int = 4
    """Most recent utterances of the history in the input."""
    head: tuple[int, ...] = (128,)
    """Hidden layers of the MLP on the pooled output and the candidate metadata."""
    dropout: float = 0.1
    """Dropout on the MLP's hidden layers."""


def _model_path() -> str:
    from convoplan.embed import default_model_path

    return str(default_model_path())


class CrossEncoder(nn.Module):
    """Scores (history, candidate) pairs: [N] from N tokenised pairs and their [N, candidate_dim] metadata."""

    def __init__(
        self, candidate_dim: int, config: TransformerConfig, bert_config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if bert_config is None:  # a new model: start from the pretrained encoder, keep its first layers
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the unused pooler is expected
            try:
                self.bert = BertModel.from_pretrained(_model_path(), add_pooling_layer=False)
            finally:
                transformers_logging.set_verbosity(verbosity)
            self.bert.encoder.layer = self.bert.encoder.layer[: config.layers]
            self.bert.config.num_hidden_layers = config.layers
        else:  # a saved model: the architecture comes from its config, the weights from its file
            self.bert = BertModel(BertConfig(**bert_config), add_pooling_layer=False)
        hidden = self.bert.config.hidden_size
        sizes = [hidden + candidate_dim, *config.head, 1]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers += [nn.ReLU(), nn.Dropout(config.dropout)]
        self.head = nn.Sequential(*layers)

    def forward(self, tokens: dict[str, torch.Tensor], meta: torch.Tensor) -> torch.Tensor:
        states = self.bert(**tokens).last_hidden_state  # [N, T, hidden]
        mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(torch.cat([pooled, meta], dim=-1)).squeeze(-1)  # type: ignore[no-any-return]


def history_text(table: StepTable, step: int, episode: int, turns: int) -> str:
    """The last `turns` utterances visible at a step, oldest first, with speakers."""
    start = table.episode_utterances[episode]
    prefix = int(table.step_prefix[step])
    parts = []
    for u in range(start + max(0, prefix - turns), start + prefix):
        speaker = "user" if table.utterance_meta[u, 0] > 0 else "bot"
        parts.append(f"{speaker}: {table.texts[int(table.utterance_text[u])]}")
    return " ".join(parts) or "(start)"


@dataclass
class PairBatch:
    """The candidates of a set of steps as tokenised (history, candidate) pairs, with their layout."""

    tokens: dict[str, torch.Tensor]
    meta: torch.Tensor  # [N, candidate_dim]
    rows: torch.Tensor  # [N] which step (0..S-1) each pair belongs to
    columns: torch.Tensor  # [N] which candidate of its step
    steps: int
    width: int  # most candidates of a step

    def spread(self, scores: torch.Tensor) -> torch.Tensor:
        """[N] pair scores -> [S, C] per step (-inf where a step has no such candidate)."""
        grid = torch.full((self.steps, self.width), float("-inf"), dtype=scores.dtype)
        return grid.index_put((self.rows, self.columns), scores)


def pair_batch(
    table: StepTable,
    steps: Sequence[int],
    tokenizer: Any,
    config: TransformerConfig,
    only: Sequence[Sequence[int]] | None = None,
) -> PairBatch:
    """Tokenise the candidates of `steps` (or, with `only`, the listed candidates of each step)."""
    episode_of = np.searchsorted(table.episode_steps, np.asarray(steps), side="right") - 1
    histories, candidates, metas, rows, columns = [], [], [], [], []
    width = 1
    for row, (step, episode) in enumerate(zip(steps, episode_of, strict=True)):
        history = history_text(table, step, int(episode), config.history)
        c0, c1 = int(table.candidate_offsets[step]), int(table.candidate_offsets[step + 1])
        width = max(width, c1 - c0)
        for column in only[row] if only is not None else range(c1 - c0):
            histories.append(history)
            candidates.append(table.texts[int(table.candidate_text[c0 + column])])
            metas.append(table.candidate_meta[c0 + column])
            rows.append(row)
            columns.append(column)
    tokens = tokenizer(
        histories, candidates, truncation="only_first", max_length=config.max_tokens, padding=True, return_tensors="pt"
    )
    return PairBatch(
        tokens=dict(tokens),
        meta=torch.from_numpy(np.asarray(metas, dtype=np.float32)),
        rows=torch.tensor(rows),
        columns=torch.tensor(columns),
        steps=len(steps),
        width=width,
    )


class CrossEncoderPolicy:
    """Scores the candidates of a live composition step with a trained cross-encoder."""

    def __init__(self, model: CrossEncoder, tokenizer: Any, space: FeatureSpace, config: TransformerConfig) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.space = space
        self.config = config

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        pending = Turn(speaker="agent", text="(pending)", candidates=list(candidates))
        table = build_steps([Conversation(id="live", domain="", turns=[*state.turns, pending])], self.space, live=True)
        batch = pair_batch(table, [table.steps - 1], self.tokenizer, self.config)
        with torch.no_grad():
            scores = self.model(batch.tokens, batch.meta)
        return [float(s) for s in scores]

"""The transformer cross-encoder DM: one transformer reads (history ; candidate) and scores the candidate.

Input: `[CLS] history [SEP] candidate [SEP]`, the history being the most recent utterances before the step with
their speakers ("user: ...", "bot: ..."); the token states are mean-pooled (as all-MiniLM-L6-v2 is trained) and,
with the candidate's metadata, fed to an MLP. Initialised from the all-MiniLM-L6-v2 weights (its first
`layers` layers: a CPU budget; the paper's BERT-Medium has 8). Trained to regress ratings it is the supervised
transformer DM; fine-tuned under the SAQL (+ CQL) loss it is the E2E DM (RL paper sec. 4.2 and 4.4).

Packed input (`TransformerConfig.packed`): a step's candidates share its history, so one sequence holds them all,
`[CLS] history [SEP] c1 [SEP] c2 [SEP] ...`, under an attention mask in which the history attends to itself only
and each candidate to the history and itself, with each candidate's positions starting where the history ends.
Every candidate then reads the history at every layer, exactly as the pair input does, while the history is read
once per step instead of once per candidate (the idea of prefix sharing, as a KV cache does for an LM): with 7
candidates of 12 tokens after an 80-token history, 173 tokens instead of 665. What it gives up: the history's
states no longer depend on the candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Interval
from torch import nn

from convoplan.compose.loop import DialogueState
from convoplan.configs import Config
from convoplan.dm.data import FeatureSpace, StepTable, build_steps
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["CrossEncoder", "CrossEncoderPolicy", "TransformerConfig"]


@dataclass
class TransformerConfig(Config):
    layers: Annotated[int, Interval(ge=1, le=6)] = 2
    """Transformer layers kept from all-MiniLM-L6-v2 (of 6): a CPU budget (the paper fine-tunes BERT-Medium)."""
    max_tokens: Annotated[int, Interval(ge=16, le=512)] = 128
    """Longest input in tokens; the history is truncated first."""
    history: Annotated[int, Ge(0)] = 4
    """Most recent utterances of the history in the input."""
    head: tuple[Annotated[int, Ge(1)], ...] = (128,)
    """Hidden layers of the MLP on the pooled output and the candidate metadata."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    """Dropout on the MLP's hidden layers."""
    packed: bool = False
    """Read a step's history once for all its candidates (one sequence per step, see the module docstring) rather
    than once per candidate (the paper's pairs); each candidate then keeps its first max_tokens/4 tokens and the
    history its most recent ones in the rest."""


def _model_path() -> str:
    from convoplan.embed import default_model_path

    return str(default_model_path())


class CrossEncoder(nn.Module):
    """Scores (history, candidate) pairs: [N] from a `PairBatch` of N pairs (`pair_batch`)."""

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

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """[N] scores of the batch's N (history, candidate) pairs."""
        states = self.bert(**batch.tokens).last_hidden_state  # [B, T, hidden], B sequences (N of them when unpacked)
        pool = batch.pool.to(states.dtype)  # [N, T]: the tokens each pair's vector averages
        pooled = torch.einsum("nt,nth->nh", pool, states[batch.sequence]) / pool.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(torch.cat([pooled, batch.meta], dim=-1)).squeeze(-1)  # type: ignore[no-any-return]


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

    tokens: dict[str, torch.Tensor]  # the transformer's input: B sequences of T tokens
    sequence: torch.Tensor  # [N] which sequence each pair is read in
    pool: torch.Tensor  # [N, T] 1 on the tokens of its sequence that belong to the pair (history and candidate)
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
        c0, c1 = int(table.candidate_offsets[step]), int(table.candidate_offsets[step + 1])
        width = max(width, c1 - c0)
        histories.append(history_text(table, step, int(episode), config.history))
        chosen = only[row] if only is not None else range(c1 - c0)
        candidates.append([table.texts[int(table.candidate_text[c0 + column])] for column in chosen])
        metas += [table.candidate_meta[c0 + column] for column in chosen]
        rows += [row] * len(chosen)
        columns += list(chosen)
    read = _packed if config.packed else _pairs
    tokens, sequence, pool = read(histories, candidates, tokenizer, config)
    return PairBatch(
        tokens=tokens,
        sequence=sequence,
        pool=pool,
        meta=torch.from_numpy(np.asarray(metas, dtype=np.float32).reshape(len(metas), -1)),
        rows=torch.tensor(rows, dtype=torch.long),
        columns=torch.tensor(columns, dtype=torch.long),
        steps=len(steps),
        width=width,
    )


def _pairs(
    histories: list[str], candidates: list[list[str]], tokenizer: Any, config: TransformerConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One `[CLS] history [SEP] candidate [SEP]` sequence per pair (the history truncated first)."""
    first = [h for h, cs in zip(histories, candidates, strict=True) for _ in cs]
    second = [c for cs in candidates for c in cs]
    tokens = tokenizer(
        first, second, truncation="only_first", max_length=config.max_tokens, padding=True, return_tensors="pt"
    )
    return dict(tokens), torch.arange(len(first)), tokens["attention_mask"]


def _packed(
    histories: list[str], candidates: list[list[str]], tokenizer: Any, config: TransformerConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One `[CLS] history [SEP] c1 [SEP] c2 [SEP] ...` sequence per step, with the mask and positions that make
    each candidate read as if it alone followed the history (module docstring)."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    history_ids = tokenizer(histories, add_special_tokens=False)["input_ids"]
    candidate_ids = [tokenizer(cs, add_special_tokens=False)["input_ids"] if cs else [] for cs in candidates]
    sequences: list[tuple[list[int], list[int], list[int], list[tuple[int, int]]]] = []
    for history, cands in zip(history_ids, candidate_ids, strict=True):
        # budgets that do not depend on the other candidates (a candidate's score must not): each candidate keeps
        # its first max_tokens/4 tokens, the history its most recent ones in what is left ([CLS], two [SEP])
        cands = [c[: config.max_tokens // 4] for c in cands]
        room = config.max_tokens - 3 - config.max_tokens // 4
        ids = [cls, *history[max(0, len(history) - room) :], sep]
        positions, types, spans = list(range(len(ids))), [0] * len(ids), []
        for c in cands:
            spans.append((len(ids), len(ids) + len(c) + 1))
            ids += [*c, sep]
            positions += range(spans[0][0], spans[0][0] + len(c) + 1)
            types += [1] * (len(c) + 1)
        sequences.append((ids, positions, types, spans))
    length = max(len(ids) for ids, *_ in sequences)
    count = len(sequences)
    input_ids = torch.zeros(count, length, dtype=torch.long)
    position_ids = torch.zeros(count, length, dtype=torch.long)
    token_type_ids = torch.zeros(count, length, dtype=torch.long)
    allowed = torch.zeros(count, length, length, dtype=torch.bool)  # [B, query, key]
    pools, sequence = [], []
    for b, (ids, positions, types, spans) in enumerate(sequences):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        position_ids[b, : len(ids)] = torch.tensor(positions)
        token_type_ids[b, : len(ids)] = torch.tensor(types)
        head = spans[0][0] if spans else len(ids)  # the history's tokens: [0, head)
        allowed[b, :head, :head] = True
        for start, end in spans:
            allowed[b, start:end, :head] = True
            allowed[b, start:end, start:end] = True
            pool = torch.zeros(length)
            pool[:head], pool[start:end] = 1.0, 1.0
            pools.append(pool)
            sequence.append(b)
        allowed[b, len(ids) :, 0] = True  # padding attends somewhere (a row of -inf would give NaN)
    # an additive mask [B, 1, query, key], taken as-is by the attention (eager or sdpa)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
    tokens = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": token_type_ids,
        "position_ids": position_ids,
    }
    pool_rows = torch.stack(pools) if pools else torch.zeros(0, length)
    return tokens, torch.tensor(sequence, dtype=torch.long), pool_rows


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
            scores = self.model(batch)
        return [float(s) for s in scores]

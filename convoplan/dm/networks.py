"""The two-step Q-model of the RL paper (sec. 4.2-4.3): a state encoder, then an MLP over [state; action].

State (hierarchical RNN): a GRU over the per-utterance [sentence embedding; metadata] of the history, read after
the utterances visible at the step, concatenated with the embedding of the last user message and the context
features (turn index, composition step). Action: the candidate's [sentence embedding; metadata].
The same network regresses ratings (the supervised RNN DM) or cumulative return (SAQL, CAQL).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, cast

import torch
from annotated_types import Ge, Interval
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from convoplan.configs import Config
from convoplan.dm.data import Batch
from convoplan.embed import EMBEDDING_DIM

__all__ = ["QEnsemble", "QModel", "QNetwork", "RNNConfig", "q_model"]


@dataclass
class RNNConfig(Config):
    hidden: Annotated[int, Ge(1)] = 200
    """GRU units (paper: 200)."""
    head: tuple[Annotated[int, Ge(1)], ...] = (256, 256)
    """Hidden layers of the Q/rating MLP (the paper's sizes are not given in the text we have)."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    """Dropout on the MLP's hidden layers (paper: 0.2)."""


class HistoryEncoder(nn.Module):
    def __init__(self, utterance_dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(utterance_dim, hidden, batch_first=True)
        self.output_dim = hidden + EMBEDDING_DIM + 2

    def forward(self, batch: Batch) -> torch.Tensor:
        """[S, hidden + 384 + 2]: the state of every step in the batch."""
        lengths = batch.history_lengths.clamp(min=1)  # pack_padded_sequence needs >= 1; prefix 0 is zeroed below
        packed = pack_padded_sequence(batch.history, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = self.gru(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True)  # [B, L, hidden]
        read = (batch.step_prefix - 1).clamp(min=0)
        hidden = outputs[batch.step_episode, read] * (batch.step_prefix > 0).unsqueeze(-1).to(outputs.dtype)
        return torch.cat([hidden, batch.last_user, batch.context], dim=-1)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Q(s, a) = MLP([state; action]) for every candidate of every step: [S, C] (padded candidates: arbitrary).

    The MLP's first layer is applied as W_s state + W_a action + b, which is the same function as W [state; action]
    + b but computes the state's part once per step instead of once per candidate.
    """

    def __init__(self, utterance_dim: int, candidate_dim: int, config: RNNConfig) -> None:
        super().__init__()
        self.encoder = HistoryEncoder(EMBEDDING_DIM + utterance_dim, config.hidden)
        self.action_dim = EMBEDDING_DIM + candidate_dim
        first = config.head[0] if config.head else 1
        self.state_in = nn.Linear(self.encoder.output_dim, first)
        self.action_in = nn.Linear(self.action_dim, first, bias=False)
        rest: list[nn.Module] = [nn.ReLU(), nn.Dropout(config.dropout)] if config.head else []
        self.head = nn.Sequential(*rest, *_mlp([*config.head, 1], config.dropout)) if config.head else nn.Identity()

    def state(self, batch: Batch) -> torch.Tensor:
        return self.encoder(batch)  # type: ignore[no-any-return]

    def q(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """state [S, D_s], actions [S, C, D_a] -> [S, C]."""
        hidden = self.state_in(state).unsqueeze(1) + self.action_in(actions)  # [S, C, first]
        return self.head(hidden).squeeze(-1)  # type: ignore[no-any-return]

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.q(self.state(batch), batch.candidates)


class QEnsemble(nn.Module):
    """The mean Q-value of K QNetworks trained independently on the same logs, each from its own initialisation and
    batch order (Ensemble-DQN: Agarwal et al. 2020, "An Optimistic Perspective on Offline Reinforcement Learning").

        Q(s, a) = 1/K sum_k Q_k(s, a)

    One trained network's greedy choices vary with its initialisation seed about as much as the effects a DM is
    trained for; acting on the mean cuts that variance. The state is the members' states side by side, so an
    ensemble encodes states and scores actions like one QNetwork (the OPE estimators and CQL's behaviour policy
    take either).
    """

    def __init__(self, members: Sequence[QNetwork]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.state_dims = [member.encoder.output_dim for member in members]

    @property
    def networks(self) -> list[QNetwork]:
        return [cast(QNetwork, member) for member in self.members]

    def state(self, batch: Batch) -> torch.Tensor:
        """[S, sum_k D_k]: every member's state of every step."""
        return torch.cat([member.state(batch) for member in self.networks], dim=-1)

    def q(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """state [S, sum_k D_k], actions [S, C, D_a] -> [S, C], the members' mean."""
        ends = list(itertools.accumulate(self.state_dims))
        parts = [state[:, end - dim : end] for end, dim in zip(ends, self.state_dims, strict=True)]
        return torch.stack([m.q(part, actions) for m, part in zip(self.networks, parts, strict=True)]).mean(0)

    def forward(self, batch: Batch) -> torch.Tensor:
        # each member on its own state: scoring (serving, collection) skips concatenating and slicing the states
        return torch.stack([member(batch) for member in self.networks]).mean(0)  # [K, S, C] -> [S, C]


QModel = QNetwork | QEnsemble
"""A Q-model a DM acts on: one network, or an ensemble of them."""


def q_model(utterance_dim: int, candidate_dim: int, config: RNNConfig, members: int = 1) -> QModel:
    """A freshly initialised QNetwork, or an ensemble of `members` (to load saved weights into)."""
    networks = [QNetwork(utterance_dim, candidate_dim, config) for _ in range(members)]
    return networks[0] if members == 1 else QEnsemble(networks)

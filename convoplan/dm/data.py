"""Canonical logs -> what the dialogue managers learn from: episodes, composition steps, candidates, transitions.

A *step* is an agent turn that carries candidates: the state is everything said before it (user messages and the
agent's step messages; the closing "stop" messages, which repeat the fused response, are left out), the action set
is the candidates really offered, the action taken is the selected one, and its reward is the mean of its ratings
(or, where `build_steps` is given a `reward` function, whatever that says: e.g. a conversation's outcome, paid on
its last step).
The next state is the next step of the same conversation, whose candidate set is the realized A(s') of SAQL; the
last step is terminal.

Texts are stored once, as ids into a table of unique texts, so that sentence embeddings are computed once for the
whole data set and looked up per batch. `StepTable.batch(episodes, embeddings)` pads a set of whole conversations
into tensors with masks: the history encoder then runs once per conversation and every step of it is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["Batch", "FeatureSpace", "StepTable", "build_steps"]

STOP = "stop"


def _squash(value: float) -> float:
    """sign(x) * log(1 + |x|): counts and lengths of any size on one gentle scale."""
    return math.copysign(math.log1p(abs(value)), value)


@dataclass
class FeatureSpace:
    """How candidates and history utterances become metadata vectors; fixed at training, saved with the model."""

    actions: list[str] = field(default_factory=list)
    """Dialogue acts seen in training (one-hot; anything else maps to an "other" slot)."""
    providers: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    """Candidate feature names (squashed by sign(x) log(1 + |x|))."""

    @classmethod
    def fit(cls, conversations: Sequence[Conversation]) -> FeatureSpace:
        actions: set[str] = set()
        providers: set[str] = set()
        numeric: set[str] = set()
        for conversation in conversations:
            for turn in conversation.turns:
                if turn.action:
                    actions.add(turn.action)
                for c in turn.candidates:
                    actions.update([c.action] if c.action else [])
                    providers.update([c.provider] if c.provider else [])
                    numeric.update(c.features)
        return cls(sorted(actions), sorted(providers), sorted(numeric))

    @property
    def candidate_dim(self) -> int:
        return len(self.actions) + 1 + len(self.providers) + 1 + len(self.numeric) + 1

    @property
    def utterance_dim(self) -> int:
        return 2 + len(self.actions) + 1

    def _one_hot(self, vocabulary: list[str], value: str | None) -> list[float]:
        vector = [0.0] * (len(vocabulary) + 1)
        vector[vocabulary.index(value) if value in vocabulary else len(vocabulary)] = 1.0
        return vector

    def candidate_meta(self, candidate: Candidate) -> list[float]:
        numeric = [_squash(candidate.features.get(name, 0.0)) for name in self.numeric]
        return [
            *self._one_hot(self.actions, candidate.action),
            *self._one_hot(self.providers, candidate.provider),
            *numeric,
            float(candidate.changes_focus),
        ]

    def utterance_meta(self, turn: Turn) -> list[float]:
        return [
            float(turn.speaker == "user"),
            float(turn.speaker == "agent"),
            *self._one_hot(self.actions, turn.action),
        ]

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


@dataclass
class Batch:
    """Whole conversations padded into tensors; S = steps, C = most candidates of a step, L = longest history."""

    history: torch.Tensor  # [B, L, 384 + utterance_dim]
    history_lengths: torch.Tensor  # [B]
    step_episode: torch.Tensor  # [S] row of `history`
    step_prefix: torch.Tensor  # [S] history utterances visible at the step
    last_user: torch.Tensor  # [S, 384] the latest user message (zeros if none)
    context: torch.Tensor  # [S, 2] turn index, composition step (squashed)
    candidates: torch.Tensor  # [S, C, 384 + candidate_dim]
    mask: torch.Tensor  # [S, C] bool, True where a candidate exists
    chosen: torch.Tensor  # [S] index of the selected candidate
    reward: torch.Tensor  # [S] the step's reward: mean rating of the selected candidate (nan if unrated) by default
    ratings: torch.Tensor  # [S, C] mean rating of every candidate (nan if unrated)
    next_step: torch.Tensor  # [S] index of the next step in this batch, -1 if terminal
    propensity: torch.Tensor  # [S] logged probability of the selected candidate (nan if unknown)
    closes: torch.Tensor  # [S] bool, True where the selected candidate is "stop": the step closes a response

    @property
    def done(self) -> torch.Tensor:
        return self.next_step < 0


@dataclass
class StepTable:
    """Every step of a set of conversations, as flat arrays (see the module docstring)."""

    space: FeatureSpace
    texts: list[str]
    utterance_text: np.ndarray  # [U]
    utterance_meta: np.ndarray  # [U, utterance_dim]
    episode_utterances: np.ndarray  # [E + 1] offsets into utterances
    episode_steps: np.ndarray  # [E + 1] offsets into steps
    step_prefix: np.ndarray  # [S]
    step_last_user: np.ndarray  # [S] index within the episode's utterances, -1 if none
    step_context: np.ndarray  # [S, 2]
    step_chosen: np.ndarray  # [S]
    step_propensity: np.ndarray  # [S]
    step_reward: np.ndarray  # [S] mean rating of the selected candidate, or build_steps's `reward`
    step_closes: np.ndarray  # [S] bool: the selected candidate is "stop"
    candidate_offsets: np.ndarray  # [S + 1]
    candidate_text: np.ndarray  # [N]
    candidate_meta: np.ndarray  # [N, candidate_dim]
    candidate_rating: np.ndarray  # [N]
    episode_ids: list[str]

    @property
    def episodes(self) -> int:
        return len(self.episode_ids)

    @property
    def steps(self) -> int:
        return len(self.step_prefix)

    def step_rewards(self) -> np.ndarray:
        """[S] the reward of each step (by default the mean rating of its selected candidate)."""
        return np.asarray(self.step_reward)

    def batch(self, episodes: Sequence[int], embeddings: torch.Tensor) -> Batch:
        """Pad whole episodes into a Batch; `embeddings` is [len(texts), 384], row i the vector of texts[i]."""
        episodes_ = np.asarray(episodes, dtype=np.int64)
        # History: an index matrix [B, L] into the flat utterance arrays, -1 where padded.
        u0, u1 = self.episode_utterances[episodes_], self.episode_utterances[episodes_ + 1]
        history_index = _ragged(u0, u1 - u0)
        # Steps: every step of every episode, in order (an episode's steps stay contiguous).
        s0, s1 = self.episode_steps[episodes_], self.episode_steps[episodes_ + 1]
        steps = np.concatenate([np.arange(a, b) for a, b in zip(s0, s1, strict=True)]) if len(s0) else np.zeros(0, int)
        step_row = np.repeat(np.arange(len(episodes_)), s1 - s0)
        candidate_index = _ragged(self.candidate_offsets[steps], np.diff(self.candidate_offsets)[steps])
        mask = candidate_index >= 0
        safe_c = np.where(mask, candidate_index, 0)
        texts = torch.from_numpy(self.candidate_text[safe_c])
        meta = torch.from_numpy(self.candidate_meta[safe_c])
        candidates = torch.cat([embeddings[texts], meta], dim=-1) * torch.from_numpy(mask).unsqueeze(-1)
        ratings = torch.from_numpy(np.where(mask, self.candidate_rating[safe_c], np.nan).astype(np.float32))

        history_mask = history_index >= 0
        safe_u = np.where(history_mask, history_index, 0)
        history = torch.cat(
            [embeddings[torch.from_numpy(self.utterance_text[safe_u])], torch.from_numpy(self.utterance_meta[safe_u])],
            dim=-1,
        ) * torch.from_numpy(history_mask).unsqueeze(-1)
        last = self.step_last_user[steps]
        last_text = self.utterance_text[np.where(last >= 0, u0[step_row] + last, 0)]
        last_user = embeddings[torch.from_numpy(last_text)] * torch.from_numpy(last >= 0).unsqueeze(-1)

        has_next = steps + 1 < s1[step_row]
        local = np.arange(len(steps))
        chosen = torch.from_numpy(self.step_chosen[steps])
        return Batch(
            history=history,
            history_lengths=torch.from_numpy(u1 - u0),
            step_episode=torch.from_numpy(step_row),
            step_prefix=torch.from_numpy(self.step_prefix[steps]),
            last_user=last_user,
            context=torch.from_numpy(self.step_context[steps]),
            candidates=candidates,
            mask=torch.from_numpy(mask),
            chosen=chosen,
            reward=torch.from_numpy(self.step_reward[steps]),
            ratings=ratings,
            next_step=torch.from_numpy(np.where(has_next, local + 1, -1)),
            propensity=torch.from_numpy(self.step_propensity[steps]),
            closes=torch.from_numpy(self.step_closes[steps]),
        )


def _ragged(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[len(starts), max(counts)] matrix of starts[i] + j for j < counts[i], -1 elsewhere (at least one column)."""
    width = max(1, int(counts.max())) if len(counts) else 1
    columns = np.arange(width)
    return np.where(columns < counts[:, None], starts[:, None] + columns, -1)


def mean_rating(candidate: Candidate) -> float:
    """The mean of a candidate's ratings (NaN: unrated)."""
    return sum(candidate.ratings.values()) / len(candidate.ratings) if candidate.ratings else math.nan


def build_steps(
    conversations: Sequence[Conversation],
    space: FeatureSpace,
    live: bool = False,
    reward: Callable[[Conversation, int], float] | None = None,
) -> StepTable:
    """Flatten the steps of `conversations`; steps without a selected candidate are skipped.

    With `live`, only the last turn of each conversation is a step, whatever is selected: it holds the candidates a
    policy is asked to score now; the earlier turns are read as history only. `reward(conversation, turn index)`,
    where given, is the reward of the step at that turn instead of the mean rating of its selected candidate.
    """
    text_ids: dict[str, int] = {}

    def text_id(text: str) -> int:
        return text_ids.setdefault(text, len(text_ids))

    u_text: list[int] = []
    u_meta: list[list[float]] = []
    e_utt, e_steps = [0], [0]
    s_prefix, s_last_user, s_context, s_chosen, s_propensity, s_reward = [], [], [], [], [], []
    s_closes: list[bool] = []
    c_offsets, c_text, c_meta, c_rating = [0], [], [], []
    for conversation in conversations:
        prefix, last_user, responses, step_in_response = 0, -1, 0, 0
        for number, turn in enumerate(conversation.turns):
            if live:
                chosen = [0] if number == len(conversation.turns) - 1 else []
            else:
                chosen = [i for i, c in enumerate(turn.candidates) if c.selected]
            if turn.speaker == "agent" and turn.candidates and len(chosen) == 1:
                s_prefix.append(prefix)
                s_last_user.append(last_user)
                s_context.append([_squash(responses), _squash(step_in_response)])
                s_chosen.append(chosen[0])
                selected = turn.candidates[chosen[0]]
                s_propensity.append(math.nan if selected.propensity is None else selected.propensity)
                s_reward.append(mean_rating(selected) if reward is None else reward(conversation, number))
                s_closes.append(selected.action == STOP)
                for candidate in turn.candidates:
                    c_text.append(text_id(candidate.text))
                    c_meta.append(space.candidate_meta(candidate))
                    c_rating.append(mean_rating(candidate))
                c_offsets.append(len(c_text))
            if turn.speaker == "user":
                last_user, step_in_response = prefix, 0
            elif turn.action == STOP:
                responses, step_in_response = responses + 1, 0
                continue  # the fused response repeats its step messages: not part of the history
            else:
                step_in_response += 1
            u_text.append(text_id(turn.text))
            u_meta.append(space.utterance_meta(turn))
            prefix += 1
        e_utt.append(len(u_text))
        e_steps.append(len(s_prefix))

    def array(values: list[float] | list[int] | list[list[float]], dtype: type, width: int = 0) -> np.ndarray:
        return np.asarray(values, dtype=dtype).reshape(-1, width) if width else np.asarray(values, dtype=dtype)

    return StepTable(
        space=space,
        texts=list(text_ids),
        utterance_text=array(u_text, np.int64),
        utterance_meta=array(u_meta, np.float32, space.utterance_dim),
        episode_utterances=array(e_utt, np.int64),
        episode_steps=array(e_steps, np.int64),
        step_prefix=array(s_prefix, np.int64),
        step_last_user=array(s_last_user, np.int64),
        step_context=array(s_context, np.float32, 2),
        step_chosen=array(s_chosen, np.int64),
        step_propensity=array(s_propensity, np.float32),
        step_reward=array(s_reward, np.float32),
        step_closes=np.asarray(s_closes, dtype=bool),
        candidate_offsets=array(c_offsets, np.int64),
        candidate_text=array(c_text, np.int64),
        candidate_meta=array(c_meta, np.float32, space.candidate_dim),
        candidate_rating=array(c_rating, np.float32),
        episode_ids=[c.id for c in conversations],
    )

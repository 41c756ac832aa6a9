"""Logged steps as flat tensors for the estimators, and the discounted value of whole episodes.

The estimators learn small functions of (state, action) on top of a *fixed* state encoder (e.g. the supervised
RNN DM's `.state(batch)`, frozen), so every state is encoded once: `logged_steps` runs the encoder over the logs
a few conversations at a time and keeps, for every composition step, its state vector, the vectors of its offered
candidates, the chosen one, its reward, the index of the next step (over the whole log, -1 at the end of a
conversation), whether it opens a conversation, and the logged propensity. `policy_probabilities` evaluates a
target policy on the same steps, in the same order.

Value scale (the on-policy truth's, FQE's, importance sampling's and DualDICE's `episode_value`): the normalised
discounted return (1 - gamma) * E[sum_t gamma^t r_t], t counting the composition steps of one conversation and r_t
the mean rating of the candidate chosen at step t. Multiplying by 1 - gamma puts it on the scale of a per-step
reward. (DualDICE's normalised `value` is the same quantity for the process that restarts conversation after
conversation, larger by 1 / (1 - E[gamma^T]); see `convoplan.ope.dualdice`.)

`reduce_dimensions` (principal components) and `with_position` (the step's index in its conversation) prepare
compact inputs for the estimators' networks, which generalise better from a few hundred conversations on a few
dozen features than on the encoder's hundreds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from convoplan.dm.data import Batch, StepTable
from convoplan.ope.policies import TargetPolicy

__all__ = [
    "LoggedSteps",
    "Projection",
    "episode_values",
    "logged_steps",
    "policy_probabilities",
    "reduce_dimensions",
    "select_episodes",
    "step_positions",
    "with_position",
]

Encoder = Callable[[Batch], torch.Tensor]
"""Batch -> [S, D_s] state vectors (e.g. `QNetwork.state`)."""


@dataclass
class LoggedSteps:
    """Every step of a log, flattened in log order (S steps, C the most candidates of any step)."""

    states: torch.Tensor
    """[S, D_s] the fixed encoder's state vector of each step."""
    actions: torch.Tensor
    """[S, C, D_a] the vector of every offered candidate (zeros on padding)."""
    mask: torch.Tensor
    """[S, C] bool, True where a candidate exists."""
    chosen: torch.Tensor
    """[S] index of the logged (chosen) candidate."""
    reward: torch.Tensor
    """[S] mean rating of the chosen candidate."""
    next_step: torch.Tensor
    """[S] index of the next step of the same conversation, -1 where the conversation ends."""
    initial: torch.Tensor
    """[S] bool, True on the first step of each conversation (the initial state s0)."""
    propensity: torch.Tensor
    """[S] the logging DM's probability of the chosen candidate (nan if it was not logged)."""
    episode: torch.Tensor
    """[S] which conversation each step belongs to (0..E-1, non-decreasing)."""

    def __post_init__(self) -> None:
        steps = len(self.chosen)
        for name in ("states", "actions", "mask", "reward", "next_step", "initial", "propensity", "episode"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"LoggedSteps.{name} has {len(getattr(self, name))} rows, expected {steps}")
        if steps and torch.isnan(self.reward).any():
            raise ValueError(
                "every step needs a reward: some chosen candidates have no ratings (logs without raters: "
                "reward.source=reactions)"
            )

    @property
    def steps(self) -> int:
        return len(self.chosen)

    @property
    def done(self) -> torch.Tensor:
        """[S] bool, True on the last step of each conversation."""
        return self.next_step < 0

    @property
    def chosen_actions(self) -> torch.Tensor:
        """[S, D_a] the vector of the chosen candidate of each step."""
        return self.actions[torch.arange(self.steps), self.chosen]


def _batches(table: StepTable, embeddings: torch.Tensor, episodes_per_batch: int) -> Iterator[tuple[int, Batch]]:
    """(index of the batch's first step in the whole log, batch) over consecutive whole conversations."""
    for first in range(0, table.episodes, episodes_per_batch):
        episodes = list(range(first, min(first + episodes_per_batch, table.episodes)))
        yield int(table.episode_steps[first]), table.batch(episodes, embeddings)


def _pad(values: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dimension 1 of `values` with zeros (False) to `width`."""
    missing = width - values.shape[1]
    if missing == 0:
        return values
    padding = torch.zeros((values.shape[0], missing, *values.shape[2:]), dtype=values.dtype)
    return torch.cat([values, padding], dim=1)


def _width(table: StepTable) -> int:
    return max(1, int(np.diff(table.candidate_offsets).max())) if table.steps else 1


def logged_steps(
    table: StepTable, embeddings: torch.Tensor, encoder: Encoder, episodes_per_batch: int = 32
) -> LoggedSteps:
    """Encode every step of `table` with the frozen `encoder` (called under no_grad)."""
    width = _width(table)
    states, actions, masks, chosen, rewards, following, propensities = [], [], [], [], [], [], []
    with torch.no_grad():
        for offset, batch in _batches(table, embeddings, episodes_per_batch):
            states.append(encoder(batch).to(torch.float32))
            actions.append(_pad(batch.candidates, width))
            masks.append(_pad(batch.mask, width))
            chosen.append(batch.chosen)
            rewards.append(batch.reward)
            following.append(torch.where(batch.next_step >= 0, batch.next_step + offset, -1))
            propensities.append(batch.propensity)
    counts = np.diff(table.episode_steps)
    episode = torch.from_numpy(np.repeat(np.arange(table.episodes), counts))
    initial = torch.zeros(table.steps, dtype=torch.bool)
    initial[torch.from_numpy(table.episode_steps[:-1][counts > 0])] = True

    def cat(parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        return torch.cat(parts) if parts else empty

    return LoggedSteps(
        states=cat(states, torch.zeros(0, 0)),
        actions=cat(actions, torch.zeros(0, width, 0)),
        mask=cat(masks, torch.zeros(0, width, dtype=torch.bool)),
        chosen=cat(chosen, torch.zeros(0, dtype=torch.long)),
        reward=cat(rewards, torch.zeros(0)),
        next_step=cat(following, torch.zeros(0, dtype=torch.long)),
        initial=initial,
        propensity=cat(propensities, torch.zeros(0)),
        episode=episode,
    )


@dataclass
class Projection:
    """A fixed linear map onto principal components: x -> (x - mean) @ components."""

    mean: torch.Tensor
    """[D] the mean the data is centred on."""
    components: torch.Tensor
    """[D, K] the top K principal directions."""
    explained: float
    """Share of the total variance the K components keep."""

    @classmethod
    def fit(cls, values: torch.Tensor, k: int) -> Projection:
        """The top-k principal components of `values` [N, D] (k is capped at D)."""
        values = values.to(torch.float64)
        mean = values.mean(dim=0)
        centred = values - mean
        covariance = centred.T @ centred / max(1, len(values))
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        k = min(k, values.shape[1])
        total = float(eigenvalues.clamp(min=0).sum())
        explained = float(eigenvalues[-k:].clamp(min=0).sum()) / total if total > 0 else 1.0
        return cls(mean.to(torch.float32), eigenvectors[:, -k:].flip(1).to(torch.float32), explained)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) @ self.components


def reduce_dimensions(steps: LoggedSteps, state_components: int | None, action_components: int | None) -> LoggedSteps:
    """The same steps with states and/or candidate vectors projected on their principal components (fitted on these
    logs; None keeps them as they are): a fixed linear map that makes the estimators' networks cheaper, most of all
    on the candidates, which are C per step. Padding stays zero."""
    states, actions = steps.states, steps.actions
    if state_components is not None:
        states = Projection.fit(states, state_components)(states)
    if action_components is not None:
        projection = Projection.fit(actions[steps.mask], action_components)
        actions = projection(actions) * steps.mask.unsqueeze(-1)
    return replace(steps, states=states, actions=actions)


def with_position(steps: LoggedSteps) -> LoggedSteps:
    """The same steps with [is the first step; log(1 + t)] appended to each state, t the step's index in its
    conversation. Both are functions of the history (so of the state), but the discounted occupancy of a policy
    falls as gamma^t, and an encoder's summary of a long history need not expose t plainly."""
    t = step_positions(steps.episode).to(steps.states.dtype)
    extra = torch.stack([steps.initial.to(steps.states.dtype), torch.log1p(t)], dim=-1)
    return replace(steps, states=torch.cat([steps.states, extra], dim=-1))


def select_episodes(steps: LoggedSteps, episodes: torch.Tensor) -> tuple[LoggedSteps, torch.Tensor]:
    """The steps of the conversations `episodes` [E'] (indices into the log's episodes; repeats allowed: a bootstrap
    resample) as a log of their own, in that order, and the index of each of its steps in `steps` [S'] (to take
    the same rows of a target's probabilities)."""
    episode = steps.episode.long()
    counts = torch.bincount(episode, minlength=int(episode.max()) + 1 if len(episode) else 0)
    starts = torch.cumsum(counts, 0) - counts  # first step of every episode
    episodes = episodes.long()
    lengths = counts[episodes]
    new_episode = torch.repeat_interleave(torch.arange(len(episodes)), lengths)
    new_starts = torch.cumsum(lengths, 0) - lengths
    local = torch.arange(int(lengths.sum())) - new_starts[new_episode]  # t within the conversation
    index = starts[episodes][new_episode] + local
    following = torch.where(steps.next_step[index] >= 0, new_starts[new_episode] + local + 1, -1)
    taken = {f.name: getattr(steps, f.name)[index] for f in fields(LoggedSteps)}
    return LoggedSteps(**{**taken, "next_step": following, "episode": new_episode}), index


def policy_probabilities(
    table: StepTable, embeddings: torch.Tensor, policy: TargetPolicy, episodes_per_batch: int = 32
) -> torch.Tensor:
    """pi(a | s) of `policy` at every step of `table`, [S, C], in the order of `logged_steps`."""
    width = _width(table)
    batches = _batches(table, embeddings, episodes_per_batch)
    parts = [_pad(policy(batch).to(torch.float32), width) for _, batch in batches]
    return torch.cat(parts) if parts else torch.zeros(0, width)


def episode_values(
    rewards: torch.Tensor, episode: torch.Tensor, gamma: float, episodes: int | None = None
) -> torch.Tensor:
    """(1 - gamma) * sum_t gamma^t r_t of each episode, [E] float64; `rewards` [S] in order, `episode` [S] the
    episode of each step (non-decreasing). `episodes` counts conversations without steps too (their value is 0).

    Its mean over conversations simulated with a DM is the on-policy value that the estimators target.
    """
    episode = episode.long()
    if episodes is None:
        episodes = int(episode.max()) + 1 if len(episode) else 0
    if len(rewards) == 0:
        return torch.zeros(episodes, dtype=torch.float64)
    t = step_positions(episode)
    discounted = rewards.to(torch.float64) * torch.pow(torch.tensor(gamma, dtype=torch.float64), t)
    return (1 - gamma) * torch.zeros(episodes, dtype=torch.float64).index_add_(0, episode, discounted)


def step_positions(episode: torch.Tensor) -> torch.Tensor:
    """t of every step within its episode, [S]; `episode` [S] non-decreasing."""
    episode = episode.long()
    starts = torch.searchsorted(episode, episode, right=False)  # the first step of each step's episode
    return torch.arange(len(episode)) - starts

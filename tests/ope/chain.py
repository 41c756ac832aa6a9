"""A two-state episodic chain whose value under any policy is known exactly, logged as LoggedSteps by hand.

s0 --a0: r=1--> s1      s0 --a1: r=0--> s1
s1 --a0: r=2--> end     s1 --a1: r=-1--> s1

s0 is the only initial state and is never revisited (as the first step of a conversation). States are one-hot;
each (state, candidate) pair has its own one-hot action vector, so the estimators' small networks (linear ones
included) can represent every function of (s, a).
"""

from __future__ import annotations

import numpy as np
import torch

from convoplan.ope.steps import LoggedSteps

__all__ = ["LoggedSteps", "discount_at_end", "probabilities", "sample", "true_value"]

REWARD = np.array([[1.0, 0.0], [2.0, -1.0]])  # [state, action]
NEXT = np.array([[1, 1], [-1, 1]])  # -1: the episode ends


def true_value(pi: np.ndarray, gamma: float) -> float:
    """(1 - gamma) * V^pi(s0): pi [2 states, 2 actions]."""
    # V = r_pi + gamma * P_pi V over the two states.
    r_pi = (pi * REWARD).sum(1)
    p = np.zeros((2, 2))
    for s in range(2):
        for a in range(2):
            if NEXT[s, a] >= 0:
                p[s, NEXT[s, a]] += pi[s, a]
    v = np.linalg.solve(np.eye(2) - gamma * p, r_pi)
    return float((1 - gamma) * v[0])


def discount_at_end(pi: np.ndarray, gamma: float) -> float:
    """E_pi[gamma^T], T the episode's length in steps, from s0."""
    # W(s) = sum_a pi(a|s) * gamma * (1 if the episode ends else W(s')).
    ends = np.array([sum(pi[s, a] for a in range(2) if NEXT[s, a] < 0) for s in range(2)])
    p = np.zeros((2, 2))
    for s in range(2):
        for a in range(2):
            if NEXT[s, a] >= 0:
                p[s, NEXT[s, a]] += pi[s, a]
    w = np.linalg.solve(np.eye(2) - gamma * p, gamma * ends)
    return float(w[0])


def sample(behaviour: np.ndarray, episodes: int, seed: int) -> tuple[LoggedSteps, np.ndarray]:
    """Logged steps of `episodes` episodes under `behaviour` [2, 2], and the state of every step."""
    rng = np.random.default_rng(seed)
    state_of, chosen, reward, following, initial, propensity, episode = [], [], [], [], [], [], []
    for e in range(episodes):
        s, first = 0, True
        while True:
            a = int(rng.random() >= behaviour[s, 0])
            state_of.append(s)
            chosen.append(a)
            reward.append(REWARD[s, a])
            initial.append(first)
            propensity.append(behaviour[s, a])
            episode.append(e)
            nxt = NEXT[s, a]
            following.append(len(chosen) if nxt >= 0 else -1)
            if nxt < 0:
                break
            s, first = int(nxt), False
    states = np.eye(2, dtype=np.float32)[state_of]
    actions = np.zeros((len(state_of), 2, 4), dtype=np.float32)
    for i, s in enumerate(state_of):
        actions[i, 0, 2 * s] = actions[i, 1, 2 * s + 1] = 1.0
    steps = LoggedSteps(
        states=torch.from_numpy(states),
        actions=torch.from_numpy(actions),
        mask=torch.ones(len(state_of), 2, dtype=torch.bool),
        chosen=torch.tensor(chosen),
        reward=torch.tensor(reward, dtype=torch.float32),
        next_step=torch.tensor(following),
        initial=torch.tensor(initial),
        propensity=torch.tensor(propensity, dtype=torch.float32),
        episode=torch.tensor(episode),
    )
    return steps, np.asarray(state_of)


def probabilities(pi: np.ndarray, state_of: np.ndarray) -> torch.Tensor:
    """The policy pi [2, 2] at every logged step, [S, 2]."""
    return torch.from_numpy(pi[state_of].astype(np.float32))

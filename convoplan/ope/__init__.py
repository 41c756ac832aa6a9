"""Off-policy evaluation of dialogue managers from logged conversations (the RL paper, sec. 5): DualDICE (behaviour-
agnostic), fitted Q evaluation and weighted importance sampling, over target policies defined on logged steps.

    table, embeddings = dataset.table, dataset.embeddings            # convoplan.dm.train.prepare(logs, ...)
    raw = logged_steps(table, embeddings, supervised.state)           # the frozen state encoder, once
    steps = with_position(reduce_dimensions(raw, 16, 16))             # compact inputs for nu, zeta and Q
    target = policy_probabilities(table, embeddings, GreedyPolicy(saql))
    dualdice(steps, target, DualDiceConfig()).value                   # normalised, per step of the restarting process
    fqe(steps, target, FQEConfig()).value                             # (1 - gamma) E[sum_t gamma^t r_t]
    weighted_importance_sampling(raw, target, WISConfig()).value      # same scale, with the logged propensities
"""

from convoplan.ope.dualdice import DualDiceConfig, DualDiceResult, dualdice, dualdice_objective, expected_under
from convoplan.ope.fqe import FQEConfig, FQEResult, fqe
from convoplan.ope.importance import WISConfig, WISResult, importance_weights, weighted_importance_sampling
from convoplan.ope.networks import PairMLP
from convoplan.ope.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    Scorer,
    SoftmaxPolicy,
    TargetPolicy,
    UniformPolicy,
)
from convoplan.ope.steps import (
    LoggedSteps,
    Projection,
    episode_values,
    logged_steps,
    policy_probabilities,
    reduce_dimensions,
    step_positions,
    with_position,
)

__all__ = [
    "DualDiceConfig",
    "DualDiceResult",
    "EpsilonGreedyPolicy",
    "FQEConfig",
    "FQEResult",
    "GreedyPolicy",
    "LoggedSteps",
    "PairMLP",
    "Projection",
    "Scorer",
    "SoftmaxPolicy",
    "TargetPolicy",
    "UniformPolicy",
    "WISConfig",
    "WISResult",
    "dualdice",
    "dualdice_objective",
    "episode_values",
    "expected_under",
    "fqe",
    "importance_weights",
    "logged_steps",
    "policy_probabilities",
    "reduce_dimensions",
    "step_positions",
    "weighted_importance_sampling",
    "with_position",
]

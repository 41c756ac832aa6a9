"""Off-policy evaluation of dialogue managers from logged conversations (the RL paper, sec. 5): DualDICE (behaviour-
agnostic), fitted Q evaluation and weighted importance sampling, over target policies defined on logged steps.

    table, embeddings = dataset.table, dataset.embeddings            # convoplan.dm.train.prepare(logs, ...)
    raw = logged_steps(table, embeddings, supervised.state)           # the frozen state encoder, once
    steps = with_position(reduce_dimensions(raw, 16, 16))             # compact inputs for nu, zeta and Q
    target = policy_probabilities(table, embeddings, GreedyPolicy(saql))
    dualdice(steps, target, DualDiceConfig()).value                   # normalised, per step of the restarting process
    fqe(steps, target, FQEConfig()).value                             # (1 - gamma) E[sum_t gamma^t r_t]
    weighted_importance_sampling(raw, target, WISConfig()).value      # same scale, with the logged propensities

Any DM replayed on the logs (`dm_probabilities`), and several at once with bootstrap intervals, ranked
(`evaluate_policies`, what `convoplan ope` runs).
"""

from convoplan.ope.dualdice import DualDiceConfig, DualDiceResult, dualdice
from convoplan.ope.evaluate import OPEConfig, OPEReport, encoded_steps, evaluate_policies
from convoplan.ope.fqe import FQEConfig, FQEResult, fqe
from convoplan.ope.importance import WISConfig, WISResult, weighted_importance_sampling
from convoplan.ope.policies import GreedyPolicy, SoftmaxPolicy, TargetPolicy, UniformPolicy, dm_probabilities
from convoplan.ope.steps import episode_values, logged_steps, policy_probabilities, reduce_dimensions, with_position

__all__ = [
    "DualDiceConfig",
    "DualDiceResult",
    "FQEConfig",
    "FQEResult",
    "GreedyPolicy",
    "OPEConfig",
    "OPEReport",
    "SoftmaxPolicy",
    "TargetPolicy",
    "UniformPolicy",
    "WISConfig",
    "WISResult",
    "dm_probabilities",
    "dualdice",
    "encoded_steps",
    "episode_values",
    "evaluate_policies",
    "fqe",
    "logged_steps",
    "policy_probabilities",
    "reduce_dimensions",
    "weighted_importance_sampling",
    "with_position",
]

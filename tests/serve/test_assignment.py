"""Live A/B assignment: stable per user, in proportion to the weights."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from convoplan.serve.assignment import assign_arm, unit_hash


def test_a_user_always_gets_the_same_arm() -> None:
    weights = {"control": 1.0, "saql": 1.0}
    assert all(assign_arm(f"user-{i}", weights) == assign_arm(f"user-{i}", weights) for i in range(100))


def test_arms_get_users_in_proportion_to_their_weights() -> None:
    weights = {"control": 1.0, "saql": 3.0}
    arms = [assign_arm(f"user-{i}", weights) for i in range(4000)]
    # A fair 1:3 split passes a binomial test; a biased hash (or ignoring the weights) fails it.
    assert binomtest(arms.count("saql"), len(arms), 0.75).pvalue > 0.001
    assert set(arms) == {"control", "saql"}


def test_a_zero_weight_arm_gets_nobody_and_the_salt_reshuffles() -> None:
    assert {assign_arm(f"u{i}", {"a": 1.0, "off": 0.0}) for i in range(500)} == {"a"}
    moved = sum(unit_hash(f"u{i}") != unit_hash(f"u{i}", salt="v2") for i in range(100))
    assert moved == 100
    assert (
        0.0 <= min(unit_hash(f"u{i}") for i in range(1000)) < 0.01 < 0.99 < max(unit_hash(f"u{i}") for i in range(1000))
    )


@pytest.mark.parametrize("weights", [{}, {"a": 0.0}, {"a": -1.0, "b": 2.0}])
def test_bad_weights_are_refused(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        assign_arm("someone", weights)

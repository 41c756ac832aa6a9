from __future__ import annotations

import math

import numpy as np
import pytest

from convoplan.schema import Candidate, Conversation, Turn
from convoplan.sim.metrics import compare, conversation_metrics


def conversation(cid: str, responses: int, answers: list[str], feedback: list[str], rating: int = 5) -> Conversation:
    turns = []
    for i in range(responses):
        meta: dict[str, object] = {}
        if i < len(answers):
            meta["answer"] = answers[i]
        if i < len(feedback):
            meta["feedback"] = feedback[i]
        turns.append(Turn(speaker="user", text="hi", meta=meta))  # type: ignore[arg-type]
        chosen = Candidate(text="x", action="fact", selected=True, ratings={"a": rating, "b": rating - 2})
        turns.append(Turn(speaker="agent", text="x", action="fact", candidates=[chosen]))
        turns.append(Turn(speaker="agent", text="x", action="stop"))
    return Conversation(id=cid, domain="animals", turns=turns)


def test_conversation_metrics_count_from_the_logs() -> None:
    m = conversation_metrics(conversation("c", 3, ["yes", "no", "lion"], ["positive", "negative"], rating=5))
    assert m == {
        "length": 3.0,
        "cooperative_answers": 2.0,
        "non_cooperative_answers": 1.0,
        "positive_feedback": 1.0,
        "negative_feedback": 1.0,
        "mean_rating": 4.0,
    }
    assert math.isnan(conversation_metrics(Conversation(id="e", domain="d", turns=[]))["mean_rating"])


def test_compare_interval_covers_the_true_relative_change() -> None:
    rng = np.random.default_rng(0)
    control = [conversation(f"a{i}", int(n), [], []) for i, n in enumerate(rng.poisson(10, 400) + 1)]
    arm = [conversation(f"b{i}", int(n), [], []) for i, n in enumerate(rng.poisson(12, 400) + 1)]
    result = compare(control, arm, "length", resamples=500)
    true_change = (12 + 1) / (10 + 1) - 1  # Poisson means shifted by the +1
    assert result.low < result.relative_change < result.high
    assert result.low < true_change < result.high
    assert result.low > 0, "an 18% increase on 400 conversations per arm is detectable"
    with pytest.raises(ValueError, match="at least two"):
        compare(control[:1], arm, "length")

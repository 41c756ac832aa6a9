from __future__ import annotations

import math
from dataclasses import replace

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
        "user_left": 0.0,
        "mean_rating": 4.0,
    }
    left = conversation("d", 2, [], [])
    left.turns[-3].meta["stop"] = True  # the last user message said goodbye
    assert conversation_metrics(left)["user_left"] == 1.0 and conversation_metrics(left)["negative_feedback"] == 0
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


def test_paired_intervals_cancel_the_users_own_variation() -> None:
    # Users differ widely (1 to 40 responses); the arm gives every user exactly two more: the per-arm interval of
    # the difference is wide, the paired one is the difference itself.
    rng = np.random.default_rng(1)
    base = rng.integers(1, 40, 60)

    def run(extra: int) -> list[Conversation]:
        logs = [conversation(f"u{i}", int(n) + extra, [], []) for i, n in enumerate(base)]
        return [replace(c, meta={"seed": 0, "index": i}) for i, c in enumerate(logs)]

    result = compare(run(0), run(2), "length", resamples=500)
    assert result.paired_difference_low == pytest.approx(2.0) and result.paired_difference_high == pytest.approx(2.0)
    assert result.difference_high - result.difference_low > 4  # resampled per arm: the users' spread shows
    assert result.paired_low > 0 and result.paired_high - result.paired_low < result.high - result.low
    # Arms that met different users (or no simulated users at all) get no paired interval.
    others = [replace(c, meta={"seed": 1, "index": i}) for i, c in enumerate(run(2))]
    unpaired = compare(run(0), others, "length", resamples=200)
    assert math.isnan(unpaired.paired_low) and not math.isnan(unpaired.low)
    assert math.isnan(compare(run(0)[:10], run(2)[:12], "length", resamples=200).paired_low)

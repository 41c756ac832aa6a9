from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.report import write_report
from convoplan.schema import Candidate, Conversation, Turn, read_jsonl
from convoplan.sim.experiment import BEHAVIOUR_LABELS, METRIC_LABELS, TABLE3, ABReport, ab_report
from convoplan.sim.metrics import BEHAVIOURS, behaviour_metrics, behaviour_summary, bot_responses
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.planning import HeuristicDM

PNG = b"\x89PNG\r\n\x1a\n"


def user(text: str, **meta: str) -> Turn:
    return Turn(speaker="user", text=text, meta=dict(meta))


def step(action: str, provider: str, focus: str | None, changes_focus: bool = False) -> Turn:
    """A composition step: the chosen candidate, and an unchosen quiz that must not count."""
    chosen = Candidate(
        text=f"{action} {focus}", action=action, provider=provider, focus=focus, changes_focus=changes_focus
    )
    chosen.selected = True
    other = Candidate(text="a quiz", action="quiz", provider="quiz", focus=focus)
    return Turn(speaker="agent", text=chosen.text, action=action, candidates=[chosen, other])


def stop(text: str = "fused") -> Turn:
    return Turn(
        speaker="agent", text=text, action="stop", candidates=[Candidate(text="<stop>", action="stop", selected=True)]
    )


def known_conversation() -> Conversation:
    turns = [
        user("tell me about lions", focus="lion", request="fact"),
        step("fact", "fact", "lion"),
        step("sound", "sound", "lion"),
        stop(),  # 1: ends in a sound, about the lion
        user("cool", focus="lion"),
        step("ack", "acknowledgement", "lion"),
        step("fact", "fact", "lion"),
        step("yes_no_question", "focus_change", "tiger", changes_focus=True),
        stop(),  # 2: a question; still about the lion (the offer does not count)
        user("yes", focus="tiger", answer="yes"),
        step("ack", "acknowledgement", "tiger"),
        step("sound", "sound", "tiger"),
        stop(),  # 3: about the tiger: focus change 1
        user("great", focus="tiger", feedback="positive"),
        step("open_question", "open_question", None, changes_focus=True),
        stop(),  # 4: a question, no content focus
        user("you choose", focus="tiger", answer="none"),
        step("fact", "fact", "bear"),
        stop(),  # 5: about the bear: focus change 2
        user("bye", feedback="negative"),
        stop("Thanks for chatting with me. Goodbye!"),  # a goodbye says nothing: not a response
    ]
    return Conversation(id="known", domain="animals", turns=turns)


def test_behaviour_metrics_on_a_known_conversation() -> None:
    assert behaviour_metrics(known_conversation()) == {
        "responses": 5.0,
        "question_responses": 2.0,
        "question_share": 0.4,
        "unique_providers": 5.0,  # fact, sound, acknowledgement, focus_change, open_question (not the unchosen quiz)
        "fact_utterances": 3.0,
        "sound_utterances": 2.0,
        "fact_share": 0.6,
        "focus_changes": 2.0,
        "cooperation_rate": 0.5,
    }
    empty = behaviour_metrics(Conversation(id="e", domain="d", turns=[user("hi")]))
    assert empty["responses"] == 0 and math.isnan(empty["question_share"]) and math.isnan(empty["fact_share"])


def test_behaviour_of_logs_without_composition_steps() -> None:
    """A bot that logs plain messages (no stop, no candidates): each run of agent messages is one response."""
    plain = Conversation(
        id="p",
        domain="d",
        turns=[
            user("hi"),
            Turn(speaker="agent", text="a fact", action="fact"),
            Turn(speaker="agent", text="want more?", action="yes_no_question"),
            user("no", answer="no"),
            Turn(speaker="agent", text="ok", action="fact"),
        ],
    )
    assert [[c.action for c in r] for r in bot_responses(plain)] == [["fact", "yes_no_question"], ["fact"]]
    m = behaviour_metrics(plain)
    assert m["question_share"] == 0.5 and m["unique_providers"] == 0 and m["cooperation_rate"] == 0


def test_behaviour_summary_pools_shares_over_the_arm() -> None:
    short = Conversation(id="s", domain="d", turns=[user("hi"), step("quiz", "quiz", "lion"), stop()])
    summary = behaviour_summary([known_conversation(), short])
    assert summary["responses"] == 3.0  # (5 + 1) / 2
    assert summary["question_share"] == pytest.approx(3 / 6)  # pooled, not (0.4 + 1.0) / 2
    assert set(summary) == set(BEHAVIOURS)


def synthetic(name: str, lengths: np.ndarray, feedback: str | None = None) -> list[Conversation]:
    """Conversations of the given numbers of responses; each user message answers yes, the first one also no."""
    logs = []
    for i, n in enumerate(lengths):
        turns = [user("hi")]
        for k in range(int(n)):
            turns += [step("fact", "fact", "lion"), stop()]
            meta = {"answer": "no" if k == 0 else "yes"} | ({"feedback": feedback} if feedback else {})
            turns.append(user("ok", **meta))
        logs.append(Conversation(id=f"{name}-{i}", domain="animals", turns=turns))
    return logs


@pytest.fixture(scope="module")
def report() -> ABReport:
    rng = np.random.default_rng(0)
    logs = {
        "control": synthetic("c", rng.poisson(8, 200) + 1),
        "longer": synthetic("l", rng.poisson(12, 200) + 1, feedback="positive"),
        "same": synthetic("s", rng.poisson(8, 200) + 1),
    }
    return ab_report(logs, "control", resamples=500)


def test_ab_report_finds_the_longer_arm(report: ABReport) -> None:
    assert report.arms == ["longer", "same"] and report.metrics == [*TABLE3, "user_left"]  # unrated: no mean rating
    longer = report.changes["longer"]["length"]
    assert longer is not None and longer.low > 0 and longer.relative_change == pytest.approx(13 / 9 - 1, abs=0.1)
    same = report.changes["same"]["length"]
    assert same is not None and same.low < 0 < same.high
    # the control has no positive feedback: the relative change is undefined, not infinite
    assert report.changes["longer"]["positive_feedback"] is None
    assert report.means["longer"]["positive_feedback"] > 0 and math.isnan(report.means["control"]["mean_rating"])
    assert report.behaviour["control"]["fact_share"] == 1.0


def test_markdown_json_and_png(report: ABReport, tmp_path: Path) -> None:
    text = report.markdown()
    for label in [*(METRIC_LABELS[m] for m in TABLE3), *BEHAVIOUR_LABELS.values()]:
        assert label in text
    for arm in ("control (control, mean)", "| longer |", "| same |"):
        assert arm in text
    row = next(line for line in text.splitlines() if line.startswith("| Conversation length"))
    assert row.count("%") == 6 and "n/a" in text

    paths = write_report(report, tmp_path / "out")
    assert paths["png"].read_bytes().startswith(PNG)
    assert paths["md"].read_text() == text
    again = ABReport.from_dict(json.loads(paths["json"].read_text()))
    assert again.markdown() == text and again.changes["longer"]["positive_feedback"] is None


def test_ab_report_rejects_a_missing_control() -> None:
    with pytest.raises(ValueError, match="not one of the arms"):
        ab_report({"a": synthetic("a", np.array([1, 2]))}, "b")
    with pytest.raises(ValueError, match="at least one arm"):
        ab_report({"a": synthetic("a", np.array([1, 2]))}, "a")


runner = CliRunner()


def test_cli_ab_writes_the_report_and_the_logs(tmp_path: Path) -> None:
    out = tmp_path / "ab"
    result = runner.invoke(
        app, ["experiment", "ab", "--control", "heuristic", "--arm", "greedy", "--users", "20", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "| Conversation length (bot responses) |" in result.stdout and "| Mean rating |" in result.stdout
    for name in ("report.md", "report.json", "report.png", "heuristic.jsonl", "greedy.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "report.png").read_bytes().startswith(PNG)
    assert json.loads((out / "report.json").read_text())["conversations"] == {"heuristic": 20, "greedy": 20}
    assert "## Paired comparison (the same users in every arm)" in result.stdout  # the same users met both arms
    # The A/B's users are drawn for evaluation: not the users a collection run with the same seed met.
    evaluated = read_jsonl(out / "heuristic.jsonl")
    collected = list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=20, raters=0)))
    assert all(c.meta["purpose"] == "evaluation" and c.meta["seed"] == 0 for c in evaluated)

    def opening(c: Conversation) -> list[str]:
        return [t.text for t in c.turns if t.speaker == "user"][:2]

    assert sum(opening(a) == opening(b) for a, b in zip(evaluated, collected, strict=True)) < 10

    again = tmp_path / "again"
    logs = ["--logs", str(out / "heuristic.jsonl"), "--logs", str(out / "greedy.jsonl")]
    result = runner.invoke(app, ["experiment", "report", *logs, "--control", "heuristic", "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert (again / "report.md").read_text() == (out / "report.md").read_text()


def test_cli_bad_arm_spec_exits_2(tmp_path: Path) -> None:
    args = ["experiment", "ab", "--control", "heuristic", "--arm", "nonsense", "--users", "5", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --arm 'nonsense'") and result.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir()), "nothing is simulated or written before every spec resolves"

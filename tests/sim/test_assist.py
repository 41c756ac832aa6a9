"""Agent assist simulated (`convoplan.sim.assist`) with the tiny animals-world LM and the world's agents: every
assisted message carries what was shown and the agent's choice as the server files it, the same seed meets the
same agents, the summary adds up, pairs can be built from the run, and the paired comparison is right on runs
whose shares are known."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from convoplan.lm.choices import answered
from convoplan.lm.model import load_model
from convoplan.lm.preferences import build_pairs
from convoplan.lm.provider import lm_conversations
from convoplan.lm.suggest import Suggester
from convoplan.schema import Candidate, Conversation, Turn
from convoplan.sim.assist import AssistConfig, LogAgent, assist_report, assist_summary, compare_assist, simulate_assist
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.agents import agent_population
from convoplan.worlds.animals.planning import HeuristicDM


@pytest.fixture(scope="module")
def logs() -> list[Conversation]:
    simulated = simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=3, raters=0, seed=7))
    return lm_conversations(list(simulated))


def test_a_replay_files_every_choice_as_the_server_does(world_lm_dir: Path, logs: list[Conversation]) -> None:
    suggester = Suggester(load_model(world_lm_dir))
    config = AssistConfig(n=2, seed=3, max_messages=4)
    run = simulate_assist(logs, suggester, agent_population("terse"), config)
    assert len(run) == len(logs)
    for original, replayed in zip(logs, run, strict=True):
        assert replayed.meta["agent"] and str(replayed.meta["agent"]).startswith("terse-")
        assisted = [(k, t) for k, t in enumerate(replayed.turns) if "choice" in t.meta]
        assert len(assisted) == 4 and replayed.turns[-1] is assisted[-1][1]  # cut after the last assisted message
        for position, turn in assisted:
            choice = turn.meta["choice"]
            assert isinstance(choice, dict) and choice["shown_at"] == position
            assert len(turn.candidates) == 2 and turn.action == original.turns[position].action
            assert all(c.action == turn.action for c in turn.candidates)
            selected = [k for k, c in enumerate(turn.candidates) if c.selected]
            assert selected == ([] if choice["suggestion"] is None else [choice["suggestion"]])
    again = simulate_assist(logs, suggester, agent_population("terse"), config)
    assert [c.meta["agent"] for c in again] == [c.meta["agent"] for c in run]  # the same seed, the same agents
    summary = assist_summary(run)
    assert summary.messages == 12 and math.isclose(summary.taken + summary.edited + summary.own, 1.0)
    assert math.isnan(summary.supported) and summary.checked == 0  # no knowledge file: nothing checked
    _, counts = build_pairs(run)
    assert counts.choices.total() == 12


def _run(taken: list[list[bool]]) -> list[Conversation]:
    """Conversations whose agent messages were taken (True) or written anew (False), one list per conversation."""
    shown = [Candidate("Lions roar.", "sound")]
    run = []
    for k, messages in enumerate(taken):
        turns = [
            answered(
                Turn("agent", "Lions roar." if took else "Hello.", action="sound"),
                f"r{i}",
                shown,
                0 if took else None,
                i,
                1.0,
            )
            for i, took in enumerate(messages)
        ]
        run.append(Conversation(f"c{k}", "animals", turns))
    return run


def test_the_paired_comparison_of_two_runs() -> None:
    before = _run([[True, False], [False, False], [True, True], [False, True]])  # shares .5, 0, 1, .5
    after = _run([[True, True], [True, False], [True, True], [True, True]])  # 1, .5, 1, 1
    result = compare_assist(before, after)
    assert (result.conversations, result.a, result.b, result.paired) == ((4, 4), 0.5, 0.875, True)
    assert math.isclose(result.difference, 0.375) and result.low <= 0.375 <= result.high and result.low >= 0
    # Other conversations (a live experiment: each agent in one arm): each run resampled on its own, wider.
    elsewhere = [replace(c, id=f"other-{c.id}") for c in after]
    unpaired = compare_assist(before, elsewhere)
    assert not unpaired.paired and math.isclose(unpaired.difference, 0.375)
    assert unpaired.high - unpaired.low > result.high - result.low
    summary = assist_summary(after)
    assert (summary.taken, summary.own, summary.mean_seconds) == (0.875, 0.125, 1.0)
    with pytest.raises(ValueError, match="two conversations with choices in each run; 1 and 4"):
        compare_assist(before[:1], after)
    report = assist_report({"control": before, "tuned": after}, "control")
    assert "| tuned | 8 | 87.5% |" in report.markdown() and report.to_dict()["comparisons"]["tuned"]["paired"]
    assert report.png().startswith(b"\x89PNG")


def test_an_agent_who_means_the_logged_message() -> None:
    agent = LogAgent(random.Random(0))
    history = Conversation("c", "shop", [Turn("user", "hi")])
    meant = Turn("agent", "Would you like to donate to Save the Children today?", action="ask")
    near = Candidate("Would you like to donate to Save the Children?", "ask")
    far = Candidate("Would you like to give something?", "ask")
    other = Candidate("Would you like to donate to Save the Children today?", "greeting")  # another action
    assert agent.choose(history, meant, [other, far, near]).__dict__ == {"text": near.text, "suggestion": 2}
    closest = Candidate("Could you donate to the children's charity today?", "ask")
    assert agent.choose(history, meant, [other, closest]).__dict__ == {"text": meant.text, "suggestion": 1}
    assert agent.choose(history, meant, [other]).__dict__ == {"text": meant.text, "suggestion": None}


def test_the_loop_as_a_command(world_lm_dir: Path, logs: list[Conversation], tmp_path: Path) -> None:
    """`convoplan experiment assist-loop`: a round (replay, pairs, DPO) and the evaluation's paired report."""
    from typer.testing import CliRunner

    from convoplan.cli import app
    from convoplan.schema import write_jsonl

    data = tmp_path / "logs.jsonl"
    splits = ["train", "train", "test", "test"]
    more = lm_conversations(list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=1, seed=8))))
    write_jsonl(data, [replace(c, meta={**c.meta, "split": s}) for c, s in zip([*logs, *more], splits, strict=True)])
    out = tmp_path / "loop"
    settings = ["train_conversations=2", "eval_conversations=2", "max_pairs=6", "assist.max_messages=3", "dpo.epochs=1"]
    command = ["experiment", "assist-loop", str(data), "--model", str(world_lm_dir), "--agents", "terse"]
    result = CliRunner().invoke(
        app, [*command, "--out", str(out), "--set", "rounds=1", *(a for s in settings for a in ("--set", s))]
    )
    assert result.exit_code == 0, result.output
    assert (out / "round-1" / "convoplan-lm.json").exists() and (out / "round-1-pairs.jsonl").exists()
    report = (out / "report.md").read_text()
    assert "| model 0 | 6 |" in report and "(paired)" in report
    assert json.loads((out / "rounds.json").read_text())[0]["pairs_kept"] <= 6
    refused = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "x"), "--set", "rounds=5"])
    assert refused.exit_code == 2 and "the rounds need 30" in refused.output
    wrong = CliRunner().invoke(app, [*command[:-1], "lazy", "--out", str(tmp_path / "y")])
    assert wrong.exit_code == 2 and "--agents 'lazy'" in wrong.output

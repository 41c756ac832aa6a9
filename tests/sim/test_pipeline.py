"""The paper's pipeline end to end, against a user simulator and rater defined here and passed by import path."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.compose.loop import DialogueState, Response
from convoplan.schema import Candidate, read_jsonl
from convoplan.sim.protocols import UserReply

runner = CliRunner()
TINY = [
    "supervised.network.hidden=8",
    "supervised.network.head=16",
    "q.network.hidden=8",
    "q.network.head=16",
    "supervised.steps=6",
    "q.steps=6",
    "cql_steps=3",
    "supervised.batch_size=2",
    "q.batch_size=2",
    "q.caql_steps=1",
    "max_turns=4",
]


class QuizLover:
    """Stays for as long as the bot keeps asking quizzes; leaves after any response without one."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def opening(self) -> str:
        return "tell me about owls"

    def reply(self, response: Response) -> UserReply:
        if any(c.action == "quiz" for c in response.chosen):
            return UserReply(text="is it the owl?")
        return UserReply(text="bye", left=self.rng.random() < 0.5)


class LengthRater:
    """Prefers short utterances."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name

    def rate(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[int]:
        return [5 if len(c.text) < 60 else -2 for c in candidates]


def test_pipeline_trains_and_ab_evaluates_with_plugged_in_people(tmp_path: Path) -> None:
    out = tmp_path / "dm"
    people = ["--simulator", f"{__name__}:QuizLover", "--rater", f"{__name__}:LengthRater"]
    overrides = [arg for item in [*TINY, "arms=saql,caql_cql"] for arg in ("--set", item)]
    result = runner.invoke(app, ["dm", "pipeline", "--out", str(out), "--conversations", "6", *people, *overrides])
    assert result.exit_code == 0, result.output
    for name in ("supervised_rnn", "saql", "caql_cql"):
        config = json.loads((out / name / "config.json").read_text())
        assert config["kind"] == name and (out / name / "model.safetensors").is_file()
    first = read_jsonl(out / "logs" / "heuristic.jsonl")
    assert all(c.turns[0].text == "tell me about owls" for c in first)
    ratings = {r for c in first for t in c.turns for cand in t.candidates for r in cand.ratings.values()}
    assert ratings <= {5, -2}

    report = tmp_path / "ab"
    result = runner.invoke(
        app,
        [
            "experiment",
            "ab",
            "--control",
            str(out / "supervised_rnn"),
            "--arm",
            f"saql={out / 'saql'}",
            "--users",
            "4",
            "--out",
            str(report),
            "--resamples",
            "100",
            *people,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "saql" in (report / "report.md").read_text()
    assert all(c.turns[0].text == "tell me about owls" for c in read_jsonl(report / "saql.jsonl"))


def test_resume_goes_on_where_a_run_stopped(tmp_path: Path) -> None:
    """A run cut off after SAQL resumes without retraining what it finished and ends with the same DMs."""
    from safetensors.torch import load_file

    out = tmp_path / "dm"
    command = ["dm", "pipeline", "--out", str(out), "--conversations", "4"]
    overrides = [arg for item in [*TINY, "arms=saql,saql_cql"] for arg in ("--set", item)]
    assert runner.invoke(app, [*command, *overrides]).exit_code == 0
    complete = load_file(out / "saql_cql" / "model.safetensors")
    saql_written = (out / "saql" / "config.json").stat().st_mtime_ns
    for path in (out / "saql_cql").iterdir():
        path.unlink()
    (out / "saql_cql").rmdir()
    result = runner.invoke(app, [*command, "--resume", *overrides])
    assert result.exit_code == 0, result.output
    assert f"reusing {out / 'saql'}" in result.stderr and "training saql_cql" in result.stderr
    assert "collecting" not in result.stderr and (out / "saql" / "config.json").stat().st_mtime_ns == saql_written
    resumed = load_file(out / "saql_cql" / "model.safetensors")
    assert all(torch.allclose(complete[k], resumed[k], atol=1e-5) for k in complete)


def test_train_command_warm_starts_and_rejects_bad_overrides(tmp_path: Path, animal_logs: list) -> None:  # type: ignore[type-arg]
    from convoplan.schema import write_jsonl

    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, animal_logs)
    tiny = [
        arg for item in ["network.hidden=8", "network.head=16", "steps=4", "batch_size=2"] for arg in ("--set", item)
    ]
    result = runner.invoke(
        app, ["dm", "train", str(logs), "--algorithm", "supervised", "--out", str(tmp_path / "sup"), *tiny]
    )
    assert result.exit_code == 0, result.output
    warm = ["--init", str(tmp_path / "sup"), "--behaviour", str(tmp_path / "sup")]
    saql = ["dm", "train", str(logs), "--algorithm", "saql", "--out", str(tmp_path / "q"), *warm]
    result = runner.invoke(app, [*saql, *tiny, "--set", "cql_alpha=0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q" / "config.json").read_text())["training"]["config"]["cql_alpha"] == 0.5
    result = runner.invoke(app, ["dm", "train", str(logs), "--out", str(tmp_path / "x"), "--set", "gama=1"])
    assert result.exit_code == 2 and "no field 'gama'" in result.stderr
    result = runner.invoke(app, ["dm", "train", str(logs), "--out", str(tmp_path / "x"), "--set", "algorithm=dqn"])
    assert result.exit_code == 2 and "expected one of saql, caql" in result.stderr


@pytest.mark.parametrize("ensemble", [1, 2])
def test_rounds_collect_with_the_promoted_dm_and_gate_promotion_on_the_lower_bound(
    tmp_path: Path, ensemble: int
) -> None:
    """With q.ensemble, every round's DM is an ensemble, warm-started member by member from the promoted one."""
    out = tmp_path / "dm"
    rounds = ["arms=saql", "rounds=3", "promotion.refits=2", "promotion.fqe.steps=20", "q.discount=response"]
    rounds.append(f"q.ensemble={ensemble}")
    overrides = [arg for item in [*TINY, *rounds] for arg in ("--set", item)]
    result = runner.invoke(app, ["dm", "pipeline", "--out", str(out), "--conversations", "6", *overrides])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "rounds.json").read_text())
    assert [r["candidate"] for r in record["rounds"]] == ["saql_round2", "saql_round3"]
    promoted = "saql"
    for decision in record["rounds"]:
        assert decision["against"] == promoted  # each round is judged against the DM promoted so far
        assert 0.9 < decision["gamma"] < 1  # gamma 0.9 per response: per composition step, a longer horizon
        new, old = decision["values"][decision["candidate"]], decision["values"][promoted]
        assert len(new["replicates"]) == 2 and new["low"] < new["value"] < new["high"]
        assert decision["promoted"] == (new["low"] > old["low"])
        promoted = decision["candidate"] if decision["promoted"] else promoted
    assert record["promoted"] == promoted and f"saql_iterated: {out / promoted}" in result.stdout
    for number in (2, 3):  # each round's logs come from a DM, with its exploration's propensities
        logs = read_jsonl(out / "logs" / f"saql_round{number}.jsonl")
        assert len(logs) == 6 and all(c.propensity is not None for t in logs[0].turns for c in t.candidates)
        assert json.loads((out / f"saql_round{number}" / "config.json").read_text())["members"] == ensemble
    # resumed, a finished run reuses every round's DM and the gate's decisions: no FQE refits, the same record
    written = (out / "rounds.json").read_text()
    result = runner.invoke(app, ["dm", "pipeline", "--out", str(out), "--conversations", "6", "--resume", *overrides])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("reusing the decision in") == 2 and (out / "rounds.json").read_text() == written

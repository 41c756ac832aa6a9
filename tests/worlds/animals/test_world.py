"""The whole loop on the animals world: providers, simulation, raters, reproducibility, plug-ins by import path."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.compose.loop import STOP, DialogueState, Response
from convoplan.schema import Candidate, read_jsonl
from convoplan.sim.protocols import UserReply
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.planning import HeuristicDM
from convoplan.worlds.animals.raters import to_rating

runner = CliRunner()


class ZooFanUser:
    """A user simulator written outside convoplan: always asks about the zoo's star, leaves after four replies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.replies = 0

    def opening(self) -> str:
        return "tell me about giraffes"

    def reply(self, response: Response) -> UserReply:
        self.replies += 1
        if self.replies == 4:
            return UserReply(text="bye", left=True, meta={"replies": self.replies})
        return UserReply(text=self.rng.choice(["what sound does it make?", "more please", "cool"]))


class TwoFaceRater:
    """A rater written outside convoplan: loves questions, hates everything else."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name

    def rate(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[int]:
        return [7 if c.action in ("quiz", "yes_no_question", "open_question") else -3 for c in candidates]


def test_simulated_logs_are_rated_and_flagged() -> None:
    conversations = list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=5, raters=2)))
    steps = [t for c in conversations for t in c.agent_turns()]
    assert steps and all(t.candidates for t in steps)
    for turn in steps:
        assert sum(c.selected for c in turn.candidates) == 1
        for candidate in turn.candidates:
            assert set(candidate.ratings) == {"rater-0", "rater-1"}
            assert all(-3 <= r <= 7 and r != 0 for r in candidate.ratings.values())
            assert candidate.action and candidate.provider and candidate.score is not None
        chosen = next(c for c in turn.candidates if c.selected)
        assert chosen.text == turn.text or turn.action == STOP
    users = [t for c in conversations for t in c.turns if t.speaker == "user"]
    assert any("sim" in t.meta and "engagement" in t.meta["sim"] for t in users)  # type: ignore[operator]
    assert {c.meta["ended_by"] for c in conversations} <= {"user", "bot", "max_turns"}


def test_to_rating_never_gives_zero() -> None:
    assert [to_rating(v) for v in (-9.0, -0.4, 0.0, 0.4, 3.6, 12.0)] == [-3, -1, 1, 1, 4, 7]


def test_world_simulate_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = runner.invoke(
            app,
            [
                "world",
                "simulate",
                "--dm",
                "random",
                "--conversations",
                "6",
                "--raters",
                "2",
                "--seed",
                "11",
                "--epsilon",
                "0.2",
                "--out",
                str(tmp_path / name),
            ],
        )
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    other = tmp_path / "c.jsonl"
    runner.invoke(
        app, ["world", "simulate", "--dm", "random", "--conversations", "6", "--seed", "12", "--out", str(other)]
    )
    assert other.read_bytes() != outputs[0]


def test_user_simulator_and_rater_plug_in_by_import_path(tmp_path: Path) -> None:
    out = tmp_path / "logs.jsonl"
    result = runner.invoke(
        app,
        [
            "world",
            "simulate",
            "--dm",
            "heuristic",
            "--conversations",
            "3",
            "--raters",
            "1",
            "--out",
            str(out),
            "--simulator",
            f"{__name__}:ZooFanUser",
            "--rater",
            f"{__name__}:TwoFaceRater",
        ],
    )
    assert result.exit_code == 0, result.output
    conversations = read_jsonl(out)
    assert len(conversations) == 3
    for conversation in conversations:
        users = [t for t in conversation.turns if t.speaker == "user"]
        assert users[0].text == "tell me about giraffes" and users[0].meta["focus"] == "giraffe"
        assert users[-1].text == "bye" and users[-1].meta["sim"] == {"replies": 4}
        assert conversation.meta["ended_by"] == "user"
        for turn in conversation.agent_turns():
            for candidate in turn.candidates:
                is_question = candidate.action in ("quiz", "yes_no_question", "open_question")
                assert candidate.ratings == {"rater-0": 7 if is_question else -3}


def test_bad_plugin_path_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["world", "simulate", "--out", str(tmp_path / "x.jsonl"), "--simulator", "no_such_module:Users"]
    )
    assert result.exit_code == 2 and "cannot import module 'no_such_module'" in result.stderr
    result = runner.invoke(app, ["world", "simulate", "--out", str(tmp_path / "x.jsonl"), "--dm", "smart"])
    assert result.exit_code == 2 and "--dm 'smart'" in result.stderr


def test_chat_explain_shows_candidates() -> None:
    result = runner.invoke(app, ["chat", "--explain"], input="tell me about lions\nyes\nquit\n")
    assert result.exit_code == 0, result.output
    assert "focus: lion" in result.output and "bot> " in result.output and "provider" in result.output

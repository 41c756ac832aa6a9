"""The whole loop on the animals world: providers, simulation, raters, reproducibility, plug-ins by import path."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.compose.fusion import Entity
from convoplan.compose.loop import STOP, Bot, DialogueState, Response
from convoplan.schema import Candidate, read_jsonl
from convoplan.sim.arms import load_arm
from convoplan.sim.protocols import UserReply
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world, fusion_pairs
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


def test_entities_come_from_the_knowledge_base_with_their_synonyms_or_a_regular_plural() -> None:
    entity = animals_world().entity
    lion = entity("lion")
    assert lion is not None and (lion.name, lion.plural, lion.article) == ("lion", "lions", "a")
    assert entity("butterfly") == Entity("butterfly", "butterflies", "a")  # not in the knowledge base
    hippo, shark = entity("hippo"), entity("great white shark")  # any surface form finds the animal
    assert hippo is not None and hippo.name == "hippopotamus"
    assert {"hippo", "hippos", "hippopotamuses"} <= hippo.words
    assert shark is not None and "white" not in shark.words  # from the synonym "great white": not a name alone


class FocusSpy:
    """A fuser that records the entity the bot passes it."""

    def __init__(self) -> None:
        self.seen: list[Entity | None] = []

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        self.seen.append(focus)
        return " ".join(utterances)


def test_the_bot_and_the_fusers_training_see_the_same_entities() -> None:
    """A fuser learns from the pairs' entities; the bot must hand it the same ones, synonyms included."""
    spy = FocusSpy()
    world = animals_world(fuser=spy)
    bot = Bot(world.providers(random.Random(0)), HeuristicDM(), world.fuser, world.lexicon, world.entity)
    bot.hear("tell me about hippos")
    bot.respond()
    hippo = next(e for e in spy.seen if e is not None)
    trained_on = {pair.focus: pair.entity for pair in fusion_pairs()}
    assert hippo == trained_on["hippopotamus"] and "hippo" in hippo.synonyms
    assert all(entity == world.entity(focus) for focus, entity in trained_on.items())


def test_the_world_names_its_built_in_dms() -> None:
    world = animals_world()
    assert set(world.dms) == {"heuristic", "greedy", "random"}
    assert isinstance(load_arm("heuristic", world), HeuristicDM)
    other = replace(world, name="other", dms={})
    with pytest.raises(ValueError, match="import path"):
        load_arm("heuristic", other)  # another world does not get the animals planner


def test_the_console_script_finds_a_plugin_in_the_working_directory(tmp_path: Path) -> None:
    """`convoplan` (the console script) sees the working directory as `python -m convoplan.cli` does."""
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "users.py").write_text(
        "from convoplan.sim.protocols import UserReply\n\n"
        "class Leaver:\n"
        "    def __init__(self, rng):\n        pass\n\n"
        "    def opening(self):\n        return 'tell me about owls'\n\n"
        "    def reply(self, response):\n        return UserReply(text='bye', left=True)\n"
    )
    script = Path(sys.executable).with_name("convoplan")
    command = [str(script), "world", "simulate", "--conversations", "2", "--raters", "0"]
    command += ["--out", "logs.jsonl", "--simulator", "mypkg.users:Leaver"]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert [c.turns[0].text for c in read_jsonl(tmp_path / "logs.jsonl")] == ["tell me about owls"] * 2

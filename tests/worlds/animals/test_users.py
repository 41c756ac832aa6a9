"""The animals world's user populations: the default users draw as they always did, and the scholars differ in what
they like and how long they stay; both are selectable by name wherever a simulator is (`--simulator scholars`)."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.schema import read_jsonl
from convoplan.sim.arms import load_world
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.knowledge import load_knowledge_base
from convoplan.worlds.animals.planning import HeuristicDM
from convoplan.worlds.animals.users import KINDS, POPULATIONS, AnimalUser


def liked(population: str, users: int = 300) -> Counter[str]:
    return Counter(k for i in range(users) for k in AnimalUser(random.Random(i), POPULATIONS[population]).liked)


def test_the_default_users_draw_as_before_and_scholars_prefer_facts() -> None:
    names = [animal.name for animal in load_knowledge_base().animals]
    for i in range(20):  # equal weights: the draw of random.sample, so earlier runs repeat exactly
        rng = random.Random(i)
        rng.sample(names, 3)  # the favourites come first
        assert AnimalUser(random.Random(i)).liked == set(rng.sample(KINDS, 2))
    default, scholars = liked("default"), liked("scholars")
    assert max(default.values()) < 1.3 * min(default.values())  # about even
    assert scholars["fact"] + scholars["attribute"] > 3 * (scholars["sound"] + scholars["quiz"])


def test_a_population_is_chosen_by_name_and_changes_the_conversations(tmp_path: Path) -> None:
    world = load_world(simulator="scholars")
    assert set(animals_world().populations) == {"default", "scholars"}
    config = SimulationConfig(conversations=60, raters=0)
    default = list(simulate(animals_world(), HeuristicDM(), config))
    scholars = list(simulate(world, HeuristicDM(), config))
    length = [statistics.mean(float(c.outcome.value) for c in logs if c.outcome) for logs in (default, scholars)]
    assert length[0] != length[1]
    out = tmp_path / "logs.jsonl"
    arguments = ["world", "simulate", "--dm", "heuristic", "--conversations", "5", "--raters", "0"]
    result = CliRunner().invoke(app, [*arguments, "--simulator", "scholars", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [c.turns[0].text for c in read_jsonl(out)] == [c.turns[0].text for c in scholars[:5]]

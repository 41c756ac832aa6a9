"""Several DMs valued at once with bootstrap intervals (`evaluate_policies`), resampled logs, any DM replayed on
logs (`dm_probabilities`), and the `convoplan ope` command on simulated and rater-less logs."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.compose.loop import Bot
from convoplan.dm.baselines import RandomDM
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.ope import OPEConfig, dm_probabilities, evaluate_policies, weighted_importance_sampling
from convoplan.ope.fqe import FQEConfig
from convoplan.ope.importance import WISConfig
from convoplan.ope.steps import select_episodes
from convoplan.progress import Update
from convoplan.schema import Conversation, write_jsonl
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.planning import HeuristicDM
from tests.ope import chain

GAMMA = 0.8
BEHAVIOUR = np.array([[0.5, 0.5], [0.5, 0.5]])
TARGET = np.array([[0.9, 0.1], [0.7, 0.3]])
FAST_FQE = FQEConfig(hidden=(), lr=3e-2, batch_size=256, steps=300, target_every=20)
runner = CliRunner()


def test_select_episodes_keeps_each_conversation_whole_and_in_order() -> None:
    steps, _ = chain.sample(BEHAVIOUR, episodes=5, seed=1)
    counts = torch.bincount(steps.episode).tolist()
    sample, index = select_episodes(steps, torch.tensor([3, 3, 0]))
    assert sample.steps == 2 * counts[3] + counts[0]
    assert sample.episode.tolist() == [0] * counts[3] + [1] * counts[3] + [2] * counts[0]
    assert torch.equal(sample.reward, steps.reward[index]) and torch.equal(sample.chosen, steps.chosen[index])
    assert bool((steps.episode[index][: counts[3]] == 3).all())
    ends = torch.nonzero(sample.next_step < 0).squeeze(1).tolist()
    assert ends == [counts[3] - 1, 2 * counts[3] - 1, sample.steps - 1]  # each copy ends where its conversation does
    inner = sample.next_step >= 0
    assert torch.equal(sample.next_step[inner], torch.nonzero(inner).squeeze(1) + 1)
    assert sample.initial.sum() == 3


def test_intervals_cover_the_chain_value_and_resamples_are_paired() -> None:
    steps, states = chain.sample(BEHAVIOUR, episodes=300, seed=4)
    target = chain.probabilities(TARGET, states)
    config = OPEConfig(gamma=GAMMA, estimators=("fqe", "wis"), fqe=FAST_FQE, refits=4, resamples=200)
    updates: list[Update] = []
    report = evaluate_policies(steps, {"target": target, "again": target}, config, "chain", updates.append)
    # Progress counts fits, so its time left is honest: FQE's 1 + 4 refits per DM, WIS (200 resamples, no fitting) 1.
    assert [u.done for u in updates] == list(range(1, 13)) and {u.total for u in updates} == {12}
    truth = chain.true_value(TARGET, GAMMA)
    for row in report.rows:
        assert row.agreement == pytest.approx(float(target[torch.arange(steps.steps), steps.chosen].mean()))
        for name, estimate in row.estimates.items():
            assert estimate.low < estimate.value < estimate.high, name
            assert len(estimate.replicates) == (4 if name == "fqe" else 200)
        # The chain's rewards and moves are deterministic: FQE's fixed point is exact on any resample (a narrow
        # interval at the truth); WIS's weights vary with the sample, and its interval covers the truth.
        assert row.estimates["fqe"].value == pytest.approx(truth, rel=1e-3)
        assert row.estimates["wis"].low < truth < row.estimates["wis"].high
    wis = weighted_importance_sampling(steps, target, WISConfig(gamma=GAMMA))
    assert report.rows[0].estimates["wis"].value == pytest.approx(wis.value)
    # Every DM meets the same resamples: the same target gives the same replicates.
    assert report.rows[0].estimates["wis"].replicates == report.rows[1].estimates["wis"].replicates
    assert report.rows[0].estimates["fqe"].replicates == report.rows[1].estimates["fqe"].replicates
    # A wider interval at lower confidence would be wrong.
    narrower = evaluate_policies(steps, {"target": target}, replace(config, confidence=0.5, estimators=("wis",)))
    lower = narrower.rows[0].estimates["wis"]
    assert lower.high - lower.low < report.rows[0].estimates["wis"].high - report.rows[0].estimates["wis"].low


def test_ranking_and_report_files(tmp_path: Path) -> None:
    from convoplan.report import write_report

    steps, states = chain.sample(BEHAVIOUR, episodes=200, seed=5)
    good, bad = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])
    targets = {"bad": chain.probabilities(bad, states), "good": chain.probabilities(good, states)}
    config = OPEConfig(gamma=GAMMA, estimators=("wis",), refits=0, resamples=50)
    report = evaluate_policies(steps, targets, config, "chain")
    assert [row.name for row in report.ranked()] == ["good", "bad"]
    paths = write_report(report, tmp_path)
    ranking = json.loads(paths["json"].read_text())["ranking"]
    assert [r["dm"] for r in ranking] == ["good", "bad"] and ranking[0]["estimates"]["wis"]["ess"] > 0
    assert "| 1 | good |" in paths["md"].read_text() and paths["png"].stat().st_size > 1000


def test_importance_sampling_is_left_out_without_propensities() -> None:
    steps, states = chain.sample(BEHAVIOUR, episodes=50, seed=6)
    steps = replace(steps, propensity=torch.full_like(steps.propensity, float("nan")))
    config = OPEConfig(gamma=GAMMA, estimators=("fqe", "wis"), fqe=replace(FAST_FQE, steps=20), refits=0)
    report = evaluate_policies(steps, {"target": chain.probabilities(TARGET, states)}, config)
    assert set(report.rows[0].estimates) == {"fqe"} and "propensity" in report.skipped["wis"]
    assert "WIS left out" in report.markdown() and report.to_dict()["ranking"][0]["estimates"]["fqe"]["low"] is None


def test_a_target_for_other_steps_is_refused() -> None:
    steps, _ = chain.sample(BEHAVIOUR, episodes=10, seed=7)
    with pytest.raises(ValueError, match="probabilities for 3 steps"):
        evaluate_policies(steps, {"x": torch.ones(3, 2) / 2}, OPEConfig(estimators=("wis",)))
    with pytest.raises(ValueError, match="refits: must be >= 0, got -1"):
        OPEConfig(refits=-1)


def _bot(dm: object) -> Bot:
    world = animals_world()
    return Bot([], dm, world.fuser, world.lexicon, world.entity)  # type: ignore[arg-type]


def test_replaying_the_logging_dm_gives_back_its_logged_scores(animal_logs: list[Conversation]) -> None:
    """The heuristic DM logged these conversations (with exploration): replayed, it sees the same states, so it
    scores every logged candidate as it did then, and its greedy choice is the logged one wherever the loop did not
    explore."""
    dm = HeuristicDM()
    replayed: list[list[float]] = []
    logged: list[list[float]] = []
    for conversation in animal_logs:
        bot = _bot(dm)
        for state, candidates in bot.replay_steps(conversation.turns):
            replayed.append([float(s) for s in dm.score(state, candidates)])
            logged.append([float(c.score) for c in candidates])  # type: ignore[arg-type]
    assert len(replayed) == build_steps(animal_logs, FeatureSpace.fit(animal_logs)).steps > 20
    assert replayed == logged
    probabilities = dm_probabilities(animal_logs, lambda: _bot(dm))
    assert probabilities.shape[0] == len(replayed) and bool((probabilities.sum(dim=1) == 1).all())
    best = [max(range(len(row)), key=row.__getitem__) for row in logged]
    assert probabilities.argmax(dim=1).tolist() == best


def test_a_dm_that_states_its_probabilities_is_taken_at_its_word(animal_logs: list[Conversation]) -> None:
    probabilities = dm_probabilities(animal_logs[:3], lambda: _bot(RandomDM()))
    counts = (probabilities > 0).sum(dim=1)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(counts)))
    assert torch.allclose(probabilities.max(dim=1).values, 1.0 / counts)


TINY_DM = [
    arg for item in ["network.hidden=8", "network.head=16", "steps=4", "batch_size=2"] for arg in ("--set", item)
]
FAST = [
    arg
    for item in ["refits=2", "resamples=20", "fqe.steps=30", "dualdice.steps=30", "dualdice.average_last=0.5"]
    for arg in ("--set", item)
]


def test_ope_command_ranks_trained_built_in_and_replayed_dms(tmp_path: Path, animal_logs: list[Conversation]) -> None:
    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, animal_logs)
    supervised = tmp_path / "sup"
    trained = runner.invoke(
        app, ["dm", "train", str(logs), "--algorithm", "supervised", "--out", str(supervised), *TINY_DM]
    )
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "ope"
    dms = ["--dm", f"sup={supervised}", "--dm", "heuristic", "--dm", "random"]
    result = runner.invoke(app, ["ope", str(logs), *dms, "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["dm"] for r in report["ranking"]) == ["heuristic", "random", "sup"]
    assert all(set(r["estimates"]) == {"fqe", "dualdice", "wis"} for r in report["ranking"])
    heuristic = next(r for r in report["ranking"] if r["dm"] == "heuristic")
    assert heuristic["agreement"] > 0.6  # the logging DM, with 30% exploration
    assert "| rank | DM |" in (out / "report.md").read_text()

    # Live sessions have no raters: the ratings-based reward refuses in one line, the users' reactions work.
    unrated = copy.deepcopy(animal_logs)
    for conversation in unrated:
        for turn in conversation.turns:
            for candidate in turn.candidates:
                candidate.ratings = {}
    write_jsonl(logs, unrated)
    result = runner.invoke(app, ["ope", str(logs), "--dm", "random", "--encoder", str(supervised), "--out", str(out)])
    assert result.exit_code == 2 and "reward.source=reactions" in result.stderr
    reactions = ["--set", "reward.source=reactions", "--set", "estimators=fqe,wis"]
    result = runner.invoke(
        app, ["ope", str(logs), "--dm", "random", "--encoder", str(supervised), "--out", str(out), *FAST, *reactions]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["config"]["reward"]["source"] == "reactions"


def test_ope_command_refuses_bad_input_before_work(tmp_path: Path, animal_logs: list[Conversation]) -> None:
    logs = tmp_path / "logs.jsonl"
    write_jsonl(logs, animal_logs)
    out = ["--out", str(tmp_path / "ope")]
    result = runner.invoke(app, ["ope", str(logs), "--dm", "nonsense", *out])
    assert result.exit_code == 2 and "--dm 'nonsense'" in result.stderr
    result = runner.invoke(app, ["ope", str(logs), "--dm", "heuristic", *out])
    assert result.exit_code == 2 and "--encoder" in result.stderr
    result = runner.invoke(app, ["ope", str(logs), "--dm", "a=random", "--dm", "a=heuristic", *out])
    assert result.exit_code == 2 and "given twice" in result.stderr
    result = runner.invoke(app, ["ope", str(logs), "--dm", "random", "--encoder", str(tmp_path), *out])
    assert result.exit_code == 2 and "--encoder" in result.stderr
    assert not (tmp_path / "ope").exists()

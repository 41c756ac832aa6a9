"""docs/your-data.md end to end: a corpus of one's own, written here with the traits that tripped users (multi-act
agent turns, a label only in validation, a booking outcome), taken through the command line as a user would:
validate, map the acts, label, call-flow, next-best-action, LM training and evaluation, suggestions. Every output
exists and its figures are sane; progress shows in the (non-terminal) log."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.schema import Conversation, Outcome, Turn, read_jsonl, write_jsonl

runner = CliRunner()

TINY_LM = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.n_positions=128",
    "vocab_size=300",
    "epochs=2",
    "batch_size=4",
    "checkpoint_every=0",
    "device=cpu",
]


def booking(index: int, rng: random.Random, split: str) -> Conversation:
    """A restaurant booking: multi-act agent turns (meta.acts), converted when the table is booked."""
    people, day = rng.choice(["two", "four", "six"]), rng.choice(["Friday", "Saturday", "Sunday"])
    booked = rng.random() < 0.6

    def agent(text: str, *acts: str) -> Turn:
        return Turn(speaker="agent", text=text, meta={"acts": list(acts)})

    turns = [
        Turn(speaker="user", text=f"Hi, I need a table for {people}."),
        agent("Hello! Which day would you like?", "greet", "request_day"),
        Turn(speaker="user", text=f"{day}, please."),
        agent(f"We have a table on {day}. May I have your name?", "inform_availability", "request_name"),
        Turn(speaker="user", text=rng.choice(["Sam Lee.", "Ana Ruiz.", "Kim Park."])),
    ]
    if booked:
        turns.append(agent(f"Done: a table for {people} on {day}. Anything else?", "book", "request_more"))
        turns += [Turn(speaker="user", text="No, thanks."), agent("Enjoy your meal!", "goodbye")]
    else:
        turns.append(agent("Sorry, that table has just gone.", "inform_unavailable"))
        turns += [Turn(speaker="user", text="Too bad, bye."), agent("Goodbye.", "goodbye")]
    return Conversation(
        id=f"{split}-{index}",
        domain="restaurant",
        turns=turns,
        outcome=Outcome(converted=booked),
        meta={"split": split},
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    conversations = [booking(i, rng, "train") for i in range(30)]
    conversations += [booking(i, rng, "validation") for i in range(8)]
    conversations += [booking(i, rng, "test") for i in range(8)]
    conversations[30].turns[-1].meta["acts"] = ["apologise"]  # a label only in validation
    path = tmp_path_factory.mktemp("your-data") / "bookings.jsonl"
    write_jsonl(path, conversations)
    return path


def run(*arguments: str) -> str:
    result = runner.invoke(app, list(arguments))
    assert result.exit_code == 0, f"{arguments}: {result.output}"
    return result.stdout + result.stderr


def test_a_corpus_of_ones_own_from_conversion_to_suggestions(corpus: Path, tmp_path: Path) -> None:
    work = tmp_path
    mapped = work / "mapped.jsonl"
    assert "46 valid conversations" in run("data", "validate", str(corpus))
    run("data", "acts", str(corpus), "--out", str(mapped), "--priority", "book,inform_unavailable")
    actions = [t.action for c in read_jsonl(mapped) for t in c.turns if t.speaker == "agent"]
    assert None not in actions and {"book", "inform_unavailable", "goodbye"} <= set(actions)
    assert "request_more" not in actions  # book comes first in the priority list
    stats = json.loads(runner.invoke(app, ["data", "stats", str(mapped), "--json"]).stdout)
    assert stats["labelled_agent_messages"] == len(actions)

    labeller = work / "labeller"
    log = run("label", "train", str(mapped), "--out", str(labeller), "--set", "epochs=3", "--set", "hidden=16")
    assert "left out of validation, labels the train split never has: apologise (1)" in log
    assert "training the head: " in log  # a plain progress line: the log is not a terminal
    metrics = work / "label-metrics.json"
    run("label", "eval", str(labeller), str(mapped), "--json", str(metrics))
    assert 0.0 <= json.loads(metrics.read_text())["accuracy"] <= 1.0
    run("label", "apply", str(labeller), str(mapped), "--out", str(work / "labelled.jsonl"))
    assert len(read_jsonl(work / "labelled.jsonl")) == 46

    flow = work / "flow.json"
    run("callflow", "mine", str(mapped), "--out", str(flow), "--split", "train")
    run("callflow", "report", str(mapped), "--flow", str(flow), "--out", str(work / "callflow"), "--split", "test")
    assert (work / "callflow" / "report.png").stat().st_size > 0

    nba = work / "nba"
    run("nba", "train", str(mapped), "--out", str(nba), "--set", "epochs=3", "--set", "hidden=16")
    scores = json.loads(run("nba", "eval", str(nba), str(mapped), "--json").strip().splitlines()[-1])
    assert set(scores["systems"]) == {"supervised model", "majority action", "most frequent after the previous action"}
    assert all(0.0 <= s["top1"] <= s["top3"] <= 1.0 for s in scores["systems"].values())
    run("nba", "train", str(mapped), "--out", str(work / "nba-q"), "--kind", "outcome", "--set", "q.steps=5")

    lm, vanilla = work / "lm", work / "lm-vanilla"
    options = ["--from-scratch", *(part for item in TINY_LM for part in ("--set", item))]
    assert "training: " in run("lm", "train", str(mapped), "--out", str(lm), *options)
    run("lm", "train", str(mapped), "--out", str(vanilla), "--vanilla", *options)
    evaluation = work / "lm-eval"
    run(
        "lm", "eval", str(mapped), "--model", str(lm), "--vanilla-model", str(vanilla), "--labeller", str(labeller),
        "--nba", str(nba), "--out", str(evaluation), "--set", "sampling.max_new_tokens=8",
    )  # fmt: skip
    report = json.loads((evaluation / "report.json").read_text())
    systems = ["vanilla", "true action", "predicted action", "most frequent message", "nearest exemplar"]
    assert report["systems"] == systems
    for system in report["systems"]:
        overall = report["scores"][system]["all"]
        assert overall["messages"] > 0 and 0.0 <= overall["bleu"] <= 100.0 and math.isfinite(overall["bleu"])
    assert len((evaluation / "messages.jsonl").read_text().splitlines()) == overall["messages"]
    # The exemplar index beside the LM: the baselines read it, and suggestions can draw on it.
    assert "wrote " in run("lm", "index", str(mapped), "--model", str(lm))
    again = work / "lm-eval-index"
    # The restaurant's own knowledge: what every claim written is checked against (no model reads it here).
    knowledge = work / "kb.jsonl"
    knowledge.write_text(
        '{"id": "hours", "text": "We have a table on Friday, Saturday and Sunday.", "source": "the booking sheet"}\n'
        '{"id": "seats", "text": "A table seats two, four or six.", "source": "the booking sheet"}\n'
    )
    checked = run(
        "lm", "eval", str(mapped), "--model", str(lm), "--vanilla-model", str(vanilla), "--labeller", str(labeller),
        "--nba", str(nba), "--out", str(again), "--set", "sampling.max_new_tokens=8",
        "--exemplars", str(lm / "exemplars"), "--knowledge", str(knowledge),
    )  # fmt: skip
    assert "only checks claims" in checked
    rerun = json.loads((again / "report.json").read_text())
    assert rerun["scores"]["nearest exemplar"] == report["scores"]["nearest exemplar"]  # same index, built or loaded
    grounding = rerun["grounding"]["nearest exemplar"]["all"]  # logged messages: "We have a table on Friday. ..."
    assert grounding["claiming"] > 0 and 0.0 < grounding["supported_share"] <= 1.0

    shown = run("suggest", "--model", str(lm), "--labeller", str(labeller), "--nba", str(nba), "--conversation",
                str(mapped), "--turns", "3", "--n", "2", "--seed", "0")  # fmt: skip
    assert "action: " in shown and "1. (" in shown and "2. (" in shown

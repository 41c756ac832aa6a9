"""Preference pairs from the agents' choices (`convoplan.lm.preferences`, `convoplan lm pairs`): which turns give
which pairs, what is left out and counted, the file's round trip, and bad input named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.choices import answered
from convoplan.lm.preferences import build_pairs, read_pairs, write_pairs
from convoplan.schema import Candidate, Conversation, Event, FormatError, Turn, write_jsonl

runner = CliRunner()
SHOWN = [
    Candidate("Lions live in prides.", "fact", "lm"),
    Candidate("Lions sleep 20 hours.", "fact", "lm"),
    Candidate("Lions sleep 20 hours.", "fact", "exemplar"),  # the same text twice: one pair, one duplicate
    Candidate("Roar!", "sound", "lm"),
]


def logs() -> list[Conversation]:
    user = Turn("user", "tell me about lions")
    turns = [
        user,
        answered(Turn("agent", "Lions live in prides."), "r0", SHOWN, 0, 1, 1.0),  # taken: 1 pair (and a duplicate)
        user,
        answered(Turn("agent", "Lions live in prides of 30."), "r1", SHOWN, 0, 3, 1.0),  # edited: 2 pairs
        user,
        answered(Turn("agent", "Hello!", action="fact"), "r2", SHOWN, None, 5, 1.0),  # own: 2 pairs
        user,
        answered(Turn("agent", "Hello!"), "r3", SHOWN, None, 7, 1.0),  # own, no action: left out
        answered(Turn("agent", "Later."), "r4", SHOWN, 0, 7, 1.0),  # shown at 7, sent at 8: left out
        answered(Turn("agent", "Alone."), "r5", [], None, 9, 1.0),  # nothing shown: left out
        Turn("agent", "No choice at all."),
    ]
    event = Event("return_item", 2, {"name": "lion"})
    return [Conversation("c1", "animals", turns, events=[event, Event("return_item", 6, {})])]


def test_each_choice_gives_its_pairs_and_the_rest_is_counted() -> None:
    pairs, counts = build_pairs(logs())
    assert counts.choices == {"taken": 1, "edited": 2, "own": 3}
    assert counts.pairs == {"taken": 1, "edited": 2, "own": 2}
    assert counts.dropped == {
        "duplicate pair": 3,
        "no action (own words without one)": 1,
        "shown for an earlier point of the conversation": 1,
        "nothing shown": 1,
    }
    taken = [p for p in pairs if p.kind == "taken"]
    assert [(p.chosen, p.rejected) for p in taken] == [("Lions live in prides.", "Lions sleep 20 hours.")]
    edited = [p for p in pairs if p.kind == "edited"]
    assert {p.rejected for p in edited} == {"Lions live in prides.", "Lions sleep 20 hours."}
    assert all(p.chosen == "Lions live in prides of 30." and p.action == "fact" for p in edited)
    # The context is the conversation before the turn: its turns and the events up to it.
    assert len(edited[0].context.turns) == 3 and [e.position for e in edited[0].context.events] == [2]
    assert all(p.rejected != "Roar!" for p in pairs)  # another action's suggestion is never a rejected text
    assert len({p.id for p in pairs}) == len(pairs)


def test_pairs_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    pairs, _ = build_pairs(logs())
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, pairs) == len(pairs)
    assert read_pairs(path) == pairs
    lines = path.read_text().splitlines()
    bad = dict(json.loads(lines[1]), chosen="")
    path.write_text("\n".join([lines[0], json.dumps(bad), "{not json", lines[0], *lines[2:]]) + "\n")
    with pytest.raises(FormatError, match=r"pairs.jsonl:2: chosen: expected non-empty text"):
        read_pairs(path)
    skipped: list[str] = []
    kept = read_pairs(path, skip_invalid=True, on_skip=lambda line: skipped.append(str(line)))
    assert len(kept) == len(pairs) - 1
    assert [s.split(": ")[0].rsplit(":", 1)[1] for s in skipped] == ["2", "3", "4"]
    assert "duplicate id" in skipped[2] and "first on line 1" in skipped[2]


def test_the_cli_writes_pairs_and_exits_2_without_choices(tmp_path: Path) -> None:
    served = tmp_path / "served.jsonl"
    write_jsonl(served, logs())
    result = runner.invoke(app, ["lm", "pairs", str(served), "--out", str(tmp_path / "pairs.jsonl")])
    assert result.exit_code == 0, result.output
    assert "pairs: 5 (" in result.output and "duplicate pair 3" in result.output
    assert len(read_pairs(tmp_path / "pairs.jsonl")) == 5
    plain = tmp_path / "plain.jsonl"
    write_jsonl(plain, [Conversation("c2", "animals", [Turn("user", "hi"), Turn("agent", "hello")])])
    result = runner.invoke(app, ["lm", "pairs", str(plain), "--out", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "no agent turn records a choice" in result.output
    assert not (tmp_path / "none.jsonl").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(served.read_text() + '{"id": "c3", "domain": "animals", "turns": [{"speaker": "bot"}]}\n')
    result = runner.invoke(app, ["lm", "pairs", str(broken), "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "broken.jsonl:2: turns[0]" in result.output

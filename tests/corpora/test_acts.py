"""Multi-act messages mapped to one action: first act, priority, or combined."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.corpora.acts import map_acts
from convoplan.schema import Conversation, Turn, read_jsonl, write_jsonl


def corpus() -> list[Conversation]:
    def agent(*acts: str, action: str | None = None) -> Turn:
        return Turn(speaker="agent", text="ok", action=action, meta={"acts": list(acts)})

    turns = [
        Turn(speaker="user", text="hi", meta={"acts": ["greet"]}),  # the user's acts: not mapped
        agent("greet", "request"),
        Turn(speaker="user", text="a table for two"),
        agent("inform", "book"),
        agent("inform"),
        agent("greet", "inform", action="thank"),  # the corpus named the action: it stays
        Turn(speaker="agent", text="bye"),  # no acts: left alone
    ]
    return [Conversation(id="c", domain="restaurant", turns=turns)]


def actions(conversations: list[Conversation]) -> list[str | None]:
    return [t.action for t in conversations[0].turns if t.speaker == "agent"]


def test_the_three_rules() -> None:
    first, counts = map_acts(corpus(), "first")
    assert actions(first) == ["greet", "inform", "inform", "thank", None] and counts["inform"] == 2
    # priority: listed acts first; then the rarest (request 1 < greet 2, inform 3)
    assert actions(map_acts(corpus(), "priority", ["book"])[0]) == ["request", "book", "inform", "thank", None]
    assert actions(map_acts(corpus(), "priority", ["greet"])[0])[:2] == ["greet", "book"]
    combined, counts = map_acts(corpus(), "combined")
    assert actions(combined) == ["greet+request", "inform+book", "inform", "thank", None]
    assert len(counts) == 4


def test_bad_acts_are_one_line_errors(tmp_path: Path) -> None:
    bad = corpus()
    bad[0].turns[1].meta["acts"] = "greet"
    with pytest.raises(ValueError, match=r"c: turns\[1\]\.meta\.acts: expected a list of non-empty strings"):
        map_acts(bad, "first")
    path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(path, bad)
    result = CliRunner().invoke(app, ["data", "acts", str(path), "--out", str(out)])
    assert result.exit_code == 2 and "meta.acts" in result.stderr and not out.exists()


def test_the_command_writes_the_mapped_file(tmp_path: Path) -> None:
    path, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(path, corpus())
    result = CliRunner().invoke(app, ["data", "acts", str(path), "--out", str(out), "--priority", "book"])
    assert result.exit_code == 0, result.output
    assert actions(read_jsonl(out)) == ["request", "book", "inform", "thank", None]
    result = CliRunner().invoke(
        app, ["data", "acts", str(path), "--out", str(out), "--mode", "first", "--priority", "x"]
    )
    assert result.exit_code == 2 and "--priority applies to --mode priority only" in result.stderr

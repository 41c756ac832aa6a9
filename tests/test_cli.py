from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app

runner = CliRunner()


def line(conversation_id: str, speaker: str = "agent") -> str:
    return json.dumps(
        {
            "id": conversation_id,
            "domain": "d",
            "turns": [{"speaker": speaker, "text": "hi", "action": "greet"}],
        }
    )


def test_help_lists_every_verb() -> None:
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for verb in ("convert", "validate", "stats", "schema"):
        assert verb in result.output


def test_validate_bad_line_prints_one_line_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([line("a"), line("b", speaker="bot"), line("c")]) + "\n")
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {path}:2: turns[0].speaker: expected 'agent' or 'user', got 'bot'"

    result = runner.invoke(app, ["data", "validate", "--skip-invalid", str(path)])
    assert result.exit_code == 0
    assert f"skipped {path}:2: turns[0].speaker" in result.stderr
    assert "2 valid conversations" in result.stdout


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "nope.jsonl" in result.stderr


def test_stats_json(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(line("a") + "\n" + line("b", speaker="user") + "\n")
    result = runner.invoke(app, ["data", "stats", "--json", str(path)])
    assert result.exit_code == 0
    stats = json.loads(result.stdout)
    assert stats["conversations"] == 2 and stats["agent_messages"] == 1 and stats["actions"] == {"greet": 1}
    assert stats["labelled_share"] == 1.0 and stats["conversion_rate"] is None


def test_convert_then_stats_on_real_corpora(tmp_path: Path, persuasion_dir: Path, star_dir: Path) -> None:
    out = tmp_path / "p4g.jsonl"
    result = runner.invoke(
        app, ["data", "convert", "--corpus", "persuasion", "--src", str(persuasion_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(runner.invoke(app, ["data", "stats", "--json", str(out)]).stdout)
    assert (stats["conversations"], stats["labelled_agent_messages"], stats["converted"]) == (1017, 6017, 545)

    out = tmp_path / "star.jsonl"
    flows = tmp_path / "flows.json"
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            "--corpus",
            "star",
            "--src",
            str(star_dir),
            "--out",
            str(out),
            "--flows",
            str(flows),
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(runner.invoke(app, ["data", "stats", "--json", str(out)]).stdout)
    assert (stats["conversations"], stats["labelled_agent_messages"], stats["distinct_actions"]) == (
        6652,
        46640,
        163,
    )
    assert len(json.loads(flows.read_text())) == 24


def test_convert_bad_source_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "convert", "--corpus", "star", "--src", str(tmp_path), "--out", str(tmp_path / "x.jsonl")],
    )
    assert result.exit_code == 2 and "no dialogue files" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.bad_input("4 output paths checked before the work")
def test_every_output_is_checked_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad --out fails in one line (exit 2) when the command line is read: no data read, nothing trained."""
    data = tmp_path / "data.jsonl"
    data.write_text(line("a") + "\n")
    a_file, a_folder = tmp_path / "taken.txt", tmp_path / "folder"
    a_file.write_text("x")
    a_folder.mkdir()
    cases = [
        (["label", "train", str(data), "--out", str(a_file)], f"--out {a_file}: is a file; give a folder"),
        (["nba", "train", str(data), "--out", str(a_file)], f"--out {a_file}: is a file; give a folder"),
        (["lm", "train", str(data), "--out", str(a_file)], f"--out {a_file}: is a file; give a folder"),
        (["dm", "train", str(data), "--out", str(a_file)], f"--out {a_file}: is a file; give a folder"),
        (["label", "apply", str(a_folder), str(data), "--out", str(a_folder)], f"--out {a_folder}: is a folder"),
        (["world", "simulate", "--out", str(a_folder)], f"--out {a_folder}: is a folder; give a file path"),
        (
            ["world", "simulate", "--out", str(a_file / "logs.jsonl")],
            f"--out {a_file / 'logs.jsonl'}: {a_file} is a file, not a folder",
        ),
        (
            ["data", "convert", "--corpus", "star", "--src", str(a_folder), "--out", str(a_file / "x" / "y.jsonl")],
            f"{a_file} is a file, not a folder",
        ),
    ]
    for command, message in cases:
        result = runner.invoke(app, command)
        assert result.exit_code == 2, command
        assert result.stderr.startswith("error: ") and message in result.stderr, command
        assert len(result.stderr.strip().splitlines()) == 1, command
    monkeypatch.setattr("os.access", lambda path, mode: False)  # a read-only folder (root could write anyway)
    result = runner.invoke(app, ["world", "simulate", "--out", str(tmp_path / "new" / "logs.jsonl")])
    assert result.exit_code == 2 and f"cannot write in {tmp_path} (permission denied)" in result.stderr


@pytest.mark.parametrize(
    ("verb", "arguments"),
    [
        ("dm pipeline", []),
        ("dm train", ["logs.jsonl", "--out", "out"]),
        ("label train", ["data.jsonl", "--out", "out"]),
        ("nba train", ["data.jsonl", "--out", "out"]),
        ("lm train", ["data.jsonl", "--out", "out"]),
        ("suggest", ["--model", "lm", "--conversation", "data.jsonl"]),
        ("serve", ["--artifacts", "artifacts"]),
    ],
)
def test_the_set_example_of_each_command_names_one_of_its_own_fields(
    verb: str, arguments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shown = " ".join(runner.invoke(app, [*verb.split(), "--help"], env={"COLUMNS": "300"}).output.split())
    example = shown.split("e.g. --set ", 1)[1].split()[0]
    result = runner.invoke(app, [*verb.split(), *arguments, "--set", example, "--show-config"])
    assert result.exit_code == 0, result.output
    field, value = example.split("=")
    assert field in result.output and value in result.output


def test_help_shows_square_brackets_rather_than_taking_them_for_markup() -> None:
    shown = runner.invoke(app, ["label", "apply", "--help"], env={"COLUMNS": "300"}).output
    assert "convoplan[ray]" in shown
    shown = runner.invoke(app, ["label", "train", "--help"], env={"COLUMNS": "300"}).output
    assert "[default: $CONVOPLAN_EMBEDDING_CACHE" in shown


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_a_trainer_refuses_an_out_folder_holding_another_kind_of_model(tmp_path: Path) -> None:
    from convoplan.actions.labeller import FORMAT as LABELLER
    from convoplan.checkpoint import write_folder
    from convoplan.dm.checkpoint import FORMAT as DM

    data = tmp_path / "data.jsonl"
    data.write_text(line("a") + "\n")
    labeller = write_folder(tmp_path / "labeller", LABELLER, {"labels": ["greet"]})
    dm = write_folder(tmp_path / "dm", DM, {})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    for command, out, holds in [
        (["dm", "train", str(data)], labeller, "labeller (convoplan-labeller/1); the DM would replace it"),
        (["label", "train", str(data)], dm, "dm (convoplan-dm/1); the labeller would replace it"),
        (["lm", "train", str(data)], labeller, "labeller (convoplan-labeller/1); the language model would"),
        (["nba", "train", str(data)], tmp_path / "mine", "exists and is not a next-action model folder"),
    ]:
        before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
        result = runner.invoke(app, [*command, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: --out {out} ") and holds in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before

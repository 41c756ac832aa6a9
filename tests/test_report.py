"""write_report: the three files and the extra ones, JSON that round-trips, and a report that fails to render
(a NaN in its numbers, a chart that raises, a bad extra name) leaves the folder as it was."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from convoplan.report import figure_png, write_report

PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class FakeReport:
    title: str
    numbers: dict[str, Any]
    chart: bytes | None = PNG + b"fake"
    """None: drawing the chart raises."""

    def markdown(self) -> str:
        return f"# {self.title}\n"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "numbers": self.numbers}

    def png(self) -> bytes:
        if self.chart is None:
            raise RuntimeError("no chart")
        return self.chart


def contents(folder: Path) -> dict[str, bytes]:
    """Every file in the folder (temp files included) by name."""
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_writes_markdown_json_png_and_extra_files(tmp_path: Path) -> None:
    report = FakeReport("fake", {"n": 3, "p": 0.25, "none": None, "text": "é"})
    paths = write_report(report, tmp_path / "out", extra={"messages.jsonl": '{"id": "é"}\n'})
    folder = tmp_path / "out"
    assert paths == {
        "md": folder / "report.md",
        "json": folder / "report.json",
        "png": folder / "report.png",
        "messages.jsonl": folder / "messages.jsonl",
    }
    assert sorted(contents(folder)) == ["messages.jsonl", "report.json", "report.md", "report.png"]
    assert paths["md"].read_text() == "# fake\n"
    assert json.loads(paths["json"].read_text()) == report.to_dict()
    assert paths["png"].read_bytes() == PNG + b"fake"
    assert paths["messages.jsonl"].read_text(encoding="utf-8") == '{"id": "é"}\n'


@pytest.mark.parametrize(
    "broken",
    [FakeReport("nan", {"p": math.nan}), FakeReport("infinite", {"p": math.inf}), FakeReport("no chart", {}, None)],
    ids=["nan", "infinity", "chart raises"],
)
def test_a_report_that_fails_to_render_leaves_the_folder_as_it_was(broken: FakeReport, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    write_report(FakeReport("good", {"p": 0.5}), folder)
    before = contents(folder)
    with pytest.raises((ValueError, RuntimeError)):
        write_report(broken, folder, extra={"messages.jsonl": "{}\n"})
    assert contents(folder) == before
    with pytest.raises((ValueError, RuntimeError)):
        write_report(broken, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("name", ["report.md", "report.png", "sub/messages.jsonl"])
def test_an_extra_file_must_be_a_plain_name_of_its_own(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_report(FakeReport("good", {}), tmp_path / "out", extra={name: "text"})
    assert not (tmp_path / "out").exists()


def test_figure_png_draws_a_figure() -> None:
    figure = Figure(figsize=(2.0, 1.0))
    figure.add_subplot().plot([0, 1], [1, 0])
    assert figure_png(figure, dpi=50).startswith(PNG)

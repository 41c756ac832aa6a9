"""One way to write a report: its markdown, its numbers as JSON and its chart, side by side in a folder.

A report (`Report`) renders itself three ways; `write_report` writes report.md, report.json and report.png (plus
any extra text files the caller names), and `figure_png` turns a matplotlib figure into the PNG bytes of a chart.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from convoplan.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Report", "figure_png", "write_report"]


class Report(Protocol):
    """A result that renders as markdown, a JSON-ready dict and a PNG chart."""

    def markdown(self) -> str: ...

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready: NaN and infinities as None."""
        ...

    def png(self) -> bytes: ...


def write_report(report: Report, folder: str | Path, extra: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write report.md, report.json and report.png into `folder`, and each `extra` file name -> its text beside
    them; return the paths by kind ("md", "json", "png", then the extra file names).

    Everything is rendered before the first file is written, so a report that fails to render (a NaN left in
    `to_dict` raises ValueError) leaves the folder as it was. Then each file is replaced atomically, one after the
    other: a crash between two leaves new files beside old ones, never a half-written one.
    """
    folder = Path(folder)
    contents = {
        "md": report.markdown().encode(),
        "json": (json.dumps(report.to_dict(), indent=1, allow_nan=False) + "\n").encode(),
        "png": report.png(),
    }
    paths = {kind: folder / f"report.{kind}" for kind in contents}
    for name, text in (extra or {}).items():
        if Path(name).name != name or name in {path.name for path in paths.values()}:
            raise ValueError(f"extra file {name!r}: expected a plain file name other than the report's own")
        contents[name] = text.encode()
        paths[name] = folder / name
    for kind, data in contents.items():
        atomic_write_bytes(paths[kind], data)
    return paths


def figure_png(figure: Figure, dpi: int) -> bytes:
    """The figure as PNG bytes, drawn by Agg (no GUI backend, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()

"""One progress shape for every long job, shown as bars on a terminal and as plain lines in a log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from convoplan.embed import SentenceEmbedder
from convoplan.progress import ProgressDisplay, Update, renamed


def log_console() -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=False, width=200), stream


def test_a_log_gets_plain_lines_with_rate_and_time_left() -> None:
    console, stream = log_console()
    with ProgressDisplay(console, every=0.0) as progress:
        for step in range(1, 4):
            progress(Update("training saql", step, 10, "steps", {"loss": 0.5 / step}))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("training saql: 1/10 steps (10%)") and lines[0].endswith("loss 0.5")
    assert "steps/s" in lines[2] and "left" in lines[2]


def test_lines_are_throttled_but_the_first_and_last_always_print() -> None:
    console, stream = log_console()
    with ProgressDisplay(console, every=3600.0) as progress:
        for done in range(1, 101):
            progress(Update("embedding", done, 100, "texts"))
        progress(Update("simulating heuristic", 1, None, "conversations"))
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["embedding", "embedding", "simulating heuristic"]
    assert lines[1].startswith("embedding: 100/100 texts (100%)") and "left" not in lines[1]
    assert lines[2].startswith("simulating heuristic: 1 conversations")


def test_a_terminal_gets_bars_not_lines() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    with ProgressDisplay(console, every=0.0) as progress:
        progress(Update("training", 5, 10, "steps", {"loss": 1.0}))
    assert "training: 5/10 steps" not in stream.getvalue()  # the plain line never prints on a terminal


def test_renamed_names_the_task() -> None:
    seen: list[Update] = []
    named = renamed(seen.append, "training e2e")
    assert named is not None and renamed(None, "x") is None
    named(Update("training", 1, 2))
    assert seen == [Update("training e2e", 1, 2)]
    # A second task of the same job (the validation pass of a training run) keeps its own name: renamed to the
    # job's name too, its count (1 of 163 blocks) would read as the training's steps going back.
    named(Update("validating", 1, 163))
    named(Update("training", 2, 2))
    assert seen[1:] == [Update("training e2e (validating)", 1, 163), Update("training e2e", 2, 2)]


class CountingModel:
    """Stands in for the sentence encoder: zero vectors, and how many texts each call got."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str], **_: object) -> list[list[float]]:
        self.calls.append(len(texts))
        return [[1.0] + [0.0] * 383 for _ in texts]


def test_long_embeddings_report_progress_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Update] = []
    model = CountingModel()
    monkeypatch.setattr("convoplan.embed.CHUNK", 4)
    monkeypatch.setattr("convoplan.embed.SHOWN_FROM", 5)
    embedder = SentenceEmbedder(model=model, progress=seen.append)
    vectors = embedder.embed([f"text {i}" for i in range(10)] + ["text 0"])
    assert vectors.shape == (11, 384) and model.calls == [4, 4, 2]
    assert [(u.task, u.done, u.total) for u in seen] == [("embedding", n, 10) for n in (4, 8, 10)]
    embedder.embed(["one new text", "and another"])  # under SHOWN_FROM: a bot turn's, no line in a log
    assert model.calls[-1] == 2 and len(seen) == 3


def test_big_numbers_read_without_an_exponent() -> None:
    line = ProgressDisplay.line(Update("reading", 6652, 6652, "files", {"tokens/s": 44960.2}), 2.0, 6652)
    assert line == "reading: 6652/6652 files (100%), 3,326 files/s, tokens/s 44,960"


def test_a_task_that_starts_again_is_shown_as_a_new_pass() -> None:
    console, stream = log_console()
    with ProgressDisplay(console, every=3600.0) as progress:
        for _epoch in range(2):  # a validation pass after every epoch: the count goes back to the start
            for done in range(1, 51):
                progress(Update("validating", done, 50, "blocks"))
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["validating: 1/50 blocks", "validating: 50/50 blocks"] * 2
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    with ProgressDisplay(console, every=0.0) as progress:  # on a terminal, the same bar starts again
        progress(Update("validating", 50, 50, "blocks"))
        progress(Update("validating", 1, 50, "blocks"))
        assert progress._bars is not None and len(progress._bars.tasks) == 1
        assert progress._bars.tasks[0].completed == 1

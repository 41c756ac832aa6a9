"""One shape for the progress of every long job, and one way to show it.

A job (training, embedding, simulation, evaluation) takes `progress: Progress | None` and calls it with an
`Update` now and then: what it is doing, how far it is, and any numbers worth watching (the loss). It never prints.
The command line shows the updates with `ProgressDisplay`: a bar per task on a terminal, and where stderr is not a
terminal (`> log 2>&1`, CI, nohup, a job scheduler) a plain line per task every few seconds, with the rate and the
time left, so that a log shows a long job moving. A task that starts again (its count goes back: a validation pass
after every epoch) is shown as a new pass of the same task, its rate and time left counted afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

__all__ = ["Progress", "ProgressDisplay", "Update", "renamed"]


@dataclass(frozen=True)
class Update:
    """How far one task of a job is."""

    task: str
    """What is being done: "training", "embedding", "simulating heuristic"..."""
    done: int
    """Units done so far."""
    total: int | None = None
    """Units in all (None: not known in advance)."""
    unit: str = "steps"
    """What is counted: steps, epochs, texts, conversations..."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Numbers worth watching, shown beside the count: {"loss": 0.41}."""


Progress = Callable[[Update], None]


def renamed(progress: Progress | None, task: str) -> Progress | None:
    """`progress` with the job's task named `task` (a pipeline names the DM a generic loop trains). The first task
    the job reports is the job's own; any other keeps its name after `task` ("training the LM (validating)"), so
    that two tasks of one job never read as one whose count jumps back and forth."""
    if progress is None:
        return None
    target = progress
    first: list[str] = []

    def report(update: Update) -> None:
        first[:] = first or [update.task]
        target(replace(update, task=task if update.task == first[0] else f"{task} ({update.task})"))

    return report


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _number(value: float) -> str:
    """4 significant digits, but never an exponent for a big number: 0.4127, 35.2, 44,960."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _metrics(update: Update) -> str:
    return ", ".join(f"{name} {_number(value)}" for name, value in update.metrics.items())


@dataclass
class _Task:
    started: float
    first_done: int
    last_line: float = float("-inf")
    bar: TaskID | None = None
    done: int = 0


class ProgressDisplay:
    """Shows the updates of one command: rich bars on a terminal, plain lines otherwise (see the module docstring).

    Use as a context manager around the job, and pass the display itself as the job's `progress`:

        with ProgressDisplay() as progress:
            train(..., progress=progress)
    """

    def __init__(self, console: Console | None = None, every: float = 5.0) -> None:
        self.console = console or Console(stderr=True)
        """Where updates go (stderr by default); other lines printed through it while bars show stay above them."""
        self.every = every
        """Seconds between two plain lines of one task (the first and the last update always print)."""
        self.tasks: dict[str, _Task] = {}
        self._bars: Bars | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bars = Bars(*columns, console=self.console, transient=True)
            self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def __call__(self, update: Update) -> None:
        now = time.monotonic()
        task = self.tasks.get(update.task)
        if task is None or update.done < task.done:  # new, or a new pass of a repeated task
            bar = task.bar if task is not None else None
            task = self.tasks[update.task] = _Task(now, update.done, bar=bar)
            if bar is not None and self._bars is not None:
                self._bars.reset(bar, total=update.total)
        task.done = update.done
        if self._bars is not None:
            if task.bar is None:
                task.bar = self._bars.add_task(update.task, total=update.total)
            numbers = _metrics(update)
            description = f"{update.task} ({numbers})" if numbers else update.task
            self._bars.update(task.bar, completed=update.done, total=update.total, description=description)
            return
        finished = update.total is not None and update.done >= update.total
        if now - task.last_line < self.every and not finished:
            return
        task.last_line = now
        line = self.line(update, now - task.started, update.done - task.first_done)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def line(update: Update, seconds: float, progressed: int) -> str:
        """One plain progress line: "training saql: 120/500 steps (24%), 35.2 steps/s, 0:00:11 left, loss 0.12"."""
        parts = [f"{update.done}/{update.total}" if update.total is not None else f"{update.done}"]
        parts[0] += f" {update.unit}"
        if update.total:
            parts[0] += f" ({update.done / update.total:.0%})"
        rate = progressed / seconds if seconds > 0 else 0.0
        if rate > 0:
            parts.append(f"{_number(rate)} {update.unit}/s")
            if update.total is not None and update.done < update.total:
                parts.append(f"{_duration((update.total - update.done) / rate)} left")
        numbers = _metrics(update)
        return f"{update.task}: {', '.join(parts)}" + (f", {numbers}" if numbers else "")

"""What every convoplan command shares: output, errors, progress, loading files, options, worlds and DMs."""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from convoplan.atomic import StorageError, storage_errno
from convoplan.compose.loop import STOP, DialogueManager
from convoplan.progress import Progress, ProgressDisplay
from convoplan.report import Report, write_report
from convoplan.schema import (
    Conversation,
    FormatError,
    InvalidLine,
    read_jsonl,
)

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder
    from convoplan.sim.run import SimulationConfig, World

ConfigT = TypeVar("ConfigT")
_T = TypeVar("_T")


console = Console()
errors = Console(stderr=True)


def say(message: str, *, to: Console = console) -> None:
    """Print a plain line, never wrapped, so that paths and errors stay on one line for scripts."""
    to.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit non-zero."""
    say(f"error: {message}", to=errors)
    raise typer.Exit(code)


def storage_message(error: BaseException, code: int) -> str:
    """The one line of a write the storage refused (`convoplan.atomic.storage_errno`): what was being written, why,
    and, for an atomic write, that what the target held before is left as it was."""
    reason = os.strerror(code)
    reason = reason[:1].lower() + reason[1:]
    filename = error.filename if isinstance(error, OSError) else None
    if isinstance(error, StorageError):
        return f"writing {filename}: {reason} (what it held before is left as it was)"
    return f"writing {filename}: {reason}" if filename else f"a write failed: {reason}"


class Commands(TyperGroup):
    """The `convoplan` command group. A write the storage refuses (no space left on device, over quota, read-only)
    ends any command in one line naming what was being written, exit 1, instead of a traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click.Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except Exception as error:
            code = storage_errno(error)
            if code is None:
                raise
            fail(storage_message(error, code), code=1)


def progress_display() -> ProgressDisplay:
    """The progress of a long job on stderr: bars on a terminal, a plain line per task every few seconds otherwise
    (a log file, CI, nohup). Pass it as the job's `progress` inside its `with` block."""
    return ProgressDisplay(errors)


def _check_output(option: str, path: Path, folder: bool) -> None:
    """Fail in one line, before any work, when `path` cannot be written as a file (or a folder)."""
    if path.exists() and path.is_dir() != folder:
        kind = "a folder; give a file path" if path.is_dir() else "a file; give a folder"
        fail(f"{option} {path}: is {kind}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):  # the write lands as a rename in this folder (or one below)
        fail(f"{option} {path}: cannot write in {ancestor} (permission denied)")


def output_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Typer callback of an option naming a file to write: checked when the command line is read."""
    if value is not None:
        _check_output(param.opts[0], value, folder=False)
    return value


def output_folder(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Typer callback of an option naming a folder to write: checked when the command line is read."""
    if value is not None:
        _check_output(param.opts[0], value, folder=True)
    return value


def model_folder(module: str, what: str) -> Callable[[typer.CallbackParam, Path | None], Path | None]:
    """Typer callback of a trainer's --out: `output_folder`'s checks, then a folder that holds anything but a model
    of `module`'s FORMAT (another kind of model, other files) is refused in one line before any training
    (`convoplan.checkpoint.check_replaceable`). `module` is imported when the command runs, not for --help."""

    def check(param: typer.CallbackParam, value: Path | None) -> Path | None:
        import importlib

        from convoplan.checkpoint import check_replaceable

        if value is not None:
            _check_output(param.opts[0], value, folder=True)
            try:
                check_replaceable(value, importlib.import_module(module).FORMAT, what)
            except ValueError as error:
                fail(f"{param.opts[0]} {error}")
        return value

    return check


EmbeddingCache = Annotated[
    Path | None,
    typer.Option(
        help="Sentence-embedding cache folder, shared by every command that embeds \\[default: "
        "$CONVOPLAN_EMBEDDING_CACHE, else ~/.cache/convoplan/embeddings].",
        callback=output_folder,
        show_default=False,
    ),
]


def embedder(cache: Path | None, progress: Progress | None = None) -> SentenceEmbedder:
    """The sentence embedder of a command: its disk cache (--embedding-cache, else the default one), its progress."""
    from convoplan.embed import SentenceEmbedder, default_cache_dir

    return SentenceEmbedder(cache_dir=cache or default_cache_dir(), progress=progress)


def load(path: Path, skip_invalid: bool) -> list[Conversation]:
    """Read a canonical file for a command: a bad line exits 2, or with `skip_invalid` is listed on stderr."""
    return read_records(path, skip_invalid, read_jsonl, "conversations")


def read_records(path: Path, skip_invalid: bool, read: Callable[..., list[_T]], what: str) -> list[_T]:
    """Read a JSON Lines file for a command with `read` (`read_jsonl`, `read_pairs`, ...: path, skip_invalid=,
    on_skip=): a bad line exits 2, or with `skip_invalid` is listed on stderr with a count of `what` loaded."""
    skipped: list[InvalidLine] = []
    try:
        records = read(path, skip_invalid=skip_invalid, on_skip=skipped.append)
    except (FormatError, OSError, UnicodeDecodeError) as error:
        fail(str(error))
    for line in skipped:
        say(f"skipped {line}", to=errors)
    if skipped:
        say(f"{len(skipped)} invalid line(s) skipped, {len(records)} {what} loaded", to=errors)
    return records


FileArg = Annotated[Path, typer.Argument(help="A canonical conversations file (.jsonl).", show_default=False)]
SkipInvalid = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Skip invalid lines (each is listed on stderr) instead of stopping."),
]


DmOption = Annotated[
    str,
    typer.Option(
        "--dm",
        help="Dialogue manager: random, heuristic, greedy, a trained DM folder, or 'pkg.module:Factory'.",
    ),
]


SimulatorOption = Annotated[
    str | None,
    typer.Option(
        help="The simulated users: a population the world names (animals: default, scholars) or a simulator class "
        "by import path 'pkg.module:Class', called as Class(rng)."
    ),
]
RaterOption = Annotated[str | None, typer.Option(help="A rater class by import path, called as Class(name, rng).")]


_DM_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def named_dm(spec: str) -> tuple[str, str]:
    """(name, DM spec) of a --dm/--arm/--control value: 'name=SPEC' names it, otherwise the spec is its name."""
    name, sep, rest = spec.partition("=")
    if sep and _DM_NAME.fullmatch(name) and rest:
        return name, rest
    return spec, spec


def resolve_dm(
    spec: str, world: World, rng: random.Random, sentences: SentenceEmbedder | None = None
) -> DialogueManager:
    """A DM of `world` from the --dm option (see convoplan.sim.arms); a bad one exits 2."""
    from convoplan.sim.arms import load_arm

    try:
        return load_arm(spec, world, rng, sentences)
    except (ValueError, ImportError) as error:
        fail(f"--dm {error}")


def build_world(simulator: str | None, rater: str | None) -> World:
    """The animals world, with a user simulator and rater plugged in by import path where given; a bad one exits 2."""
    from convoplan.sim.arms import load_world

    try:
        return load_world(simulator=simulator, rater=rater)
    except ValueError as error:
        fail(f"--simulator/--rater {error}")


def simulate_with_progress(
    world: World, dm: DialogueManager, config: SimulationConfig, name: str
) -> tuple[list[Conversation], float]:
    """Simulate under a progress bar; return the conversations and the seconds it took."""
    from convoplan.sim.run import simulate

    start = time.perf_counter()
    with progress_display() as progress:
        logs = list(simulate(world, dm, config, name, progress=progress))
    return logs, time.perf_counter() - start


def print_summary(conversations: Sequence[Conversation], title: str, seconds: float | None = None) -> None:
    from convoplan.sim.metrics import METRICS, metric_values

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean per conversation", justify="right")
    for metric in METRICS:
        values = metric_values(conversations, metric)
        table.add_row(metric.replace("_", " "), f"{values.mean():.2f}" if len(values) else "n/a")
    ended = Counter(str(c.meta.get("ended_by")) for c in conversations)
    table.add_row("ended by", ", ".join(f"{k} {v}" for k, v in sorted(ended.items())))
    if seconds is not None:
        table.add_row("simulation speed", f"{len(conversations) / seconds:.0f} conversations/s")
    console.print(table)


def print_conversation(conversation: Conversation) -> None:
    """The conversation as the user saw it: user messages and fused bot responses."""
    console.print(f"[bold]{conversation.id}[/bold] ({conversation.meta.get('dm')})")
    for turn in conversation.turns:
        if turn.speaker == "user":
            say(f"  user: {turn.text}")
        elif turn.action == STOP:
            say(f"  bot:  {turn.text}")


def show_report(report: Report, out: Path, extra: Mapping[str, str] | None = None) -> None:
    """Print the report's tables (rendered in a terminal, as markdown otherwise) and write report.md/json/png and
    the `extra` files beside them."""
    from rich.markdown import Markdown

    text = report.markdown()
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        sys.stdout.write(text)
    paths = write_report(report, out, extra)
    say(f"wrote {', '.join(str(path) for path in paths.values())}", to=errors)


def set_option(example: str) -> Any:
    """The --set option of a command whose config has the field of `example` (each command names its own)."""
    return typer.Option("--set", help=f"Override a config field, e.g. --set {example} (every field: --show-config).")


ShowConfig = Annotated[
    bool, typer.Option(help="Print every config field, its value, valid range and meaning, and exit.")
]


def from_options(build: Callable[[], ConfigT]) -> ConfigT:
    """A config built from a command's options (`lambda: SuggestConfig(n=n)`): a value outside its field's range
    exits 2 in one line naming the field, before any work."""
    try:
        return build()
    except ValueError as error:
        fail(str(error))


def configured(config: ConfigT, overrides: list[str] | None, show: bool) -> ConfigT:
    """Apply --set overrides (exit 2 on a bad one, a value out of its field's range included); with --show-config
    print the fields and exit."""
    from convoplan.configs import apply_overrides, describe

    try:
        config = apply_overrides(config, overrides or [])
    except ValueError as error:
        fail(str(error))
    if show:
        table = Table(title=type(config).__name__)
        table.add_column("field", no_wrap=True)  # whole, as --set takes it
        table.add_column("value")
        table.add_column("range", no_wrap=True)
        table.add_column("meaning")
        for row in describe(config):
            table.add_row(*row)
        # Piped or in a file no terminal sets the width: wide enough that a meaning reads on one line.
        (console if console.is_terminal else Console(width=200)).print(table)
        raise typer.Exit(0)
    return config

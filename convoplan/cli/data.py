"""`convoplan data`: convert, validate and describe canonical conversation files."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from convoplan.cli.common import (
    FileArg,
    SkipInvalid,
    console,
    errors,
    fail,
    load,
    output_file,
    progress_display,
    say,
)
from convoplan.schema import (
    Conversation,
    FormatError,
    dumps_schema,
    write_call_flows,
    write_jsonl,
)

data_app = typer.Typer(
    help="Convert, validate and describe canonical conversation files (JSON Lines).", no_args_is_help=True
)


class CorpusName(StrEnum):
    persuasion = "persuasion"
    star = "star"


@data_app.command("convert")
def data_convert(
    corpus: Annotated[CorpusName, typer.Option(help="Which corpus reader to use.")],
    src: Annotated[Path, typer.Option(help="The corpus release folder as published (docs/corpora.md).")],
    out: Annotated[Path, typer.Option(help="Where to write the canonical JSON Lines file.", callback=output_file)],
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split (by conversation id).")] = 0,
    flows: Annotated[
        Path | None,
        typer.Option(help="STAR only: also write the task call-flow graphs to this JSON file.", callback=output_file),
    ] = None,
) -> None:
    """Read a real corpus and write it in the canonical format, with seeded splits in meta.split."""
    from convoplan.corpora import read_persuasion, read_star, read_star_flows

    if not src.is_dir():
        fail(f"{src}: no such folder")
    try:
        if corpus is CorpusName.persuasion:
            if flows is not None:
                fail("--flows applies to --corpus star only")
            with errors.status("reading PersuasionForGood"):
                conversations = read_persuasion(src, seed=seed)
        else:
            with progress_display() as progress:
                conversations = read_star(src, seed=seed, progress=progress)
            if flows is not None:
                graphs = read_star_flows(src)
                write_call_flows(flows, graphs)
                say(f"wrote {len(graphs)} call-flow graphs to {flows}", to=errors)
    except FormatError as error:
        fail(str(error))
    count = write_jsonl(out, conversations)
    say(f"wrote {count} conversations to {out}")


@data_app.command("validate")
def data_validate(path: FileArg, skip_invalid: SkipInvalid = False) -> None:
    """Check every line against the canonical schema. Exit 2 with a one-line error at the first bad line."""
    conversations = load(path, skip_invalid)
    say(f"{path}: {len(conversations)} valid conversations")


@data_app.command("stats")
def data_stats(
    path: FileArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as one JSON object.")] = False,
    top: Annotated[int, typer.Option(help="How many actions the histogram shows.")] = 20,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Conversations, turns, agent messages, labelled share, action histogram and outcome rate of a file."""
    from convoplan.corpora.stats import corpus_stats

    stats = corpus_stats(load(path, skip_invalid))
    if as_json:
        sys.stdout.write(json.dumps(stats.as_dict(), indent=2) + "\n")
        return
    table = Table(title=str(path), show_header=False)
    rate = stats.conversion_rate
    for name, value in [
        ("conversations", f"{stats.conversations:,}"),
        ("turns", f"{stats.turns:,}"),
        ("agent messages", f"{stats.agent_messages:,}"),
        ("user messages", f"{stats.user_messages:,}"),
        ("labelled agent messages", f"{stats.labelled_agent_messages:,} ({stats.labelled_share:.1%})"),
        ("distinct actions", f"{len(stats.actions):,}"),
        ("with outcome", f"{stats.with_outcome:,}"),
        (
            "converted",
            f"{stats.converted:,}" + (f" ({rate:.1%} of those with an outcome)" if rate is not None else ""),
        ),
        ("splits", ", ".join(f"{name} {count:,}" for name, count in stats.splits.items())),
    ]:
        table.add_row(name, value)
    console.print(table)
    if stats.actions:
        histogram = Table(title=f"top {min(top, len(stats.actions))} actions")
        histogram.add_column("action")
        histogram.add_column("count", justify="right")
        histogram.add_column("")
        largest = max(stats.actions.values())
        for action, count in list(stats.actions.items())[:top]:
            histogram.add_row(action, f"{count:,}", "█" * max(1, round(30 * count / largest)))
        console.print(histogram)


class ActRule(StrEnum):
    first = "first"
    priority = "priority"
    combined = "combined"


@data_app.command("acts")
def data_acts(
    path: FileArg,
    out: Annotated[Path, typer.Option(help="Where to write the mapped conversations (.jsonl).", callback=output_file)],
    mode: Annotated[
        ActRule, typer.Option(help="first act; the act first in --priority (else the rarest); all acts joined by +.")
    ] = ActRule.priority,
    priority: Annotated[
        str, typer.Option(help="Acts by importance, comma-separated (priority mode), e.g. book,inform,request.")
    ] = "",
    skip_invalid: SkipInvalid = False,
) -> None:
    """Give every agent message that performs several acts (its meta.acts, a list a converter writes) the one
    action the format allows, by the --mode rule (docs/your-data.md compares them); messages that already have an
    action keep it."""
    from convoplan.corpora.acts import map_acts

    listed = [act.strip() for act in priority.split(",") if act.strip()]
    if listed and mode is not ActRule.priority:
        fail("--priority applies to --mode priority only")
    try:
        mapped, chosen = map_acts(load(path, skip_invalid), mode.value, listed)
    except ValueError as error:
        fail(f"{path}: {error}")
    write_jsonl(out, mapped)
    say(f"wrote {len(mapped)} conversations to {out}: {sum(chosen.values()):,} agent actions, {len(chosen)} distinct")


@data_app.command("export")
def data_export(
    db: Annotated[str, typer.Option(help="A conversation store's URL (convoplan serve --db).")],
    out: Annotated[Path, typer.Option(help="Where to write the canonical JSON Lines file.", callback=output_file)],
    mode: Annotated[str | None, typer.Option(help="Only 'bot' or 'assist' sessions (default: both).")] = None,
) -> None:
    """Export the stored sessions of a live server as canonical conversations (arm and user in meta), ready for
    training and `convoplan experiment report`."""
    if mode not in (None, "bot", "assist"):
        fail(f"--mode {mode!r}: expected bot or assist")
    conversations = stored_conversations(db, mode)
    write_jsonl(out, conversations)
    say(f"wrote {len(conversations)} stored sessions to {out}")


def stored_conversations(url: str, mode: str | None = None) -> list[Conversation]:
    """Every stored session of a conversation store (of one mode), as canonical conversations; exit 2 if the
    store cannot be read."""
    from convoplan.serve.store import Store

    try:
        store = Store(url)
        conversations = list(store.conversations(mode=mode))
    except Exception as error:  # SQLAlchemy's errors are many; any means the store cannot be read
        fail(f"--db {url}: {str(error).splitlines()[0]}")
    store.close()
    return conversations


@data_app.command("schema")
def data_schema() -> None:
    """Print the JSON Schema of one canonical line (the source of docs/conversation.schema.json)."""
    sys.stdout.write(dumps_schema())

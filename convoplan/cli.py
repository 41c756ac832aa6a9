"""The `convoplan` command line: one verb group per capability (`convoplan --help`)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from convoplan.compose.loop import STOP, DialogueManager
from convoplan.imports import import_object
from convoplan.schema import (
    Candidate,
    Conversation,
    FormatError,
    InvalidLine,
    dumps_schema,
    read_jsonl,
    write_call_flows,
    write_jsonl,
)

if TYPE_CHECKING:
    from convoplan.sim.experiment import ABReport
    from convoplan.sim.run import SimulationConfig, World

ConfigT = TypeVar("ConfigT")

app = typer.Typer(
    help="convoplan: learn from logged conversations which action to take next and how to say it.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(
    help="Convert, validate and describe canonical conversation files (JSON Lines).", no_args_is_help=True
)
app.add_typer(data_app, name="data")
world_app = typer.Typer(help="The built-in animals world: simulate rated conversations.", no_args_is_help=True)
app.add_typer(world_app, name="world")

console = Console()
errors = Console(stderr=True)


def say(message: str, *, to: Console = console) -> None:
    """Print a plain line, never wrapped, so that paths and errors stay on one line for scripts."""
    to.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit non-zero."""
    say(f"error: {message}", to=errors)
    raise typer.Exit(code)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )


def load(path: Path, skip_invalid: bool) -> list[Conversation]:
    """Read a canonical file for a command: a bad line exits 2, or with `skip_invalid` is listed on stderr."""
    skipped: list[InvalidLine] = []
    try:
        conversations = read_jsonl(path, skip_invalid=skip_invalid, on_skip=skipped.append)
    except (FormatError, OSError, UnicodeDecodeError) as error:
        fail(str(error))
    for line in skipped:
        say(f"skipped {line}", to=errors)
    if skipped:
        say(f"{len(skipped)} invalid line(s) skipped, {len(conversations)} conversations loaded", to=errors)
    return conversations


FileArg = Annotated[Path, typer.Argument(help="A canonical conversations file (.jsonl).", show_default=False)]
SkipInvalid = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Skip invalid lines (each is listed on stderr) instead of stopping."),
]


class CorpusName(StrEnum):
    persuasion = "persuasion"
    star = "star"


@data_app.command("convert")
def data_convert(
    corpus: Annotated[CorpusName, typer.Option(help="Which corpus reader to use.")],
    src: Annotated[Path, typer.Option(help="The corpus release folder, e.g. ../shared/data/star.")],
    out: Annotated[Path, typer.Option(help="Where to write the canonical JSON Lines file.")],
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split (by conversation id).")] = 0,
    flows: Annotated[
        Path | None, typer.Option(help="STAR only: also write the task call-flow graphs to this JSON file.")
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
            with progress_bar() as bar:
                task = bar.add_task("reading STAR dialogues", total=None)
                conversations = read_star(
                    src, seed=seed, progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
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


@data_app.command("schema")
def data_schema() -> None:
    """Print the JSON Schema of one canonical line (the source of docs/conversation.schema.json)."""
    sys.stdout.write(dumps_schema())


# --- the animals world ----------------------------------------------------------------------------------------

DmOption = Annotated[
    str,
    typer.Option(
        "--dm",
        help="Dialogue manager: random, heuristic, greedy, a trained DM folder, or 'pkg.module:Factory'.",
    ),
]


SimulatorOption = Annotated[
    str | None, typer.Option(help="A user simulator class by import path 'pkg.module:Class', called as Class(rng).")
]
RaterOption = Annotated[str | None, typer.Option(help="A rater class by import path, called as Class(name, rng).")]


def resolve_dm(spec: str, rng: random.Random) -> DialogueManager:
    """A DM from the --dm option (see convoplan.sim.arms); a bad one exits 2."""
    from convoplan.sim.arms import load_arm

    try:
        return load_arm(spec, rng)
    except ValueError as error:
        fail(f"--dm {error}")


def build_world(simulator: str | None, rater: str | None) -> World:
    """The animals world, with a user simulator and rater plugged in by import path where given."""
    from convoplan.worlds.animals import animals_world

    plugged = {}
    for option, spec in (("--simulator", simulator), ("--rater", rater)):
        if spec is not None:
            try:
                plugged[option] = import_object(spec)
            except ValueError as error:
                fail(f"{option} {error}")
            if not callable(plugged[option]):
                fail(f"{option} {spec!r} is not callable")
    return animals_world(new_user=plugged.get("--simulator"), new_rater=plugged.get("--rater"))  # type: ignore[arg-type]


def simulate_with_progress(
    world: World, dm: DialogueManager, config: SimulationConfig, name: str
) -> tuple[list[Conversation], float]:
    """Simulate under a progress bar; return the conversations and the seconds it took."""
    from convoplan.sim.run import simulate

    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"simulating ({name} DM)", total=config.conversations)
        logs = list(simulate(world, dm, config, name, progress=lambda done: bar.update(task, completed=done)))
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


@world_app.command("simulate")
def world_simulate(
    out: Annotated[Path, typer.Option(help="Where to write the rated logs (canonical JSONL).")],
    dm: DmOption = "heuristic",
    conversations: Annotated[int, typer.Option(min=1, help="How many conversations to simulate.")] = 100,
    raters: Annotated[int, typer.Option(min=0, help="Raters per conversation; each rates every candidate.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the run; the same seed gives the same file byte for byte.")] = 0,
    max_turns: Annotated[int, typer.Option(min=1, help="Bot responses after which a conversation is cut off.")] = 30,
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Exploration: chance that a step picks uniformly at random.")
    ] = 0.0,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
) -> None:
    """Simulate users talking with the bot, every candidate rated; write canonical logs and print a summary."""
    from convoplan.compose.loop import ComposerConfig
    from convoplan.sim.run import SimulationConfig

    world = build_world(simulator, rater)
    composer = ComposerConfig(epsilon=epsilon)
    config = SimulationConfig(
        conversations=conversations, raters=raters, seed=seed, max_turns=max_turns, composer=composer
    )
    logs, seconds = simulate_with_progress(world, resolve_dm(dm, random.Random(f"{seed}:dm")), config, dm)
    write_jsonl(out, logs)
    say(f"wrote {len(logs)} conversations to {out}")
    print_summary(logs, f"{dm}: {len(logs)} simulated conversations", seconds)


@app.command("chat")
def chat(
    dm: DmOption = "heuristic",
    explain: Annotated[bool, typer.Option(help="Show the focus, every candidate and its score at each step.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the bot's random choices.")] = 0,
) -> None:
    """Talk with the animals bot in the terminal (type 'quit' or press Ctrl-D to leave)."""
    from convoplan.compose.loop import Bot, DialogueState

    world = build_world(None, None)
    rng = random.Random(seed)

    def show_step(state: DialogueState, candidates: list[Candidate]) -> None:
        table = Table(title=f"step {len(state.chosen)}  focus: {state.focus or '-'}", title_justify="left")
        for column in ("score", "act", "provider", "candidate"):
            table.add_column(column, justify="right" if column == "score" else "left")
        for candidate in sorted(candidates, key=lambda c: -(c.score or 0.0)):
            table.add_row(f"{candidate.score:.2f}", candidate.action or "", candidate.provider or "", candidate.text)
        console.print(table)

    bot = Bot(
        world.providers(rng),
        resolve_dm(dm, rng),
        world.fuser,
        world.lexicon,
        world.entity,
        rng=rng,
        on_step=show_step if explain else None,
    )
    say("Ask me about animals: lions, penguins, sharks... ('quit' to leave)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if text.lower() in ("quit", "exit"):
            break
        if not text:
            continue
        heard = bot.hear(text)
        if explain:
            say(f"(nlu: focus={heard.focus} answer={heard.answer} feedback={heard.feedback} request={heard.request})")
        response = bot.respond()
        say(f"bot> {response.text}")
        if response.ends_conversation:
            break


@app.command("demo")
def demo(
    conversations: Annotated[int, typer.Option(min=2, help="Conversations to simulate per DM.")] = 300,
    out: Annotated[Path, typer.Option(help="Folder for the logs.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
) -> None:
    """The main job on the built-in world: simulate rated conversations with the heuristic and the greedy DM, and
    compare them (the greedy one wins on the raters' immediate score, the planner on engagement)."""
    from convoplan.sim.metrics import METRICS, compare
    from convoplan.sim.run import SimulationConfig

    world = build_world(None, None)
    logs: dict[str, list[Conversation]] = {}
    for name in ("heuristic", "greedy"):
        config = SimulationConfig(conversations=conversations, seed=seed)
        logs[name], seconds = simulate_with_progress(world, resolve_dm(name, random.Random(seed)), config, name)
        write_jsonl(out / f"{name}.jsonl", logs[name])
        print_summary(logs[name], f"{name} DM", seconds)
    table = Table(title="greedy against the heuristic (control): relative change, bootstrap 95% CI")
    for column in ("metric", "heuristic", "greedy", "change", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in METRICS:
        c = compare(logs["heuristic"], logs["greedy"], metric, resamples=1000, seed=seed)
        table.add_row(
            metric.replace("_", " "),
            f"{c.control_mean:.2f}",
            f"{c.arm_mean:.2f}",
            f"{c.relative_change:+.1%}",
            f"[{c.low:+.1%}, {c.high:+.1%}]",
        )
    console.print(table)
    longest = max(logs["heuristic"][:50], key=lambda c: len(c.turns))
    print_conversation(longest)
    say(f"logs in {out}/ (inspect with: convoplan data stats {out}/heuristic.jsonl)")


# --- A/B experiments --------------------------------------------------------------------------------------------

experiment_app = typer.Typer(
    help="A/B experiments: dialogue managers against a control on the same users (the RL paper's Table 3).",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")

_ARM_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def arm_name(spec: str) -> tuple[str, str]:
    """(name, DM spec) of an --arm/--control value: 'name=SPEC' names it, otherwise the spec is its name."""
    name, sep, rest = spec.partition("=")
    if sep and _ARM_NAME.fullmatch(name) and rest:
        return name, rest
    return spec, spec


def log_file(folder: Path, name: str) -> Path:
    """Where an arm's logs go: its name, with characters unsafe in a file name (/, :) replaced by '_'."""
    return folder / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', name).lstrip('.') or 'arm'}.jsonl"


def show_report(report: ABReport, out: Path) -> None:
    """Print the report's tables (rendered in a terminal, as markdown otherwise) and write report.md/json/png."""
    from rich.markdown import Markdown

    text = report.markdown()
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        sys.stdout.write(text)
    paths = report.write(out)
    say(f"wrote {', '.join(str(path) for path in paths.values())}", to=errors)


@experiment_app.command("ab")
def experiment_ab(
    control: Annotated[
        str,
        typer.Option(help="The control DM: random, heuristic, greedy, a DM folder, 'pkg.module:Factory'; name=SPEC."),
    ],
    arm: Annotated[list[str], typer.Option(help="A DM to compare with the control (as --control); repeat it.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json, report.png and <arm>.jsonl logs.")],
    users: Annotated[int, typer.Option(min=2, help="Simulated users per arm (the same users meet every arm).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the users, raters and bootstrap.")] = 0,
    raters: Annotated[int, typer.Option(min=0, help="Raters per conversation, for the mean rating.")] = 3,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 2000,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
) -> None:
    """Simulate the same users with the control and every arm; print and write the A/B report and the logs."""
    from convoplan.sim.arms import load_arm
    from convoplan.sim.experiment import ab_report, run_ab

    named = [arm_name(spec) for spec in [control, *arm]]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            fail(f"arm {name!r} is given twice; name arms apart with name=SPEC")
    files = [log_file(out, name) for name in names]
    if len(set(files)) < len(files):
        fail("two arm names give the same log file name; name arms apart with name=SPEC")
    dms: dict[str, DialogueManager] = {}
    for (name, spec), option in zip(named, ["--control", *["--arm"] * len(arm)], strict=True):
        try:
            dms[name] = load_arm(spec, random.Random(f"{seed}:dm"))
        except (ValueError, ImportError) as error:
            fail(f"{option} {error}")
    world = build_world(simulator, rater)
    with progress_bar() as bar:
        tasks = {name: bar.add_task(f"simulating {name}", total=users) for name in names}
        logs = run_ab(
            world,
            dms,
            names[0],
            users,
            seed,
            progress=lambda name, done: bar.update(tasks[name], completed=done),
            raters=raters,
        )
    for name, path in zip(names, files, strict=True):
        write_jsonl(path, logs[name])
    say(f"wrote the logs of {len(logs)} arms to {out}/", to=errors)
    show_report(ab_report(logs, names[0], resamples=resamples, seed=seed), out)


@experiment_app.command("report")
def experiment_report(
    logs: Annotated[list[Path], typer.Option(help="An arm's canonical logs (.jsonl), named by its stem; repeat it.")],
    control: Annotated[str, typer.Option(help="The control arm: the stem of one of the --logs files.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and report.png.")],
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 2000,
    skip_invalid: SkipInvalid = False,
) -> None:
    """The A/B report of existing logs (simulated, or stored sessions of a live experiment)."""
    from convoplan.sim.experiment import ab_report

    stems = [path.stem for path in logs]
    if len(set(stems)) < len(stems):
        fail("two --logs files have the same stem; arms are named by it")
    if control not in stems:
        fail(f"--control {control!r} is not the stem of a --logs file ({', '.join(stems)})")
    if len(stems) < 2:
        fail("give the control's logs and at least one arm's")
    arms = {path.stem: load(path, skip_invalid) for path in logs}
    try:
        report = ab_report(arms, control, resamples=resamples, seed=seed)
    except ValueError as error:
        fail(str(error))
    show_report(report, out)


# --- dialogue managers ------------------------------------------------------------------------------------------

dm_app = typer.Typer(help="Train dialogue managers on rated logs: supervised, SAQL, CAQL, CQL.", no_args_is_help=True)
app.add_typer(dm_app, name="dm")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set q.gamma=0.95 (see --show-config)."),
]
ShowConfig = Annotated[bool, typer.Option(help="Print every config field, its value and meaning, and exit.")]


def configured(config: ConfigT, overrides: list[str] | None, show: bool) -> ConfigT:
    """Apply --set overrides (exit 2 on a bad one); with --show-config print the fields and exit."""
    from convoplan.configs import apply_overrides, describe

    try:
        config = apply_overrides(config, overrides or [])
    except ValueError as error:
        fail(str(error))
    if show:
        table = Table(title=type(config).__name__)
        for column in ("field", "value", "meaning"):
            table.add_column(column)
        for row in describe(config):
            table.add_row(*row)
        console.print(table)
        raise typer.Exit(0)
    return config


def training_bar(bar: Progress) -> Callable[[str, int, int, float], None]:
    """A progress callback (name, step, total, loss) that keeps one bar per DM being trained."""
    tasks: dict[str, TaskID] = {}

    def update(name: str, step: int, total: int, loss: float) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(f"training {name}", total=total)
        bar.update(tasks[name], completed=step, description=f"training {name} (loss {loss:.3f})")

    return update


@dm_app.command("pipeline")
def dm_pipeline(
    out: Annotated[Path, typer.Option(help="Folder for the logs and the trained DMs.")] = Path("runs/dm"),
    conversations: Annotated[int, typer.Option(min=2, help="Simulated conversations per collection round.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the whole pipeline.")] = 0,
    overrides: SetOption = None,
    show_config: ShowConfig = False,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
) -> None:
    """Collect logs with a first DM, train the supervised RNN DM, collect its logs, train the RL DMs on them."""
    from convoplan.dm.pipeline import PipelineConfig, run_pipeline

    config = configured(PipelineConfig(conversations=conversations, seed=seed), overrides, show_config)
    world = build_world(simulator, rater)
    with progress_bar() as bar:
        try:
            checkpoints = run_pipeline(
                world, out, config, report=lambda m: say(m, to=errors), progress=training_bar(bar)
            )
        except ValueError as error:
            fail(str(error))
    for name, folder in checkpoints.items():
        say(f"{name}: {folder}")


class Algorithm(StrEnum):
    supervised = "supervised"
    saql = "saql"
    caql = "caql"


@dm_app.command("train")
def dm_train(
    logs: Annotated[Path, typer.Argument(help="Rated logs (canonical JSONL with candidates and ratings).")],
    out: Annotated[Path, typer.Option(help="Folder for the trained DM.")],
    algorithm: Annotated[Algorithm, typer.Option(help="What to train.")] = Algorithm.saql,
    init: Annotated[Path | None, typer.Option(help="Warm-start from this trained DM (same feature space).")] = None,
    behaviour: Annotated[
        Path | None, typer.Option(help="The supervised DM used as CQL behaviour policy (with --set cql_alpha=...).")
    ] = None,
    overrides: SetOption = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train one DM on rated logs and write it as a checkpoint folder (config.json + model.safetensors).

    Runs unchanged under `torchrun --nproc_per_node N -m convoplan.cli dm train ...` (gloo, DDP): each process
    trains on its share of every batch, and the averaged gradient equals the single-process one.
    """
    from convoplan.dm.checkpoint import load_network, save_policy
    from convoplan.dm.train import QConfig, SupervisedConfig, prepare, train_q, train_supervised
    from convoplan.embed import SentenceEmbedder

    config: SupervisedConfig | QConfig = (
        SupervisedConfig() if algorithm is Algorithm.supervised else QConfig(algorithm=algorithm.value)  # type: ignore[arg-type]
    )
    config = configured(config, overrides, show_config)
    conversations = load(logs, skip_invalid)
    try:
        warm = load_network(init) if init is not None else None
        guide = load_network(behaviour)[0] if behaviour is not None else None
        embedder = SentenceEmbedder(cache_dir=out.parent / "embeddings")
        with errors.status("embedding the logs"):
            data = prepare(conversations, embedder, warm[1] if warm is not None else None)
        with progress_bar() as bar:
            update = training_bar(bar)
            track = lambda step, loss: update(algorithm.value, step, config.steps, loss)  # noqa: E731
            if isinstance(config, SupervisedConfig):
                result = train_supervised(data, config, track)
            else:
                result = train_q(data, config, supervised=guide, init=warm[0] if warm else None, progress=track)
    except ValueError as error:
        fail(str(error))
    training = {
        "config": dataclasses.asdict(config),
        "logs": str(logs),
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
        "transitions_per_second": result.transitions_per_second,
    }
    save_policy(out, algorithm.value, result.network, config.network, data.table.space, training)
    say(
        f"trained {algorithm.value} on {data.table.steps} steps of {len(conversations)} conversations: "
        f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, {result.transitions_per_second:.0f} transitions/s; "
        f"wrote {out}"
    )


if __name__ == "__main__":
    app()

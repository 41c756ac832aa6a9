"""`convoplan experiment`: A/B tests of dialogue managers on simulated users, or reports from stored logs."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated, cast

import typer

from convoplan.cli.common import (
    EmbeddingCache,
    FileArg,
    RaterOption,
    ShowConfig,
    SimulatorOption,
    SkipInvalid,
    build_world,
    configured,
    embedder,
    errors,
    fail,
    load,
    named_dm,
    output_folder,
    progress_display,
    say,
    set_option,
    show_report,
)
from convoplan.compose.loop import DialogueManager
from convoplan.report import Report
from convoplan.schema import Conversation, write_jsonl
from convoplan.sim.protocols import AgentFactory

experiment_app = typer.Typer(
    help="A/B experiments: dialogue managers against a control on the same users (the RL paper's Table 3).",
    no_args_is_help=True,
)


def log_file(folder: Path, name: str) -> Path:
    """Where an arm's logs go: its name, with characters unsafe in a file name (/, :) replaced by '_'."""
    return folder / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', name).lstrip('.') or 'arm'}.jsonl"


@experiment_app.command("ab")
def experiment_ab(
    control: Annotated[
        str,
        typer.Option(help="The control DM: random, heuristic, greedy, a DM folder, 'pkg.module:Factory'; name=SPEC."),
    ],
    arm: Annotated[list[str], typer.Option(help="A DM to compare with the control (as --control); repeat it.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for report.md, report.json, report.png and <arm>.jsonl logs.", callback=output_folder
        ),
    ],
    users: Annotated[int, typer.Option(min=2, help="Simulated users per arm (the same users meet every arm).")] = 300,
    seed: Annotated[
        int,
        typer.Option(
            min=0,  # as SimulationConfig.seed
            help="Seed of the users (drawn for evaluation: never the users of a collection run), raters and bootstrap.",
        ),
    ] = 0,
    raters: Annotated[int, typer.Option(min=0, help="Raters per conversation, for the mean rating.")] = 3,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 2000,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Simulate the same users with the control and every arm; print and write the A/B report and the logs."""
    from convoplan.sim.arms import load_arm
    from convoplan.sim.experiment import ab_report, run_ab

    named = [named_dm(spec) for spec in [control, *arm]]
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            fail(f"arm {name!r} is given twice; name arms apart with name=SPEC")
    files = [log_file(out, name) for name in names]
    if len(set(files)) < len(files):
        fail("two arm names give the same log file name; name arms apart with name=SPEC")
    world = build_world(simulator, rater)
    sentences = embedder(embedding_cache)
    dms: dict[str, DialogueManager] = {}
    for (name, spec), option in zip(named, ["--control", *["--arm"] * len(arm)], strict=True):
        try:
            dms[name] = load_arm(spec, world, random.Random(f"{seed}:dm"), sentences)
        except (ValueError, ImportError) as error:
            fail(f"{option} {error}")
    with progress_display() as progress:
        logs = run_ab(world, dms, names[0], users, seed, progress=progress, raters=raters)
    for name, path in zip(names, files, strict=True):
        write_jsonl(path, logs[name])
    say(f"wrote the logs of {len(logs)} arms to {out}/", to=errors)
    show_report(ab_report(logs, names[0], resamples=resamples, seed=seed), out)


AGENTS = "thorough or terse (the animals world), log (any corpus: agents who mean the logged message)"


def simulated_agents(spec: str) -> AgentFactory:
    """The simulated agents of --agents: a built-in population, `log`, or a class by import path."""
    from convoplan.imports import import_object
    from convoplan.sim.assist import LogAgent
    from convoplan.worlds.animals.agents import POPULATIONS, agent_population

    if spec in POPULATIONS:
        return agent_population(spec)
    if spec == "log":
        return LogAgent
    try:
        return cast(AgentFactory, import_object(spec))
    except (ImportError, ValueError) as error:
        fail(f"--agents {spec!r}: expected {AGENTS}, or 'pkg.module:Class' ({error})")


@experiment_app.command("assist-loop")
def experiment_assist_loop(
    data: FileArg,
    model: Annotated[Path, typer.Option(help="The LM folder the loop starts from (`convoplan lm train`).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for each round's model, choices and pairs, the evaluation's replays and its report.",
            callback=output_folder,
        ),
    ],
    agents: Annotated[
        str, typer.Option(help=f"The simulated agents: {AGENTS}, or 'pkg.module:Class' called as Class(rng).")
    ] = "thorough",
    knowledge: Annotated[
        Path | None,
        typer.Option(help="The knowledge file the model reads and every suggestion is checked against."),
    ] = None,
    overrides: Annotated[list[str] | None, set_option("rounds=2 --set dpo.lr=1e-4")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Learn from simulated agents' choices in rounds (suggestions shown -> the agents take, edit or write their
    own -> preference pairs -> DPO -> the new model), then measure every round's model on test conversations with
    agents no round met: the agent-assist report with each model against the first, paired (docs/lm.md, "Simulated
    agents, and the loop measured"). Example:

        convoplan experiment assist-loop runs/animals.jsonl --model runs/lm-animals --knowledge runs/animals-kb.jsonl \
            --agents terse --set rounds=2 --out runs/assist-loop
    """
    import json

    from convoplan.lm.grounding import grounding_config
    from convoplan.lm.model import read_info
    from convoplan.sim.assist_loop import AssistLoopConfig, assist_loop, rounds_json

    config = configured(AssistLoopConfig(), overrides, show_config)
    try:
        info = read_info(model)
    except ValueError as error:
        fail(f"--model {error}")
    new_agent = simulated_agents(agents)
    conversations = load(data, skip_invalid)
    index = None
    if knowledge is not None:
        from convoplan.cli.lm import knowledge_index

        index = knowledge_index(knowledge, grounding_config(info).method, skip_invalid)
    with progress_display() as progress:
        try:
            rounds, report = assist_loop(
                conversations, model, new_agent, out, config, knowledge=index, progress=progress
            )
        except ValueError as error:
            fail(str(error))
    for r in rounds:
        seen = r.seen
        say(
            f"round {r.round}: agents took {seen.taken:.1%} of {seen.messages} messages unedited; {r.pairs_built} "
            f"pairs, {r.pairs_kept} kept; DPO loss {r.losses[0]:.3f} -> {r.losses[1]:.3f}; wrote {r.model}",
            to=errors,
        )
    show_report(report, out, {"rounds.json": json.dumps(rounds_json(rounds), indent=1, allow_nan=False) + "\n"})


@experiment_app.command("report")
def experiment_report(
    control: Annotated[str, typer.Option(help="The control arm: a --logs file's stem, or an arm stored in --db.")],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, report.json and report.png.", callback=output_folder)
    ],
    logs: Annotated[
        list[Path] | None, typer.Option(help="An arm's canonical logs (.jsonl), named by its stem; repeat it.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="A conversation store's URL (convoplan serve --db): its bot sessions, by stored arm."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 2000,
    assist: Annotated[
        bool,
        typer.Option(
            "--assist",
            help="Report agent assist instead of the bot: how agents used each arm's suggestions (share sent "
            "unedited, edit distance, time to send), from assist sessions (--db) or simulated runs (--logs).",
        ),
    ] = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """The A/B report of existing logs: simulated ones (--logs), or the stored sessions of a live experiment (--db),
    with the same Table-3 metrics and bootstrap intervals as `experiment ab`. With --assist, the agent-assist
    report: per arm (serve.json assist_arms) the share of agent messages sent as a suggestion was, edited or written
    anew, the edit distance and the time to send, each arm against the control with a bootstrap interval (paired
    where the arms hold the same conversations). Example:

        convoplan experiment report --assist --db sqlite:///runs/serve.db --control base --out runs/assist-ab
    """
    from convoplan.sim.experiment import ab_report

    if (logs is None) == (db is None):
        fail("give either --logs files or a --db URL")
    if db is not None:
        arms = stored_arms(db, "assist" if assist else "bot")
        source = f"--db {db}"
    else:
        assert logs is not None
        stems = [path.stem for path in logs]
        if len(set(stems)) < len(stems):
            fail("two --logs files have the same stem; arms are named by it")
        arms = {path.stem: load(path, skip_invalid) for path in logs}
        source = "--logs"
    if control not in arms:
        fail(f"--control {control!r} is not an arm of {source} ({', '.join(arms) or 'none'})")
    if len(arms) < 2:
        fail(f"{source} holds one arm; the report needs the control and at least one other")
    report: Report
    try:
        if assist:
            from convoplan.sim.assist import assist_report

            if not any("choice" in t.meta for runs in arms.values() for c in runs for t in c.turns):
                fail(f"{source}: no agent turn records a choice (meta.choice): nothing to report")
            report = assist_report(arms, control, resamples=resamples, seed=seed)
        else:
            report = ab_report(arms, control, resamples=resamples, seed=seed)
    except ValueError as error:
        fail(str(error))
    show_report(report, out)


def stored_arms(url: str, mode: str = "bot") -> dict[str, list[Conversation]]:
    """The sessions of one mode ("bot" or "assist") of a conversation store, grouped by their stored arm."""
    from convoplan.cli.data import stored_conversations

    conversations = stored_conversations(url, mode)
    arms: dict[str, list[Conversation]] = {}
    for conversation in conversations:
        arms.setdefault(str(conversation.meta["arm"]), []).append(conversation)
    say(f"read {len(conversations)} {mode} sessions from {url}: {', '.join(map(str, arms))}", to=errors)
    return arms

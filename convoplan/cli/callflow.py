"""`convoplan callflow`: mine a call-flow from converted conversations, score conversations against a flow (a mined
sequence or STAR's task graphs), and report whether following it goes with conversion."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convoplan.cli.common import FileArg, SkipInvalid, errors, fail, load, output_file, output_folder, say
from convoplan.schema import CallFlow, Conversation, FormatError

if TYPE_CHECKING:
    from convoplan.actions.callflow import NodeMap, PathBounds, ScoreResult

__all__ = ["callflow_app"]

callflow_app = typer.Typer(
    help="Call-flows: mine the medoid action sequence of converted conversations, score each conversation's edit "
    "distance to a flow (a mined sequence or the closest path of a flow graph), and report distances of converted "
    "against not converted conversations (Mann-Whitney U, histogram).",
    no_args_is_help=True,
)


class NodeChoice(StrEnum):
    auto = "auto"
    star = "star"
    labels = "labels"


FlowOption = Annotated[
    Path,
    typer.Option(
        "--flow",
        help="Call-flows JSON (from `callflow mine`, or STAR's graphs from `data convert --flows`). A file with one "
        "flow scores every conversation against it; with several, each conversation uses the flow named by its "
        "meta.<task-key>.",
        show_default=False,
    ),
]
NodesOption = Annotated[
    NodeChoice,
    typer.Option(
        "--nodes",
        help="How flow nodes map to action labels: 'star' drops STAR's branch pseudo-nodes (query, yes, no, "
        "available, ...) and renames the two departure-place nodes to the wizards' label; 'labels' takes every node "
        "as a label; 'auto' picks 'star' when a flow has a STAR pseudo-node.",
    ),
]
KeepRepeats = Annotated[
    bool,
    typer.Option(
        "--keep-repeats",
        help="Keep immediate repeats of an action (default: a run of one action counts as one step).",
    ),
]
TaskKey = Annotated[str, typer.Option(help="The meta field that names a conversation's task (STAR: task).")]
Splits = Annotated[
    list[str] | None,
    typer.Option("--split", help="Only conversations of this meta.split (repeat for several; default: all)."),
]
MaxVisits = Annotated[int, typer.Option(min=1, help="Graph paths: how often one node may occur on a path (loops).")]
MaxLength = Annotated[int, typer.Option(min=1, help="Graph paths: the longest path, in actions.")]
MaxPaths = Annotated[int, typer.Option(min=1, help="Graph paths: stop after this many distinct action sequences.")]


def _nodes(flow: CallFlow) -> set[str]:
    return {flow.start, *flow.edges, *(target for targets in flow.edges.values() for target in targets)}


def _load_flows(path: Path) -> dict[str, CallFlow]:
    from convoplan.schema import read_call_flows

    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        flows = read_call_flows(path)
    except (FormatError, OSError) as error:
        fail(str(error))
    if not flows:
        fail(f"{path}: holds no call-flows")
    for name, flow in flows.items():
        targets = {target for following in flow.edges.values() for target in following}
        # A one-step chain has no edges; any other flow must start at one of its nodes.
        if flow.edges and flow.start not in set(flow.edges) | targets:
            fail(f"{path}: {name}.start: {flow.start!r} is not a node of the flow")
    return flows


def _node_map(choice: NodeChoice, flows: dict[str, CallFlow]) -> NodeMap:
    from convoplan.actions.callflow import LABEL_NODES, STAR_NODES

    if choice is NodeChoice.auto:
        named = set().union(*(_nodes(flow) for flow in flows.values()))
        choice = NodeChoice.star if named & STAR_NODES.pseudo else NodeChoice.labels
        say(f"--nodes auto: using '{choice}'", to=errors)
    return STAR_NODES if choice is NodeChoice.star else LABEL_NODES


def _select(conversations: list[Conversation], splits: list[str] | None, path: Path) -> list[Conversation]:
    if not splits:
        return conversations
    chosen = [c for c in conversations if c.meta.get("split") in splits]
    if not chosen:
        fail(f"{path}: no conversation has meta.split in {', '.join(splits)}")
    return chosen


def _score(
    path: Path,
    conversations: list[Conversation],
    flow_path: Path,
    flows: dict[str, CallFlow],
    nodes: NodeMap,
    bounds: PathBounds,
    keep_repeats: bool,
    task_key: str,
) -> ScoreResult:
    """Score, tell stderr what was skipped, and exit 2 when nothing could be scored."""
    from convoplan.actions.callflow import score_conversations

    result = score_conversations(
        conversations, flows, nodes=nodes, bounds=bounds, collapse_repeats=not keep_repeats, task_key=task_key
    )
    if result.no_flow:
        say(f"skipped {result.no_flow} conversation(s) whose meta.{task_key} names no flow of {flow_path}", to=errors)
    if result.no_actions:
        say(f"skipped {result.no_actions} conversation(s) without any agent action", to=errors)
    for name in result.truncated:
        say(f"warning: flow {name}: path enumeration stopped at --max-paths {bounds.max_paths}", to=errors)
    if not result.scores:
        fail(f"{path}: no conversation with actions matches a flow of {flow_path}")
    return result


@callflow_app.command("mine")
def callflow_mine(
    path: FileArg,
    out: Annotated[
        Path,
        typer.Option(help="Where to write the mined call-flow(s) as JSON.", show_default=False, callback=output_file),
    ],
    by_task: Annotated[bool, typer.Option("--by-task", help="Mine one flow per meta.<task-key> value.")] = False,
    task_key: TaskKey = "task",
    name: Annotated[str, typer.Option(help="Name of the flow when not --by-task.")] = "all",
    splits: Splits = None,
    all_outcomes: Annotated[
        bool, typer.Option("--all-outcomes", help="Mine from every conversation, not only the converted ones.")
    ] = False,
    keep_repeats: KeepRepeats = False,
    max_candidates: Annotated[
        int, typer.Option(min=1, help="Above this many sequences, try a seeded sample of this many as the medoid.")
    ] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the medoid candidates' sample.")] = 0,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Mine a call-flow: the medoid action sequence of the converted conversations.

    The medoid is the sequence with the smallest total edit distance to the others (of the converted conversations
    that have actions). It is written as a chain-shaped flow whose k-th repeat of a label is node 'label#k', with
    the medoid conversation's messages as the texts.
    """
    from convoplan.actions.callflow import mine_flow
    from convoplan.schema import write_call_flows

    conversations = _select(load(path, skip_invalid), splits, path)
    try:
        mined = mine_flow(
            conversations,
            by_task=by_task,
            task_key=task_key,
            name=name,
            converted_only=not all_outcomes,
            collapse_repeats=not keep_repeats,
            max_candidates=max_candidates,
            seed=seed,
        )
    except ValueError as error:
        fail(f"{path}: {error}")
    write_call_flows(out, {key: flow.flow for key, flow in mined.items()})
    for key, flow in mined.items():
        say(
            f"{key}: {len(flow.sequence)} steps, medoid {flow.medoid_id} of {flow.support} conversations "
            f"(mean distance {flow.mean_distance:.2f}): {' > '.join(flow.sequence)}"
        )
    say(f"wrote {len(mined)} call-flow(s) to {out}", to=errors)


@callflow_app.command("score")
def callflow_score(
    path: FileArg,
    flow: FlowOption,
    out: Annotated[
        Path,
        typer.Option(
            help="Per-conversation distances: CSV if it ends in .csv, else JSON Lines.",
            show_default=False,
            callback=output_file,
        ),
    ],
    nodes: NodesOption = NodeChoice.auto,
    keep_repeats: KeepRepeats = False,
    task_key: TaskKey = "task",
    splits: Splits = None,
    max_visits: MaxVisits = 2,
    max_length: MaxLength = 40,
    max_paths: MaxPaths = 200_000,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Score each conversation's edit distance to its call-flow.

    The distance is to the sequence of a mined flow, or to the closest bounded path of a flow graph, raw and
    normalised by the longer length. Conversations without actions are skipped.
    """
    from convoplan.actions.callflow import PathBounds, write_scores

    flows = _load_flows(flow)
    conversations = _select(load(path, skip_invalid), splits, path)
    bounds = PathBounds(max_visits=max_visits, max_length=max_length, max_paths=max_paths)
    result = _score(path, conversations, flow, flows, _node_map(nodes, flows), bounds, keep_repeats, task_key)
    count = write_scores(out, result.scores)
    say(f"wrote {count} scores to {out}")


@callflow_app.command("report")
def callflow_report(
    path: FileArg,
    flow: FlowOption,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for report.md, report.json and report.png.", show_default=False, callback=output_folder
        ),
    ],
    title: Annotated[str | None, typer.Option(help="Report title (default: the two file names).")] = None,
    by_task: Annotated[
        bool, typer.Option("--by-task/--pooled-only", help="One row per task (meta.<task-key>) besides the pooled one.")
    ] = True,
    nodes: NodesOption = NodeChoice.auto,
    keep_repeats: KeepRepeats = False,
    task_key: TaskKey = "task",
    splits: Splits = None,
    max_visits: MaxVisits = 2,
    max_length: MaxLength = 40,
    max_paths: MaxPaths = 200_000,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Report distances to the flow of converted against not converted conversations.

    Over the conversations with outcome.converted set: medians, means and a two-sided Mann-Whitney U test, per task
    and pooled. Prints the markdown table and writes the report folder (markdown, JSON with every distance,
    histogram PNG).
    """
    from convoplan.actions.callflow import PathBounds
    from convoplan.actions.callflow_report import build_report
    from convoplan.report import write_report

    flows = _load_flows(flow)
    conversations = _select(load(path, skip_invalid), splits, path)
    bounds = PathBounds(max_visits=max_visits, max_length=max_length, max_paths=max_paths)
    result = _score(path, conversations, flow, flows, _node_map(nodes, flows), bounds, keep_repeats, task_key)
    if not any(score.converted is not None for score in result.scores):
        fail(f"{path}: no scored conversation has an outcome (outcome.converted)")
    report = build_report(result.scores, title=title or f"{path.name} against {flow.name}", by_task=by_task)
    sys.stdout.write(report.markdown())
    paths = write_report(report, out)
    say(f"wrote {', '.join(str(p) for p in paths.values())}", to=errors)

"""Call-flow report on the real corpora (docs/actions.md, "Call-flow").

Does following the call-flow go with conversion? For each conversation, the edit distance of its action sequence
(immediate repeats collapsed) to the flow; converted against not converted by a two-sided Mann-Whitney U test.

- STAR, given graphs: single-task dialogues against their task's graph (closest bounded path; see
  `convoplan.actions.callflow.flow_paths`), per task and pooled.
- STAR, mined flows: per task, the medoid sequence of the train split's converted single-task dialogues, scored on
  the validation and test splits, pooled.
- PersuasionForGood: the medoid sequence of the train split's donors, scored on every other dialogue that has
  actions, and on the validation and test splits alone. With the converted file those are the 300 human-annotated
  dialogues; pass a file labelled by `convoplan label apply` to include the other 717.

Prints the markdown of the three reports and writes each report folder (markdown, JSON, PNG) under --out.

    .venv/bin/python bench/callflow.py --out runs/bench-callflow
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from convoplan.actions.callflow import (
    LABEL_NODES,
    STAR_NODES,
    ConversationScore,
    PathBounds,
    mine_flow,
    score_conversations,
)
from convoplan.actions.callflow_report import CallFlowReport, build_report, group_report
from convoplan.report import write_report
from convoplan.schema import Conversation, read_call_flows, read_jsonl, write_call_flows

BOUNDS = PathBounds()
COMMON_NOTES = (
    "Distance: Levenshtein distance between the conversation's action sequence (agent actions in order, a run of "
    "one action counted once) and the flow; normalised: divided by the longer of the two lengths.",
    "p: two-sided Mann-Whitney U. P(conv > not) = U / (n_conv n_not), the chance that a converted conversation is "
    "further from the flow than a not converted one (ties half): under 0.5, converted conversations follow the flow "
    "more closely.",
)


def has_actions(conversation: Conversation) -> bool:
    return any(turn.speaker == "agent" and turn.action is not None for turn in conversation.turns)


def star_given(conversations: Sequence[Conversation], flows_path: Path, total: int) -> CallFlowReport:
    flows = read_call_flows(flows_path)
    result = score_conversations(conversations, flows, nodes=STAR_NODES, bounds=BOUNDS)
    known = sum(score.converted is not None for score in result.scores)
    outcomes: dict[str | None, set[bool]] = {}
    for score in result.scores:
        if score.converted is not None:
            outcomes.setdefault(score.task, set()).add(score.converted)
    tests = sum(len(seen) == 2 for seen in outcomes.values())
    notes = [
        f"Single-task dialogues (meta.multitask false; multi-task ones interleave several tasks' flows) with at "
        f"least one labelled wizard action and an outcome: {known:,} of {total:,}.",
        f"Flow: the task's graph ({flows_path.name}); distance to its closest path. Graph paths: loops unrolled "
        f"at most {BOUNDS.max_visits} times per action node, up to {BOUNDS.max_length} actions; a branch outcome "
        "(yes, no, available, query_success, ...) may follow any open end of the given chains, so the distance is a "
        "lower bound of the distance to the drawn flowchart. Pseudo-nodes (queries, their results, the user's "
        "answers) emit no action; plane_ask_departure_city and trip_ask_departure_location are the wizards' "
        "ask_departure_location.",
        *COMMON_NOTES,
        "Pooled raw distances mix tasks with different flow lengths and conversion rates; the normalised distance "
        f"is the fairer pooled measure. {tests} tasks have both outcomes: at 5% overall, Bonferroni puts the "
        f"per-task threshold at p < {0.05 / tests:.4f}.",
    ]
    if result.truncated:
        notes.append(f"Path enumeration truncated at {BOUNDS.max_paths:,} paths for: {', '.join(result.truncated)}.")
    return build_report(result.scores, title="STAR: distance to the task's given flow graph", notes=notes)


def star_mined(conversations: Sequence[Conversation], out: Path) -> CallFlowReport:
    train = [c for c in conversations if c.meta.get("split") == "train"]
    held_out = [c for c in conversations if c.meta.get("split") in ("validation", "test")]
    mined = mine_flow(train, by_task=True)
    write_call_flows(out / "mined_flows.json", {task: flow.flow for task, flow in mined.items()})
    result = score_conversations(held_out, {task: flow.flow for task, flow in mined.items()}, nodes=LABEL_NODES)
    known = sum(score.converted is not None for score in result.scores)
    lengths = sorted(len(flow.sequence) for flow in mined.values())
    notes = (
        f"Flow per task: the medoid action sequence of the task's converted single-task dialogues of the train split "
        f"({len(mined)} tasks, {sum(flow.support for flow in mined.values()):,} dialogues; flows of "
        f"{lengths[0]} to {lengths[-1]} actions, median {lengths[len(lengths) // 2]}).",
        f"Scored: the validation and test splits' single-task dialogues with actions and an outcome ({known:,}); "
        f"{result.no_flow} had no mined flow for their task.",
        *COMMON_NOTES,
    )
    return build_report(
        result.scores, title="STAR: distance to the flow mined from converted dialogues", by_task=False, notes=notes
    )


def label_sources(conversations: Sequence[Conversation]) -> str:
    sources = Counter(
        "human" if turn.action_source is None else turn.action_source
        for conversation in conversations
        for turn in conversation.turns
        if turn.speaker == "agent" and turn.action is not None
    )
    return ", ".join(f"{source} {count:,}" for source, count in sources.most_common())


def persuasion(conversations: Sequence[Conversation], path: Path, out: Path) -> CallFlowReport:
    labelled = [c for c in conversations if has_actions(c)]
    mining = [c for c in labelled if c.meta.get("split") == "train" and c.outcome is not None and c.outcome.converted]
    mined = mine_flow(mining, name="donors")["donors"]
    write_call_flows(out / "mined_flows.json", {"donors": mined.flow})
    mining_ids = {c.id for c in mining}
    others = [c for c in labelled if c.id not in mining_ids]
    scores = score_conversations(others, {"donors": mined.flow}, nodes=LABEL_NODES).scores
    held_out: list[ConversationScore] = [s for s in scores if s.split in ("validation", "test")]
    human_only = all(
        turn.action_source is None for c in labelled for turn in c.turns if turn.speaker == "agent" and turn.action
    )
    subset = (
        "human labels only: the 300 annotated dialogues" if human_only else "labels from the corpus and from a labeller"
    )
    notes = (
        f"{path.name}: {len(labelled):,} of {len(conversations):,} dialogues have persuader actions ({subset}; "
        f"labelled messages by source: {label_sources(labelled)}).",
        f"Flow: the medoid action sequence of the {mined.support} donors of the train split "
        f"({mined.medoid_id}, {len(mined.sequence)} actions): {' > '.join(mined.sequence)}.",
        "Rows: every dialogue with actions outside that mining set (train non-donors included: they took no part in "
        "mining), and the validation and test splits alone.",
        *COMMON_NOTES,
    )
    groups = (
        group_report("all but the mining set", scores),
        group_report("validation + test", held_out),
    )
    return CallFlowReport("PersuasionForGood: donors against non-donors, flow mined from donors", groups, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--star", type=Path, default=Path("runs/data/star.jsonl"))
    parser.add_argument("--star-flows", type=Path, default=Path("runs/data/star_flows.json"))
    parser.add_argument(
        "--persuasion",
        type=Path,
        default=Path("runs/data/persuasion.jsonl"),
        help="PersuasionForGood in the canonical format, e.g. labelled by `convoplan label apply`.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-callflow"))
    args = parser.parse_args()
    start = time.perf_counter()

    star = read_jsonl(args.star)
    single = [c for c in star if not c.meta.get("multitask")]
    reports = {
        "star-graphs": star_given(single, args.star_flows, len(star)),
        "star-mined": star_mined(single, args.out / "star-mined"),
        "persuasion": persuasion(read_jsonl(args.persuasion), args.persuasion, args.out / "persuasion"),
    }
    for name, report in reports.items():
        write_report(report, args.out / name)
    seconds = time.perf_counter() - start

    command = shlex.join([".venv/bin/python", "bench/callflow.py", *sys.argv[1:]])
    print("## Call-flow adherence and conversion\n")
    print(f"`{command}`: {seconds:.0f} s on {platform.machine()} (Python {platform.python_version()}, one process).")
    print(f"Reports (markdown, JSON with every distance, histogram PNG): {args.out}/{{{','.join(reports)}}}/.\n")
    for report in reports.values():
        print(report.markdown(level=3))


if __name__ == "__main__":
    main()

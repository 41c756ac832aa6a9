"""Call-flow analysis: how closely a conversation's action sequence follows the ideal flow, and whether that goes
with the outcome (docs/actions.md, "Call-flow").

- **Action sequence**: the `action` of the agent turns in order, unlabelled messages skipped. Immediate repeats are
  collapsed by default (`collapse_repeats`): corpora that label sentences (PersuasionForGood) split one action over
  several messages, and a flow lists each step once, so a run of one label counts as one step.
- **Edit distance**: Levenshtein distance over sequences of labels (rapidfuzz; insert, delete and substitute cost 1),
  raw and normalised by the longer sequence's length (0 = identical, 1 = nothing in common).
- **Mining** (`mine_flow`): the medoid action sequence of the converted conversations, i.e. the sequence with the
  smallest total edit distance to all the others. Its cost is quadratic, so above `max_candidates` sequences only a
  seeded random sample of candidates is tried as the medoid (each still summed against every sequence). The
  medoid is stored as a chain-shaped `CallFlow` whose nodes are the labels, the k-th repeat of a label named
  `label#k` so that the chain stays a chain (`flow_sequence` reads it back).
- **Distance to a graph** (`flow_paths`, `score_conversations`): the minimum edit distance between the sequence and
  any bounded path of the flow graph, raw and normalised each minimised on its own (`PathBounds` documents the
  bounds; see `flow_paths` for how STAR's branch points are joined).

The report (distances of converted against not converted conversations) is `convoplan.actions.callflow_report`.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from convoplan.atomic import atomic_write
from convoplan.corpora import star
from convoplan.schema import CallFlow, Conversation

__all__ = [
    "LABEL_NODES",
    "STAR_NODES",
    "ConversationScore",
    "NodeMap",
    "PathBounds",
    "ScoreResult",
    "mine_flow",
    "score_conversations",
    "write_scores",
]

OCCURRENCE_MARK = "#"
"""In a mined chain the k-th (k >= 2) occurrence of a label is the node `label#k`."""
_OCCURRENCE = re.compile(rf"{re.escape(OCCURRENCE_MARK)}\d+$")


@dataclass(frozen=True)
class NodeMap:
    """How the node names of a flow graph become action labels.

    A node in `pseudo` is passed through without emitting an action; `aliases` renames a node to the label the
    conversations use; any other node is its own label (a trailing `#k` occurrence mark removed).
    """

    pseudo: frozenset[str] = frozenset()
    aliases: Mapping[str, str] = field(default_factory=dict)

    def action(self, node: str) -> str | None:
        if node in self.pseudo:
            return None
        label = _OCCURRENCE.sub("", node)
        return self.aliases.get(label, label)


LABEL_NODES = NodeMap()
"""Every node is an action label (mined flows, hand-written sequences)."""
STAR_NODES = NodeMap(pseudo=star.PSEUDO_NODES, aliases=star.NODE_ALIASES)
"""STAR's task graphs (`convoplan data convert --corpus star --flows`): its branch pseudo-nodes emit no action and
two nodes take the wizards' label (the tables: `convoplan.corpora.star`)."""


# --- action sequences and edit distance -------------------------------------------------------------------------


def action_sequence(conversation: Conversation, *, collapse_repeats: bool = True) -> tuple[str, ...]:
    """The actions of the agent turns in order, turns without an action skipped; with `collapse_repeats` a run of
    the same action counts once (see the module docstring for why that is the default)."""
    actions = [turn.action for turn in conversation.turns if turn.speaker == "agent" and turn.action is not None]
    if collapse_repeats:
        return tuple(action for i, action in enumerate(actions) if i == 0 or actions[i - 1] != action)
    return tuple(actions)


class _Alphabet:
    """Labels as single characters, so that rapidfuzz compares plain strings (its fastest path)."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def encode(self, sequence: Sequence[str]) -> str:
        # Code points from U+10000 up: never surrogates, room for a million labels.
        return "".join(self._codes.setdefault(label, chr(0x10000 + len(self._codes))) for label in sequence)


def _blocks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def closest_distances(
    queries: Sequence[Sequence[str]],
    references: Sequence[Sequence[str]],
    *,
    workers: int = 1,
    block: int = 256,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """For each query: the minimum raw edit distance to any reference, the minimum normalised distance (minimised
    on its own), and the index of a reference at the minimum raw distance (the first one).

    Queries are compared in blocks so that the distance matrix stays small however many references there are.
    """
    if not references:
        raise ValueError("no reference sequences to compare with")
    alphabet = _Alphabet()
    encoded = [alphabet.encode(reference) for reference in references]
    raw = np.empty(len(queries), dtype=np.int64)
    normalised = np.empty(len(queries), dtype=np.float64)
    nearest = np.empty(len(queries), dtype=np.int64)
    for part in _blocks(len(queries), block):
        batch = [alphabet.encode(query) for query in queries[part]]
        distances = process.cdist(batch, encoded, scorer=Levenshtein.distance, dtype=np.int32, workers=workers)
        nearest[part] = distances.argmin(axis=1)
        raw[part] = distances.min(axis=1)
        ratios = process.cdist(
            batch, encoded, scorer=Levenshtein.normalized_distance, dtype=np.float64, workers=workers
        )
        normalised[part] = ratios.min(axis=1)
    return raw, normalised, nearest


# --- mining ----------------------------------------------------------------------------------------------------


def medoid(sequences: Sequence[Sequence[str]], *, max_candidates: int = 500, seed: int = 0, workers: int = 1) -> int:
    """Index of the medoid: the sequence with the smallest total edit distance to all sequences (ties: the first).

    With more than `max_candidates` sequences, only a seeded random sample of that many is tried as the medoid,
    each still summed against every sequence: cost candidates x sequences instead of sequences squared.
    """
    if not sequences:
        raise ValueError("no sequences to take the medoid of")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be at least 1, got {max_candidates}")
    indices = range(len(sequences))
    candidates = (
        sorted(random.Random(seed).sample(indices, max_candidates))
        if len(sequences) > max_candidates
        else list(indices)
    )
    alphabet = _Alphabet()
    encoded = [alphabet.encode(sequence) for sequence in sequences]
    totals = np.zeros(len(candidates), dtype=np.int64)
    for part in _blocks(len(sequences), 1024):
        distances = process.cdist(
            [encoded[i] for i in candidates],
            encoded[part],
            scorer=Levenshtein.distance,
            dtype=np.int32,
            workers=workers,
        )
        totals += distances.sum(axis=1, dtype=np.int64)
    return candidates[int(totals.argmin())]


def _chain_nodes(sequence: Sequence[str]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    nodes = []
    for label in sequence:
        seen[label] += 1
        nodes.append(label if seen[label] == 1 else f"{label}{OCCURRENCE_MARK}{seen[label]}")
    return nodes


def sequence_flow(name: str, sequence: Sequence[str], texts: Mapping[str, str] | None = None) -> CallFlow:
    """A label sequence as a chain-shaped CallFlow; the k-th repeat of a label becomes node `label#k`."""
    if not sequence:
        raise ValueError(f"flow {name!r}: an empty sequence has no start")
    nodes = _chain_nodes(sequence)
    edges = {node: [following] for node, following in pairwise(nodes)}
    return CallFlow(name=name, start=nodes[0], edges=edges, texts=dict(texts or {}))


def flow_sequence(flow: CallFlow) -> tuple[str, ...] | None:
    """The label sequence of a chain-shaped flow (as `sequence_flow` writes), or None if the flow branches or loops."""
    node, nodes = flow.start, [flow.start]
    while flow.edges.get(node):
        following = flow.edges[node]
        if len(following) != 1 or following[0] in nodes:
            return None
        node = following[0]
        nodes.append(node)
    if set(flow.edges) - set(nodes):
        return None
    return tuple(_OCCURRENCE.sub("", node) for node in nodes)


@dataclass(frozen=True)
class MinedFlow:
    """A mined call-flow and where it came from."""

    flow: CallFlow
    sequence: tuple[str, ...]
    medoid_id: str
    """The conversation whose action sequence is the flow."""
    support: int
    """How many conversations it was mined from."""
    mean_distance: float
    """Mean edit distance of those conversations to the flow."""


def _task_of(conversation: Conversation, task_key: str) -> str | None:
    task = conversation.meta.get(task_key)
    return None if task is None else str(task)


def mine_flow(
    conversations: Iterable[Conversation],
    *,
    by_task: bool = False,
    task_key: str = "task",
    name: str = "all",
    converted_only: bool = True,
    collapse_repeats: bool = True,
    max_candidates: int = 500,
    seed: int = 0,
    workers: int = 1,
) -> dict[str, MinedFlow]:
    """Mine a call-flow: the medoid action sequence (see `medoid`) of the converted conversations that have at least
    one action; with `by_task`, one flow per value of `meta[task_key]` (STAR's `task`), else one flow called `name`.

    The flow's `texts` hold the medoid conversation's first message for each node, as an example of the step.
    Raises ValueError if no conversation qualifies.
    """
    groups: dict[str, list[tuple[Conversation, tuple[str, ...]]]] = defaultdict(list)
    for conversation in conversations:
        if converted_only and (conversation.outcome is None or conversation.outcome.converted is not True):
            continue
        sequence = action_sequence(conversation, collapse_repeats=collapse_repeats)
        key = _task_of(conversation, task_key) if by_task else name
        if sequence and key is not None:
            groups[key].append((conversation, sequence))
    if not groups:
        which = "converted conversations" if converted_only else "conversations"
        raise ValueError(f"no {which} with actions" + (f" and a meta.{task_key}" if by_task else "") + " to mine")
    mined = {}
    for key in sorted(groups):
        members = groups[key]
        sequences = [sequence for _, sequence in members]
        best = medoid(sequences, max_candidates=max_candidates, seed=seed, workers=workers)
        conversation, sequence = members[best]
        flow = sequence_flow(key, sequence, _example_texts(conversation, sequence, collapse_repeats))
        raw, _, _ = closest_distances(sequences, [sequence], workers=workers)
        mined[key] = MinedFlow(flow, sequence, conversation.id, len(members), float(raw.mean()))
    return mined


def _example_texts(conversation: Conversation, sequence: Sequence[str], collapse_repeats: bool) -> dict[str, str]:
    """Each chain node's text: the medoid conversation's message for that step (the first of a collapsed run)."""
    turns = [turn for turn in conversation.turns if turn.speaker == "agent" and turn.action is not None]
    if collapse_repeats:
        turns = [turn for i, turn in enumerate(turns) if i == 0 or turns[i - 1].action != turn.action]
    return {node: turn.text for node, turn in zip(_chain_nodes(sequence), turns, strict=True)}


# --- distance to a flow graph ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathBounds:
    """Bounds on the paths `flow_paths` enumerates (graphs have cycles: 'no' loops back, trivia asks again).

    A loop is unrolled at most `max_visits` times per action node, so a conversation that loops more often is
    charged for the extra rounds. 2 keeps STAR's largest graph (trivia) at 65,202 distinct action sequences (about a
    second to enumerate); 3 multiplies the STAR total by about ten.
    """

    max_visits: int = 2
    """How often one action node may occur on a path (pseudo-nodes are not counted)."""
    max_length: int = 40
    """Longest path, counted in actions (pseudo-nodes do not count)."""
    max_paths: int = 200_000
    """Stop after this many distinct action sequences (the result then says it was truncated)."""


@dataclass(frozen=True)
class FlowPaths:
    sequences: tuple[tuple[str, ...], ...]
    """Distinct action sequences of the enumerated paths, in depth-first order."""
    truncated: bool
    """True when `max_paths` stopped the enumeration before every bounded path was seen."""


def _targets(flow: CallFlow) -> set[str]:
    return {target for following in flow.edges.values() for target in following}


def _reentry_points(flow: CallFlow, nodes: NodeMap) -> list[str]:
    """Where a path may go on from a node that has no successor: the branch outcomes (nodes no edge points to,
    other than the start) and the pseudo-nodes that lead on (e.g. trivia's `query -> trivia_ask_question`)."""
    targets = _targets(flow)
    named = set(flow.edges) | targets
    entries = {node for node in named if node not in targets and node != flow.start}
    leading = {node for node in named if node in nodes.pseudo and flow.edges.get(node)}
    return sorted(entries | leading)


def flow_paths(flow: CallFlow, nodes: NodeMap = LABEL_NODES, bounds: PathBounds | None = None) -> FlowPaths:
    """Enumerate the action sequences of the paths of a flow graph from its start (depth first, successors in the
    order given, bounded by `bounds`).

    A path may end at any node without a successor. STAR's graphs give one successor per node and leave the
    branches implicit: a chain stops at a question or a query (`hotel_ask_confirm_booking`, `query_check`) and the
    outcomes start chains of their own (`yes -> query_book`, `available -> hotel_ask_confirm_booking`). So a node
    without a successor may also continue at every re-entry point (`_reentry_points`). That over-approximates the
    drawn flowcharts (any outcome may follow any open end), so distances are lower bounds of the distance to the
    flowchart; the over-approximation is the same for converted and not converted conversations.
    Pseudo-nodes emit no action (`NodeMap`).
    """
    bounds = bounds or PathBounds()
    reentry = _reentry_points(flow, nodes)
    actions = {node: nodes.action(node) for node in {flow.start, *flow.edges, *reentry, *_targets(flow)}}
    slot = {node: i for i, node in enumerate(sorted(node for node, action in actions.items() if action is not None))}
    visits = [0] * len(slot)
    found: dict[tuple[str, ...], None] = {}
    # Where the walk has been: the same node with the same actions behind it and the same visit counts has the same
    # continuations. Remembering these states drops the many walks that differ only in pseudo-nodes (hotel_book:
    # 230,000 path ends for 6,228 distinct sequences without it) and stops cycles made of pseudo-nodes alone.
    expanded: set[tuple[str, tuple[str, ...], tuple[int, ...]]] = set()
    truncated = False

    def walk(node: str, path: tuple[str, ...]) -> None:
        nonlocal truncated
        if len(found) >= bounds.max_paths:
            truncated = True
            return
        action = actions[node]
        if action is not None:
            path = (*path, action)
            visits[slot[node]] += 1
        state = (node, path, tuple(visits))
        if state not in expanded:
            expanded.add(state)
            following = flow.edges.get(node, [])
            if not following:
                found.setdefault(path, None)
                following = [target for target in reentry if target != node]
            if len(path) < bounds.max_length:
                for target in following:
                    if target not in slot or visits[slot[target]] < bounds.max_visits:
                        walk(target, path)
        if action is not None:
            visits[slot[node]] -= 1

    walk(flow.start, ())
    return FlowPaths(tuple(found), truncated)


# --- scoring conversations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationScore:
    """One conversation's distance to its call-flow."""

    id: str
    flow: str
    task: str | None
    split: str | None
    converted: bool | None
    actions: int
    """Length of the action sequence that was scored."""
    distance: int
    """Minimum edit distance to a path of the flow."""
    normalised: float
    """Minimum of edit distance / max(len(sequence), len(path)) over the paths."""
    path_length: int
    """Length (in actions) of a path at the minimum raw distance."""


@dataclass(frozen=True)
class ScoreResult:
    scores: list[ConversationScore]
    no_flow: int
    """Conversations skipped because no flow applies to them (see `select_flow`)."""
    no_actions: int
    """Conversations skipped because no agent turn has an action."""
    truncated: list[str]
    """Flows whose path enumeration hit `PathBounds.max_paths`."""


def select_flow(conversation: Conversation, flows: Mapping[str, CallFlow], task_key: str = "task") -> str | None:
    """The flow a conversation is scored against: the only one if there is one, else the one named by its
    `meta[task_key]` (STAR's task); None if there is none."""
    if len(flows) == 1:
        return next(iter(flows))
    task = _task_of(conversation, task_key)
    return task if task is not None and task in flows else None


def score_conversations(
    conversations: Iterable[Conversation],
    flows: Mapping[str, CallFlow],
    *,
    nodes: NodeMap = LABEL_NODES,
    bounds: PathBounds | None = None,
    collapse_repeats: bool = True,
    task_key: str = "task",
    workers: int = 1,
) -> ScoreResult:
    """Each conversation's edit distance to the closest path of its flow (`select_flow`, `flow_paths`); a mined
    chain has a single path, so this is the distance to the mined sequence. Paths are enumerated once per flow."""
    members: dict[str, list[tuple[int, Conversation, tuple[str, ...]]]] = defaultdict(list)
    no_flow = no_actions = 0
    for index, conversation in enumerate(conversations):
        name = select_flow(conversation, flows, task_key)
        sequence = action_sequence(conversation, collapse_repeats=collapse_repeats)
        if name is None:
            no_flow += 1
        elif not sequence:
            no_actions += 1
        else:
            members[name].append((index, conversation, sequence))
    scored: list[tuple[int, ConversationScore]] = []
    truncated = []
    for name, group in members.items():
        paths = flow_paths(flows[name], nodes, bounds)
        if paths.truncated:
            truncated.append(name)
        raw, normalised, nearest = closest_distances([s for _, _, s in group], paths.sequences, workers=workers)
        for (index, conversation, sequence), d, n, k in zip(group, raw, normalised, nearest, strict=True):
            outcome = conversation.outcome
            split = conversation.meta.get("split")
            scored.append(
                (
                    index,
                    ConversationScore(
                        id=conversation.id,
                        flow=name,
                        task=_task_of(conversation, task_key),
                        split=None if split is None else str(split),
                        converted=None if outcome is None else outcome.converted,
                        actions=len(sequence),
                        distance=int(d),
                        normalised=float(n),
                        path_length=len(paths.sequences[int(k)]),
                    ),
                )
            )
    scored.sort(key=lambda pair: pair[0])
    return ScoreResult([score for _, score in scored], no_flow, no_actions, truncated)


_SCORE_FIELDS = ("id", "flow", "task", "split", "converted", "actions", "distance", "normalised", "path_length")


def write_scores(path: str | Path, scores: Iterable[ConversationScore]) -> int:
    """Write scores atomically: CSV if `path` ends in .csv, else JSON Lines; return how many were written."""
    import csv

    count = 0
    with atomic_write(path) as stream:
        if str(path).endswith(".csv"):
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(_SCORE_FIELDS)
            for score in scores:
                writer.writerow(["" if (v := getattr(score, f)) is None else v for f in _SCORE_FIELDS])
                count += 1
        else:
            for score in scores:
                stream.write(json.dumps({f: getattr(score, f) for f in _SCORE_FIELDS}) + "\n")
                count += 1
    return count

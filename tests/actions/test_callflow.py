"""Call-flow: edit distances, the medoid, closest paths of a graph with a cycle, the CLI, real STAR."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.actions.callflow import (
    LABEL_NODES,
    STAR_NODES,
    ConversationScore,
    NodeMap,
    PathBounds,
    action_sequence,
    closest_distances,
    flow_paths,
    flow_sequence,
    medoid,
    mine_flow,
    score_conversations,
    select_flow,
    sequence_flow,
    write_scores,
)
from convoplan.cli.callflow import callflow_app
from convoplan.schema import CallFlow, Conversation, Outcome, Turn, read_call_flows, write_call_flows, write_jsonl

runner = CliRunner()


def conversation(cid: str, actions: list[str | None], converted: bool | None = None, **meta: str) -> Conversation:
    """A conversation whose agent turns carry `actions` (None: an unlabelled message), a user turn between each."""
    turns = []
    for action in actions:
        turns.append(Turn(speaker="user", text="..."))
        turns.append(Turn(speaker="agent", text=f"say {action}", action=action))
    outcome = None if converted is None else Outcome(converted=converted)
    return Conversation(id=cid, domain="test", turns=turns, outcome=outcome, meta=dict(meta))


# --- sequences and edit distance --------------------------------------------------------------------------------


def test_action_sequence_skips_unlabelled_and_collapses_runs_on_request() -> None:
    c = conversation("c", ["greet", "greet", None, "ask", "greet"])
    assert action_sequence(c) == ("greet", "ask", "greet")
    assert action_sequence(c, collapse_repeats=False) == ("greet", "greet", "ask", "greet")
    assert action_sequence(conversation("e", [None, None])) == ()


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """The reference: Levenshtein distance by the textbook dynamic programme (unit costs)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def normalised_distance(a: Sequence[str], b: Sequence[str]) -> float:
    return edit_distance(a, b) / max(len(a), len(b)) if a or b else 0.0


def test_distances_of_known_sequences() -> None:
    cases = [
        (list("kitten"), list("sitting"), 3),
        (["greet", "ask", "close"], ["greet", "close"], 1),
        (["greet", "ask"], ["ask", "greet"], 2),
        ([], ["a", "b"], 2),
        (["ask_name"], ["ask_day"], 1),  # labels are single symbols, not strings compared letter by letter
    ]
    for a, b, distance in cases:
        assert edit_distance(a, b) == distance
        raw, normalised, _ = closest_distances([a], [b])
        assert (raw[0], normalised[0]) == (distance, pytest.approx(normalised_distance(a, b)))
    assert closest_distances([["greet", "ask", "close"]], [["greet", "close"]])[1][0] == pytest.approx(1 / 3)


def test_closest_distances_matches_brute_force() -> None:
    rng = random.Random(4)
    queries = [[rng.choice("abcd") for _ in range(rng.randint(0, 7))] for _ in range(30)]
    references = [[rng.choice("abcde") for _ in range(rng.randint(1, 6))] for _ in range(9)]
    raw, normalised, nearest = closest_distances(queries, references, block=7)
    for q, d, n, k in zip(queries, raw, normalised, nearest, strict=True):
        assert d == min(edit_distance(q, r) for r in references)
        assert n == pytest.approx(min(normalised_distance(q, r) for r in references))
        assert edit_distance(q, references[k]) == d


# --- medoid and mining --------------------------------------------------------------------------------------------


def test_medoid_of_a_tiny_set() -> None:
    sequences = [["a", "b", "c"], ["a", "b", "c", "d"], ["a", "b"], ["x", "y", "z"]]
    # Totals: abc 1+1+3 = 5, abcd 1+2+4 = 7, ab 1+2+3 = 6, xyz 3+4+3 = 10.
    assert medoid(sequences) == 0
    with pytest.raises(ValueError, match="no sequences"):
        medoid([])


def test_medoid_matches_brute_force_and_samples_candidates_with_its_seed() -> None:
    rng = random.Random(1)
    sequences = [[rng.choice("abc") for _ in range(rng.randint(1, 6))] for _ in range(25)]
    totals = [sum(edit_distance(s, t) for t in sequences) for s in sequences]
    assert medoid(sequences) == totals.index(min(totals))
    candidates = sorted(random.Random(7).sample(range(25), 5))
    best = min(candidates, key=lambda i: (totals[i], i))
    assert medoid(sequences, max_candidates=5, seed=7) == best


def test_sequence_flow_round_trips_repeated_labels(tmp_path: Path) -> None:
    flow = sequence_flow("donors", ["greet", "ask", "greet", "ask", "close"])
    assert flow.start == "greet" and flow.edges["ask"] == ["greet#2"] and flow.edges["greet#2"] == ["ask#2"]
    write_call_flows(tmp_path / "flows.json", {"donors": flow})
    assert flow_sequence(read_call_flows(tmp_path / "flows.json")["donors"]) == (
        "greet",
        "ask",
        "greet",
        "ask",
        "close",
    )
    assert flow_sequence(sequence_flow("one", ["greet"])) == ("greet",)
    assert flow_sequence(CallFlow(name="loop", start="a", edges={"a": ["b"], "b": ["a"]})) is None


def test_mine_flow_takes_the_converted_medoid_per_task() -> None:
    conversations = [
        conversation("1", ["hello", "ask", "book"], True, task="t"),
        conversation("2", ["hello", "ask", "ask", "book", "bye"], True, task="t"),
        conversation("3", ["hello", "book"], True, task="t"),
        conversation("4", ["bye"], False, task="t"),  # not converted: not mined
        conversation("5", ["hi", "sell"], True, task="u"),
        conversation("6", [None], True, task="u"),  # no actions: not mined
    ]
    mined = mine_flow(conversations, by_task=True)
    assert set(mined) == {"t", "u"}
    assert mined["t"].sequence == ("hello", "ask", "book") and mined["t"].medoid_id == "1"
    assert mined["t"].support == 3 and mined["t"].mean_distance == pytest.approx((0 + 1 + 1) / 3)
    assert mined["t"].flow.texts == {"hello": "say hello", "ask": "say ask", "book": "say book"}
    assert mined["u"].support == 1
    pooled = mine_flow(conversations, name="all")
    assert list(pooled) == ["all"] and pooled["all"].support == 4
    with pytest.raises(ValueError, match="no converted conversations"):
        mine_flow([conversation("4", ["bye"], False)])


# --- closest path of a graph ------------------------------------------------------------------------------------

# A STAR-like graph: one successor per node, branches left implicit. `query_check` ends the first chain; its results
# (available / unavailable) and the user's answers (yes / no) start chains of their own; `no` loops back to ask_x.
GRAPH = CallFlow(
    name="book",
    start="hello",
    edges={
        "hello": ["ask_x"],
        "ask_x": ["query_check"],
        "available": ["confirm"],
        "unavailable": ["sorry"],
        "yes": ["query_book"],
        "query_book": ["booked"],
        "no": ["ask_x"],
    },
)
PSEUDO = NodeMap(pseudo=frozenset({"query_check", "available", "unavailable", "yes", "no", "query_book"}))


def closest(sequence: list[str], bounds: PathBounds | None = None) -> int:
    paths = flow_paths(GRAPH, PSEUDO, bounds).sequences
    return min(edit_distance(sequence, path) for path in paths)


def test_flow_paths_drop_pseudo_nodes_and_join_open_ends_to_branch_outcomes() -> None:
    paths = flow_paths(GRAPH, PSEUDO)
    assert not paths.truncated
    assert all(path[0] == "hello" for path in paths.sequences)
    assert not {label for path in paths.sequences for label in path} & PSEUDO.pseudo
    assert ("hello", "ask_x") in paths.sequences  # a path may end where a chain ends
    assert closest(["hello", "ask_x", "confirm", "booked"]) == 0
    assert closest(["hello", "ask_x", "sorry"]) == 0
    assert closest(["hello", "booked"]) == 1  # ask_x is missing
    assert closest(["greet", "hello", "ask_x", "confirm", "booked", "bye"]) == 2


def test_cycle_is_unrolled_up_to_max_visits() -> None:
    looped = ["hello", "ask_x", "confirm", "ask_x", "confirm", "booked"]  # the user said no once
    assert closest(looped, PathBounds(max_visits=2)) == 0
    assert closest(looped, PathBounds(max_visits=1)) == 2
    assert closest([*looped, "ask_x", "confirm", "booked"], PathBounds(max_visits=2)) > 0
    assert max(len(path) for path in flow_paths(GRAPH, PSEUDO, PathBounds(max_length=3)).sequences) == 3
    assert flow_paths(GRAPH, PSEUDO, PathBounds(max_paths=2)).truncated


def test_node_maps() -> None:
    assert STAR_NODES.action("query_check") is None and STAR_NODES.action("yes") is None
    assert STAR_NODES.action("trip_ask_departure_location") == "ask_departure_location"
    assert STAR_NODES.action("hotel_ask_hotel") == "hotel_ask_hotel"
    assert LABEL_NODES.action("yes") == "yes" and LABEL_NODES.action("credibility-appeal#3") == "credibility-appeal"


def test_score_conversations_selects_the_flow_by_task_and_counts_what_it_skips() -> None:
    flows = {"book": GRAPH, "chain": sequence_flow("chain", ["a", "b", "a"])}
    conversations = [
        conversation("1", ["hello", "ask_x", "confirm", "booked"], True, task="book", split="test"),
        conversation("2", ["a", "a", "b", "c"], False, task="chain"),
        conversation("3", ["a"], False, task="other"),
        conversation("4", [None], True, task="book"),
    ]
    assert select_flow(conversations[2], flows) is None
    assert select_flow(conversations[2], {"only": GRAPH}) == "only"
    result = score_conversations(conversations, flows, nodes=PSEUDO)
    assert (result.no_flow, result.no_actions, result.truncated) == (1, 1, [])
    first, second = result.scores
    assert first == ConversationScore("1", "book", "book", "test", True, 4, 0, 0.0, 4)
    # (a, b, c) after collapsing against (a, b, a): one substitution out of three.
    assert (second.flow, second.actions, second.distance, second.path_length) == ("chain", 3, 1, 3)
    assert second.normalised == pytest.approx(1 / 3)
    kept = score_conversations(conversations[1:2], flows, nodes=PSEUDO, collapse_repeats=False).scores[0]
    assert (kept.actions, kept.distance) == (4, 2)


def test_write_scores_as_jsonl_and_csv(tmp_path: Path) -> None:
    scores = [ConversationScore("1", "f", None, None, None, 2, 1, 0.5, 2)]
    assert write_scores(tmp_path / "s.jsonl", scores) == 1
    assert json.loads((tmp_path / "s.jsonl").read_text())["task"] is None
    write_scores(tmp_path / "s.csv", scores)
    assert (tmp_path / "s.csv").read_text().splitlines() == [
        "id,flow,task,split,converted,actions,distance,normalised,path_length",
        "1,f,,,,2,1,0.5,2",
    ]


# --- the CLI -----------------------------------------------------------------------------------------------------


def write_fixture(path: Path) -> None:
    conversations = [
        conversation("1", ["hello", "ask_x", "confirm", "booked"], True, task="book", split="train"),
        conversation("2", ["hello", "ask_x", "confirm", "booked", "bye"], True, task="book", split="train"),
        conversation("3", ["hello", "sorry"], False, task="book", split="test"),
        conversation("4", ["hello", "ask_x", "confirm", "booked"], True, task="book", split="test"),
        conversation("5", ["ask_x"], False, task="book", split="test"),
    ]
    write_jsonl(path, conversations)


def test_cli_mine_score_report(tmp_path: Path) -> None:
    data, flows = tmp_path / "data.jsonl", tmp_path / "flows.json"
    write_fixture(data)
    result = runner.invoke(callflow_app, ["mine", str(data), "--out", str(flows), "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "medoid 1 of 2 conversations" in result.stdout
    assert flow_sequence(read_call_flows(flows)["all"]) == ("hello", "ask_x", "confirm", "booked")

    for name in ("scores.jsonl", "scores.csv"):
        result = runner.invoke(callflow_app, ["score", str(data), "--flow", str(flows), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [(r["id"], r["distance"]) for r in rows] == [("1", 0), ("2", 1), ("3", 3), ("4", 0), ("5", 3)]
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 6

    graphs = tmp_path / "graphs.json"
    write_call_flows(graphs, {"book": GRAPH})
    out = tmp_path / "report"
    result = runner.invoke(callflow_app, ["report", str(data), "--flow", str(graphs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "--nodes auto: using 'star'" in result.stderr  # query_check, yes, no, ... are STAR's pseudo-nodes
    assert "| book | 3 | 2 |" in result.stdout
    assert (out / "report.png").is_file()


def test_cli_bad_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    write_fixture(data)
    missing = tmp_path / "missing.json"
    result = runner.invoke(callflow_app, ["score", str(data), "--flow", str(missing), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {missing}: no such file"

    bad = tmp_path / "bad.json"
    bad.write_text('{"f": {"name": "f", "start": "a"}}')
    result = runner.invoke(callflow_app, ["report", str(data), "--flow", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {bad}: f.edges")
    assert not (tmp_path / "r").exists()

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "1", "domain": "d", "turns": [{"speaker": "bot", "text": "hi"}]}\n')
    result = runner.invoke(callflow_app, ["mine", str(broken), "--out", str(tmp_path / "f.json")])
    assert result.exit_code == 2 and f"{broken}:1: turns[0].speaker" in result.stderr

    result = runner.invoke(callflow_app, ["mine", str(data), "--out", str(tmp_path / "f.json"), "--split", "test"])
    assert result.exit_code == 0  # one converted conversation in test
    unconverted = tmp_path / "none.jsonl"
    write_jsonl(unconverted, [conversation("1", ["a"], False)])
    result = runner.invoke(callflow_app, ["mine", str(unconverted), "--out", str(tmp_path / "g.json")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {unconverted}: no converted conversations")
    assert not (tmp_path / "g.json").exists()


# --- the real corpus -----------------------------------------------------------------------------------------------


def test_real_star_dialogues_against_their_task_graphs(star_dir: Path) -> None:
    from convoplan.corpora import read_star_flows
    from convoplan.corpora.star import read_star_dialogue

    flows = read_star_flows(star_dir)
    files = sorted((star_dir / "dialogues").glob("*.json"), key=lambda p: int(p.stem))[:300]
    dialogues = [d for d in map(read_star_dialogue, files) if not d.meta.get("multitask")]
    result = score_conversations(dialogues, flows, nodes=STAR_NODES)
    assert result.no_flow == 0 and not result.truncated and len(result.scores) > 100
    assert {s.flow for s in result.scores} <= set(flows) and all(s.flow == s.task for s in result.scores)
    for s in result.scores:
        assert 0 <= s.distance <= max(s.actions, s.path_length)
        assert 0.0 <= s.normalised <= 1.0
    # Dialogue 43 (doctor_schedule) follows the graph but for one step: the wizard never picked doctor_ask_day.
    by_id = {s.id: s for s in result.scores}
    assert (by_id["star-43"].distance, by_id["star-43"].actions, by_id["star-43"].path_length) == (1, 8, 9)
    assert sum(s.normalised for s in result.scores) / len(result.scores) < 0.8
    # Pseudo-nodes (queries, their results, the user's answers) never reach a path: no wizard message carries them.
    for task in ("doctor_schedule", "hotel_book", "bank_balance"):
        labels = {label for path in flow_paths(flows[task], STAR_NODES).sequences for label in path}
        assert labels and not labels & STAR_NODES.pseudo

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convoplan.schema import (
    DEFAULT_MAX_TEXT,
    MAX_NESTING,
    CallFlow,
    Candidate,
    Conversation,
    Event,
    FormatError,
    InvalidLine,
    Outcome,
    Turn,
    conversation_json_schema,
    dumps_schema,
    iter_jsonl,
    max_text,
    parse_line,
    read_call_flows,
    read_jsonl,
    write_call_flows,
    write_jsonl,
)

DOCS_SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "conversation.schema.json"


def good_line(**changes: object) -> dict[str, object]:
    line: dict[str, object] = {
        "id": "c1",
        "domain": "animals",
        "turns": [
            {"speaker": "user", "text": "Hi"},
            {
                "speaker": "agent",
                "text": "Hello.",
                "action": "greeting",
                "candidates": [
                    {"text": "Hello.", "action": "greeting", "ratings": {"r1": 5}, "selected": True},
                    {"text": "Lions roar.", "provider": "facts", "ratings": {"r1": -2}},
                ],
            },
        ],
        "outcome": {"converted": True, "value": 0.5},
    }
    line.update(changes)
    return line


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# --- hypothesis strategies for arbitrary valid conversations -------------------------------------------------

texts = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
labels = st.none() | st.sampled_from(["greet", "fact", "ask_name", "quiz"])
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
metas = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
ratings = st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-3, 7).filter(bool), max_size=3)
candidates = st.builds(
    Candidate,
    text=texts,
    action=labels,
    provider=st.none() | st.text(max_size=8),
    focus=st.none() | texts,
    changes_focus=st.booleans(),
    features=st.dictionaries(st.text(max_size=6), finite, max_size=3),
    ratings=ratings,
    score=st.none() | finite,
    propensity=st.none() | st.floats(0, 1),
    selected=st.just(False),
    meta=metas,
)
user_turns = st.builds(Turn, speaker=st.just("user"), text=texts, meta=metas)
agent_turns = st.builds(
    Turn,
    speaker=st.just("agent"),
    text=texts,
    action=labels,
    action_confidence=st.none() | st.floats(0, 1),
    action_source=st.none() | st.text(max_size=8),
    candidates=st.lists(candidates, max_size=3),
    meta=metas,
)


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    turns = draw(st.lists(user_turns | agent_turns, max_size=5))
    for turn in turns:  # at most one selected candidate per step
        if turn.candidates and draw(st.booleans()):
            turn.candidates[0].selected = True
    events = draw(
        st.lists(
            st.builds(
                Event,
                kind=st.sampled_from(["query", "return_item"]),
                position=st.integers(0, len(turns)),
                data=metas,
            ),
            max_size=2,
        )
    )
    outcome = draw(st.none() | st.builds(Outcome, converted=st.none() | st.booleans(), value=st.none() | finite))
    return Conversation(
        id=draw(texts),
        domain=draw(st.text(max_size=8)),
        turns=turns,
        outcome=outcome,
        events=events,
        meta=draw(metas),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(conversations(), max_size=4, unique_by=lambda c: c.id))
def test_write_then_read_is_lossless(tmp_path: Path, originals: list[Conversation]) -> None:
    path = tmp_path / "roundtrip.jsonl"
    assert write_jsonl(path, originals) == len(originals)
    assert read_jsonl(path) == originals


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_json_schema_accepts_what_the_dataclasses_write(conversation: Conversation) -> None:
    from convoplan.schema import to_json

    jsonschema.validate(json.loads(to_json(conversation)), conversation_json_schema())


def test_docs_schema_is_the_generated_one() -> None:
    assert DOCS_SCHEMA.read_text() == dumps_schema(), (
        "regenerate: convoplan data schema > docs/conversation.schema.json"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"turns": [{"speaker": "bot", "text": "hi"}]}, "turns[0].speaker"),
        ({"turns": [{"speaker": "user", "text": "  "}]}, "turns[0].text"),
        (
            {"turns": [{"speaker": "agent", "text": "a", "candidates": [{"text": "x", "ratings": {"r": 0}}]}]},
            "turns[0].candidates[0].ratings.r",
        ),
        (
            {"turns": [{"speaker": "agent", "text": "a", "candidates": [{"text": "x", "ratings": {"r": 8}}]}]},
            "turns[0].candidates[0].ratings.r",
        ),
        ({"turns": [{"speaker": "agent", "text": "a", "colour": "red"}]}, "turns[0].colour"),
        ({"outcome": {"converted": "yes"}}, "outcome.converted"),
        ({"events": [{"kind": "query", "position": 9}]}, "events[0].position"),
        ({"turns": [{"speaker": "user", "text": "a", "candidates": [{"text": "x"}]}]}, "turns[0].candidates"),
    ],
)
def test_jsonschema_and_validator_reject_the_same_lines(change: dict[str, object], field: str) -> None:
    line = good_line(**change)
    problem = parse_line(json.dumps(line))
    assert isinstance(problem, InvalidLine)
    assert problem.field == field
    if field not in (
        "events[0].position",
        "turns[0].candidates",
    ):  # cross-field rules a JSON Schema cannot state
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(line, conversation_json_schema())


def test_bad_line_error_names_file_line_and_field(tmp_path: Path) -> None:
    lines: list[object] = [good_line(id=f"c{i}") for i in range(16)]
    lines.append(good_line(id="c16", turns=[{"speaker": "user", "text": "a"}] * 3 + [{"speaker": "bot", "text": "b"}]))
    path = write_lines(tmp_path / "data.jsonl", lines)
    with pytest.raises(FormatError) as caught:
        read_jsonl(path)
    assert str(caught.value) == f"{path}:17: turns[3].speaker: expected 'agent' or 'user', got 'bot'"


def test_skip_invalid_loads_the_rest_and_lists_every_skipped_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "data.jsonl",
        [
            good_line(id="a"),
            "{not json",
            good_line(id="b"),
            "",
            good_line(id="a"),
            good_line(id="c", domain=3),
        ],
    )
    skipped: list[InvalidLine] = []
    loaded = read_jsonl(path, skip_invalid=True, on_skip=skipped.append)
    assert [c.id for c in loaded] == ["a", "b"]
    assert [(s.line, s.field) for s in skipped] == [(2, ""), (5, "id"), (6, "domain")]
    assert "invalid JSON" in skipped[0].reason
    assert "duplicate conversation id 'a'" in skipped[1].reason


def test_iter_jsonl_reports_more_than_one_selected_candidate(tmp_path: Path) -> None:
    turn = {"speaker": "agent", "text": "a", "candidates": [{"text": "x", "selected": True}] * 2}
    path = write_lines(tmp_path / "d.jsonl", [good_line(turns=[turn])])
    (problem,) = list(iter_jsonl(path))
    assert isinstance(problem, InvalidLine) and "more than one candidate is selected" in problem.reason


def test_failed_write_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    original = parse_line(json.dumps(good_line()))
    assert isinstance(original, Conversation)
    write_jsonl(path, [original])
    before = path.read_bytes()

    def exploding() -> list[Conversation]:
        yield original
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(path, exploding())  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path], "the temp file was not cleaned up"


@pytest.mark.bad_input("1 non-finite numbers")
def test_non_finite_features_are_refused_on_write(tmp_path: Path) -> None:
    bad = Conversation(
        id="x",
        domain="d",
        turns=[Turn(speaker="agent", text="a", candidates=[Candidate(text="c", features={"f": float("nan")})])],
    )
    with pytest.raises(FormatError, match="finite"):
        write_jsonl(tmp_path / "x.jsonl", [bad])
    assert not (tmp_path / "x.jsonl").exists()


def test_call_flows_round_trip_and_bad_file_names_the_field(tmp_path: Path) -> None:
    flows = {"hotel": CallFlow(name="hotel", start="hello", edges={"hello": ["ask_name"]}, texts={"hello": "Hi!"})}
    write_call_flows(tmp_path / "flows.json", flows)
    assert read_call_flows(tmp_path / "flows.json") == flows
    (tmp_path / "bad.json").write_text('{"hotel": {"name": "hotel", "start": "hello", "edges": {"hello": "x"}}}')
    with pytest.raises(FormatError, match=r"bad.json: hotel.edges.hello: "):
        read_call_flows(tmp_path / "bad.json")


def nested(depth: int) -> object:
    """A JSON object `depth` levels deep: {"a": {"a": ... 1}}."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.bad_input("2 nesting: what the API accepts, the reader reads")
def test_meta_may_nest_to_the_limit_and_no_deeper() -> None:
    deepest = nested(MAX_NESTING)
    assert isinstance(parse_line(json.dumps(good_line(meta=deepest))), Conversation)
    for where, line in [
        ("meta", good_line(meta=nested(MAX_NESTING + 1))),
        ("turns[0].meta", good_line(turns=[{"speaker": "user", "text": "a", "meta": nested(MAX_NESTING + 1)}])),
        ("events[0].data", good_line(events=[{"kind": "q", "position": 0, "data": nested(MAX_NESTING + 1)}])),
    ]:
        problem = parse_line(json.dumps(line))
        assert isinstance(problem, InvalidLine) and problem.field == where
        assert f"nest deeper than {MAX_NESTING} levels" in problem.reason


@pytest.mark.bad_input("1 non-finite numbers")
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_that_are_not_finite_are_refused_in_meta(number: str) -> None:
    line = json.dumps(good_line(meta={"x": 0})).replace('"x": 0', f'"x": {number}')
    assert number in line
    assert isinstance(parse_line(line), InvalidLine)


@pytest.mark.bad_input("3 bounded text")
def test_a_text_over_the_limit_is_a_bad_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOPLAN_MAX_TEXT", "15")
    long_turn = [{"speaker": "agent", "text": "ok", "candidates": [{"text": "x" * 16}]}]
    path = write_lines(tmp_path / "data.jsonl", [good_line(id="a"), good_line(id="b", turns=long_turn)])
    with pytest.raises(FormatError) as caught:
        read_jsonl(path)
    assert str(caught.value) == (
        f"{path}:2: turns[0].candidates[0].text: 16 characters, over the limit of 15 (CONVOPLAN_MAX_TEXT raises it)"
    )
    monkeypatch.setenv("CONVOPLAN_MAX_TEXT", "16")
    assert len(read_jsonl(path)) == 2
    monkeypatch.setenv("CONVOPLAN_MAX_TEXT", "lots")
    with pytest.raises(FormatError, match="CONVOPLAN_MAX_TEXT='lots': expected a positive number"):
        read_jsonl(path)
    monkeypatch.delenv("CONVOPLAN_MAX_TEXT")
    assert max_text() == DEFAULT_MAX_TEXT >= 10_000


@pytest.mark.bad_input("7 invalid UTF-8")
def test_a_line_that_is_not_utf8_is_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = [json.dumps(good_line(id=name)).encode() for name in ("a", "b")]
    path.write_bytes(good[0] + b"\n" + b'{"id": "\xff\xfe"}\n' + good[1] + b"\n")
    with pytest.raises(FormatError, match=rf"{path.name}:2: not UTF-8 text \(byte 0xff at byte 8\)"):
        read_jsonl(path)
    skipped: list[InvalidLine] = []
    assert [c.id for c in read_jsonl(path, skip_invalid=True, on_skip=skipped.append)] == ["a", "b"]
    assert [line.line for line in skipped] == [2]


@pytest.mark.bad_input("27.5 memory a file can take")
def test_a_line_over_the_byte_limit_is_refused_and_skipped_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convoplan import schema

    good = [json.dumps(good_line(id=name)) for name in ("a", "b", "c")]
    long = json.dumps(good_line(id="long", meta={"pad": "x" * 5000}))
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good[0]}\n{long}\n{good[1]}\n{long}\n{good[2]}")  # the last line has no newline
    limit = max(len(line) for line in good)
    monkeypatch.setattr(schema, "MAX_LINE_BYTES", limit)
    monkeypatch.setattr(schema, "_SKIP_CHUNK", 7)
    with pytest.raises(FormatError) as caught:
        read_jsonl(path)
    assert str(caught.value) == f"{path}:2: longer than the limit of {limit:,} bytes per line"
    skipped: list[InvalidLine] = []
    assert [c.id for c in read_jsonl(path, skip_invalid=True, on_skip=skipped.append)] == ["a", "b", "c"]
    assert [line.line for line in skipped] == [2, 4]

    huge = tmp_path / "huge.jsonl"  # a 20 MB line under a 10 kB limit: the reader never holds it whole
    with huge.open("w") as stream:
        stream.write(f"{good[0]}\n" + '{"id": "huge", "meta": {"pad": "')
        for _ in range(20):
            stream.write("x" * 1_000_000)
        stream.write(f'"}}}}\n{good[1]}\n')
    monkeypatch.setattr(schema, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(schema, "_SKIP_CHUNK", 100_000)
    tracemalloc.start()
    try:
        assert [c.id for c in read_jsonl(huge, skip_invalid=True)] == ["a", "b"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


def test_the_default_line_limit_is_generous_and_a_line_at_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convoplan import schema

    assert schema.MAX_LINE_BYTES == 64 * 1024 * 1024
    line = json.dumps(good_line(id="a"))
    monkeypatch.setattr(schema, "MAX_LINE_BYTES", len(line))  # exactly at the limit, its newline not counted
    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n")
    assert [c.id for c in read_jsonl(path)] == ["a"]


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_a_utf8_byte_order_mark_at_the_start_is_accepted(tmp_path: Path) -> None:
    lines = [json.dumps(good_line(id=name)).encode() for name in ("a", "b")]
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_jsonl(marked) == read_jsonl(plain)
    assert [c.id for c in read_jsonl(plain)] == ["a", "b"]
    inside = tmp_path / "inside.jsonl"  # only at the very start: elsewhere it is a bad line like any other
    inside.write_bytes(lines[0] + b"\n\xef\xbb\xbf" + lines[1] + b"\n")
    with pytest.raises(FormatError, match=rf"{inside.name}:2: invalid JSON"):
        read_jsonl(inside)
    flows = tmp_path / "flows.json"
    write_call_flows(flows, {"f": CallFlow(name="f", start="a", edges={"a": ["b"]})})
    flows.write_bytes(b"\xef\xbb\xbf" + flows.read_bytes())
    assert list(read_call_flows(flows)) == ["f"]

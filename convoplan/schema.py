"""The canonical conversation format: dataclasses, JSON Lines read/write, and validation.

One conversation per line. Every corpus reader produces these dataclasses and every model consumes them, so this
module is the contract of the whole package; `docs/format.md` explains each field and
`docs/conversation.schema.json` is the JSON Schema generated from these classes (`convoplan data schema`).

Reading validates every line with pydantic against the dataclasses, then checks what a type cannot say (an event
placed after the last turn, two selected candidates in one step). A bad line becomes one error that names the file,
the line and the field path::

    data.jsonl:17: turns[3].speaker: expected 'agent' or 'user', got 'bot'

Writing omits fields that hold their default, so files stay small and `read(write(x)) == x`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from convoplan.atomic import atomic_write

__all__ = [
    "CallFlow",
    "Candidate",
    "Conversation",
    "Event",
    "FormatError",
    "InvalidLine",
    "Outcome",
    "Speaker",
    "Turn",
    "read_call_flows",
    "read_jsonl",
    "write_call_flows",
    "write_jsonl",
]

Speaker = Literal["agent", "user"]


def _not_zero(rating: int) -> int:
    if rating == 0:
        raise ValueError("ratings run from -3 to 7 and skip 0")
    return rating


MAX_NESTING = 32
"""Deepest nesting of objects and lists in a `meta` (or an event's `data`), the meta object itself being level 1.
The same limit holds wherever data enters: this reader and the server's API, so an export always reads back."""
DEFAULT_MAX_TEXT = 20_000
"""Longest message or candidate text, in characters, unless the environment variable CONVOPLAN_MAX_TEXT says
otherwise: a line holding a longer one is refused (models would otherwise take the whole text in memory many times
over). About 4,000 words: a long e-mail."""
MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest line of a conversations file, in bytes, its newline not counted: a longer line is a bad line (skipped by
`skip_invalid`), refused without ever being held whole, so a file with a line of gigabytes costs the reader memory
near this limit, not near the line. 64 MiB holds thousands of texts at the `DEFAULT_MAX_TEXT` limit."""
_SKIP_CHUNK = 1024 * 1024
"""Bytes read at a time while skipping the rest of a line over `MAX_LINE_BYTES`."""
_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte-order mark some editors write at the start of a file; the reader skips it there."""


def max_text() -> int:
    """The longest text a file may hold: CONVOPLAN_MAX_TEXT, else `DEFAULT_MAX_TEXT`."""
    raw = os.environ.get("CONVOPLAN_MAX_TEXT", "")
    if not raw:
        return DEFAULT_MAX_TEXT
    if not raw.isdigit() or int(raw) < 1:
        raise FormatError(f"CONVOPLAN_MAX_TEXT={raw!r}: expected a positive number of characters")
    return int(raw)


_J = TypeVar("_J")
_R = TypeVar("_R")


def check_json(value: _J, max_nesting: int = MAX_NESTING) -> _J:
    """`value`, if it nests objects and lists at most `max_nesting` levels deep and holds only finite numbers
    (JSON has no NaN or infinity; Python's parser would take them, a PostgreSQL json column would not); else a
    ValueError saying which."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"numbers must be finite (got {item})")
        if isinstance(item, dict | list):
            if depth > max_nesting:
                raise ValueError(f"objects and lists nest deeper than {max_nesting} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


Text = Annotated[str, Field(min_length=1, pattern=r"\S")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
JsonObject = Annotated[dict[str, JsonValue], AfterValidator(check_json)]
"""A free-form JSON object (`meta`, an event's `data`): finite numbers, at most `MAX_NESTING` levels deep."""
Rating = Annotated[int, Field(ge=-3, le=7, json_schema_extra={"not": {"const": 0}}), AfterValidator(_not_zero)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# extra="forbid": a misspelt field is an error, not silently dropped data.
_STRICT = ConfigDict(extra="forbid")


@dataclass
class Candidate:
    """An utterance proposed for an agent message, as offered at one composition step."""

    __pydantic_config__ = _STRICT

    text: Text
    action: str | None = None
    """Dialogue act or action label (fact, sound, quiz, ...)."""
    provider: str | None = None
    """Name of the content provider that proposed it."""
    focus: str | None = None
    """The entity the candidate is about."""
    changes_focus: bool = False
    """Whether choosing it moves the conversation to another entity."""
    features: dict[str, Finite] = field(default_factory=dict)
    """Numeric metadata the dialogue managers use (response length so far, step, ...)."""
    ratings: dict[str, Rating] = field(default_factory=dict)
    """Rater id -> rating on -3..7 (no 0), given to every candidate, selected or not."""
    score: Finite | None = None
    """The logging dialogue manager's score."""
    propensity: Probability | None = None
    """Probability that the logging policy selected this candidate, where it is known."""
    selected: bool = False
    meta: JsonObject = field(default_factory=dict)
    """Structured details (a question's kind, a quiz's options and answer, the content key, ...)."""


@dataclass
class Turn:
    """One message: a user utterance, or one agent message carrying at most one action."""

    __pydantic_config__ = _STRICT

    speaker: Speaker
    text: Text
    action: str | None = None
    """The agent's action label; None means no action (or not labelled)."""
    action_confidence: Probability | None = None
    """Confidence of the labeller that assigned `action`; None for human labels."""
    action_source: str | None = None
    """None for a label from the corpus (human); otherwise the labeller's name and version."""
    candidates: list[Candidate] = field(default_factory=list)
    """The candidates offered at the composition step that produced this agent message."""
    meta: JsonObject = field(default_factory=dict)


@dataclass
class Event:
    """Something that happened between turns but was not said: a knowledge-base query, its result, ..."""

    __pydantic_config__ = _STRICT

    kind: str
    position: Annotated[int, Field(ge=0)]
    """Number of turns before the event: 0 is before the first turn, len(turns) after the last."""
    data: JsonObject = field(default_factory=dict)


@dataclass
class Outcome:
    """How the conversation ended for the goal: converted (donated, booked) and a value (amount, reward)."""

    __pydantic_config__ = _STRICT

    converted: bool | None = None
    value: Finite | None = None


@dataclass
class Conversation:
    """Ordered turns between the agent (the side convoplan models) and a user, with an optional outcome."""

    __pydantic_config__ = _STRICT

    id: Annotated[str, Field(min_length=1)]
    domain: str
    turns: list[Turn]
    outcome: Outcome | None = None
    events: list[Event] = field(default_factory=list)
    meta: JsonObject = field(default_factory=dict)
    """Free-form metadata; readers put the split under "split"."""

    def agent_turns(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.speaker == "agent"]


@dataclass
class CallFlow:
    """The ideal action flow of a task, as a graph: each action to the actions that may follow it.

    Nodes are action labels; a corpus may also use pseudo-nodes for events that are not agent actions (STAR's
    `query_check`, `available`, `yes`, ...). A flow given as a plain sequence is a graph whose edges form a chain.
    """

    __pydantic_config__ = _STRICT

    name: str
    start: str
    edges: dict[str, list[str]]
    texts: dict[str, str] = field(default_factory=dict)
    """Template text of each action, where the corpus gives one."""


_ADAPTER: TypeAdapter[Conversation] = TypeAdapter(Conversation)


def conversation_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one line, generated from the dataclasses."""
    schema = _ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://convoplan.dev/schema/conversation.json"
    return schema


# --- validation errors ---------------------------------------------------------------------------------------


class FormatError(ValueError):
    """A file that does not hold valid canonical conversations; the message names file, line and field."""


@dataclass(frozen=True)
class InvalidLine:
    """One line that failed validation: where, which field, and why."""

    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _reason(error: Any) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, got {value!r}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown field"
    if kind in ("string_too_short", "string_pattern_mismatch"):
        return f"expected non-empty text, got {value!r}"
    if kind == "json_invalid":
        return f"invalid JSON ({error['ctx']['error']})"
    if kind == "value_error":  # our own validators: the message is already a sentence
        return f"{str(error['msg']).removeprefix('Value error, ')}, got {value!r}"
    message = str(error["msg"])
    return f"{message[0].lower()}{message[1:]}, got {value!r}"


def describe(error: ValidationError) -> tuple[str, str]:
    """The first problem of a pydantic error as (field path, reason), worded as every reader of the package words
    it (`turns[3].speaker`, `expected 'agent' or 'user', got 'bot'`)."""
    first = error.errors()[0]
    return _field_path(first["loc"]), _reason(first)


def _semantic_errors(conversation: Conversation, longest: int) -> Iterator[tuple[str, str]]:
    """Checks that types cannot express, as (field path, reason); `longest` is the most characters of a text."""
    texts = [(f"turns[{i}].text", turn.text) for i, turn in enumerate(conversation.turns)]
    texts += [
        (f"turns[{i}].candidates[{k}].text", candidate.text)
        for i, turn in enumerate(conversation.turns)
        for k, candidate in enumerate(turn.candidates)
    ]
    for where, text in texts:
        if len(text) > longest:
            yield where, f"{len(text):,} characters, over the limit of {longest:,} (CONVOPLAN_MAX_TEXT raises it)"
    for i, event in enumerate(conversation.events):
        if event.position > len(conversation.turns):
            yield (
                f"events[{i}].position",
                f"{event.position} is past the last turn ({len(conversation.turns)})",
            )
    for i, turn in enumerate(conversation.turns):
        if turn.speaker == "user" and turn.candidates:
            yield f"turns[{i}].candidates", "only agent turns have candidates"
        if sum(c.selected for c in turn.candidates) > 1:
            yield f"turns[{i}].candidates", "more than one candidate is selected"


def parse_line(
    text: str | bytes, path: str = "<string>", line: int = 1, longest: int | None = None
) -> Conversation | InvalidLine:
    """Validate one JSON line (text, or bytes that must be UTF-8); return the conversation or the first thing wrong
    with it. `longest`: the most characters of a message or candidate text (default: `max_text()`)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            return InvalidLine(path, line, "", f"not UTF-8 text (byte {text[error.start]:#04x} at byte {error.start})")
    try:
        conversation = _ADAPTER.validate_json(text, strict=True)
    except ValidationError as error:
        return InvalidLine(path, line, *describe(error))
    for field_path, reason in _semantic_errors(conversation, max_text() if longest is None else longest):
        return InvalidLine(path, line, field_path, reason)
    return conversation


# --- JSON Lines I/O ------------------------------------------------------------------------------------------


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes] | InvalidLine]:
    """Yield each non-blank line of a JSON Lines file as (line number, its bytes), or as an InvalidLine when it is
    longer than `MAX_LINE_BYTES`. A UTF-8 byte-order mark at the start is skipped. Every JSON Lines reader of the
    package reads through this, so each has the same memory bound and line numbering."""
    name = str(path)
    limit = MAX_LINE_BYTES
    with open(path, "rb") as stream:  # bytes: a line that is not UTF-8 is one bad line, not the end of the file
        if stream.peek(len(_BOM)).startswith(_BOM):
            stream.read(len(_BOM))
        number = 0
        while text := stream.readline(limit + 1):  # never more than one byte over the limit held as one line
            number += 1
            if len(text) > limit and not text.endswith(b"\n"):
                del text
                yield InvalidLine(name, number, "", f"longer than the limit of {limit:,} bytes per line")
                while (rest := stream.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the long line a chunk at a time
                continue
            if text.strip():
                yield number, text


def iter_jsonl(path: str | Path) -> Iterator[Conversation | InvalidLine]:
    """Yield each non-blank line of `path` as a Conversation, or as the InvalidLine saying what is wrong.

    A conversation id already seen earlier in the file is reported as invalid too.
    """
    seen: set[str] = set()
    name = str(path)
    longest = max_text()
    for line in iter_lines(path):
        if isinstance(line, InvalidLine):
            yield line
            continue
        number, text = line
        item = parse_line(text, name, number, longest)
        if isinstance(item, Conversation):
            if item.id in seen:
                item = InvalidLine(name, number, "id", f"duplicate conversation id {item.id!r}")
            else:
                seen.add(item.id)
        yield item


def iter_records(
    path: str | Path, adapter: TypeAdapter[_R], key: Callable[[_R], str]
) -> Iterator[tuple[int, _R] | InvalidLine]:
    """Each non-blank line of a JSON Lines file of records other than conversations (knowledge passages, preference
    pairs) as (line number, the record `adapter` validates, strictly), or as the InvalidLine saying what is wrong;
    a record whose `key` an earlier line had is invalid, naming that line."""
    name = str(path)
    first_line: dict[str, int] = {}
    for line in iter_lines(path):
        if isinstance(line, InvalidLine):
            yield line
            continue
        number, raw = line
        try:
            record = adapter.validate_json(raw, strict=True)
        except ValidationError as error:
            yield InvalidLine(name, number, *describe(error))
            continue
        if (seen := first_line.setdefault(key(record), number)) != number:
            yield InvalidLine(name, number, "id", f"duplicate id {key(record)!r}, first on line {seen}")
        else:
            yield number, record


def collect(
    items: Iterable[_R | InvalidLine], skip_invalid: bool, on_skip: Callable[[InvalidLine], None] | None
) -> list[_R]:
    """The valid items of a reader, in order: the first InvalidLine raises FormatError, or with `skip_invalid`
    goes to `on_skip` (when given)."""
    kept = []
    for item in items:
        if isinstance(item, InvalidLine):
            if not skip_invalid:
                raise FormatError(str(item))
            if on_skip is not None:
                on_skip(item)
        else:
            kept.append(item)
    return kept


def read_jsonl(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    on_skip: Callable[[InvalidLine], None] | None = None,
) -> list[Conversation]:
    """Read a whole file of conversations.

    By default the first invalid line raises FormatError. With `skip_invalid`, invalid lines are passed to
    `on_skip` (when given) and the rest is loaded.
    """
    return collect(iter_jsonl(path), skip_invalid, on_skip)


def to_json(conversation: Conversation) -> str:
    """One conversation as compact JSON, fields at their default left out."""
    for i, turn in enumerate(conversation.turns):  # NaN would silently become null: refuse it here
        for candidate in turn.candidates:
            if any(not math.isfinite(v) for v in candidate.features.values()):
                raise FormatError(f"{conversation.id}: turns[{i}]: candidate features must be finite")
    return _ADAPTER.dump_json(conversation, exclude_defaults=True).decode()


def write_jsonl(path: str | Path, conversations: Iterable[Conversation]) -> int:
    """Write conversations atomically (temp file, then rename); return how many were written."""
    count = 0
    with atomic_write(path) as stream:
        for conversation in conversations:
            stream.write(to_json(conversation))
            stream.write("\n")
            count += 1
    return count


_FLOWS: TypeAdapter[dict[str, CallFlow]] = TypeAdapter(dict[str, CallFlow])


def write_call_flows(path: str | Path, flows: dict[str, CallFlow]) -> None:
    """Write named call-flows as one JSON object, atomically."""
    with atomic_write(path) as stream:
        stream.write(_FLOWS.dump_json(flows, indent=1).decode() + "\n")


def read_call_flows(path: str | Path) -> dict[str, CallFlow]:
    """Read a file written by `write_call_flows`; a bad one raises FormatError naming the field."""
    try:
        return _FLOWS.validate_json(Path(path).read_bytes().removeprefix(_BOM), strict=True)
    except ValidationError as error:
        where, reason = describe(error)
        raise FormatError(f"{path}: {where}: {reason}") from None


def dumps_schema() -> str:
    return json.dumps(conversation_json_schema(), indent=2, sort_keys=True) + "\n"

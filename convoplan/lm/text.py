"""The inline-action text format: a conversation as one string a causal LM reads and writes.

Every message is a speaker tag, for labelled messages an action tag, a space, the text and an end-of-message tag::

    <|user|> Hi, how are you?<|end|><|agent|><|action:greeting|> Hello! Doing well.<|end|><|agent|> Anyway.<|end|>

The tags are single special tokens of the tokenizer (`convoplan.lm.tokenizer`), so an action costs one token and
generation stops at `<|end|>`. The vanilla variant renders the same conversation with no action tags. Action names
are percent-encoded inside their tag (`ask for sale` -> `<|action:ask%20for%20sale|>`), so any name maps to exactly
one tag without spaces or `|` and back. The space before the text is the GPT-2 convention (words start with one),
so a pretrained byte-level tokenizer sees its usual tokens.

`render` and `parse` are inverses for messages that do not themselves contain a tag; `render` refuses such text
(the token-level encoder never needs to: it tokenises message text with special tokens switched off). Long
histories are cut from the left at whole-message boundaries by `keep_recent`.

Besides messages, a grounded model (`convoplan.lm.grounding`) reads **notes**: blocks the model reads but never
writes, each a tag, a space, one line of text and `<|end|>`. `<|event|>` is an event of the conversation at its
place in the history (`event_text`: `return_item: Day Monday; Message The venue is available.`), `<|knowledge|>` a
knowledge passage with its source, `<|example|>` a past agent message of the action (an exemplar); the last two sit
after the history, before the agent's tags of the message to write::

    <|user|> Is it free on Monday?<|end|><|event|> return_item: Day Monday; VenueName West Bay<|end|>
    <|knowledge|> venue guide: West Bay seats 80.<|end|><|example|> Yes, it is available.<|end|><|agent|>...

`parse_blocks(render(blocks))` gives back messages and notes; `parse` the messages alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal
from urllib.parse import quote, unquote

from pydantic import JsonValue

from convoplan.schema import Event, Speaker, Turn

__all__ = [
    "Block",
    "Note",
    "action_name",
    "action_token",
    "event_text",
    "keep_recent",
    "parse",
    "parse_blocks",
    "render",
    "shorten",
    "with_events",
]

USER = "<|user|>"
AGENT = "<|agent|>"
END = "<|end|>"
"""Closes every message; generation of a message stops here."""
EOS = "<|endoftext|>"
"""Separates conversations in training data (GPT-2's own end-of-text token, kept for a from-scratch tokenizer)."""
FORMAT_TOKENS = (EOS, USER, AGENT, END)
"""The special tokens every tokenizer of the format has, besides one per action."""

NoteKind = Literal["event", "knowledge", "example"]
EVENT = "<|event|>"
"""An event of the conversation (a knowledge-base query, its result), at its place in the history."""
KNOWLEDGE = "<|knowledge|>"
"""A knowledge passage, with its source, before the message to write."""
EXAMPLE = "<|example|>"
"""A past agent message of the action to take (an exemplar), before the message to write."""
NOTE_TAGS: dict[NoteKind, str] = {"event": EVENT, "knowledge": KNOWLEDGE, "example": EXAMPLE}
"""The tag of each kind of note: tokens of a grounded model's tokenizer only (`add_format_tokens(notes=True)`)."""

_SPEAKER_TAGS: dict[str, Speaker] = {USER: "user", AGENT: "agent"}
_NOTE_KINDS: dict[str, NoteKind] = {tag: kind for kind, tag in NOTE_TAGS.items()}
_ACTION_PREFIX, _ACTION_SUFFIX = "<|action:", "|>"

TAG = re.compile(r"<\|(?:user|agent|end|endoftext|event|knowledge|example|action:[^|]*)\|>")
"""Any tag of the format (a percent-encoded action name never contains `|`)."""


@dataclass(frozen=True)
class Note:
    """A block the model reads but never writes: an event of the conversation, a knowledge passage or an exemplar,
    rendered as its tag, a space, `text` and `<|end|>`."""

    kind: NoteKind
    text: str


Block = Turn | Note
"""What a rendered text is made of: messages and notes."""


def action_token(name: str) -> str:
    """The tag of an action: its name percent-encoded (everything but letters, digits and `_.-~`)."""
    return f"{_ACTION_PREFIX}{quote(name, safe='')}{_ACTION_SUFFIX}"


def action_name(token: str) -> str | None:
    """The action a tag stands for, or None when `token` is not an action tag."""
    if not (token.startswith(_ACTION_PREFIX) and token.endswith(_ACTION_SUFFIX)) or "|" in token[2:-2]:
        return None
    return unquote(token[len(_ACTION_PREFIX) : -len(_ACTION_SUFFIX)])


def turn_tags(turn: Turn, *, actions: bool = True) -> list[str]:
    """The tags before a message's text: the speaker's, then the action's when it has one (and `actions`)."""
    tags = [USER if turn.speaker == "user" else AGENT]
    if actions and turn.action is not None:
        tags.append(action_token(turn.action))
    return tags


def render_turn(turn: Turn, *, actions: bool = True) -> str:
    """One message in the text format; ValueError if its text contains a tag (it would not parse back)."""
    found = TAG.search(turn.text)
    if found:
        raise ValueError(f"message text contains the format tag {found.group()!r}: {turn.text[:60]!r}")
    return "".join(turn_tags(turn, actions=actions)) + " " + turn.text + END


def render_note(note: Note) -> str:
    """One note in the text format; ValueError if its text contains a tag (it would not parse back)."""
    found = TAG.search(note.text)
    if found:
        raise ValueError(f"{note.kind} text contains the format tag {found.group()!r}: {note.text[:60]!r}")
    return f"{NOTE_TAGS[note.kind]} {note.text}{END}"


def render(blocks: Sequence[Block], *, actions: bool = True) -> str:
    """Messages (a conversation's `turns`), and notes where given, in the text format; `actions=False` is the
    vanilla variant."""
    return "".join(
        render_note(block) if isinstance(block, Note) else render_turn(block, actions=actions) for block in blocks
    )


def parse_blocks(text: str) -> list[Block]:
    """The messages and notes of a rendered string: messages with speaker, text and action, notes with kind and
    text; ValueError saying where it is malformed.

    Only what the format carries comes back: speaker, text and action (not candidates, meta, ...).
    """
    blocks: list[Block] = []
    position = 0
    while position < len(text):
        opening = TAG.match(text, position)
        if opening is None or (opening.group() not in _SPEAKER_TAGS and opening.group() not in _NOTE_KINDS):
            raise ValueError(
                f"character {position}: expected {USER} or {AGENT} (or a note's tag), got "
                f"{text[position : position + 20]!r}"
            )
        position = opening.end()
        action = None
        action_tag = TAG.match(text, position) if opening.group() in _SPEAKER_TAGS else None
        if action_tag is not None and (action := action_name(action_tag.group())) is not None:
            position = action_tag.end()
        end = text.find(END, position)
        if end < 0:
            what = "note" if opening.group() in _NOTE_KINDS else "message"
            raise ValueError(f"character {position}: {what} without {END}")
        body = text[position:end]
        if not body.startswith(" "):
            raise ValueError(f"character {position}: expected a space before the text")
        if opening.group() in _NOTE_KINDS:
            blocks.append(Note(_NOTE_KINDS[opening.group()], body[1:]))
        else:
            blocks.append(Turn(speaker=_SPEAKER_TAGS[opening.group()], text=body[1:], action=action))
        position = end + len(END)
    return blocks


def parse(text: str) -> list[Turn]:
    """The messages of a rendered string (`parse_blocks` without the notes), with speaker, text and action;
    ValueError saying where it is malformed."""
    return [block for block in parse_blocks(text) if isinstance(block, Turn)]


# --- events as notes ---------------------------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: cut at the last space of the first `limit - 1` when there is one in
    their second half (else where it is), and an ellipsis marks the cut."""
    if len(text) <= limit:
        return text
    head = text[: max(0, limit - 1)]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip() + "…"


def _scalar(value: JsonValue) -> str:
    """A JSON scalar as a person would write it: yes/no, 3 rather than 3.0, a text on one line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split())


def event_text(event: Event, skip_keys: Collection[str] = (), limit: int = 300) -> str:
    """An event as one short line: `kind: key value; key value; ...`.

    Nested objects are flattened to their leaf keys (`{"Item": {"Day": "Monday"}}` -> `Day Monday`); the items of
    a list of objects are flattened in turn, a list of plain values is one pair (`NearbyPOIs School, University`).
    Keys in `skip_keys` (with what is under them), null and empty values, and a pair already said in the event
    (the same key and value) are left out. The line is cut to `limit` characters (`shorten`): a query's or an
    item's every field, said in full, would fill a prompt.
    """
    pairs: list[tuple[str, str]] = []

    def walk(key: str, value: JsonValue) -> None:
        if key in skip_keys or value is None or value == "" or value == [] or value == {}:
            return
        if isinstance(value, dict):
            for inner, item in value.items():
                walk(inner, item)
        elif isinstance(value, list) and not any(isinstance(item, dict | list) for item in value):
            pairs.append((key, ", ".join(_scalar(item) for item in value if item is not None)))
        elif isinstance(value, list):
            for item in value:
                walk(key, item)
        else:
            pairs.append((key, _scalar(value)))

    for key, value in event.data.items():
        walk(key, value)
    unique = list(dict.fromkeys(pairs))  # first occurrence of each (key, value), in order
    body = "; ".join(f"{key} {value}".strip() for key, value in unique)
    return shorten(f"{' '.join(event.kind.split())}: {body}" if body else event.kind, limit)


def with_events(
    turns: Sequence[Turn], events: Sequence[Event], skip_keys: Collection[str] = (), limit: int = 300
) -> list[Block]:
    """The messages with each event rendered as a note (`event_text`) at its position: an event at position p
    comes after the first p messages, events of one position in their order. Events past the last message (a
    history cut before them) come last."""
    at: dict[int, list[Note]] = {}
    for event in events:
        at.setdefault(min(event.position, len(turns)), []).append(Note("event", event_text(event, skip_keys, limit)))
    blocks: list[Block] = []
    for position in range(len(turns) + 1):
        blocks.extend(at.get(position, []))
        if position < len(turns):
            blocks.append(turns[position])
    return blocks


def keep_recent(lengths: Sequence[int], budget: int) -> int:
    """Index of the first message to keep so that the kept suffix fits in `budget` tokens, given each message's
    length: whole messages are dropped from the left. Returns len(lengths) when not even the last one fits."""
    # suffix[i] = sum(lengths[i:]), non-increasing in i: the first i whose suffix fits is the answer.
    suffix = list(accumulate(reversed(lengths)))[::-1]
    return next((i for i, total in enumerate(suffix) if total <= budget), len(lengths))

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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate
from urllib.parse import quote, unquote

from convoplan.schema import Speaker, Turn

__all__ = ["action_name", "action_token", "keep_recent", "parse", "render"]

USER = "<|user|>"
AGENT = "<|agent|>"
END = "<|end|>"
"""Closes every message; generation of a message stops here."""
EOS = "<|endoftext|>"
"""Separates conversations in training data (GPT-2's own end-of-text token, kept for a from-scratch tokenizer)."""
FORMAT_TOKENS = (EOS, USER, AGENT, END)
"""The special tokens every tokenizer of the format has, besides one per action."""

_SPEAKER_TAGS: dict[str, Speaker] = {USER: "user", AGENT: "agent"}
_ACTION_PREFIX, _ACTION_SUFFIX = "<|action:", "|>"

TAG = re.compile(r"<\|(?:user|agent|end|endoftext|action:[^|]*)\|>")
"""Any tag of the format (a percent-encoded action name never contains `|`)."""


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


def render(turns: Sequence[Turn], *, actions: bool = True) -> str:
    """Messages (a conversation's `turns`) in the text format; `actions=False` is the vanilla variant."""
    return "".join(render_turn(turn, actions=actions) for turn in turns)


def parse(text: str) -> list[Turn]:
    """The messages of a rendered string, with speaker, text and action; ValueError saying where it is malformed.

    Only what the format carries comes back: speaker, text and action (not candidates, meta, ...).
    """
    turns: list[Turn] = []
    position = 0
    while position < len(text):
        speaker_tag = TAG.match(text, position)
        if speaker_tag is None or speaker_tag.group() not in _SPEAKER_TAGS:
            raise ValueError(
                f"character {position}: expected {USER} or {AGENT}, got {text[position : position + 20]!r}"
            )
        position = speaker_tag.end()
        action = None
        action_tag = TAG.match(text, position)
        if action_tag is not None and (action := action_name(action_tag.group())) is not None:
            position = action_tag.end()
        end = text.find(END, position)
        if end < 0:
            raise ValueError(f"character {position}: message without {END}")
        body = text[position:end]
        if not body.startswith(" "):
            raise ValueError(f"character {position}: expected a space before the message text")
        turns.append(Turn(speaker=_SPEAKER_TAGS[speaker_tag.group()], text=body[1:], action=action))
        position = end + len(END)
    return turns


def keep_recent(lengths: Sequence[int], budget: int) -> int:
    """Index of the first message to keep so that the kept suffix fits in `budget` tokens, given each message's
    length: whole messages are dropped from the left. Returns len(lengths) when not even the last one fits."""
    # suffix[i] = sum(lengths[i:]), non-increasing in i: the first i whose suffix fits is the answer.
    suffix = list(accumulate(reversed(lengths)))[::-1]
    return next((i for i, total in enumerate(suffix) if total <= budget), len(lengths))

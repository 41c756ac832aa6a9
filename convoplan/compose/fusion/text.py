"""Fusion's shared ground: tokens, the focus entity, the Fuser protocol, the hand-written pairs, and the analysis of
the utterances of a response (kinds, subjects, repeated mentions) that the rules and the tagger both read."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, Protocol

# ---------------------------------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CLOSERS = frozenset(",.!?:;)")
"""Punctuation that hugs the token before it."""


def tokenize(text: str) -> list[str]:
    """Words and single punctuation marks: "What's" -> What ' s; the unit every edit and every score works on."""
    return _TOKEN.findall(text)


def _joins_neighbours(tokens: Sequence[str], i: int) -> bool:
    """Whether tokens[i] sits between its neighbours without spaces: What's, chest-beating, 1,900, 2.3."""
    if i == 0 or i + 1 >= len(tokens):
        return False
    before, token, after = tokens[i - 1], tokens[i], tokens[i + 1]
    if token in ("'", "-"):
        return before[-1].isalnum() and after[0].isalnum()
    return token in (",", ".") and before.isdigit() and after.isdigit()


def detokenize(tokens: Sequence[str]) -> str:
    """The text `tokens` came from: no space before , . ! ? : ; none inside What's / chest-beating / 1,900 / 2.3,
    and double quotes that alternate between opening (hugs the next token) and closing (hugs the previous one)."""
    parts: list[str] = []
    quote_open = False
    glue = True  # no space before the next token
    for i, token in enumerate(tokens):
        if token == '"':
            space = not glue and not quote_open
            glue = not quote_open
            quote_open = not quote_open
        elif _joins_neighbours(tokens, i):
            space, glue = False, True
        else:
            space, glue = not glue and token not in _CLOSERS, False
        parts.append(" " + token if space else token)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------- entities


def pluralise(noun: str) -> str:
    """A regular English plural (butterfly -> butterflies, fox -> foxes), for names the knowledge base lacks."""
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    return noun + "s"


@dataclass(frozen=True)
class Entity:
    """The focus of the response: the entity a repeated mention of which becomes "it" / "they"."""

    name: str
    plural: str
    article: str
    synonyms: tuple[str, ...] = ()
    """Other names ("hippo", "mallard"): the utterances and the user call the focus by them too."""

    @property
    def words(self) -> frozenset[str]:
        """Lower-case single words that name the focus: head nouns of name and plural, one-word synonyms and
        their plurals. Multi-word synonyms are left out: their last word ("white" in "great white") may not
        name the entity on its own."""
        heads = {self.name.split()[-1], self.plural.split()[-1]}
        for synonym in self.synonyms:
            if " " not in synonym and "-" not in synonym:
                heads |= {synonym, pluralise(synonym)}
        return frozenset(word.lower() for word in heads)


def guess_entity(name: str) -> Entity:
    """An entity for a name no knowledge base describes: a regular plural and "a"/"an" by its first letter."""
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return Entity(name, pluralise(name), article)


class Fuser(Protocol):
    """Merges the utterances of one response; `focus` is the entity under discussion, `user` the last message."""

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str: ...


class ConcatFusion:
    """No fusion: the utterances joined by single spaces. The baseline every fuser must beat."""

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        return " ".join(u.strip() for u in utterances)


# ---------------------------------------------------------------------------------------------------- the pairs


@dataclass(frozen=True)
class FusionPair:
    """One hand-written example: the utterances a response was composed of and its fused text."""

    id: str
    split: Literal["train", "test"]
    focus: str
    user: str
    """The user message the response answers."""
    utterances: tuple[str, ...]
    fused: str
    entity: Entity | None = None
    """The focus as the world's entity lookup gives it (the one the bot passes to its fuser)."""


def load_fusion_pairs(path: str | Path | Traversable, entity: Callable[[str], Entity | None]) -> list[FusionPair]:
    """The pairs of a JSON Lines file, each focus resolved by `entity` (a world's `World.entity`, so that a fuser
    trains on the entities it meets in the bot); a bad line raises ValueError naming the file and the line."""
    where = str(path)
    try:
        text = (Path(path) if isinstance(path, str) else path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{where}: cannot read fusion pairs: {error}") from None
    lines = text.splitlines()
    pairs: list[FusionPair] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            utterances = row["utterances"]
            if row["split"] not in ("train", "test") or not isinstance(utterances, list) or not utterances:
                raise ValueError("split must be train or test and utterances a non-empty list")
            texts = (row["id"], row["focus"], row["user"], row["fused"], *utterances)
            if not all(isinstance(text, str) for text in texts):
                raise ValueError("id, focus, user, fused and utterances must be strings")
            focus = row["focus"]
            pairs.append(
                FusionPair(row["id"], row["split"], focus, row["user"], tuple(utterances), row["fused"], entity(focus))
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{where}:{number}: bad fusion pair: {error}") from None
    return pairs


# ---------------------------------------------------------------------------------------------------- analysis

UtteranceKind = Literal["ack", "sound", "quote", "statement", "quiz", "yes_no", "open_question"]

_QUESTION_WORDS = frozenset({"what", "how", "where", "when", "why", "which", "who", "do", "does", "can", "are"})
"""A user message opening with one of these and naming the focus asks about it ("how heavy are hippos?"): the
answer may start with "They". "is" is left out: "is it the owl?" is a quiz guess, not a question about owls."""


def utterance_kind(text: str) -> UtteranceKind:
    """Which provider an utterance comes from, read off its wording (the providers' templates)."""
    text = text.strip()
    if re.search(r'\bsays: "', text):
        return "quote"
    if text.startswith("Here's what"):
        return "sound"
    if text.startswith("Quiz time"):
        return "quiz"
    if text.endswith("?"):
        return "open_question" if re.match(r"(Which|What)\b", text) else "yes_no"
    if re.match(r"(Not quite|That's right)\b", text) or len(text.split()) <= 2:
        return "ack"
    return "statement"


@dataclass(frozen=True)
class ReadUtterance:
    """One utterance, tokenised, with what the rules and the tagger's features need to know about it."""

    tokens: tuple[str, ...]
    kind: UtteranceKind
    body: int
    """Where the sentence proper starts: after `says : "` in a quote, 0 otherwise."""
    quote_end: int
    """Index of a quote's closing quotation mark (len(tokens) if none)."""
    subject: tuple[str, ...]
    """The leading noun phrase that names the focus ("saltwater crocodiles"), lower-cased; () if none."""
    mentions: bool
    """Whether the focus is named anywhere in it."""

    @property
    def singular(self) -> bool:
        return self.subject[:1] in (("a",), ("an",))


def _subject(tokens: Sequence[str], words: frozenset[str]) -> tuple[str, ...]:
    """The words up to and including the run of words naming the focus, if the sentence opens with them (at most
    five plain words before it, not a possessive: "A rhino's horn" is about the horn). The whole run: with the
    synonym "komodo", "Komodo dragons grow" opens with the subject "komodo dragons", not "komodo"."""
    for i, token in enumerate(tokens[:5]):
        if not token.isalpha():
            return ()
        if token.lower() in words:
            end = i + 1
            while end < len(tokens) and tokens[end].isalpha() and tokens[end].lower() in words:
                end += 1
            possessive = end < len(tokens) and tokens[end] == "'"
            return () if possessive else tuple(t.lower() for t in tokens[:end])
    return ()


def _read(text: str, words: frozenset[str]) -> ReadUtterance:
    tokens = tuple(tokenize(text))
    kind = utterance_kind(text)
    body, quote_end = 0, len(tokens)
    if kind == "quote":
        body = next(i + 3 for i in range(len(tokens) - 2) if tokens[i : i + 3] == ("says", ":", '"'))
        quote_end = next((i for i in range(len(tokens) - 1, body - 1, -1) if tokens[i] == '"'), len(tokens))
    subject = _subject(tokens[body:], words) if kind in ("quote", "statement") else ()
    return ReadUtterance(tokens, kind, body, quote_end, subject, any(t.lower() in words for t in tokens))


@dataclass(frozen=True)
class FusionContext:
    """The input of one fusion, read once: shared by the rules and the tagger's features."""

    utterances: tuple[ReadUtterance, ...]
    words: frozenset[str]
    user_mentions: bool
    user_asks: bool
    repeats: tuple[bool, ...]
    """Utterance i opens with the subject of utterance i-1 (or, singular, follows an ack naming the focus)."""
    chain: tuple[int, ...]
    """How many statements in a row before utterance i share its subject."""
    named_before: tuple[bool, ...]
    """The user or an earlier utterance named the focus before utterance i."""
    content_before: tuple[bool, ...]
    """A sound, a quote or a statement comes before utterance i."""


def analyse(utterances: Sequence[str], focus: Entity | None, user: str) -> FusionContext:
    """Read the utterances of one response once, for the rules and the tagger's features alike."""
    words = focus.words if focus is not None else frozenset()
    read = tuple(_read(text, words) for text in utterances)
    user_tokens = [t.lower() for t in tokenize(user)]
    user_mentions = any(t in words for t in user_tokens)
    # "what do you know about X?" asks to hear about X, not a question the next sentence answers
    user_asks = user_mentions and user_tokens[0] in _QUESTION_WORDS and "about" not in user_tokens
    repeats: list[bool] = []
    chain: list[int] = []
    for i, utterance in enumerate(read):
        previous = read[i - 1] if i else None
        same = previous is not None and bool(utterance.subject) and utterance.subject == previous.subject
        after_naming = previous is not None and previous.kind == "ack" and previous.mentions and utterance.singular
        repeats.append(same or after_naming)
        run = chain[-1] + 1 if same and previous is not None and previous.kind == "statement" else 0
        chain.append(run if utterance.kind == "statement" else 0)
    named = [user_mentions or any(u.mentions for u in read[:i]) for i in range(len(read))]
    content = [any(u.kind in ("sound", "quote", "statement") for u in read[:i]) for i in range(len(read))]
    flags = (tuple(repeats), tuple(chain), tuple(named), tuple(content))
    return FusionContext(read, words, user_mentions, user_asks, *flags)

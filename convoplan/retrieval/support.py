"""Is what a suggestion says supported by its sources? A check of every claim of a text against knowledge passages.

An agent who trusts a suggestion sends it in the company's name, so a suggestion should state only what a source
says. `check_support(text, passages)` splits the text into claims and looks for a passage that supports each:

- **sentences**: every statement (not a question, at least `min_claim_words` words) must be a quote or a close
  paraphrase of a passage: rapidfuzz's `token_set_ratio` (the words of the shorter text against the longer one,
  order and repeats ignored, 0-100; case, punctuation and a plural's "s" ignored) at least `min_similarity`; a
  statement with numbers only from a passage that states them all, at least `min_numeric_similarity` (the numbers
  carry the claim: "Pigs weigh between 100 and 350 kilograms" for "A pig weighs 100 to 350 kilograms"). Either
  way at least `min_coverage` of the statement's words must be the passage's (words that attribute it to the
  passage's source aside: "The convoplan animal guide says: ..."): a passage with a claim added is not a
  paraphrase of it. "Elephants sleep about two hours a day" is supported by "Elephants sleep only about two hours
  a day, standing up"; "Elephants sleep for 40 to 100 hours a day" is not: its numbers are not there.
- **numbers**: every number in the text (digits, with thousands commas and decimals) must be one a passage states:
  in its text, equal to one of its `fields`, or inside one of its [low, high] ranges, within `tolerance` (relative).
  A suggestion that gives an elephant's weight as 2,000 kilograms where the source says 3,000 to 6,000 is caught
  even when its wording is close.

Each claim comes back with the passage that supports it (`source`, its id) or None; `Support.sources` are the
passages the text drew on and `Support.unsupported` what a reviewer should look at. Which passages to check against
is the caller's choice: `KnowledgeIndex.for_claims` gives those of the entity in focus (the animal asked about), and
none for a text about another entity.

**Items an API returned** (STAR's `return_item` events: `{"APIName": ..., "Item": {field: value}}`) are checked by
their values instead (`check_slots`): the values of the latest item before a message that its reference states must
be stated by the suggestion too (slot recall), and every value the suggestion states, of all those the API returned
anywhere in the logs (`item_vocabulary`), must be the item's own (slot precision: a restaurant's name or a price
that is not this item's contradicts it) or one the reference states too (the human wrote it: the other days of a
forecast, "available" in "no room available"). A value is stated when it appears as whole words, case ignored ("1,372"
reads as "1372"); values are an item's strings of at most `MAX_VALUE_WORDS` words and its numbers (not its `id`,
its true/false flags, or its long messages, which BLEU already compares).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Annotated, Any, Literal

from annotated_types import Ge, Interval
from rapidfuzz import fuzz

from convoplan.configs import Config
from convoplan.retrieval.knowledge import KnowledgeIndex, Passage, stopwords
from convoplan.schema import Conversation, Turn

__all__ = [
    "Claim",
    "Item",
    "Slots",
    "Support",
    "SupportConfig",
    "check_slots",
    "check_support",
    "item_vocabulary",
    "numbers_in",
    "returned_item",
    "said_passages",
]

_NUMBER = re.compile(r"(?<![\w.#])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w|\.\d|,\d)")
"""A number as written: 3,000 or 6000 or 2.5 (not inside a word such as "H2O" or an id such as "c12#3")."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class SupportConfig(Config):
    """How close a claim must be to a passage to count as supported."""

    min_similarity: Annotated[float, Interval(ge=0, le=100)] = 80.0
    """Least rapidfuzz token_set_ratio (0-100) between a statement and a passage."""
    min_numeric_similarity: Annotated[float, Interval(ge=0, le=100)] = 60.0
    """The same for a statement with numbers that one passage states all of: "Pigs weigh between 100 and 350
    kilograms" says what "A pig weighs 100 to 350 kilograms" says in other words (token_set_ratio 77)."""
    min_coverage: Annotated[float, Interval(ge=0, le=1)] = 0.6
    """Least share of a statement's words (stopwords and the words attributing it to the passage's source aside)
    that the passage has too: a true passage with a claim added ("Elephants live in savannas, where they find
    plenty of grazing for meat") is similar enough to it by token_set_ratio, which reads only the words both have,
    but says more than it."""
    min_claim_words: Annotated[int, Ge(1)] = 4
    """Statements shorter than this ("Sure!", "Happy to help.") claim nothing."""
    tolerance: Annotated[float, Interval(ge=0, le=1)] = 0.02
    """Relative slack when a number is compared with a source's (rounding: 2.5 m for 2.54)."""


@dataclass(frozen=True)
class Claim:
    text: str
    kind: Literal["statement", "number"]
    source: str | None
    """The id of the passage that supports it; None: no passage does."""


@dataclass(frozen=True)
class Support:
    claims: tuple[Claim, ...]

    @property
    def supported(self) -> bool:
        """Every claim has a source (a text that claims nothing is supported)."""
        return all(claim.source is not None for claim in self.claims)

    @property
    def unsupported(self) -> list[Claim]:
        return [claim for claim in self.claims if claim.source is None]

    @property
    def sources(self) -> list[str]:
        """The passages the text drew on, in the order its claims cite them."""
        return list(dict.fromkeys(claim.source for claim in self.claims if claim.source is not None))


_WORD = re.compile(r"[\w.,]*\w")


def _singular(word: str) -> str:
    """A regular plural or third person's ending dropped: forests, weighs -> forest, weigh; foxes, hippopotamuses
    -> fox, hippopotamus; butterflies -> butterfly; "hippopotamus", "grass", "this" stay."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    return word[:-1]


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")


def _plain(text: str) -> str:
    """Lower case, numbers without thousands commas: 3,000 and 3000 are one number."""
    return _THOUSANDS.sub("", text.casefold())


def _words(text: str) -> str:
    """The text as compared: `_plain`, punctuation dropped, plurals singular (`_singular`)."""
    return " ".join(_singular(w) for w in _WORD.findall(_plain(text)))


@lru_cache(maxsize=65_536)
def _passage_words(text: str) -> str:
    """`_words` of a passage: the same passages are compared with every sentence of every suggestion."""
    return _words(text)


@cache
def _attribution(source: str) -> frozenset[str]:
    """The words that attribute a statement to `source`: its own, and "says", "said", "according"."""
    return frozenset(_words(source).split()) | {"say", "said", "according"}


def _coverage(said: str, passage: str) -> float:
    """The share of `said`'s words (stopwords aside; both as `_words` gives them) that `passage` has."""
    words = [w for w in said.split() if w not in stopwords()]
    known = set(passage.split())
    return sum(w in known for w in words) / len(words) if words else 1.0


def numbers_in(text: str) -> list[float]:
    """The numbers written in `text` with digits, in order ("3,000 to 6,000" -> [3000.0, 6000.0])."""
    return [float(match.group().replace(",", "")) for match in _NUMBER.finditer(text)]


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def _states_number(passage: Passage, value: float, tolerance: float) -> bool:
    """Whether the passage states `value`: in its text, as a field, or inside a field's range."""
    if any(_close(value, number, tolerance) for number in numbers_in(passage.text)):
        return True
    for field_value in passage.fields.values():
        if isinstance(field_value, tuple):
            low, high = field_value
            if low * (1 - tolerance) <= value <= high * (1 + tolerance):
                return True
        elif not isinstance(field_value, str) and _close(value, float(field_value), tolerance):
            return True
    return False


def check_support(text: str, passages: Sequence[Passage], config: SupportConfig | None = None) -> Support:
    """Every claim of `text` (its statements and its numbers) with the passage that supports it, or None."""
    config = config or SupportConfig()
    claims: list[Claim] = []
    for sentence in _SENTENCE.split(text.strip()):
        if sentence.rstrip().endswith("?") or len(sentence.split()) < config.min_claim_words:
            continue
        words = _words(sentence)
        scores = []
        for passage in passages:
            # Attribution to the source ('The guide says: "..."') is left out: the rest is what must be the passage's.
            said = " ".join(w for w in words.split() if w not in _attribution(passage.source))
            known = _passage_words(passage.text)
            scores.append(fuzz.token_set_ratio(said, known) if _coverage(said, known) >= config.min_coverage else 0.0)
        values = numbers_in(sentence)
        # A statement with numbers is supported only by a passage that states them all, and then needs less of its
        # wording: the numbers carry the claim.
        needed = [
            (config.min_numeric_similarity if all(_states_number(p, v, config.tolerance) for v in values) else 101.0)
            if values
            else config.min_similarity
            for p in passages
        ]
        found = [i for i in range(len(passages)) if scores[i] >= needed[i]]
        best = max(found, key=scores.__getitem__, default=None)
        claims.append(Claim(sentence, "statement", passages[best].id if best is not None else None))
    for value in numbers_in(text):
        source = next((p.id for p in passages if _states_number(p, value, config.tolerance)), None)
        claims.append(Claim(f"{value:g}", "number", source))
    return Support(tuple(claims))


# --- items an API returned (STAR's return_item events) ------------------------------------------------------------

RETURN_ITEM = "return_item"
"""The kind of event that carries an API's result: `data` = {"APIName": api, "Item": {field: value}}."""
MAX_VALUE_WORDS = 5
"""Longest string value that counts as a slot value: longer ones are messages ("Your appointment has been ...")."""
_NOT_SLOTS = frozenset({"APIName", "id"})


def said_passages(turns: Sequence[Turn], knowledge: KnowledgeIndex) -> set[str]:
    """The ids of the passages the agent messages of `turns` drew on: each message checked against the passages of
    what it is about when it was said (`KnowledgeIndex.for_claims`)."""
    return {
        source
        for i, turn in enumerate(turns)
        if turn.speaker == "agent"
        for source in check_support(turn.text, knowledge.for_claims(turn.text, turns[:i])).sources
    }


@dataclass(frozen=True)
class Item:
    """The values of one returned item: its API and the values a message can state (casefolded)."""

    api: str
    values: frozenset[str]


def _values(item: Mapping[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    for key, value in item.items():
        if key in _NOT_SLOTS:
            continue
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, bool) or one is None:
                continue
            text = str(one).strip()
            if text and (not isinstance(one, str) or len(text.split()) <= MAX_VALUE_WORDS):
                found.add(text.casefold())
    return frozenset(found)


def returned_item(history: Conversation) -> Item | None:
    """The latest item an API returned in `history` (its events at or before its last turn); None: none did."""
    for event in reversed(history.events):
        item = event.data.get("Item")
        if event.kind == RETURN_ITEM and event.position <= len(history.turns) and isinstance(item, Mapping):
            return Item(str(event.data.get("APIName", "")), _values(item))
    return None


def item_vocabulary(conversations: Iterable[Conversation]) -> dict[str, frozenset[str]]:
    """Per API, every value its returned items carry in `conversations`: what a suggestion can state wrongly."""
    vocabulary: dict[str, set[str]] = {}
    for conversation in conversations:
        for event in conversation.events:
            item = event.data.get("Item")
            if event.kind == RETURN_ITEM and isinstance(item, Mapping):
                vocabulary.setdefault(str(event.data.get("APIName", "")), set()).update(_values(item))
    return {api: frozenset(values) for api, values in vocabulary.items()}


def _stated(text: str, values: Iterable[str]) -> set[str]:
    """The values `text` states as whole words (case ignored; thousands commas read as none)."""
    plain = _plain(text)
    return {value for value in values if re.search(rf"(?<!\w){re.escape(value)}(?!\w)", plain)}


@dataclass(frozen=True)
class Slots:
    """What a suggestion says of the item its reference describes."""

    expected: int
    """The item's values the reference states."""
    recalled: int
    """Of those, the ones the suggestion states."""
    stated: int
    """Values (of any item of the API) the suggestion states."""
    correct: int
    """Of those, the item's own."""


def check_slots(text: str, reference: str, item: Item, vocabulary: Mapping[str, frozenset[str]]) -> Slots:
    """Slot recall and precision counts of `text` against the `item` its `reference` was written after."""
    known = vocabulary.get(item.api, frozenset()) | item.values
    expected, said = _stated(reference, item.values), _stated(reference, known)
    stated = _stated(text, known)
    return Slots(len(expected), len(expected & stated), len(stated), len(stated & (item.values | said)))

"""Is what a suggestion says supported by its sources? A check of every claim of a text against knowledge passages.

An agent who trusts a suggestion sends it in the company's name, so a suggestion should state only what a source
says. `check_support(text, passages)` splits the text into claims and looks for a passage that supports each:

- **sentences**: every statement (not a question, at least `min_claim_words` words) must be a quote or a close
  paraphrase of a passage: rapidfuzz's `token_set_ratio` (the words of the shorter text against the longer one,
  order and repeats ignored, 0-100) at least `min_similarity`. "Elephants sleep about two hours a day" is supported
  by "Elephants sleep only about two hours a day, standing up"; "Elephants sleep for 40 to 100 hours a day" is not
  — its numbers are not there.
- **numbers**: every number in the text (digits, with thousands commas and decimals) must be one a passage states:
  in its text, equal to one of its `fields`, or inside one of its [low, high] ranges, within `tolerance` (relative).
  A suggestion that gives an elephant's weight as 2,000 kilograms where the source says 3,000 to 6,000 is caught
  even when its wording is close.

Each claim comes back with the passage that supports it (`source`, its id) or None; `Support.sources` are the
passages the text drew on and `Support.unsupported` what a reviewer should look at. Which passages to check against
is the caller's choice: those of the entity in focus (the animal asked about), or those the prompt carried.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Ge, Interval
from rapidfuzz import fuzz

from convoplan.configs import Config
from convoplan.retrieval.knowledge import Passage

__all__ = ["Claim", "Support", "SupportConfig", "check_support", "numbers_in"]

_NUMBER = re.compile(r"(?<![\w.#])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w|\.\d|,\d)")
"""A number as written: 3,000 or 6000 or 2.5 (not inside a word such as "H2O" or an id such as "c12#3")."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class SupportConfig(Config):
    """How close a claim must be to a passage to count as supported."""

    min_similarity: Annotated[float, Interval(ge=0, le=100)] = 80.0
    """Least rapidfuzz token_set_ratio (0-100) between a statement and a passage."""
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
        scores = [fuzz.token_set_ratio(sentence, passage.text) for passage in passages]
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        found = best is not None and scores[best] >= config.min_similarity
        claims.append(Claim(sentence, "statement", passages[best].id if found and best is not None else None))
    for value in numbers_in(text):
        source = next((p.id for p in passages if _states_number(p, value, config.tolerance)), None)
        claims.append(Claim(f"{value:g}", "number", source))
    return Support(tuple(claims))

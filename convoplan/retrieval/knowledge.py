"""Knowledge files: passages with their source, read from JSON Lines and searched by the recent turns.

A suggestion that states a fact should state what a source says, not what a language model remembers. A knowledge
file holds what the agent may draw on (a help-centre article cut into passages, a product sheet, an API's answer,
the animals world's guide), one passage per line::

    {"id": "elephant/weight_kg", "text": "An elephant weighs 3,000 to 6,000 kilograms.",
     "source": "the convoplan animal guide", "entity": "elephant", "fields": {"weight_kg": [3000, 6000]}}

`read_knowledge` checks every line as the conversation reader does (`convoplan.schema`: the same bounded line
reading, byte-order mark, strict fields and one-line errors naming file:line), and `KnowledgeIndex` finds the
passages nearest a query built from the last turns (`query_from_turns`), by BM25 (the `bm25s` library) or by
sentence embeddings (`convoplan.embed`, the default: it finds what a customer asks about far more often),
optionally only those about the entity in focus. `docs/format.md` ("Knowledge files") documents the format;
`bench/knowledge_retrieval.py` measures both methods.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, PlainValidator, TypeAdapter

from convoplan.schema import InvalidLine, Turn, collect, iter_records

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder

__all__ = [
    "DEFAULT_METHOD",
    "MAX_PASSAGE_CHARS",
    "FieldValue",
    "Hit",
    "KnowledgeIndex",
    "Method",
    "Passage",
    "passage_json",
    "query_from_turns",
    "read_knowledge",
    "write_knowledge",
]

MAX_PASSAGE_CHARS = 2_000
"""Longest passage text, in characters (about 350 words, a few paragraphs): a longer one is cut at a word boundary
and marked `cut`, never refused. Passages go into a prompt several at a time, so one must not fill the budget."""

Method = Literal["bm25", "embedding"]
DEFAULT_METHOD: Method = "embedding"
"""Embeddings: on the animals world's questions they put a right passage first for 95% of them, BM25 for 40%
(bench/knowledge_retrieval.py). Customers ask "how heavy" and "how big" where passages say "weighs" and "metres
long"; BM25 only matches words. BM25 needs no model and builds in milliseconds, for words that must match exactly
(product codes, names)."""

FieldValue = float | str | tuple[float, float]
"""A field of a passage: a number, a text, or a [low, high] range of numbers."""


def _field_value(value: Any) -> FieldValue:
    """A field's value from JSON, or a ValueError saying what a field may hold (pydantic words the error)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
        return float(value)
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        if value[0] > value[1]:
            raise ValueError("a range must run from low to high")
        return float(value[0]), float(value[1])
    raise ValueError("expected a number, a non-empty text or a [low, high] range of numbers")


_Text = Annotated[str, Field(min_length=1, pattern=r"\S")]


@dataclass(frozen=True)
class Passage:
    """One piece of knowledge: what it says, who says so, and optionally what it is about and its numbers."""

    # extra="forbid": a misspelt field ("entitiy") is an error, not a passage silently about nothing.
    __pydantic_config__ = ConfigDict(extra="forbid")

    id: _Text
    """Unique within a file; what a suggestion cites."""
    text: _Text
    """The passage as it goes into a prompt, at most `MAX_PASSAGE_CHARS` characters."""
    source: _Text
    """Who says so: a document, a URL, an API."""
    entity: _Text | None = None
    """What the passage is about ("elephant", a restaurant's name); a search may keep only one entity's passages."""
    fields: dict[str, Annotated[FieldValue, PlainValidator(_field_value)]] = field(default_factory=dict)
    """Structured values the text states, name -> number, text or (low, high): what a grounding check compares
    a suggestion's numbers with."""
    aliases: tuple[_Text, ...] = ()
    """Other names of its entity that a conversation may use ("hippo", "hippos" for "hippopotamus"): finding the
    entity in focus reads them besides the name and its regular plurals."""
    cut: bool = False
    """The text was cut to `MAX_PASSAGE_CHARS` from a longer one (set by the reader)."""


_PASSAGE: TypeAdapter[Passage] = TypeAdapter(Passage)


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at the last word boundary, an ellipsis marking the cut."""
    head = text[: limit - 1]
    space = head.rfind(" ")
    # A "word" of hundreds of characters (a URL, a hash) is cut where it is rather than emptying the passage.
    if space > limit // 2:
        head = head[:space]
    return head.rstrip() + "…"


def read_knowledge(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    on_skip: Callable[[InvalidLine], None] | None = None,
    on_cut: Callable[[str], None] | None = None,
) -> list[Passage]:
    """The passages of a knowledge file, in file order.

    The first invalid line raises FormatError naming file:line and the field (a repeated id names both lines).
    With `skip_invalid`, invalid lines are passed to `on_skip` (when given) and the rest is loaded. A text over
    `MAX_PASSAGE_CHARS` is cut at a word boundary, the passage marked `cut`, and `on_cut` told in one line.
    """
    name = str(path)

    def cut(item: tuple[int, Passage] | InvalidLine) -> Passage | InvalidLine:
        if isinstance(item, InvalidLine):
            return item
        number, passage = item
        if len(passage.text) <= MAX_PASSAGE_CHARS:
            return passage
        if on_cut is not None:
            on_cut(
                f"{name}:{number}: text: {len(passage.text):,} characters, cut at a word boundary "
                f"to the limit of {MAX_PASSAGE_CHARS:,}"
            )
        return replace(passage, text=_cut(passage.text, MAX_PASSAGE_CHARS), cut=True)

    return collect(map(cut, iter_records(path, _PASSAGE, lambda p: p.id)), skip_invalid, on_skip)


def passage_json(passage: Passage) -> str:
    """One passage as a compact JSON line (fields at their default left out), as `read_knowledge` reads it."""
    record: dict[str, Any] = {"id": passage.id, "text": passage.text, "source": passage.source}
    if passage.entity is not None:
        record["entity"] = passage.entity
    if passage.aliases:
        record["aliases"] = list(passage.aliases)
    if passage.fields:
        # Whole numbers are written as integers: 2700, not 2700.0, as a person would write the file.
        record["fields"] = {
            key: [_plain(v) for v in value] if isinstance(value, tuple) else _plain(value)
            for key, value in passage.fields.items()
        }
    if passage.cut:
        record["cut"] = True
    return json.dumps(record, ensure_ascii=False)


def _plain(value: float | str) -> float | int | str:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def write_knowledge(path: str | Path, passages: Iterable[Passage]) -> int:
    """Write passages as a knowledge file, atomically; return how many were written. Ids must be unique."""
    from convoplan.atomic import atomic_write

    seen: set[str] = set()
    count = 0
    with atomic_write(path) as stream:
        for passage in passages:
            if passage.id in seen:  # refused here, so that every file written reads back
                raise ValueError(f"duplicate passage id {passage.id!r}")
            seen.add(passage.id)
            stream.write(passage_json(passage) + "\n")
            count += 1
    return count


# --- search --------------------------------------------------------------------------------------------------


def query_from_turns(turns: Sequence[Turn], last: int = 2) -> str:
    """The search query for what comes next: the texts of the last `last` turns, oldest first. The latest user
    message says what is asked; the turn before often names what "it" is ("how heavy are they?")."""
    if last < 1:
        raise ValueError(f"last must be at least 1, got {last}")
    return "\n".join(turn.text for turn in turns[-last:])


@dataclass(frozen=True)
class Hit:
    """A passage found by a search, with its score (higher is nearer; BM25 and cosine scores do not compare)."""

    passage: Passage
    score: float


def _plurals(name: str) -> list[str]:
    """A name and its regular plurals: lion, lions, lionses (harmless), fox, foxes, butterfly, butterflies, wolf,
    wolves. Irregular ones (mouse, mice; goose, geese) are not found."""
    forms = [name, name + "s", name + "es"]
    if name.endswith("y"):
        forms.append(name[:-1] + "ies")
    if name.endswith("f"):
        forms.append(name[:-1] + "ves")
    if name.endswith("fe"):
        forms.append(name[:-2] + "ves")
    return forms


# bm25s splits as scikit-learn does: words of two or more letters or digits.
_WORD = re.compile(r"(?u)\b\w\w+\b")


@cache
def stopwords() -> frozenset[str]:
    """bm25s's 33 English stopwords ("the", "is", "of", ...): words that match every passage and say nothing."""
    from bm25s.stopwords import STOPWORDS_EN  # type: ignore[import-untyped]

    return frozenset(STOPWORDS_EN)


def _stem(word: str) -> str:
    """A light English stemmer: plural and third-person endings only ("lions" -> "lion", "weighs" -> "weigh"), so
    a question's plural meets a passage's singular. Cutting deeper (Porter) merges words that differ in meaning."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class KnowledgeIndex:
    """Passages indexed for search by sentence embeddings (`convoplan.embed`) or by BM25 (`bm25s`).

    The index is built in memory when the passages are loaded, which is fast enough not to save it: the animals
    world's 1,005 passages take 0.02-0.06 s by BM25; by embeddings, 8-11 s to compute their vectors the first time (one
    CPU thread) and a millisecond once the embedder has them cached (pass an embedder with a cache folder to keep
    them across runs; the default is the process's shared one, in memory).
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        method: Method = DEFAULT_METHOD,
        embedder: SentenceEmbedder | None = None,
    ) -> None:
        repeated = [key for key, count in Counter(p.id for p in passages).items() if count > 1]
        if repeated:  # a hit must name one passage: the reader refuses these, passages made in code may not
            raise ValueError(f"duplicate passage id {repeated[0]!r}")
        self.passages = list(passages)
        self.method: Method = method
        self._entities = np.array([(p.entity or "").casefold() for p in self.passages], dtype=object)
        self._bm25: Any = None
        # Every form of every entity's name -> the name, and one pattern finding them (`focus`): the longest form
        # first, as the pattern takes the first alternative that matches ("polar bear" before "bear").
        self._names: dict[str, str] = {}
        for passage in self.passages:
            if passage.entity is not None:
                for form in [*_plurals(passage.entity.casefold()), *(a.casefold() for a in passage.aliases)]:
                    self._names.setdefault(form, passage.entity)
        forms = sorted(self._names, key=len, reverse=True)
        self._focus = re.compile(r"\b(?:" + "|".join(map(re.escape, forms)) + r")\b", re.IGNORECASE) if forms else None
        self._vectors: np.ndarray | None = None
        self._embedder = embedder
        # What is searched is the entity and the text: a passage's text need not name what it is about.
        documents = [f"{p.entity}. {p.text}" if p.entity else p.text for p in self.passages]
        if method == "bm25":
            import bm25s  # type: ignore[import-untyped]

            self._bm25 = bm25s.BM25()
            if documents:
                self._bm25.index([self._tokens(d) for d in documents], show_progress=False)
        elif method == "embedding":
            if self._embedder is None:
                from convoplan.embed import shared_embedder

                self._embedder = shared_embedder()
            self._vectors = self._embedder.embed(documents)
        else:
            raise ValueError(f"unknown search method {method!r}: expected 'bm25' or 'embedding'")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        method: Method = DEFAULT_METHOD,
        embedder: SentenceEmbedder | None = None,
        *,
        skip_invalid: bool = False,
        on_skip: Callable[[InvalidLine], None] | None = None,
        on_cut: Callable[[str], None] | None = None,
    ) -> KnowledgeIndex:
        """Read a knowledge file (`read_knowledge`) and index it."""
        passages = read_knowledge(path, skip_invalid=skip_invalid, on_skip=on_skip, on_cut=on_cut)
        return cls(passages, method, embedder)

    def __len__(self) -> int:
        return len(self.passages)

    @staticmethod
    def _tokens(text: str) -> list[str]:
        stop = stopwords()
        return [_stem(word) for word in _WORD.findall(text.lower()) if word not in stop]

    def scores(self, query: str) -> np.ndarray:
        """The score of every passage for `query`, in passage order."""
        if not self.passages:
            return np.zeros(0, dtype=np.float32)
        if self._bm25 is not None:
            # Words the passages never use are left out: bm25s scores ids of its own vocabulary only.
            known = [token for token in self._tokens(query) if token in self._bm25.vocab_dict]
            if not known:
                return np.zeros(len(self.passages), dtype=np.float32)
            return np.asarray(self._bm25.get_scores(known), dtype=np.float32)
        assert self._embedder is not None and self._vectors is not None
        return np.asarray(self._vectors @ self._embedder.embed([query])[0], dtype=np.float32)

    def focus(self, turns: Sequence[Turn]) -> str | None:
        """The entity in focus after `turns`: the last one named in the latest turn that names any (by its name, a
        regular plural: "elephants", "foxes", "butterflies", "wolves", or one of its passages' `aliases`; case
        ignored; the longest name where one holds another, "polar bear" over "bear"), spelt as the passages spell
        it; None when no turn names one."""
        if self._focus is None:
            return None
        for turn in reversed(turns):
            found = self._focus.findall(turn.text)
            if found:
                return self._names[found[-1].casefold()]
        return None

    def about(self, turns: Sequence[Turn]) -> list[Passage]:
        """The passages of the entity in focus after `turns` (`focus`); every passage when none is named: what a
        claim made next should be checked against."""
        entity = self.focus(turns)
        return self.passages if entity is None else self.of(entity)

    def named(self, text: str) -> list[str]:
        """The entities `text` names (as `focus` finds them), in order of first mention."""
        found = self._focus.findall(text) if self._focus is not None else []
        return list(dict.fromkeys(self._names[form.casefold()] for form in found))

    def for_claims(self, text: str, turns: Sequence[Turn]) -> list[Passage]:
        """The passages the claims of `text`, said after `turns`, are checked against: those of the entity in focus
        (`about`), none when `text` names other entities and not it ("Sheep grow to ..." in a conversation about
        dogs is not about the animal in focus, and the dog's height sentence, in the same words, must not pass it);
        with no entity in focus, those of the entities it names (every passage when it names none)."""
        focus, named = self.focus(turns), self.named(text)
        if focus is None:
            return [p for entity in named for p in self.of(entity)] if named else self.passages
        return [] if named and focus not in named else self.of(focus)

    def of(self, entity: str) -> list[Passage]:
        """The passages about `entity` (case ignored), in file order."""
        return [self.passages[i] for i in np.flatnonzero(self._entities == entity.casefold())]

    def search(self, query: str, k: int = 3, entity: str | None = None) -> list[Hit]:
        """The `k` passages nearest `query`, best first; with `entity`, only passages about it (case ignored).

        BM25 leaves out passages that share no word with the query, so fewer than `k` may come back.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores = self.scores(query)
        candidates = np.arange(len(scores))
        if entity is not None:
            candidates = candidates[self._entities == entity.casefold()]
        if self._bm25 is not None:
            candidates = candidates[scores[candidates] > 0]
        # Stable sort on the negated score: ties keep file order, so results do not depend on the platform.
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        return [Hit(self.passages[i], float(scores[i])) for i in best]

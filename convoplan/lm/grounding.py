"""Grounded prompts: what a prompt holds besides the messages, so that the model says what a source says.

A grounded model reads three kinds of notes (`convoplan.lm.text.Note`), each chosen by its `GroundingConfig`:

- **events** of the conversation (`convoplan.schema.Event`: STAR's knowledge-base queries and the items they
  returned, any corpus's events), each rendered at its place in the history as one short line (`event_text`);
  truncation drops them with the messages, as whole blocks, from the left;
- **knowledge passages** (`convoplan.retrieval.knowledge`), the `knowledge` nearest the last `query_turns` turns
  (with `focus`, among those of the entity in focus), each as `<|knowledge|> source: text<|end|>`;
- **exemplars** (`convoplan.retrieval.exemplars`), the `exemplars` past agent messages of the action whose contexts
  are nearest this history, each as `<|example|> text<|end|>`.

The passages and exemplars sit after the history, right before the agent's tags of the message to write::

    [EOS] history (messages and events) | passages, best first | exemplars, best first | <|agent|><|action:X|>

**The budget.** A prompt of `budget` tokens (the model's context less the tokens to write) gives the passages and
exemplars at most `GroundingConfig.budget` of them, filled in rank order alternating the two kinds (passage 1,
exemplar 1, passage 2, ...): an item that does not fit is dropped, except a passage with room left for its tag,
its source and at least `MIN_PASSAGE_TOKENS` of its words, which is cut to that room. The history keeps the rest
of the prompt, cut from the left at whole blocks. What was dropped or cut is the `Cut` that comes back with the ids
(`Prompt`), for the caller to report.

**Training renders what inference renders**: `convoplan.lm.train` builds one sample per agent message with this
same `Grounder.prompts` (the history's knowledge, and exemplars never from the message's own conversation), so the
model learns to read and copy from the notes it will be given. The model folder records the config
(convoplan-lm.json, `grounding`), and `grounding_config` reads it back for suggestions, evaluation and the LM
provider, which must then be given the indexes it needs (`Grounder` says which, in one line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, Interval

from convoplan.configs import Config, config_from_dict
from convoplan.lm.text import Block, Note, keep_recent, shorten, with_events
from convoplan.retrieval.knowledge import DEFAULT_METHOD, Method, Passage, query_from_turns
from convoplan.retrieval.support import said_passages
from convoplan.schema import Conversation, Turn

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder
    from convoplan.lm.tokenizer import Codec
    from convoplan.retrieval.exemplars import Exemplar, ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = [
    "MIN_PASSAGE_TOKENS",
    "Cut",
    "Grounder",
    "GroundingConfig",
    "Prompt",
    "build_prompt",
    "grounding_config",
    "passage_note",
]

MIN_PASSAGE_TOKENS = 8
"""Least room for a passage's own words (after its tag and source, before its end) in which a passage that does
not fit whole is cut rather than dropped: a few words of a passage still say something, one or two do not."""
SOURCE_CHARS = 60
"""Longest source name in a passage's note; a longer one (a URL) is shortened."""


@dataclass
class GroundingConfig(Config):
    """What a prompt holds besides the history's messages: the conversation's events, knowledge passages and
    exemplars (docs/lm.md, "Grounding"). All off by default: the plain action-directed LM."""

    events: bool = False
    """Render the conversation's events at their places in the history as `<|event|> kind: key value; ...` notes."""
    event_chars: Annotated[int, Ge(20)] = 300
    """Longest event text in characters (about 75 tokens); a longer one is cut at a word boundary, an ellipsis
    marking the cut. STAR's median event renders in 95 characters, its longest in 842 (1.3% are cut)."""
    skip_keys: tuple[str, ...] = ("UnixTime", "TotalItems", "PrimaryItem", "SecondaryItem")
    """Keys of an event's data left out with what is under them: noise (STAR's timestamps and result counts) and
    the items a STAR query repeats from the result before it."""
    knowledge: Annotated[int, Interval(ge=0, le=20)] = 0
    """Knowledge passages per prompt, the nearest the last turns; > 0 = the model reads a knowledge file (give it
    with --knowledge FILE wherever the model runs)."""
    method: Method = DEFAULT_METHOD
    """How passages are searched: embedding (sentence vectors) or bm25 (words)."""
    query_turns: Annotated[int, Ge(1)] = 2
    """The last turns whose texts make the knowledge query."""
    focus: bool = False
    """Search only the passages of the entity in focus (the last one the history names, `KnowledgeIndex.focus`),
    where one is: after "hmm" the last turns say little, but the conversation is still about that animal."""
    skip_said: bool = False
    """With `focus`, leave out the entity's passages that the history's agent messages already say (the grounding
    check's `check_support`): the nearest passages to the last turns are otherwise the ones just said."""
    exemplars: Annotated[int, Interval(ge=0, le=20)] = 0
    """Past agent messages of the action per prompt, those whose contexts are nearest (the model folder's exemplar
    index, built by training); never from the conversation being learnt."""
    budget: Annotated[int, Ge(0)] = 96
    """Most tokens of a prompt that passages and exemplars take (the history keeps the rest); what does not fit is
    dropped or, a passage, cut, and said."""

    @property
    def retrieves(self) -> bool:
        """Whether prompts carry retrieved notes (passages or exemplars): training then learns per message."""
        return self.knowledge > 0 or self.exemplars > 0

    @property
    def active(self) -> bool:
        """Whether prompts carry any note: the model's tokenizer then has the notes' tags."""
        return self.events or self.retrieves


def grounding_config(info: Mapping[str, Any]) -> GroundingConfig:
    """The grounding a model folder records (its convoplan-lm.json, `LanguageModel.info` or `read_info`); none
    recorded = all off."""
    recorded: Any = info.get("grounding")
    if recorded is None:
        return GroundingConfig()
    return config_from_dict(GroundingConfig, recorded, "convoplan-lm.json", "grounding")


@dataclass(frozen=True)
class Cut:
    """What a prompt left out to fit its budget."""

    history: int = 0
    """Blocks of the history (messages and events) dropped from the left."""
    passages: int = 0
    """Passages retrieved but dropped: no room left in the grounding budget."""
    passages_cut: int = 0
    """Passages cut to the room left."""
    exemplars: int = 0
    """Exemplars retrieved but dropped: no room left."""

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def __add__(self, other: Cut) -> Cut:
        return Cut(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def describe(self) -> str:
        """In words: "2 history blocks and 1 exemplar dropped, 1 passage cut", or "nothing cut"."""

        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"

        dropped = [
            count(n, what)
            for n, what in ((self.history, "history block"), (self.passages, "passage"), (self.exemplars, "exemplar"))
            if n
        ]
        parts = [" and ".join(dropped) + " dropped"] if dropped else []
        if self.passages_cut:
            parts.append(count(self.passages_cut, "passage") + " cut")
        return ", ".join(parts) or "nothing cut"


@dataclass(frozen=True)
class Prompt:
    """The ids of a prompt, what it left out, and what it grounds on."""

    ids: list[int]
    cut: Cut
    passages: tuple[str, ...] = ()
    """Ids of the passages in it, in order."""
    exemplars: tuple[str, ...] = ()
    """Sources (`conversation id#turn index`) of the exemplars in it, in order."""


def passage_note(passage: Passage) -> Note:
    """A passage as a note: its source (shortened to `SOURCE_CHARS`), a colon, its text."""
    return Note("knowledge", f"{shorten(' '.join(passage.source.split()), SOURCE_CHARS)}: {passage.text}")


def build_prompt(
    codec: Codec,
    history: Sequence[Block],
    action: str | None,
    budget: int,
    passages: Sequence[Passage] = (),
    exemplars: Sequence[Exemplar] = (),
    grounding_budget: int = 0,
) -> Prompt:
    """The ids that ask for the next agent message with `action`, in at most `budget` tokens (see the module
    docstring): the history's most recent whole blocks, the passages and exemplars that fit in `grounding_budget`,
    then `<|agent|>` and the action's tag. An EOS starts the prompt when the whole history fits, as it starts every
    conversation in training. History messages labelled with an action that has no tag are rendered as having none.
    With no notes and no grounding this is `Codec.prompt`, token for token."""
    head = codec.head(action)
    room = max(0, min(grounding_budget, budget - len(head)))
    notes = [passage_note(p).text for p in passages]
    # The notes' ids, then each passage's source prefix ("source:"), whose length says how much room a cut needs.
    texts = codec.encode_texts([*notes, *(e.text for e in exemplars), *(n[: n.index(": ") + 1] for n in notes)])
    items = [(True, [codec.note_id("knowledge"), *ids, codec.end]) for ids in texts[: len(passages)]]
    items += [
        (False, [codec.note_id("example"), *ids, codec.end])
        for ids in texts[len(passages) : len(passages) + len(exemplars)]
    ]
    prefixes = [len(ids) for ids in texts[len(passages) + len(exemplars) :]]
    # Rank order, alternating: passage 1, exemplar 1, passage 2, ... (the best of each kind first).
    ranked = sorted(
        range(len(items)), key=lambda i: (i if i < len(passages) else i - len(passages), i >= len(passages))
    )
    kept: dict[int, list[int]] = {}
    dropped_passages = cut_passages = dropped_exemplars = 0
    for i in ranked:
        is_passage, ids = items[i]
        if len(ids) <= room:
            kept[i] = ids
            room -= len(ids)
        elif is_passage and room >= 2 + prefixes[i] + MIN_PASSAGE_TOKENS:
            kept[i] = [*ids[: room - 1], codec.end]  # the tag and the first words, closed
            room, cut_passages = 0, cut_passages + 1
        elif is_passage:
            dropped_passages += 1
        else:
            dropped_exemplars += 1
    grounding = [token for i in sorted(kept) for token in kept[i]]  # passages, then exemplars, each best first
    known = [
        b if isinstance(b, Note) or b.action in codec.actions else Turn(speaker=b.speaker, text=b.text) for b in history
    ]
    blocks = codec.encode_blocks(known)
    start = keep_recent([len(b) for b in blocks], budget - len(head) - len(grounding))
    ids = [token for block in blocks[start:] for token in block]
    if start == 0 and len(ids) + len(grounding) + len(head) < budget:
        ids.insert(0, codec.eos)
    return Prompt(
        [*ids, *grounding, *head],
        Cut(start, dropped_passages, cut_passages, dropped_exemplars),
        tuple(passages[i].id for i in sorted(kept) if i < len(passages)),
        tuple(exemplars[i - len(passages)].source for i in sorted(kept) if i >= len(passages)),
    )


History = Conversation | Sequence[Turn]
"""The conversation so far: a Conversation (its events are rendered where the config says so) or its turns."""


class Grounder:
    """The grounding of one model's prompts: its config and the indexes it retrieves from.

    Built where a model runs (suggestions, evaluation, the LM provider) and where it trains; refuses, in one line,
    a config that needs an index it was not given or a tokenizer without the notes' tags.
    """

    def __init__(
        self,
        codec: Codec,
        config: GroundingConfig | None = None,
        *,
        knowledge: KnowledgeIndex | None = None,
        exemplars: ExemplarIndex | None = None,
        embedder: SentenceEmbedder | None = None,
    ) -> None:
        self.codec = codec
        self.config = config or GroundingConfig()
        if self.config.knowledge and knowledge is None:
            raise ValueError("this model reads knowledge: give --knowledge FILE (a knowledge file, docs/format.md)")
        if self.config.exemplars and exemplars is None:
            raise ValueError(
                "this model's prompts carry exemplars: build its exemplar index with "
                "`convoplan lm index DATA --model MODEL`"
            )
        if self.config.active and len(codec.notes) < 3:
            raise ValueError("grounded prompts need the notes' tags, which this model's tokenizer lacks")
        self.knowledge = knowledge if self.config.knowledge else None
        self.exemplars = exemplars if self.config.exemplars else None
        self._embedder = embedder

    @property
    def embedder(self) -> SentenceEmbedder:
        """The sentence embedder of exemplar queries (the shared one unless given)."""
        if self._embedder is None:
            from convoplan.embed import shared_embedder

            self._embedder = shared_embedder()
        return self._embedder

    def blocks(self, history: History) -> list[Block]:
        """The history as the model reads it: its messages, and its events where the config renders them."""
        if not isinstance(history, Conversation):
            return list(history)
        if not (self.config.events and history.events):
            return list(history.turns)
        return with_events(history.turns, history.events, self.config.skip_keys, self.config.event_chars)

    def _passages(self, histories: Sequence[Sequence[Turn]]) -> list[list[Passage]]:
        if self.knowledge is None:
            return [[] for _ in histories]
        queries = [query_from_turns(turns, self.config.query_turns) if turns else "" for turns in histories]
        unique = list(dict.fromkeys(queries))  # one history's prompts for k actions share their query
        if self.knowledge.method == "embedding":
            self.embedder.embed(unique)  # one batch; the index's searches then find them cached (same embedder)
        knowledge, k = self.knowledge, self.config.knowledge
        entities = [knowledge.focus(turns) if self.config.focus else None for turns in histories]
        found: dict[tuple[object, ...], list[Passage]] = {}  # one history's prompts for k actions: searched once
        keys = []
        for turns, query, entity in zip(histories, queries, entities, strict=True):
            agent = tuple(t.text for t in turns if t.speaker == "agent") if self.config.skip_said else ()
            key = (query, entity, agent)
            if key not in found:
                said = self._said(turns, entity)
                hits = knowledge.search(query, k + len(said), entity)
                found[key] = [hit.passage for hit in hits if hit.passage.id not in said][:k]
            keys.append(key)
        return [found[key] for key in keys]

    def _said(self, turns: Sequence[Turn], entity: str | None) -> set[str]:
        """With `skip_said` and an entity in focus, the ids of its passages that the history's agent messages
        already say (`said_passages`): a prompt then offers what is still to say."""
        if not (self.config.skip_said and entity is not None and self.knowledge is not None):
            return set()
        return said_passages(turns, self.knowledge)

    def _exemplars(
        self, histories: Sequence[Sequence[Turn]], actions: Sequence[str | None], exclude: Sequence[str | None]
    ) -> list[list[Exemplar]]:
        """The `exemplars` nearest messages of each action, none from the conversation named in `exclude` (asking
        for more until enough are left or the action has no more)."""
        if self.exemplars is None:
            return [[] for _ in histories]
        k = self.config.exemplars
        wanted = k + (8 if any(e is not None for e in exclude) else 0)
        found: list[list[Exemplar]] = [[] for _ in histories]
        todo = list(range(len(histories)))
        while todo:
            hits = self.exemplars.nearest(
                [histories[i] for i in todo], [actions[i] for i in todo], self.embedder, wanted
            )
            again = []
            for i, candidates in zip(todo, hits, strict=True):
                mine = exclude[i]
                kept = [e for e in candidates if mine is None or e.source.rpartition("#")[0] != mine]
                found[i] = kept[:k]
                if len(kept) < k and len(candidates) == wanted:  # the action may hold more from elsewhere
                    again.append(i)
            todo, wanted = again, wanted * 2
        return found

    def prompts(
        self,
        histories: Sequence[History],
        actions: Sequence[str | None],
        budgets: int | Sequence[int],
        exclude: Sequence[str | None] | None = None,
    ) -> list[Prompt]:
        """A prompt per (history, action) in `budgets` tokens (one for all, or one each), retrieving for all of them
        in one batch; `exclude` names, per prompt, a conversation whose messages are never its exemplars (training:
        its own). A vanilla model is asked without an action, and its exemplars are of any action (as for
        `action=None`); ValueError for an action without a tag."""
        limits = [budgets] * len(histories) if isinstance(budgets, int) else list(budgets)
        directed = [None if self.codec.vanilla else a for a in actions]
        turns = [h.turns if isinstance(h, Conversation) else list(h) for h in histories]
        passages = self._passages(turns)
        exemplars = self._exemplars(turns, directed, exclude or [None] * len(histories))
        return [
            build_prompt(self.codec, self.blocks(h), a, limit, p, e, self.config.budget)
            for h, a, limit, p, e in zip(histories, directed, limits, passages, exemplars, strict=True)
        ]

    def prompt(self, history: History, action: str | None, budget: int) -> Prompt:
        """One prompt (`prompts`)."""
        return self.prompts([history], [action], budget)[0]

"""Sentence fusion: the utterances chosen for one bot response, merged into one natural response.

The composition loop picks utterances one at a time (acknowledgement, animal sound, quoted fact, attribute
statement, quiz, yes/no question, open question). Said one after the other they read like a list ("Lions weigh
... Lions grow ..."); fusion (the RL paper, sec. 3) makes them one response with three edits:
(a) pronominalise the repeated focus entity ("..., and they grow ..."), (b) remove repetitive context mentions
(a second "The convoplan animal guide says:" becomes "It also says:"), (c) add a discourse marker between
sentences ("Plus, ...", "And which animal ...").

Two fusers follow the `Fuser` protocol:
- `RuleFusion`, the default: hand-written rules for (a), (b) and (c); no training, predictable.
- `TaggerFusion`: a LaserTagger-style tagger (Malmi et al. 2019). Every source token is KEEP or DELETE, optionally
  with a phrase from a small vocabulary added before it; gold tags come from aligning each source with its target
  and a classifier learns them per token. It learns the conventions of the hand-written pairs in
  `worlds/animals/data/fusion_pairs.jsonl`, on which `evaluate` scores both (exact match and SARI).

Everything works on tokens (`tokenize`: words and single punctuation marks), so a case change is always the
replacement of a whole token ("Which" -> "which"), and `detokenize` puts the spacing back exactly.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from convoplan.atomic import atomic_write_bytes

__all__ = [
    "ConcatFusion",
    "Entity",
    "Fuser",
    "FusionPair",
    "FusionScores",
    "RuleFusion",
    "RuleFusionConfig",
    "Tag",
    "TaggerConfig",
    "TaggerFusion",
    "UtteranceKind",
    "derive_phrase_vocabulary",
    "detokenize",
    "entity_for",
    "evaluate",
    "load_fusion_pairs",
    "pluralise",
    "realize",
    "sari",
    "tags_for",
    "tokenize",
    "utterance_kind",
]

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


def entity_for(focus: str) -> Entity:
    """The animals world's entity for a focus name: from the knowledge base, else a regular plural and "a"/"an"."""
    from convoplan.worlds.animals.knowledge import load_knowledge_base

    animal = load_knowledge_base().lookup(focus)
    if animal is not None:
        return Entity(animal.name, animal.plural, animal.article, animal.synonyms)
    article = "an" if focus[:1].lower() in "aeiou" else "a"
    return Entity(focus, pluralise(focus), article)


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

    @property
    def entity(self) -> Entity:
        return entity_for(self.focus)


def load_fusion_pairs(path: str | Path | None = None) -> list[FusionPair]:
    """The pairs of a JSON Lines file (default: the animals world's packaged pairs); a bad line raises ValueError
    naming the file and the line."""
    where = str(path) if path is not None else "convoplan/worlds/animals/data/fusion_pairs.jsonl"
    try:
        if path is None:
            text = resources.files("convoplan.worlds.animals").joinpath("data/fusion_pairs.jsonl").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
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
            pairs.append(
                FusionPair(row["id"], row["split"], row["focus"], row["user"], tuple(utterances), row["fused"])
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
class _Utterance:
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
    """The words up to and including the first one naming the focus, if the sentence opens with them (at most
    five plain words, not a possessive: "A rhino's horn" is about the horn)."""
    for i, token in enumerate(tokens[:5]):
        if not token.isalpha():
            return ()
        if token.lower() in words:
            possessive = i + 1 < len(tokens) and tokens[i + 1] == "'"
            return () if possessive else tuple(t.lower() for t in tokens[: i + 1])
    return ()


def _read(text: str, words: frozenset[str]) -> _Utterance:
    tokens = tuple(tokenize(text))
    kind = utterance_kind(text)
    body, quote_end = 0, len(tokens)
    if kind == "quote":
        body = next(i + 3 for i in range(len(tokens) - 2) if tokens[i : i + 3] == ("says", ":", '"'))
        quote_end = next((i for i in range(len(tokens) - 1, body - 1, -1) if tokens[i] == '"'), len(tokens))
    subject = _subject(tokens[body:], words) if kind in ("quote", "statement") else ()
    return _Utterance(tokens, kind, body, quote_end, subject, any(t.lower() in words for t in tokens))


@dataclass(frozen=True)
class _Context:
    """The input of one fusion, read once: shared by the rules and the tagger's features."""

    utterances: tuple[_Utterance, ...]
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


def _analyse(utterances: Sequence[str], focus: Entity | None, user: str) -> _Context:
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
    return _Context(read, words, user_mentions, user_asks, tuple(repeats), tuple(chain), tuple(named), tuple(content))


# ---------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class RuleFusionConfig:
    """The wording of the rules. The defaults are the most frequent choices of the train split's targets."""

    repeated_source: str = "It also"
    """Replaces the source of a quote that follows a quote: `The convoplan animal guide says:` -> `It also says:`."""
    join: str = ", and"
    """Joins a second statement about the focus to the first: `... kilograms, and they live ...`."""
    addition: str = "Plus,"
    """Opens a further statement about the focus: `Plus, they ...`."""
    elaboration: str = "In fact,"
    """Opens a size or weight statement after a quoted size superlative: `... the largest ...` `In fact, they ...`."""
    superlatives: tuple[str, ...] = ("largest", "tallest")
    """Words that make a quote a size superlative (those of the train split)."""
    size_verbs: tuple[str, ...] = ("weigh", "grow")
    """Words that make a statement one about size or weight."""
    offer: str = "Also,"
    """Replaces the `Hey,` of a yes/no question that follows content: `Also, do you want to hear ...`."""
    open_question: str = "And"
    """Opens an open question that follows content: `And which animal ...`."""


class RuleFusion:
    """Hand-written fusion rules, the default fuser.

    (a) A statement (or a quote's sentence) that opens with the subject of the utterance before it gets "they"
    ("it" for "A dolphin" after "it was the dolphin"); so does the first statement when the user asked about the
    focus ("how heavy are hippos?" -> "They weigh ..."); a sound names "it" once the focus has been named.
    (b) A quote after a quote says "It also says:"; its sentence is otherwise left as written.
    (c) A second statement about the focus is joined to the first (", and they"), a further one opens with
    "Plus," ("In fact," after a quoted size superlative); questions after content get "Also," / "And".
    A lone utterance is returned unchanged: there is nothing to fuse it with.
    """

    def __init__(self, config: RuleFusionConfig | None = None) -> None:
        self.config = config or RuleFusionConfig()

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        if len(utterances) == 1:
            return utterances[0]
        ctx, config = _analyse(utterances, focus, user), self.config
        out: list[str] = []
        joined_last = False
        for i, utterance in enumerate(ctx.utterances):
            tokens = list(utterance.tokens)
            previous = ctx.utterances[i - 1] if i else None
            joined = False
            if utterance.kind == "quote":
                if previous is not None and previous.kind == "quote":  # the data's quotes change only here
                    if ctx.repeats[i] and not utterance.singular:
                        tokens[utterance.body : utterance.body + len(utterance.subject)] = ["They"]
                    tokens[: tokens.index("says")] = tokenize(config.repeated_source)
            elif utterance.kind == "sound" and ctx.named_before[i] and "sounds" in tokens:
                start, end = tokens.index("what") + 1, tokens.index("sounds")
                if end > start and tokens[end - 1].lower() in ctx.words:
                    tokens[start:end] = ["it"]
            elif utterance.kind == "statement" and utterance.subject:
                rest = tokens[len(utterance.subject) :]
                pronoun = "it" if utterance.singular else "they"
                if ctx.repeats[i] and previous is not None:
                    if previous.kind == "statement" and not joined_last and pronoun == "they":
                        if out and out[-1] == ".":
                            out.pop()
                        tokens, joined = [*tokenize(config.join), pronoun, *rest], True
                    elif previous.kind == "quote" and self._elaborates(previous, utterance):
                        tokens = [*tokenize(config.elaboration), pronoun, *rest]
                    elif previous.kind in ("statement", "quote"):
                        tokens = [*tokenize(config.addition), pronoun, *rest]
                    else:
                        tokens = [pronoun.capitalize(), *rest]
                elif ctx.user_asks and not ctx.content_before[i] and not utterance.singular:
                    tokens = ["They", *rest]
            elif utterance.kind == "yes_no" and ctx.content_before[i] and tokens[:2] == ["Hey", ","]:
                tokens = [*tokenize(config.offer), *tokens[2:]]
            elif utterance.kind == "open_question" and ctx.content_before[i]:
                tokens = [*tokenize(config.open_question), tokens[0].lower(), *tokens[1:]]
            out += tokens
            joined_last = joined
        return detokenize(out)

    def _elaborates(self, quote: _Utterance, statement: _Utterance) -> bool:
        """Whether the statement backs up the quote with a figure: a size superlative, then a weight or size."""
        quoted = {t.lower() for t in quote.tokens[quote.body : quote.quote_end]}
        return bool(quoted & set(self.config.superlatives)) and any(
            t in self.config.size_verbs for t in statement.tokens
        )


# ---------------------------------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class Tag:
    """What the tagger does with one source token: keep or delete it, after adding `phrase` (tokens joined by
    single spaces, "" for none) before it. The tag after the last token only adds its phrase at the end."""

    keep: bool
    phrase: str = ""

    def __str__(self) -> str:
        name = "KEEP" if self.keep else "DELETE"
        return f"{name}|{self.phrase}" if self.phrase else name

    @classmethod
    def parse(cls, label: str) -> Tag:
        name, _, phrase = label.partition("|")
        if name not in ("KEEP", "DELETE"):
            raise ValueError(f"not a tag: {label!r}")
        return cls(name == "KEEP", phrase)


def realize(source_tokens: Sequence[str], tags: Sequence[Tag]) -> list[str]:
    """The target tokens the tags describe: `tags` holds one tag per source token and one for the end."""
    if len(tags) != len(source_tokens) + 1:
        raise ValueError(f"{len(tags)} tags for {len(source_tokens)} tokens: expected one more tag than tokens")
    out: list[str] = []
    for token, tag in zip([*source_tokens, ""], tags, strict=True):
        out += tag.phrase.split() if tag.phrase else []
        if tag.keep and token:
            out.append(token)
    return out


_DELETION, _PHRASE, _UNREACHABLE = 1 << 20, 1, 1 << 62
"""Costs of an alignment: a deletion outweighs any number of phrases, so alignments keep as many tokens as they
can, then add as few phrases as they can."""


def _late_phrases(tags: list[Tag]) -> list[Tag]:
    """The same edit with each gap's phrase on the gap's last deleted token (the kept token if none is deleted).

    A gap is a run of deleted tokens and the kept token (or end slot) after it; where in the gap the phrase goes
    does not change the text. The last deleted token is usually the one the phrase replaces ("Lions" -> ", and
    they", "Which" -> "And which", "guide" of "The ... guide says" -> "It also"), so one token carries the whole
    decision and the tokens before it only have to follow (the tagger decodes right to left)."""
    out = list(tags)
    start = 0
    for end, tag in enumerate(out):
        if not tag.keep:
            continue
        carriers = [k for k in range(start, end + 1) if out[k].phrase]
        if len(carriers) == 1:
            phrase, carrier, home = out[carriers[0]].phrase, carriers[0], end - 1 if end > start else end
            out[carrier] = Tag(out[carrier].keep)
            out[home] = Tag(out[home].keep, phrase)
        start = end + 1
    return out


def _free_alignment(source: Sequence[str], target: Sequence[str]) -> list[Tag]:
    """The optimal tags when any phrase may be added: an edit alignment (keep, insert, delete) minimising
    (deletions, insertion runs); each run of inserted tokens becomes one phrase (placed by `_late_phrases`)."""
    n, m = len(source), len(target)
    # cost[state][i][j]: cheapest way to finish from source i, target j; state 0 after a keep (or at the start),
    # 1 inside an insertion run, 2 inside a deletion run (no insertion after a deletion in the same gap).
    cost = [[[_UNREACHABLE] * (m + 1) for _ in range(n + 1)] for _ in range(3)]
    move = [[[""] * (m + 1) for _ in range(n + 1)] for _ in range(3)]
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                for state in range(3):
                    cost[state][i][j] = 0
                continue
            keep = cost[0][i + 1][j + 1] if i < n and j < m and source[i] == target[j] else _UNREACHABLE
            insert = cost[1][i][j + 1] if j < m else _UNREACHABLE
            delete = cost[2][i + 1][j] + _DELETION if i < n else _UNREACHABLE
            for state, opening in ((0, _PHRASE), (1, 0)):  # ties: keep, then insert, then delete
                best, step = (keep, "keep") if keep <= insert + opening else (insert + opening, "insert")
                cost[state][i][j], move[state][i][j] = (delete, "delete") if delete < best else (best, step)
            cost[2][i][j], move[2][i][j] = (keep, "keep") if keep <= delete else (delete, "delete")
    tags: list[Tag] = []
    pending: list[str] = []
    i = j = state = 0
    while i < n or j < m:
        step = move[state][i][j]
        if step == "insert":
            pending.append(target[j])
            j, state = j + 1, 1
            continue
        tags.append(Tag(step == "keep", " ".join(pending)))
        pending = []
        i, j, state = (i + 1, j + 1, 0) if step == "keep" else (i + 1, j, 2)
    tags.append(Tag(True, " ".join(pending)))
    return _late_phrases(tags)


def derive_phrase_vocabulary(pairs: Iterable[FusionPair], max_size: int | None = None) -> list[str]:
    """The phrases the optimal alignments of the pairs add, most frequent first (ties alphabetically)."""
    counts: Counter[str] = Counter()
    for pair in pairs:
        tags = _free_alignment(tokenize(" ".join(pair.utterances)), tokenize(pair.fused))
        counts.update(tag.phrase for tag in tags if tag.phrase)
    ranked = sorted(counts, key=lambda phrase: (-counts[phrase], phrase))
    return ranked if max_size is None else ranked[:max_size]


def tags_for(source_tokens: Sequence[str], target_tokens: Sequence[str], vocabulary: Iterable[str]) -> list[Tag] | None:
    """Gold tags that turn the source into the target adding only phrases of the vocabulary, or None when none
    do. Among those, the fewest deletions, then the fewest phrases (the same preferences as the vocabulary's)."""
    source, target = list(source_tokens), list(target_tokens)
    by_first: dict[str, list[list[str]]] = {}
    for phrase in sorted(set(vocabulary), key=lambda p: (len(p.split()), p)):
        words = phrase.split()
        if words:
            by_first.setdefault(words[0], []).append(words)
    n, m = len(source), len(target)
    cost = [[_UNREACHABLE] * (m + 1) for _ in range(n + 1)]
    choice: list[list[tuple[bool, int]]] = [[(True, 0)] * (m + 1) for _ in range(n + 1)]
    known = {tuple(p.split()) for p in vocabulary}
    for j in range(m + 1):
        if j == m:
            cost[n][j] = 0
        elif tuple(target[j:]) in known:
            cost[n][j], choice[n][j] = _PHRASE, (True, m - j)
    for i in range(n - 1, -1, -1):
        for j in range(m, -1, -1):
            starting = by_first.get(target[j], []) if j < m else []
            lengths = [len(w) for w in starting if target[j : j + len(w)] == w]
            best, pick = _UNREACHABLE, (True, 0)
            candidates = [(True, 0)] + [(keep, k) for k in lengths for keep in (True, False)] + [(False, 0)]
            for keep, length in candidates:
                k = j + length
                if keep and not (k < m and source[i] == target[k]):
                    continue
                after = cost[i + 1][k + 1] if keep else cost[i + 1][k] + _DELETION
                option = after + (_PHRASE if length else 0)
                if option < best:
                    best, pick = option, (keep, length)
            cost[i][j], choice[i][j] = best, pick
    if cost[0][0] >= _UNREACHABLE:
        return None
    tags: list[Tag] = []
    j = 0
    for i in range(n + 1):
        keep, length = choice[i][j]
        tags.append(Tag(keep, " ".join(target[j : j + length])))
        j += length + (keep and i < n)
    return _late_phrases(tags)


# ---------------------------------------------------------------------------------------------------- tagger

_END = "<end>"
_FORMAT = "convoplan-fusion-tagger/1"


@dataclass(frozen=True)
class TaggerConfig:
    """How the tagger is trained."""

    max_phrases: int = 64
    """Size of the phrase vocabulary: the most frequent phrases the training alignments add."""
    c: float = 4.0
    """Inverse L2 regularisation strength of the logistic regression (chosen by 5-fold CV on the train split)."""
    max_iter: int = 1000
    """Most iterations of the solver (lbfgs); it converges in far fewer on the packaged pairs."""
    min_count: int = 2
    """Features seen in fewer training tokens are dropped: a smaller model that generalises no worse."""


def _features(ctx: _Context) -> tuple[list[list[str]], list[str]]:
    """Binary features of every source token and of the end slot (the token and its neighbours, where it sits,
    what its utterance does, how it relates to the focus), and each one's anchor: the short description that
    `_tag_features` joins with the tags already chosen to its right. Conjunctions give the linear model the
    decisions the rules take: e.g. the subject of a statement that repeats the previous statement's subject is
    where ", and they" goes."""
    flat = [(u, p) for u, utterance in enumerate(ctx.utterances) for p in range(len(utterance.tokens))]
    tokens = [ctx.utterances[u].tokens[p] for u, p in flat]
    kinds = [u.kind for u in ctx.utterances]
    superlative = [any(len(t) > 5 and t.endswith("est") for t in u.tokens) for u in ctx.utterances]
    rows: list[list[str]] = []
    anchors: list[str] = []
    for index, (u, p) in enumerate(flat):
        utterance, token = ctx.utterances[u], tokens[index]
        word = token.lower()
        previous_kind = kinds[u - 1] if u else "<start>"
        next_kind = kinds[u + 1] if u + 1 < len(kinds) else "<end>"
        in_subject = utterance.body <= p < utterance.body + len(utterance.subject)
        if p < utterance.body:
            role = "source"
        elif in_subject:
            role = "head" if p == utterance.body + len(utterance.subject) - 1 else "subject"
        elif p == utterance.body:
            role = "first"
        else:
            role = "last" if p == len(utterance.tokens) - 1 else "inside"
        after_subject = utterance.body + len(utterance.subject)
        verb = (
            utterance.tokens[after_subject].lower()
            if utterance.subject and after_subject < len(utterance.tokens)
            else ""
        )
        near = {k: tokens[index + k].lower() if 0 <= index + k < len(tokens) else "<none>" for k in (-2, -1, 1, 2)}
        situation = f"{previous_kind}>{utterance.kind}|rep={ctx.repeats[u]}|chain={min(ctx.chain[u], 2)}"
        ahead = f"{utterance.kind}>{next_kind}"
        focus = f"focus={word in ctx.words}|subj={in_subject}|sing={utterance.singular}"
        user = f"asks={ctx.user_asks}|named={ctx.named_before[u]}|content={ctx.content_before[u]}"
        evidence = f"sup={u > 0 and superlative[u - 1]}|verb={verb}"
        rows.append(
            [
                "bias",
                f"w={token}",
                f"lw={word}",
                f"w-1={near[-1]}",
                f"w+1={near[1]}",
                f"w-2={near[-2]}",
                f"w+2={near[2]}",
                f"pos={min(p - utterance.body, 6)}",
                f"left={min(len(utterance.tokens) - 1 - p, 3)}",
                f"utt={min(u, 3)}",
                f"kind={utterance.kind}",
                f"role={role}",
                f"quoted={utterance.kind == 'quote' and utterance.body <= p < utterance.quote_end}",
                focus,
                user,
                f"mentions={ctx.user_mentions}",
                f"{role}|{situation}",
                f"{role}|{situation}|{focus}",
                f"{role}|{situation}|{user}",
                f"{role}|{situation}|w={word}",
                f"{role}|{situation}|{evidence}",
                f"{role}|{ahead}",
                f"{role}|{ahead}|w={word}",
                f"{role}|{ahead}|{user}",
                f"{role}|{focus}|{user}|kind={utterance.kind}",
                f"{role}|w={word}|w+1={near[1]}|kind={utterance.kind}",
            ]
        )
        anchors.append(f"{role}|kind={utterance.kind}|w={word}")
    rows.append(["bias", f"w={_END}", f"{_END}|kind={kinds[-1] if kinds else '<start>'}"])
    anchors.append(_END)
    return rows, anchors


def _tag_features(anchor: str, right: Sequence[Tag]) -> list[str]:
    """Features of the tags already chosen for the next two tokens (decoding runs right to left): a token before
    one that took ", and they" in place of "Lions" is the "." that has to go."""
    first = str(right[0]) if right else "<none>"
    second = str(right[1]) if len(right) > 1 else "<none>"
    return [f"t+1={first}", f"t+1={first}|t+2={second}", f"t+1={first}|{anchor}"]


class TaggerFusion:
    """LaserTagger-style fusion: per-token KEEP/DELETE plus a phrase, predicted by a logistic regression over the
    features of `_features`, realised back to text. Stored as safetensors (weights) with the phrase vocabulary,
    the labels and the feature names in its metadata; no pickle, so loading a file runs no code."""

    def __init__(
        self,
        phrases: Sequence[str],
        labels: Sequence[str],
        features: Sequence[str],
        coef: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float32],
        config: TaggerConfig,
    ) -> None:
        if coef.shape != (len(labels), len(features)) or intercept.shape != (len(labels),):
            raise ValueError(
                f"weights of shape {coef.shape} do not fit {len(labels)} labels x {len(features)} features"
            )
        self.phrases = list(phrases)
        self.labels = list(labels)
        self.tags = [Tag.parse(label) for label in labels]
        self.features = list(features)
        self.index = {name: column for column, name in enumerate(features)}
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        self.config = config

    @classmethod
    def train(cls, pairs: Sequence[FusionPair], config: TaggerConfig | None = None) -> TaggerFusion:
        """Fit on the pairs whose targets the vocabulary reaches (the others are skipped)."""
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        config = config or TaggerConfig()
        phrases = derive_phrase_vocabulary(pairs, config.max_phrases)
        rows: list[list[str]] = []
        labels: list[str] = []
        for pair in pairs:
            tags = tags_for(tokenize(" ".join(pair.utterances)), tokenize(pair.fused), phrases)
            if tags is not None:
                base, anchors = _features(_analyse(pair.utterances, pair.entity, pair.user))
                rows += [
                    row + _tag_features(a, tags[i + 1 :]) for i, (row, a) in enumerate(zip(base, anchors, strict=True))
                ]
                labels += [str(tag) for tag in tags]
        if len(set(labels)) < 2:
            raise ValueError("too few reachable training pairs: the tags take fewer than two values")
        counts = Counter(name for row in rows for name in row)
        vectorizer = DictVectorizer()
        matrix = vectorizer.fit_transform([{n: 1 for n in row if counts[n] >= config.min_count} for row in rows])
        model = LogisticRegression(C=config.c, max_iter=config.max_iter)
        with threadpool_limits(limits=1):  # a small problem: BLAS threads only fight (10x slower on a busy machine)
            model.fit(matrix, labels)
        coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
        if coef.shape[0] == 1:  # binary problems come back as one row: score the first class with its negation
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        classes = [str(label) for label in model.classes_]
        names = [str(name) for name in vectorizer.get_feature_names_out()]
        return cls(phrases, classes, names, coef.astype(np.float32), intercept.astype(np.float32), config)

    def predict_tags(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> list[Tag]:
        """The tag of every source token and of the end slot, chosen greedily from right to left: each token's
        most likely tag given its features and the tags chosen after it (as in training, where they are gold)."""
        rows, anchors = _features(_analyse(utterances, focus, user))
        tags: list[Tag] = []
        for row, anchor in zip(reversed(rows), reversed(anchors), strict=True):
            names = row + _tag_features(anchor, tags[::-1][:2])
            columns = [self.index[name] for name in names if name in self.index]
            scores = self.coef[:, columns].sum(axis=1) + self.intercept
            tags.append(self.tags[int(np.argmax(scores))])
        return tags[::-1]

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        source = tokenize(" ".join(utterances))
        return detokenize(realize(source, self.predict_tags(utterances, focus, user)))

    def save(self, path: str | Path) -> None:
        """Write the model atomically: a reader never sees half a file."""
        from safetensors.numpy import save

        metadata = {
            "format": _FORMAT,
            "config": json.dumps(asdict(self.config)),
            "phrases": json.dumps(self.phrases),
            "labels": json.dumps(self.labels),
            "features": json.dumps(self.features),
        }
        atomic_write_bytes(path, save({"coef": self.coef, "intercept": self.intercept}, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> TaggerFusion:
        """Read a model written by `save`; a missing, unreadable or corrupt file raises a one-line ValueError."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ValueError(f"{path}: cannot read fusion tagger model: {error.strerror or error}") from None
        try:
            tensors = load(data)
            header_size = int.from_bytes(data[:8], "little")
            metadata: dict[str, Any] = json.loads(data[8 : 8 + header_size])["__metadata__"]
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"format is {metadata.get('format')!r}, expected {_FORMAT!r}")
            config = TaggerConfig(**json.loads(metadata["config"]))
            return cls(
                json.loads(metadata["phrases"]),
                json.loads(metadata["labels"]),
                json.loads(metadata["features"]),
                tensors["coef"].astype(np.float32),
                tensors["intercept"].astype(np.float32),
                config,
            )
        except (SafetensorError, ValueError, KeyError, TypeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"{path}: not a valid fusion tagger model: {reason}") from None


# ---------------------------------------------------------------------------------------------------- scores


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _f1(true_positives: float, selected: float, relevant: float) -> float:
    """F1 with 0/0 read as 1 (an empty selection of nothing to find is perfect), as in LaserTagger's SARI."""
    precision = true_positives / selected if selected > 0 else 1.0
    recall = true_positives / relevant if relevant > 0 else 1.0
    return 2 * precision * recall / (precision + recall) if precision > 0 and recall > 0 else 0.0


def sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI (Xu et al. 2016) as LaserTagger computes it, in [0, 1]: the mean over n = 1..4 of the F1 of added
    n-grams, the F1 of kept n-grams and the precision of deleted n-grams, averaged over the three.

    On `tokenize` tokens, case-sensitive; n-grams count once per text; with several references an n-gram of the
    source is weighted by the share of references that contain it (keep and delete), an added n-gram counts if
    any reference has it.
    """
    src, pred = tokenize(source), tokenize(prediction)
    refs = [tokenize(reference) for reference in references]
    keep = add = delete = 0.0
    for n in range(1, 5):
        s, p = _ngrams(src, n), _ngrams(pred, n)
        ref_sets = [grams for grams in (_ngrams(r, n) for r in refs) if grams]
        weight = Counter(gram for grams in ref_sets for gram in grams)
        share = {gram: count / len(ref_sets) for gram, count in weight.items()}
        kept = s & p
        keep += _f1(sum(share.get(g, 0.0) for g in kept), len(kept), sum(share.get(g, 0.0) for g in s))
        deleted = s - p
        delete += sum(1.0 - share.get(g, 0.0) for g in deleted) / len(deleted) if deleted else 1.0
        added = p - s
        add += _f1(len(added & share.keys()), len(added), len(share.keys() - s))
    return (keep + add + delete) / 12


@dataclass(frozen=True)
class FusionScores:
    """How a fuser does on pairs: exact match (on whitespace-normalised text) and mean SARI, both in [0, 1]."""

    exact_match: float
    sari: float
    n: int


def evaluate(fuser: Fuser, pairs: Sequence[FusionPair]) -> FusionScores:
    """Fuse every pair's utterances and compare with its target."""
    if not pairs:
        return FusionScores(0.0, 0.0, 0)
    exact = total = 0.0
    for pair in pairs:
        prediction = fuser.fuse(pair.utterances, pair.entity, pair.user)
        exact += " ".join(prediction.split()) == " ".join(pair.fused.split())
        total += sari(" ".join(pair.utterances), prediction, [pair.fused])
    return FusionScores(exact / len(pairs), total / len(pairs), len(pairs))

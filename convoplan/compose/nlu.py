"""Rule-based NLU for entity-centred chat: focus tracking, answer interpretation, feedback and requests.

It reads one user message given the current focus and the bot's last question:
- the **focus**: which entity is under discussion after the message (names, plurals, synonyms; "it"/"they" keep
  the current one; a negated mention such as "not lions" does not count);
- the **answer** to the last question: yes/no questions -> "yes", "no" or "ignored"; open and list questions ->
  an entity or "none"; quizzes -> "right", "wrong" or "none";
- explicit **feedback**: "positive" (thanks, praise of the bot) or "negative" ("stop", "shut up", boredom, "that's
  wrong"; a polite goodbye such as "I have to go now, bye" is leaving, not feedback);
- whether the user wants to **stop** (a goodbye, or telling the bot to stop);
- a **request** for a kind of content ("what sound does it make?" -> "sound"), and for an attribute which one
  ("how heavy are they?" -> "attribute", "weight"; `ATTRIBUTES` lists them).

Entities come from a `Lexicon` of surface forms, so any domain with named entities can use it; the animals world
builds one from its knowledge base.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from rapidfuzz.distance import Levenshtein

__all__ = ["ATTRIBUTES", "NON_COOPERATIVE", "Lexicon", "interpret"]

QuestionKind = Literal["yes_no", "open", "list", "quiz"]
NON_COOPERATIVE = frozenset({"no", "ignored", "none"})
"""Answers to a bot question that decline it or pass it by; any other answer (yes, a pick, a guess) cooperates."""
Feedback = Literal["positive", "negative"]


@dataclass(frozen=True)
class Question:
    """The bot's last question."""

    kind: QuestionKind
    about: str | None = None
    """yes_no: the entity the question offers to move to."""
    options: tuple[str, ...] = ()
    """list and quiz: the entities offered, in the order they were said."""
    answer: str | None = None
    """quiz: the right option."""


@dataclass(frozen=True)
class Interpretation:
    focus: str | None
    answer: str | None
    """None when there was no question; see the module docstring for the values per question kind."""
    feedback: Feedback | None
    request: str | None
    """The kind of content asked for: "sound", "fact", "attribute", "quiz", or None."""
    mentions: tuple[str, ...]
    """Entities named and not negated, in order."""
    wants_to_stop: bool
    attribute: str | None = None
    """With request "attribute": the attribute asked about (one of `ATTRIBUTES`), or None when the question names
    none the NLU knows."""


def _plurals(word: str) -> set[str]:
    """Regular English plurals of a noun, plus the Latin -us -> -i that users write ("octopi")."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms = {word + "es"}
    elif word.endswith("y") and word[-2:-1] not in ("a", "e", "o", "u"):
        forms = {word[:-1] + "ies"}
    elif word.endswith("fe"):
        forms = {word[:-2] + "ves"}
    elif word.endswith("f"):
        forms = {word[:-1] + "ves", word + "s"}
    else:
        forms = {word + "s"}
    if word.endswith("us"):
        forms.add(word[:-2] + "i")
    return forms


class Lexicon:
    """Surface forms -> canonical entity names, matched longest first over word tokens.

    Every given form is also known inflected in the plural (on its last word) and in the possessive ("lion's"),
    and a single word of six letters or more that is one edit away from exactly one known word is read as that word
    ("racoons" -> "raccoons").
    """

    def __init__(self, forms: Mapping[str, Iterable[str]]) -> None:
        self.entity_of: dict[tuple[str, ...], str] = {}
        for entity, names in forms.items():
            for form in {entity, *names}:
                words = tuple(_words(form))
                for variant in {words[-1], *_plurals(words[-1])}:
                    self.entity_of.setdefault((*words[:-1], variant), entity)
        self.longest = max((len(key) for key in self.entity_of), default=1)
        self.single_words = sorted(key[0] for key in self.entity_of if len(key) == 1 and len(key[0]) >= 5)

    def _correct(self, word: str) -> str:
        if word.endswith("'s") and (word,) not in self.entity_of:
            word = word[:-2]  # a possessive ("a lion's top speed") names the animal
        if len(word) < 6 or (word,) in self.entity_of:
            return word
        close = [known for known in self.single_words if Levenshtein.distance(word, known, score_cutoff=1) <= 1]
        return close[0] if len(close) == 1 else word

    def find(self, words: list[str]) -> list[tuple[int, str]]:
        """(word index, entity) of each mention, left to right, longest match first."""
        words = [self._correct(word) for word in words]
        found, i = [], 0
        while i < len(words):
            for size in range(min(self.longest, len(words) - i), 0, -1):
                entity = self.entity_of.get(tuple(words[i : i + size]))
                if entity is not None:
                    found.append((i, entity))
                    i += size
                    break
            else:
                i += 1
        return found


def _words(text: str, punctuation: bool = False) -> list[str]:
    # Apostrophes and hyphens stay inside words ("don't"; "duck-billed" is not a duck). With `punctuation`, marks
    # that end a clause are kept as tokens: they bound multi-word names and the reach of a negation.
    pattern = r"[a-z0-9]+(?:['-][a-z0-9]+)*" + (r"|[.,!?;:]" if punctuation else "")
    return re.findall(pattern, text.lower().replace("’", "'"))


def _phrases(text: str) -> re.Pattern[str]:
    """One regex matching any of the ";"-separated phrases as whole words (the lists stay readable as text)."""
    phrases = [phrase.strip() for phrase in text.split(";") if phrase.strip()]
    return re.compile(rf"(?<![a-z'])(?:{'|'.join(phrases)})(?![a-z])")


_YES = _phrases("""
    y+e+s+; yeah+; yea; yep; yup; ya; sure; ok(ay)?; alright; definitely; absolutely; of course; why not;
    go for it; go ahead; let'?s do it; let'?s go; sounds good; i guess so; i'd like that;
    i would like that; please; certainly; totally; for sure; i'd love; i would love; love to; do it;
    play it; go on
""")
_NO = _phrases("""
    no+; nah+; nope; not really; rather not; maybe later; meh; not interested; pass; skip( it)?;
    i don't want; i do not want; don't want; not now; not today; no thanks; not for me; i'll pass;
    not that; not them; not it
""")
_UNSURE = _phrases("""
    i don'?t know; dunno; no idea; not sure; no clue; i give up; give up; you choose; you pick;
    surprise me; whatever you; up to you; anything; tell me the answer; just tell me; what is it;
    which one is it; can't guess; cannot guess; idk
""")
_LEAVE = _phrases("""
    bye; goodbye; good bye; i'?m done; i am done; i have to go; i've got to go; gotta go; got to go; i'?m leaving;
    see you
""")
"""Leaving politely: the user wants to stop, and says nothing of the bot."""
_STOP = _phrases("""
    stop; that'?s enough; enough; leave me alone; go away; end this; quit
""")
"""Telling the bot to stop: wanting to stop, and explicit negative feedback."""
_NEGATIVE = _phrases("""
    boring; bored; shut up; that'?s wrong; that is wrong; wrong; i don'?t care; who cares; annoying;
    stupid; dumb; hate (this|that|it); you already said; you said that; repeating; not listening; useless;
    terrible; awful; ugh
""")
_POSITIVE = _phrases("""
    (?<!no )thanks?; (?<!no )thank you; thx; ty; wonderful; awesome; amazing; fascinating; brilliant;
    fantastic; incredible; great (fact|one|stuff|job|question); cool fact; nice fact;
    (?<!i'd )(?<!would )love (this|that|these|it|learning|your); so cool; so interesting;
    really interesting; that'?s (so )?(cool|neat|interesting|wild); wow; i learned; good to know;
    you'?re (great|the best|awesome|fun); this is fun; so much fun; mind blown; whoa
""")
_NEGATORS = ("not", "no", "don't", "dont", "never", "hate", "except", "without", "nor", "neither", "instead")
_REQUESTS = {
    "sound": _phrases("sound; sounds; noise; hear; listen; call; roar; say"),
    "quiz": _phrases("quiz; test me; game; guess"),
    "attribute": _phrases(
        "how (big|heavy|fast|quick|quickly|long|old|tall|large|small); weigh; weighs; weight; eats?; diet; food;"
        "lives?; speed; size; length; height; wingspan; lifespan; life span; habitat; where [a-z' -]*found"
    ),
    "fact": _phrases("fact; facts; tell me (more|something|about); more; know about"),
}
ATTRIBUTES: dict[str, re.Pattern[str]] = {
    "lifespan": _phrases("how long (do|does|can|will) [a-z' -]*live; lifespan; life span; how old; live (to|for)"),
    "habitat": _phrases("where [a-z' -]*(live|lives|found|from); habitat; live in"),
    "weight": _phrases("heavy; weigh; weighs; weight"),
    "speed": _phrases("fast; speed; quick; quickly"),
    "diet": _phrases("eats?; eating; diet; food; feed"),
    "size": _phrases("big; large; small; tall; size; long; length; height; wingspan"),
}
"""The attributes a question can ask about, each read by its phrases; the first that matches wins (lifespan and
habitat first: "how long do they live?" asks neither a length nor a diet)."""
_NOT_YES = _phrases("not sure; i don'?t think so")
_HARD_NO = _phrases("no+; nah+; nope")
_ALSO_NO = _phrases("i don'?t think so; don'?t")
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "middle": 1, "third": 2, "3rd": 2, "last": -1}


def _mentions(tokens: list[str], lexicon: Lexicon) -> list[str]:
    """Entities named and not negated, in order.

    A negator ("not", "don't", ...) up to two words before a mention negates it, unless a clause boundary or another
    mention stands between ("Definitely not snakes. Chameleons!").
    """
    affirmed = []
    previous_end = 0
    for index, entity in lexicon.find(tokens):
        window = tokens[max(previous_end, index - 2) : index]
        if "," in window or "." in window or "!" in window or "?" in window or ";" in window:
            window = window[max(i for i, t in enumerate(window) if t in ",.!?;") + 1 :]
        # "no" negates only right before the name ("no lions"); "no, actually lions" is a correction.
        negators = [w for i, w in enumerate(window) if (w in _NEGATORS and (w != "no" or i == len(window) - 1))]
        if not negators and not any(word.endswith("n't") for word in window):
            affirmed.append(entity)
        previous_end = index + 1
    return affirmed


def _ordinal_pick(words: list[str], options: tuple[str, ...]) -> str | None:
    for word in words:
        if word in _ORDINALS and options:
            position = _ORDINALS[word]
            if position < len(options):
                return options[position]
    return None


def interpret(text: str, lexicon: Lexicon, previous_focus: str | None, question: Question | None) -> Interpretation:
    """Read one user message; see the module docstring."""
    words = _words(text)
    lowered = " ".join(words)
    affirmed = _mentions(_words(text, punctuation=True), lexicon)
    unsure = bool(_UNSURE.search(lowered))
    yes = bool(_YES.search(lowered)) and not _NOT_YES.search(lowered)
    no = bool(_NO.search(lowered) or _ALSO_NO.search(lowered))
    told_to_stop = bool(_STOP.search(lowered))
    stop = told_to_stop or bool(_LEAVE.search(lowered))

    answer: str | None = None
    focus = affirmed[-1] if affirmed else previous_focus
    if question is not None:
        if question.kind == "yes_no":
            if no and not (yes and not _HARD_NO.search(lowered)):
                answer = "no"
            elif yes and not unsure and not stop and not (affirmed and question.about not in affirmed):
                answer = "yes"
                focus = question.about
            else:
                answer = "ignored"
        elif question.kind in ("open", "list"):
            # The last animal named is the final pick ("chimps or... no actually orangutans").
            pick = affirmed[-1] if affirmed else _ordinal_pick(words, question.options)
            answer = pick if pick is not None else "none"
            if pick is not None:
                focus = pick
        else:  # quiz
            guess = affirmed[-1] if affirmed else _ordinal_pick(words, question.options)
            if guess is None:
                answer = "none"
            else:
                answer = "right" if guess == question.answer else "wrong"
                focus = question.answer

    feedback: Feedback | None = None
    if told_to_stop or _NEGATIVE.search(lowered):  # a polite goodbye is not a complaint
        feedback = "negative"
    elif _POSITIVE.search(lowered):
        feedback = "positive"
    request = next((kind for kind, pattern in _REQUESTS.items() if pattern.search(lowered)), None)
    attribute = None
    if request == "attribute":
        attribute = next((name for name, pattern in ATTRIBUTES.items() if pattern.search(lowered)), None)
    return Interpretation(
        focus=focus,
        answer=answer,
        feedback=feedback,
        request=request,
        mentions=tuple(affirmed),
        wants_to_stop=stop,
        attribute=attribute,
    )

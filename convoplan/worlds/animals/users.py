"""Simulated users of the animals world: hidden preferences and an engagement level moved by what the bot says.

Each user likes a few animals and a couple of kinds of content (sounds, facts, attributes, quizzes). Engagement
rises with liked content about animals of interest, with variety, and with being asked what they like; it falls with
repetition of the same kind, long responses, ignored requests, and dwelling on an animal they do not care about
(interest in an animal fades as it is talked about, slowly for favourites: they welcome depth). Users answer
questions cooperatively or not, ask for things, praise or complain explicitly, and leave when disengaged.
A request is worded in one of several ways (`ASKING`), about the animal by name or as "it"/"they"; an attribute
question asks about one attribute ("how heavy are they?", "what do elephants eat?"), one the bot has not stated
yet, and a first message may be a question about a favourite. Wordings come from a random stream of their own, so the
main stream's draws (favourites, likes, when to ask, praise or leave) do not depend on how many wordings there are.
Every parameter is in `UserConfig`. `POPULATIONS` names the built-in populations (`--simulator scholars`): the
default users, and scholars, who want facts and attributes at length, are less patient, dislike being asked what
they like and answer questions less willingly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Interval
from pydantic import JsonValue

from convoplan.compose.loop import Response
from convoplan.configs import UNBOUNDED, Config
from convoplan.schema import Candidate
from convoplan.sim.protocols import UserReply
from convoplan.worlds.animals.knowledge import Animal, KnowledgeBase, load_knowledge_base

__all__ = ["ASKING", "POPULATIONS", "UserConfig"]

KINDS = ("sound", "fact", "attribute", "quiz")
ASKING: dict[str, tuple[str, ...]] = {
    "sound": ("what sound {do} {it} make?", "what {do} {it} sound like?", "what noise {do} {it} make?"),
    "fact": (
        "tell me more facts about {them}",
        "tell me something interesting about {them}",
        "any fun facts about {them}?",
        "what else do you know about {them}?",
    ),
    "quiz": ("can you give me a quiz?", "quiz me!", "can we play a guessing game?"),
    "weight": ("how heavy {are} {it}?", "how much {do} {it} weigh?", "what {do} {it} weigh?"),
    "size": ("how big {are} {it}?", "how large {do} {it} get?", "what size {are} {it}?"),
    "speed": ("how fast {are} {it}?", "how fast can {it} go?", "what is {its} top speed?"),
    "lifespan": ("how long {do} {it} live?", "how old {do} {it} get?", "what is {its} lifespan?"),
    "diet": ("what {do} {it} eat?", "what food {do} {it} like?", "what is {its} diet?"),
    "habitat": ("where {do} {it} live?", "where {are} {it} found?"),
}
"""How users word a request of each kind (an attribute question by the attribute it asks about). {it} is "it",
"they", "a lion" or "lions"; {its} "its", "their" or "the lion's"; {them} "it", "them" or "lions"; {are} and {do}
agree with {it}."""
ATTRIBUTES = ("weight", "size", "speed", "lifespan", "diet", "habitat")
"""The attributes users ask about (the NLU reads each: `convoplan.compose.nlu.ATTRIBUTES`)."""
_Share = Annotated[float, Interval(ge=0, le=1)]
"""A probability, or a level of engagement (which lives in [0, 1])."""
_Weight = Annotated[float, Ge(0)]
"""A relative chance (random.choices takes no negative weight)."""


@dataclass
class UserConfig(Config):
    favourites: Annotated[int, Ge(1)] = 3
    """How many favourite animals a user has."""
    liked_kinds: Annotated[int, Interval(ge=0, le=4)] = 2
    """How many of the content kinds (sound, fact, attribute, quiz) a user enjoys."""
    kind_weights: tuple[_Weight, _Weight, _Weight, _Weight] = (1.0, 1.0, 1.0, 1.0)
    """Relative chance of each kind (sound, fact, attribute, quiz) being one the user enjoys."""
    start_engagement: tuple[_Share, _Share] = (0.45, 0.75)
    """Initial engagement, drawn uniformly from this range (engagement lives in [0, 1])."""
    leave_below: Annotated[float, Interval(ge=0, le=1)] = 0.15
    """The user leaves once engagement falls below this."""
    hazard: Annotated[float, Interval(ge=0, le=1)] = 0.04
    """Chance per turn of leaving anyway, scaled by (1 - engagement)."""
    hazard_floor: Annotated[float, Interval(ge=0, le=1)] = 0.02
    """Chance per turn of leaving however engaged the user is (everyone leaves eventually)."""
    interest_favourite: Annotated[float, Ge(0)] = 1.0
    """Initial interest in a favourite animal."""
    interest_other: Annotated[float, Ge(0)] = 0.45
    """Initial interest in any other animal."""
    liked_gain: Annotated[float, UNBOUNDED] = 0.11
    """Engagement from one utterance of a liked kind, times the interest in its animal."""
    other_gain: Annotated[float, UNBOUNDED] = 0.015
    """Engagement from one utterance of a kind the user does not care for, times the interest."""
    fatigue: Annotated[float, Interval(ge=0, le=1)] = 0.3
    """Each utterance about a non-favourite animal multiplies the interest in it by (1 - fatigue)."""
    favourite_fatigue: Annotated[float, Interval(ge=0, le=1)] = 0.06
    """The same for favourite animals: depth is welcome there."""
    repetition_penalty: Annotated[float, Ge(0)] = 0.1
    """Engagement lost when a response's main kind is the main kind of both previous responses."""
    comfortable_length: Annotated[int, Ge(0)] = 2
    """Content utterances per response a user reads happily."""
    verbosity_penalty: Annotated[float, Ge(0)] = 0.05
    """Engagement lost per content utterance beyond `comfortable_length`."""
    ignored_request_penalty: Annotated[float, Ge(0)] = 0.12
    """Engagement lost when the bot ignores what the user just asked for."""
    hop_penalty: Annotated[float, Ge(0)] = 0.06
    """Engagement lost when the bot moves to an animal the user did not ask for before saying two things about the
    current one (hopping around feels random)."""
    asked_gain: Annotated[float, UNBOUNDED] = 0.06
    """Engagement from being asked which animal they like, or offered a favourite."""
    baseline: Annotated[float, Ge(0)] = 0.05
    """Engagement lost per response regardless (time has a cost)."""
    feedback_scale: Annotated[float, Ge(0)] = 2.0
    """P(explicit praise) = feedback_scale * gain for a gain > 0; P(complaint) likewise for a loss."""
    cooperation: Annotated[float, Interval(ge=0, le=1)] = 0.85
    """Probability of answering a question cooperatively at full engagement (about a favourite: always)."""
    quiz_skill: Annotated[float, Interval(ge=0, le=1)] = 0.6
    """Probability of guessing a quiz right."""
    request_rate: Annotated[float, Interval(ge=0, le=1)] = 0.25
    """Probability of asking for something when there is no question to answer."""
    off_domain_rate: Annotated[float, Interval(ge=0, le=1)] = 0.04
    """Probability of saying something off-domain instead."""


POPULATIONS: dict[str, UserConfig] = {
    "default": UserConfig(),
    "scholars": UserConfig(
        kind_weights=(0.3, 3.0, 2.0, 0.5),  # facts and attributes, seldom sounds or quizzes
        start_engagement=(0.35, 0.65),
        leave_below=0.2,
        hazard=0.06,
        comfortable_length=3,  # they read longer responses happily
        verbosity_penalty=0.03,
        asked_gain=-0.03,  # being asked what they like annoys them
        cooperation=0.6,
        quiz_skill=0.8,
        repetition_penalty=0.05,  # more of the same kind is fine ...
        hop_penalty=0.1,  # ... hopping between animals is not
    ),
}
"""The built-in user populations of the animals world, by name."""


def _liked_kinds(rng: random.Random, config: UserConfig) -> set[str]:
    """The content kinds a user enjoys: `liked_kinds` of them, drawn by `kind_weights` without replacement."""
    if len(set(config.kind_weights)) == 1:
        return set(rng.sample(KINDS, config.liked_kinds))  # equal weights: the draw every earlier run made
    kinds, weights, liked = list(KINDS), list(config.kind_weights), set()
    for _ in range(config.liked_kinds):
        (kind,) = rng.choices(kinds, weights)
        liked.add(kind)
        weights.pop(kinds.index(kind))
        kinds.remove(kind)
    return liked


class AnimalUser:
    """One simulated person; `AnimalUser(rng)` follows the SimulatedUser protocol."""

    def __init__(self, rng: random.Random, config: UserConfig | None = None, kb: KnowledgeBase | None = None) -> None:
        self.rng = rng
        self.config = config = config or UserConfig()
        self.kb = kb or load_knowledge_base()
        names = [animal.name for animal in self.kb.animals]
        self.favourites = rng.sample(names, config.favourites)
        self.liked = _liked_kinds(rng, config)
        self.engagement = rng.uniform(*config.start_engagement)
        self.interest = {n: config.interest_favourite if n in self.favourites else config.interest_other for n in names}
        self.kinds_seen: list[str | None] = []
        self.topic: tuple[str | None, int] = (None, 0)
        """The animal the bot's content is about, and how many content utterances it has had in a row."""
        self.request: str | None = None
        """What the user's last message asked for: a content kind, or "animal:<name>"."""
        self.wording = random.Random(str(rng.getstate()))
        """How requests are worded: a stream of its own, so that the draws of `rng` (what the user does) do not
        depend on how many wordings there are."""
        self.told: dict[str, set[str]] = {}
        """Animal -> the attributes the bot has stated about it (an attribute question asks about another one)."""

    # --- what the user says --------------------------------------------------------------------------------------

    def _animal(self, name: str) -> Animal:
        return self.kb[name]

    def _favourite(self) -> Animal:
        """The favourite the user is most interested in now."""
        return self._animal(max(self.favourites, key=lambda n: (self.interest[n], self.rng.random())))

    def ask(self, kind: str, animal: Animal | None, named: bool = False) -> str:
        """A request of `kind` (a content kind, or an attribute of `ATTRIBUTES`) worded by the wording stream: about
        `animal` by name (always when `named`, else half the time), or as "it" or "they"."""
        template, plural = self.wording.choice(ASKING[kind]), self.wording.random() < 0.5
        if animal is not None and (named or self.wording.random() < 0.5):
            it = animal.plural if plural else animal.with_article
            its, them = f"the {animal.name}'s", animal.plural
        else:
            it, its, them = ("they", "their", "them") if plural else ("it", "its", "it")
        return template.format(it=it, its=its, them=them, are="are" if plural else "is", do="do" if plural else "does")

    def opening(self) -> str:
        roll, favourite = self.rng.random(), self._favourite()
        if roll < 0.4:
            greeting = self.rng.choice(("hi", "hello!", "hey there"))
            question = self._question(favourite, 0.5)
            return greeting if question is None else f"{greeting.rstrip('!')}! {question}"
        if roll < 0.7:
            question = self._question(favourite, 2 / 3)
            if question is not None:
                return question
            self.request = f"animal:{favourite.name}"
            return f"tell me about {favourite.plural}"
        if roll < 0.85:
            self.request = "sound"
            return f"can I hear what {favourite.with_article} sounds like?"
        return f"I really like {favourite.plural}"

    def _question(self, animal: Animal, chance: float, named: bool = True) -> str | None:
        """With `chance` (drawn by the wording stream), a question about `animal` of a kind the user likes
        (attribute, fact or sound), the request it makes recorded; None otherwise. The first message, an answer to
        "which animal next?" and a yes to another animal may be one."""
        liked = [kind for kind in ("attribute", "fact", "sound") if kind in self.liked]
        if not liked or self.wording.random() >= chance:
            return None
        kind = self.request = self.wording.choice(liked)
        return self.ask(self.wording.choice(ATTRIBUTES) if kind == "attribute" else kind, animal, named)

    def _request(self, focus: str | None) -> str:
        kind = self.rng.choice(sorted(self.liked))
        bored = focus is not None and self.interest.get(focus, 1.0) < 0.3
        if bored or focus is None:
            favourite = self._favourite()
            self.request = f"animal:{favourite.name}"
            return self.rng.choice((f"can we talk about {favourite.plural}?", f"what about {favourite.plural}?"))
        self.request = kind
        if kind != "attribute":
            return self.ask(kind, self._animal(focus))
        untold = [name for name in ATTRIBUTES if name not in self.told.get(focus, set())]
        return self.ask(self.wording.choice(untold or ATTRIBUTES), self._animal(focus))

    def _answer(self, question: Candidate) -> tuple[str, str]:
        """(text, "cooperative" or "non_cooperative") for the bot's question."""
        kind, focus = question.meta.get("question"), question.focus
        willing = self.rng.random() < self.config.cooperation * (0.4 + 0.6 * self.engagement)
        if kind == "yes_no":
            if focus in self.favourites or (willing and self.interest.get(focus or "", 0) >= 0.4):
                self.request = f"animal:{focus}"  # agreeing to a new animal is asking for it
                yes = self.rng.choice(("yes please", "sure!", "yeah, why not", "ok"))
                asked = self._question(self._animal(focus), 1 / 3, named=False) if focus in self.kb.by_name else None
                return (yes if asked is None else f"{yes.rstrip('!')}! {asked}"), "cooperative"
            return self.rng.choice(("no thanks", "nah", "not really")), "non_cooperative"
        if kind == "open":
            if willing or self.rng.random() < 0.5:
                favourite = self._favourite()
                self.request = f"animal:{favourite.name}"
                pick = self.rng.choice((f"{favourite.plural}!", f"tell me about {favourite.plural}"))
                return self._question(favourite, 0.5) or pick, "cooperative"
            return self.rng.choice(("I don't know", "you choose")), "non_cooperative"
        if kind == "quiz":
            if willing:
                offered = question.meta.get("options")
                options = [str(o) for o in offered] if isinstance(offered, list) else [str(focus)]
                answer = str(question.meta.get("answer"))
                guess = answer if self.rng.random() < self.config.quiz_skill else self.rng.choice(options)
                return f"is it the {guess}?", "cooperative"
            return self.rng.choice(("no idea", "just tell me")), "non_cooperative"
        return "ok", "cooperative"

    # --- how the response lands ----------------------------------------------------------------------------------

    def _gain(self, chosen: list[Candidate]) -> float:
        config = self.config
        gain = -config.baseline
        content = 0
        for candidate in chosen:
            kind, focus = candidate.action, candidate.focus
            if kind in KINDS and focus is not None:
                interest = self.interest[focus]
                gain += (config.liked_gain if kind in self.liked else config.other_gain) * interest
                if kind != "quiz":
                    content += 1
                    fade = config.favourite_fatigue if focus in self.favourites else config.fatigue
                    self.interest[focus] = interest * (1 - fade)
            elif kind == "open_question" or (kind == "yes_no_question" and focus in self.favourites):
                gain += config.asked_gain
        gain -= config.verbosity_penalty * max(0, content - config.comfortable_length)

        for candidate in chosen:
            if candidate.action not in KINDS or candidate.focus is None:
                continue
            current, run = self.topic
            if candidate.focus == current:
                self.topic = (current, run + 1)
                continue
            if current is not None and run < 2 and self.request != f"animal:{candidate.focus}":
                gain -= config.hop_penalty
            self.topic = (candidate.focus, 1)

        main = next((c.action for c in chosen if c.action in KINDS), None)
        if main is not None and self.kinds_seen[-2:] == [main, main]:
            gain -= config.repetition_penalty
        self.kinds_seen.append(main)

        if self.request is not None:
            wanted = self.request.removeprefix("animal:")
            met = any(c.action == self.request or (c.focus == wanted and c.action in KINDS) for c in chosen)
            if not met:
                gain -= config.ignored_request_penalty
        return gain

    def reply(self, response: Response) -> UserReply:
        config, rng = self.config, self.rng
        gain = self._gain(response.chosen)
        for candidate in response.chosen:
            attribute = candidate.meta.get("attribute")
            if candidate.action == "attribute" and candidate.focus is not None and isinstance(attribute, str):
                self.told.setdefault(candidate.focus, set()).add(attribute)
        self.engagement = min(1.0, max(0.0, self.engagement + gain))
        self.request = None
        meta: dict[str, JsonValue] = {"engagement": round(self.engagement, 4), "gain": round(gain, 4)}

        if self.engagement < config.leave_below or rng.random() < config.hazard_floor + config.hazard * (
            1 - self.engagement
        ):
            bored = self.engagement < config.leave_below
            text = rng.choice(("this is boring, bye", "stop.")) if bored else "I have to go now, bye!"
            return UserReply(text=text, left=True, meta={**meta, "intent": "leave"})

        feedback = ""
        if gain > 0 and rng.random() < config.feedback_scale * gain:
            feedback = rng.choice(("Wow, thank you! ", "That's wonderful! ", "Awesome fact! "))
            meta["feedback"] = "positive"
        elif gain < 0 and rng.random() < config.feedback_scale * -gain:
            feedback = rng.choice(("This is boring. ", "Ugh, I don't care. "))
            meta["feedback"] = "negative"

        question = next((c for c in response.chosen if "question" in c.meta), None)
        if question is not None:
            text, reaction = self._answer(question)
            meta["reaction"] = reaction
        elif rng.random() < config.off_domain_rate:
            text = rng.choice(("what's the weather like today?", "do you like pizza?"))
            meta["intent"] = "off_domain"
        elif rng.random() < config.request_rate:
            focus = next((c.focus for c in reversed(response.chosen) if c.focus), None)
            text = self._request(focus)
            meta["intent"] = "request"
        else:
            text = rng.choice(("cool", "ok", "I see", "interesting", "hmm"))
        return UserReply(text=feedback + text, meta=meta)

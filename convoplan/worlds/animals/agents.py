"""Simulated human agents of the animals world, for agent assist (`convoplan.sim.protocols.SimulatedAgent`).

An agent knows the guide (the world's knowledge base, as the knowledge file `knowledge_passages` writes) and what
the customer asked, and means to send what the world's agent sends at that moment (the logged message and its
action). Shown suggestions, it reads the first `reads` of them and sends the first that fits; when none does, it
edits the closest one of the meant action into its own wording if that one is close enough (`edit_from`), and
otherwise writes its own. A suggestion fits when it is of the meant action and

- for `fact`, `attribute` and `sound` (what the guide says): it makes a claim, the guide's passages about the
  animal in focus support every claim (`check_support`, as the grounding check), it says them and nothing else
  (an agent who knows the guide reads more strictly than the check: at least `COVERAGE` of the message's words
  are its passages' and of each passage's words the message's, so "Polar bears can fly." is not a rewording of
  "Polar bears ... can paddle for days"), and it says what is wanted: right after a customer's question, what the
  meant message draws on (the weight when asked how heavy); otherwise something no earlier agent message said;
- for every other action: it reads like the meant message (rapidfuzz's ratio at least the agent's `closeness`), or
  both are short (up to three words: "Cool." for "Awesome.").

Two populations with other tastes (`POPULATIONS`):

- `thorough` sends the guide's words as the world's agent does, quoted and attributed;
- `terse` sends plain short statements: no quotation or attribution ('The convoplan animal guide says: "X"' is
  sent as "X"), at most 20 words. A suggestion that fits but is not in that form is edited into it.

Individuals of a population differ, drawn from the rng: how many suggestions they read, how close a message must
be to fit, and how close to be worth editing.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from convoplan.retrieval.knowledge import KnowledgeIndex, stopwords
from convoplan.retrieval.support import check_support, said_passages
from convoplan.schema import Candidate, Conversation, Turn
from convoplan.sim.protocols import AgentChoice, AgentFactory, SimulatedAgent
from convoplan.worlds.animals.knowledge import knowledge_passages

__all__ = ["POPULATIONS", "GuideAgent", "Taste", "agent_population"]

GUIDE_ACTIONS = frozenset({"fact", "attribute", "sound"})
"""Actions that state what the guide says: checked against it."""
_QUOTED = re.compile(r'^\s*The convoplan animal guide says:\s*"(.+)"\s*$')
_SHORT = 3
"""Words of a message short enough that any other short one of its action will do ("Cool.", "Sure.")."""
COVERAGE = 0.7
"""Share of a message's content words that its passages hold, and of each passage's words the message holds."""
_WORD = re.compile(r"[a-z0-9][a-z0-9.']*")


def _words(text: str) -> set[str]:
    """Content words, lower-cased, without a plural s or a final full stop; stop words and the attribution left out."""
    stop = stopwords() | {"convoplan", "animal", "guide", "say", "says"}
    words = (w.rstrip(".").removesuffix("'s").removesuffix("s") for w in _WORD.findall(text.lower()))
    return {w for w in words if w and w not in stop}


def covered(part: str, whole: str) -> float:
    """The share of `part`'s content words that `whole` holds (1 when `part` has none)."""
    words = _words(part)
    return len(words & _words(whole)) / len(words) if words else 1.0


@dataclass(frozen=True)
class Taste:
    """What an agent population sends."""

    name: str
    quotes: bool
    """Sends the guide's words quoted with the attribution, as the world's agent; False: the bare statement."""
    max_words: int | None = None
    """Sends nothing longer (None: no limit)."""


POPULATIONS: dict[str, Taste] = {"thorough": Taste("thorough", True), "terse": Taste("terse", False, 20)}


@functools.cache
def guide() -> KnowledgeIndex:
    """The world's knowledge base as a knowledge index (built once per process)."""
    return KnowledgeIndex(list(knowledge_passages()))


class GuideAgent:
    """An agent of the animals world who knows the guide (the module docstring)."""

    def __init__(self, rng: random.Random, taste: Taste = POPULATIONS["thorough"]) -> None:
        self.taste = taste
        self.reads = rng.randint(3, 9)
        """How many of the suggestions shown it reads, in order."""
        self.closeness = rng.uniform(70.0, 90.0)
        """rapidfuzz ratio (0-100) at which a message of another action kind reads like the meant one."""
        self.edit_from = rng.uniform(40.0, 60.0)
        """Ratio at which the closest suggestion is worth editing rather than writing anew."""
        self.name = f"{taste.name}-{rng.randrange(10**6):06d}"
        self.knowledge = guide()
        self._last_said: tuple[tuple[tuple[str, str], ...] | None, set[str]] = (None, set())

    def wording(self, text: str) -> str:
        """`text` as this agent would send it: unquoted for a taste without quotes."""
        quoted = _QUOTED.match(text)
        return quoted.group(1) if quoted and not self.taste.quotes else text

    def _in_form(self, text: str) -> bool:
        words = len(text.split())
        unquoted = self.taste.quotes or ('"' not in text and "guide says" not in text.lower())
        return unquoted and (self.taste.max_words is None or words <= self.taste.max_words)

    def _said(self, turns: Sequence[Turn]) -> set[str]:
        """The guide's passages the agent messages of `turns` drew on (`said_passages`), for the last history asked
        about: `choose` asks once per suggestion read."""
        key = tuple((turn.speaker, turn.text) for turn in turns)
        if self._last_said[0] != key:
            self._last_said = (key, said_passages(turns, self.knowledge))
        return self._last_said[1]

    def fits(self, history: Conversation, meant: Turn, candidate: Candidate) -> bool:
        """Whether `candidate` says what the agent means to (the module docstring), whatever its form."""
        if candidate.action != meant.action:
            return False
        turns = history.turns
        if meant.action not in GUIDE_ACTIONS:
            text, own = candidate.text.casefold(), self.wording(meant.text).casefold()
            short = len(own.split()) <= _SHORT and len(text.split()) <= _SHORT
            return short or bool(fuzz.ratio(text, own) >= self.closeness)
        found = self.knowledge.for_claims(candidate.text, turns)
        passages = {p.id: p.text for p in found}
        support = check_support(candidate.text, found)
        if not support.claims or not support.supported:
            return False
        said = set(support.sources)
        if covered(candidate.text, " ".join(passages[i] for i in said)) < COVERAGE or any(
            covered(passages[i], candidate.text) < COVERAGE for i in said
        ):
            return False
        asked = bool(turns) and turns[-1].speaker == "user" and turns[-1].text.rstrip().endswith("?")
        if asked:
            wanted = set(check_support(meant.text, self.knowledge.for_claims(meant.text, turns)).sources)
            if wanted:
                return wanted <= said
        return not said & self._said(turns)

    def choose(self, history: Conversation, meant: Turn, shown: Sequence[Candidate]) -> AgentChoice:
        own = self.wording(meant.text)
        read = list(shown[: self.reads])
        for number, candidate in enumerate(read):
            if self.fits(history, meant, candidate):
                text = candidate.text if self._in_form(candidate.text) else self.wording(candidate.text)
                return AgentChoice(text if self._in_form(text) else own, number)
        closest = [(fuzz.ratio(c.text, own), k) for k, c in enumerate(read) if c.action == meant.action]
        if closest and max(closest)[0] >= self.edit_from:
            return AgentChoice(own, max(closest)[1])
        return AgentChoice(own, None)


def agent_population(name: str) -> AgentFactory:
    """The factory of a built-in population ("thorough", "terse"); ValueError naming the known ones."""
    if name not in POPULATIONS:
        raise ValueError(f"unknown agent population {name!r}: expected one of {', '.join(POPULATIONS)}")
    taste = POPULATIONS[name]

    def agent(rng: random.Random) -> SimulatedAgent:
        return GuideAgent(rng, taste)

    return agent

"""The seams of simulation: a simulated user, a rater and a simulated human agent (agent assist), each a Protocol
a domain can implement.

A user simulator or rater class plugs in by import path (`--simulator my_pkg.module:MyUsers`): it is called as
`MyUsers(rng)` once per conversation (a rater as `MyRater(name, rng)`, an agent as `MyAgent(rng)`), and must
follow the protocol below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from convoplan.compose.loop import DialogueState, Response
from convoplan.schema import Candidate, Conversation, Turn

__all__ = [
    "AgentChoice",
    "AgentFactory",
    "Rater",
    "RaterFactory",
    "SimulatedAgent",
    "SimulatedUser",
    "UserFactory",
    "UserReply",
]


@dataclass
class UserReply:
    text: str
    left: bool = False
    """The user ends the conversation with this message."""
    meta: dict[str, JsonValue] = field(default_factory=dict)
    """Hidden simulator state worth logging (engagement, intent), kept in the user turn's meta["sim"]."""


class SimulatedUser(Protocol):
    """One simulated person for one conversation."""

    def opening(self) -> str:
        """The first message."""
        ...

    def reply(self, response: Response) -> UserReply:
        """React to the bot's response."""
        ...


class Rater(Protocol):
    """Scores every candidate of a step on -3..7 (no 0)."""

    name: str

    def rate(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[int]: ...


class UserFactory(Protocol):
    def __call__(self, rng: random.Random) -> SimulatedUser: ...


class RaterFactory(Protocol):
    def __call__(self, name: str, rng: random.Random) -> Rater: ...


@dataclass(frozen=True)
class AgentChoice:
    """What a simulated agent sends after suggestions were shown."""

    text: str
    suggestion: int | None
    """The number (index) of the suggestion it started from, sent as it was or edited; None: its own words."""


class SimulatedAgent(Protocol):
    """One simulated human agent using agent assist: shown suggestions for its next message, it sends one as it is,
    edits one, or writes its own."""

    name: str
    """Its population and individual ("terse-3"): what the choices it makes are filed under."""

    def choose(self, history: Conversation, meant: Turn, shown: Sequence[Candidate]) -> AgentChoice:
        """The message to send after `history`, where `meant` is what the agent means to do (the logged message
        with its action: what it would write unaided) and `shown` the suggestions in the order shown."""
        ...


class AgentFactory(Protocol):
    def __call__(self, rng: random.Random) -> SimulatedAgent: ...

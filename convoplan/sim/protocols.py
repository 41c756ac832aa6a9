"""The seams of simulation: a simulated user and a rater, each a Protocol a domain can implement.

A user simulator or rater class plugs in by import path (`--simulator my_pkg.module:MyUsers`): it is called as
`MyUsers(rng)` once per conversation (a rater as `MyRater(name, rng)`), and must follow the protocol below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from convoplan.compose.loop import DialogueState, Response
from convoplan.schema import Candidate

__all__ = ["Rater", "RaterFactory", "SimulatedUser", "UserFactory", "UserReply"]


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

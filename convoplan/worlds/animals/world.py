"""Assemble the animals world from its parts."""

from __future__ import annotations

import random

from convoplan.compose.fusion import Entity, Fuser, RuleFusion
from convoplan.compose.nlu import Lexicon
from convoplan.sim.protocols import Rater, RaterFactory, SimulatedUser, UserFactory
from convoplan.sim.run import World
from convoplan.worlds.animals.knowledge import KnowledgeBase, load_knowledge_base
from convoplan.worlds.animals.providers import default_providers
from convoplan.worlds.animals.raters import AnimalRater, RaterConfig
from convoplan.worlds.animals.users import AnimalUser, UserConfig

__all__ = ["animals_lexicon", "animals_world"]


def animals_lexicon(kb: KnowledgeBase) -> Lexicon:
    return Lexicon({animal.name: animal.names for animal in kb.animals})


def animals_world(
    users: UserConfig | None = None,
    raters: RaterConfig | None = None,
    kb: KnowledgeBase | None = None,
    new_user: UserFactory | None = None,
    new_rater: RaterFactory | None = None,
    fuser: Fuser | None = None,
) -> World:
    """The animals world; `new_user`, `new_rater` and `fuser` replace the built-in ones."""
    base = kb or load_knowledge_base()

    def entity(name: str) -> Entity | None:
        animal = base.by_name.get(name)
        return Entity(animal.name, animal.plural, animal.article) if animal is not None else None

    def user(rng: random.Random) -> SimulatedUser:
        return AnimalUser(rng, users, base)

    def rater(name: str, rng: random.Random) -> Rater:
        return AnimalRater(name, rng, raters)

    return World(
        name="animals",
        providers=lambda rng: default_providers(base, rng),
        lexicon=animals_lexicon(base),
        entity=entity,
        new_user=new_user or user,
        new_rater=new_rater or rater,
        fuser=fuser or RuleFusion(),
    )

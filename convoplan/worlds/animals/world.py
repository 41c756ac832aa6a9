"""Assemble the animals world from its parts."""

from __future__ import annotations

import random
from collections.abc import Callable
from importlib import resources

from convoplan.compose.fusion import Entity, Fuser, FusionPair, RuleFusion, guess_entity, load_fusion_pairs
from convoplan.compose.loop import DialogueManager
from convoplan.compose.nlu import Lexicon
from convoplan.dm.baselines import RandomDM
from convoplan.sim.protocols import Rater, RaterFactory, SimulatedUser, UserFactory
from convoplan.sim.run import World
from convoplan.worlds.animals.knowledge import KnowledgeBase, load_knowledge_base
from convoplan.worlds.animals.planning import GreedyRatingDM, HeuristicDM
from convoplan.worlds.animals.providers import default_providers
from convoplan.worlds.animals.raters import AnimalRater, RaterConfig
from convoplan.worlds.animals.users import POPULATIONS, AnimalUser, UserConfig

__all__ = ["animals_world", "fusion_pairs"]

DMS: dict[str, Callable[[random.Random], DialogueManager]] = {
    "heuristic": lambda rng: HeuristicDM(),
    "greedy": lambda rng: GreedyRatingDM(),
    "random": RandomDM,
}
"""The world's built-in DMs (`--dm heuristic`): the hand-written planner, the rater-pleaser, a uniform choice."""


def animals_lexicon(kb: KnowledgeBase) -> Lexicon:
    return Lexicon({animal.name: animal.names for animal in kb.animals})


def animal_entity(kb: KnowledgeBase) -> Callable[[str], Entity]:
    """The world's entity lookup: an animal by any of its names, with its plural, article and synonyms; a name the
    knowledge base lacks gets a regular plural (`guess_entity`)."""

    def entity(name: str) -> Entity:
        animal = kb.lookup(name)
        if animal is None:
            return guess_entity(name)
        return Entity(animal.name, animal.plural, animal.article, animal.synonyms)

    return entity


def fusion_pairs(kb: KnowledgeBase | None = None) -> list[FusionPair]:
    """The world's hand-written fusion pairs (`data/fusion_pairs.jsonl`), each focus resolved by `animal_entity`."""
    path = resources.files("convoplan.worlds.animals").joinpath("data/fusion_pairs.jsonl")
    return load_fusion_pairs(path, animal_entity(kb or load_knowledge_base()))


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

    def population(config: UserConfig | None) -> UserFactory:
        def user(rng: random.Random) -> SimulatedUser:
            return AnimalUser(rng, config, base)

        return user

    def rater(name: str, rng: random.Random) -> Rater:
        return AnimalRater(name, rng, raters)

    return World(
        name="animals",
        providers=lambda rng: default_providers(base, rng),
        lexicon=animals_lexicon(base),
        entity=animal_entity(base),
        new_user=new_user or population(users),
        new_rater=new_rater or rater,
        fuser=fuser or RuleFusion(),
        dms=DMS,
        populations={name: population(config) for name, config in POPULATIONS.items()},
    )

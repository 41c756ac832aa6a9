"""What a run is made of, by name: the world (an import path, with a user simulator and a rater of one's own plugged
in), and the DMs of its arms.

A DM specification is one of
    heuristic | greedy | random      the world's built-in DMs, by name (`World.dms`; the animals world's are these)
    my_pkg.module:Factory            a class or function called with no arguments, returning a DM
    runs/dm/saql                     a folder written by `convoplan dm train` (config.json + model.safetensors)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

from convoplan.compose.loop import DialogueManager
from convoplan.embed import SentenceEmbedder
from convoplan.imports import import_object
from convoplan.sim.protocols import RaterFactory, UserFactory
from convoplan.sim.run import World

__all__ = ["ANIMALS", "load_arm", "load_world"]

ANIMALS = "convoplan.worlds.animals:animals_world"
"""The built-in world's import path: the default wherever a world is named."""


def load_world(spec: str = ANIMALS, simulator: str | None = None, rater: str | None = None) -> World:
    """The world a function named by import path returns, with a user population (one the world names, e.g.
    "scholars", or a simulator class by import path, called as `Class(rng)`) and a rater class (`Class(name, rng)`)
    plugged in where given; ValueError naming what is wrong with a bad one."""
    make = import_object(spec)
    world = _call(spec, make) if callable(make) else None
    if not isinstance(world, World):
        raise ValueError(f"{spec!r} did not return a World (convoplan.sim.run.World)")
    if simulator is not None and simulator in world.populations:
        world = replace(world, new_user=world.populations[simulator])
    elif simulator is not None:
        world = replace(world, new_user=cast(UserFactory, _callable(simulator)))
    if rater is not None:
        world = replace(world, new_rater=cast(RaterFactory, _callable(rater)))
    return world


def _callable(spec: str) -> object:
    factory = import_object(spec)
    if not callable(factory):
        raise ValueError(f"{spec!r} is not callable")
    return factory


def _call(spec: str, factory: Callable[[], object]) -> object:
    """`factory()`, named in a ValueError when it fails: an import path can name any callable (`os:system`), and
    a wrong one is a configuration error to report in one line, not a traceback."""
    try:
        return factory()
    except Exception as error:  # whatever a foreign callable raises
        raise ValueError(f"{spec!r}: calling it with no arguments failed ({type(error).__name__}: {error})") from None


def load_arm(
    spec: str, world: World, rng: random.Random | None = None, embedder: SentenceEmbedder | None = None
) -> DialogueManager:
    """The DM a specification names in `world`; a ValueError says what is wrong with a bad one. A trained DM embeds
    with `embedder` (default: the process's shared one, which keeps no disk cache)."""
    if spec in world.dms:
        return world.dms[spec](rng or random.Random(0))
    path = Path(spec)
    if path.is_dir():
        from convoplan.dm.checkpoint import load_policy

        return load_policy(path, embedder)
    if ":" not in spec:
        builtin = f"one of the {world.name} world's DMs ({', '.join(world.dms)}), " if world.dms else ""
        raise ValueError(f"{spec!r}: expected {builtin}a trained DM folder, or an import path 'pkg.module:Factory'")
    dm = _call(spec, cast(Callable[[], object], _callable(spec)))
    if not callable(getattr(dm, "score", None)):
        raise ValueError(f"{spec!r} made {type(dm).__name__}, which has no score(state, candidates) method")
    return cast(DialogueManager, dm)

"""Turn a DM specification into a dialogue manager: a DM the world has built in, an import path, or a trained
checkpoint.

heuristic | greedy | random      the world's built-in DMs, by name (`World.dms`; the animals world's are these)
my_pkg.module:Factory            a class or function called with no arguments, returning a DM
runs/dm/saql                     a folder written by `convoplan dm train` (config.json + model.safetensors)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import cast

from convoplan.compose.loop import DialogueManager
from convoplan.embed import SentenceEmbedder
from convoplan.imports import import_object
from convoplan.sim.run import World

__all__ = ["load_arm"]


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
    factory = import_object(spec)
    if not callable(factory):
        raise ValueError(f"{spec!r} is not callable")
    dm = factory()
    if not callable(getattr(dm, "score", None)):
        raise ValueError(f"{spec!r} made {type(dm).__name__}, which has no score(state, candidates) method")
    return cast(DialogueManager, dm)

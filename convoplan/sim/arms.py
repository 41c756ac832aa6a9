"""Turn a DM specification into a dialogue manager: a built-in name, an import path, or a trained checkpoint.

random | heuristic | greedy       the DMs that need no training (convoplan.worlds.animals.planning)
my_pkg.module:Factory            a class or function called with no arguments, returning a DM
runs/dm/saql                     a folder written by `convoplan dm train` (config.json + model.safetensors)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import cast

from convoplan.compose.loop import DialogueManager
from convoplan.imports import import_object

__all__ = ["load_arm"]


def load_arm(spec: str, rng: random.Random | None = None) -> DialogueManager:
    """The DM a specification names; a ValueError says what is wrong with a bad one."""
    from convoplan.worlds.animals.planning import BUILTIN_DMS, builtin_dm

    if spec in BUILTIN_DMS:
        return builtin_dm(spec, rng)
    path = Path(spec)
    if path.is_dir():
        from convoplan.dm.checkpoint import load_policy

        return load_policy(path)
    if ":" not in spec:
        expected = f"one of {', '.join(BUILTIN_DMS)}, a trained DM folder, or an import path 'pkg.module:Factory'"
        raise ValueError(f"{spec!r}: expected {expected}")
    factory = import_object(spec)
    if not callable(factory):
        raise ValueError(f"{spec!r} is not callable")
    dm = factory()
    if not callable(getattr(dm, "score", None)):
        raise ValueError(f"{spec!r} made {type(dm).__name__}, which has no score(state, candidates) method")
    return cast(DialogueManager, dm)

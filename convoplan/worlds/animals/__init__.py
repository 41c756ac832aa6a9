"""The built-in animals world: knowledge base, providers, NLU lexicon, simulated users and raters, DMs.

`animals_world()` assembles it for the composition loop and the simulation runner.
"""

from convoplan.worlds.animals.world import animals_world

__all__ = ["animals_world"]

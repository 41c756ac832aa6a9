"""The built-in animals world: knowledge base, providers, NLU lexicon, simulated users and raters, DMs.

`animals_world()` assembles it for the composition loop and the simulation runner; `fusion_pairs()` are the
hand-written examples its fusers learn from.
"""

from convoplan.worlds.animals.world import animals_world, fusion_pairs

__all__ = ["animals_world", "fusion_pairs"]

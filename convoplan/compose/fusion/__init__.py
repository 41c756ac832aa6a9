"""Sentence fusion: the utterances chosen for one bot response, merged into one natural response.

The composition loop picks utterances one at a time (acknowledgement, animal sound, quoted fact, attribute
statement, quiz, yes/no question, open question). Said one after the other they read like a list ("Lions weigh
... Lions grow ..."); fusion (the RL paper, sec. 3) makes them one response with three edits:
(a) pronominalise the repeated focus entity ("..., and they grow ..."), (b) remove repetitive context mentions
(a second "The convoplan animal guide says:" becomes "It also says:"), (c) add a discourse marker between
sentences ("Plus, ...", "And which animal ...").

Two fusers follow the `Fuser` protocol:
- `RuleFusion`, the default: hand-written rules for (a), (b) and (c); no training, predictable.
- `TaggerFusion`: a LaserTagger-style tagger (Malmi et al. 2019). Every source token is KEEP or DELETE, optionally
  with a phrase from a small vocabulary added before it; gold tags come from aligning each source with its target
  and a classifier learns them per token. It learns the conventions of the hand-written pairs in
  a world supplies (`load_fusion_pairs`; the animals world's are `convoplan.worlds.animals.fusion_pairs()`), on which
  `evaluate` scores both (exact match and SARI).

Everything works on tokens (`tokenize`: words and single punctuation marks), so a case change is always the
replacement of a whole token ("Which" -> "which"), and `detokenize` puts the spacing back exactly.
"""

from convoplan.compose.fusion.rules import RuleFusion
from convoplan.compose.fusion.scores import evaluate
from convoplan.compose.fusion.tagger import TaggerConfig, TaggerFusion
from convoplan.compose.fusion.text import ConcatFusion, Entity, Fuser, FusionPair, guess_entity, load_fusion_pairs

__all__ = [
    "ConcatFusion",
    "Entity",
    "Fuser",
    "FusionPair",
    "RuleFusion",
    "TaggerConfig",
    "TaggerFusion",
    "evaluate",
    "guess_entity",
    "load_fusion_pairs",
]

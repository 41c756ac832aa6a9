"""Scoring fusers on the hand-written pairs: exact match and SARI (Xu et al. 2016)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from convoplan.compose.fusion.text import (
    Fuser,
    FusionPair,
    tokenize,
)

# ---------------------------------------------------------------------------------------------------- scores


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _f1(true_positives: float, selected: float, relevant: float) -> float:
    """F1 with 0/0 read as 1 (an empty selection of nothing to find is perfect), as in LaserTagger's SARI."""
    precision = true_positives / selected if selected > 0 else 1.0
    recall = true_positives / relevant if relevant > 0 else 1.0
    return 2 * precision * recall / (precision + recall) if precision > 0 and recall > 0 else 0.0


def sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI (Xu et al. 2016) as LaserTagger computes it, in [0, 1]: the mean over n = 1..4 of the F1 of added
    n-grams, the F1 of kept n-grams and the precision of deleted n-grams, averaged over the three.

    On `tokenize` tokens, case-sensitive; n-grams count once per text; with several references an n-gram of the
    source is weighted by the share of references that contain it (keep and delete), an added n-gram counts if
    any reference has it.
    """
    src, pred = tokenize(source), tokenize(prediction)
    refs = [tokenize(reference) for reference in references]
    keep = add = delete = 0.0
    for n in range(1, 5):
        s, p = _ngrams(src, n), _ngrams(pred, n)
        ref_sets = [grams for grams in (_ngrams(r, n) for r in refs) if grams]
        weight = Counter(gram for grams in ref_sets for gram in grams)
        share = {gram: count / len(ref_sets) for gram, count in weight.items()}
        kept = s & p
        keep += _f1(sum(share.get(g, 0.0) for g in kept), len(kept), sum(share.get(g, 0.0) for g in s))
        deleted = s - p
        delete += sum(1.0 - share.get(g, 0.0) for g in deleted) / len(deleted) if deleted else 1.0
        added = p - s
        add += _f1(len(added & share.keys()), len(added), len(share.keys() - s))
    return (keep + add + delete) / 12


@dataclass(frozen=True)
class FusionScores:
    """How a fuser does on pairs: exact match (on whitespace-normalised text) and mean SARI, both in [0, 1]."""

    exact_match: float
    sari: float
    n: int


def evaluate(fuser: Fuser, pairs: Sequence[FusionPair]) -> FusionScores:
    """Fuse every pair's utterances and compare with its target."""
    if not pairs:
        return FusionScores(0.0, 0.0, 0)
    exact = total = 0.0
    for pair in pairs:
        prediction = fuser.fuse(pair.utterances, pair.entity, pair.user)
        exact += " ".join(prediction.split()) == " ".join(pair.fused.split())
        total += sari(" ".join(pair.utterances), prediction, [pair.fused])
    return FusionScores(exact / len(pairs), total / len(pairs), len(pairs))

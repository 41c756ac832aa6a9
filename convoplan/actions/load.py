"""Loading a trained next-best-action model of either kind by its folder: the supervised model
(`convoplan.actions.nba`) or the outcome-driven one (`convoplan.actions.outcome`), as the folder's config says."""

from __future__ import annotations

from pathlib import Path

from convoplan.actions.nba import SupervisedNBA, load_supervised, read_nba_config
from convoplan.actions.outcome import OutcomeNBA, load_outcome
from convoplan.embed import SentenceEmbedder

__all__ = ["load_nba"]


def load_nba(folder: str | Path, embedder: SentenceEmbedder | None = None) -> SupervisedNBA | OutcomeNBA:
    """A trained next-best-action model of either kind; ValueError naming the file if the folder is not one."""
    folder = Path(folder)
    record = read_nba_config(folder)
    kind = record.get("kind")
    if kind == "supervised":
        return load_supervised(folder, record, embedder)
    if kind == "outcome":
        return load_outcome(folder, record, embedder)
    raise ValueError(f"{folder / 'config.json'}: kind: expected supervised or outcome, got {kind!r}")

"""Readers of real corpora into canonical conversations, and deterministic splits."""

from convoplan.corpora.persuasion import read_persuasion
from convoplan.corpora.splits import split_of
from convoplan.corpora.star import read_star, read_star_flows

__all__ = ["read_persuasion", "read_star", "read_star_flows", "split_of"]

"""Readers of real corpora into canonical conversations, and deterministic splits."""

from convoplan.corpora.persuasion import read_persuasion
from convoplan.corpora.splits import assign_splits, in_split, split_of
from convoplan.corpora.star import read_star, read_star_flows

__all__ = ["assign_splits", "in_split", "read_persuasion", "read_star", "read_star_flows", "split_of"]

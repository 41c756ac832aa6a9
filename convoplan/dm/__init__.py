"""Dialogue managers: baselines, supervised DMs and Q-learning DMs behind the composition loop's DM protocol."""

from convoplan.dm.baselines import RandomDM

__all__ = ["RandomDM"]

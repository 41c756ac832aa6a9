"""Dialogue managers: baselines, supervised DMs and Q-learning DMs behind the composition loop's DM protocol."""

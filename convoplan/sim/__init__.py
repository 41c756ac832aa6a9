"""Simulation: user and rater protocols, the conversation runner, the A/B experiment and its metrics."""

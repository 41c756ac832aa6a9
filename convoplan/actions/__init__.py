"""Actions of agent messages: the labeller, call-flow analysis and next-best-action models."""

from convoplan.actions.protocols import ActionScore, Labeller, NextActionModel, Prediction

__all__ = ["ActionScore", "Labeller", "NextActionModel", "Prediction"]

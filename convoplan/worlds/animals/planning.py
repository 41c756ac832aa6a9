"""Two hand-written DMs for the animals world: a myopic one that maximises the raters' immediate score, and a
planning one that elicits preferences, varies its content, and moves on before the user tires of an animal.

They frame the world's central property (benchmarked in bench/world_property.py): the greedy DM wins on mean
rating, the planner on conversation length and explicit positive feedback.
"""

from __future__ import annotations

from collections.abc import Sequence

from convoplan.compose.loop import STOP, DialogueState
from convoplan.schema import Candidate
from convoplan.worlds.animals.raters import immediate_fit

__all__ = []


class GreedyRatingDM:
    """Picks what a noise-free rater would rate highest right now."""

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        return [immediate_fit(state, c) for c in candidates]


class HeuristicDM:
    """A hand-written planner.

    - Answer first: acknowledge an answered question, give what the user asked for.
    - Elicit: with no focus, ask which animal the user wants; follow the animals the user names.
    - Vary: prefer a kind of content not used in the last responses; a quiz once an animal has been introduced.
    - Learn what this user likes: kinds they asked for or praised come back, kinds they complained about less.
    - Move on: after a few utterances on an animal the user never named, offer another (one the user named first).
    - Keep it short: one or two pieces of content, then stop, ending every other response with a question.
    """

    def __init__(self, depth_named: int = 6, depth_other: int = 3) -> None:
        self.depth_named = depth_named
        """Content utterances on an animal the user named before the planner offers to move on."""
        self.depth_other = depth_other
        """The same for an animal the user never named."""

    @staticmethod
    def _reactions(state: DialogueState) -> dict[str, float]:
        """Kind of content -> how this user has reacted to it so far (+1 asked for or praised, -1 complained)."""
        taste: dict[str, float] = {}
        since_user: list[str] = []
        for turn in state.turns:
            if turn.speaker == "agent":
                if turn.action is not None:
                    since_user.append(turn.action)
                continue
            request, feedback = turn.meta.get("request"), turn.meta.get("feedback")
            if isinstance(request, str):
                taste[request] = taste.get(request, 0.0) + 1.0
            if feedback in ("positive", "negative"):
                for kind in set(since_user):
                    taste[kind] = taste.get(kind, 0.0) + (1.0 if feedback == "positive" else -1.0)
            since_user = []
        return taste

    def _score(self, state: DialogueState, c: Candidate, taste: dict[str, float]) -> float:
        f, action = c.features, c.action
        if f["repeated"]:
            return -5.0
        if f["request_match"]:
            return 8.0
        content_so_far = sum(x.action in ("sound", "fact", "attribute") for x in state.chosen)
        current_depth = f["focus_depth"] if not f["changes_focus"] else 0.0
        just_asked_for = state.heard is not None and state.focus in state.heard.mentions
        tired = (
            state.focus is not None
            and not just_asked_for
            and current_depth >= (self.depth_named if state.focus in state.mentioned else self.depth_other)
        )
        if action == STOP:
            last = state.chosen[-1].action
            return (
                6.0
                if content_so_far >= 2 or (content_so_far and state.turn_index % 2 == 0)
                else (-1.0 if last == "ack" else 2.0)
            )
        if action == "ack":
            answered = state.heard is not None and state.heard.answer not in (None, "ignored", "none")
            return 6.5 if answered else 0.0
        if action == "open_question":
            return 5.0 if state.focus is None or (tired and not state.mentioned) else 1.0
        if action == "yes_no_question":
            if not tired and state.focus is not None:
                return 0.5
            return 5.5 if f["about_mentioned"] else 4.0
        if action == "quiz":
            return 4.5 + taste.get("quiz", 0.0) if 1 <= current_depth < 4 and content_so_far >= 1 else 1.0
        # content: variety first, then what this user showed they like, then animals the user named
        variety = 1.5 * (f["provider_recent"] == 0) - 0.5 * f["provider_recent"]
        liked = max(-2.0, min(2.0, taste.get(action or "", 0.0)))
        too_long = 4.0 if content_so_far >= 2 else 0.0
        return 3.0 + variety + liked + 1.0 * f["about_mentioned"] - (2.0 if tired else 0.0) - too_long

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        taste = self._reactions(state)
        return [self._score(state, c, taste) for c in candidates]

"""What a composition step is worth: the raters' scores (the RL paper's reward), what the user did next, or a mix.

The paper's reward is the mean rating of the selected candidate: myopic raters judging one step at a time. A
reward from the user's reaction needs no raters, so it also works on stored live sessions (`data export --db`):
after each bot response the next user message says how it landed (its NLU reading is in the user turn's meta):

    reaction = continued (the user wrote again and did not leave)  or  left (the user said goodbye or "stop")
             + cooperative / non_cooperative (an answer to the bot's question, if any)
             + positive / negative (explicit feedback, in words or with the console's buttons)

The reaction is paid on the response's last step (its closing stop decision); the steps before it get nothing
from it, so the discount carries the credit back to the utterances that made the response. A response that no
user message follows (the bot closed, the run cut off, the live session is still open) earns only its buttons'
feedback. `RewardConfig.source` chooses (`--set reward.source=reactions`); "mixed" adds `rating_weight` x the
mean rating of every step.
"""

from __future__ import annotations

from collections.abc import Callable

from convoplan.compose.loop import STOP
from convoplan.compose.nlu import NON_COOPERATIVE
from convoplan.dm.configs import RewardConfig
from convoplan.dm.data import mean_rating
from convoplan.schema import Conversation

__all__ = ["step_reward"]


def step_reward(config: RewardConfig) -> Callable[[Conversation, int], float] | None:
    """`reward(conversation, turn index)` of a step for `build_steps`; None for ratings (its own default)."""
    if config.source == "ratings":
        return None

    def reward(conversation: Conversation, index: int) -> float:
        turn = conversation.turns[index]
        selected = next((c for c in turn.candidates if c.selected), None)
        rated = mean_rating(selected) if config.source == "mixed" and selected is not None else 0.0
        if turn.action != STOP:
            return config.rating_weight * rated
        return config.rating_weight * rated + reaction(conversation, index, config)

    return reward


def reaction(conversation: Conversation, index: int, config: RewardConfig) -> float:
    """How the user took the response that closes at turn `index` (its stop turn)."""
    value = _feedback(conversation.turns[index].meta.get("feedback"), config)  # a button pressed on the response
    following = next((t for t in conversation.turns[index + 1 :] if t.speaker == "user"), None)
    if following is None:
        return value
    meta = following.meta
    value += config.left if meta.get("stop") is True else config.continued
    answer = meta.get("answer")
    if answer is not None:
        value += config.non_cooperative if answer in NON_COOPERATIVE else config.cooperative
    return value + _feedback(meta.get("feedback"), config)


def _feedback(value: object, config: RewardConfig) -> float:
    return config.positive if value == "positive" else config.negative if value == "negative" else 0.0

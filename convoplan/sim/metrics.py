"""Engagement metrics of conversations and their comparison between arms (the RL paper, sec. 6.2 and Table 3), and
the behaviour statistics of a DM (sec. 6.4): questions, content diversity, facts against sounds, focus changes.

Everything is computed from canonical logs alone (the NLU's reading of each user message in the user turn's meta,
the bot's composed responses, the raters' ratings where present), so the same code serves simulated runs and the
stored sessions of a live experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from convoplan.compose.nlu import NON_COOPERATIVE
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["METRICS", "compare", "metric_values"]


METRICS = (
    "length",
    "cooperative_answers",
    "non_cooperative_answers",
    "positive_feedback",
    "negative_feedback",
    "user_left",
    "mean_rating",
)


def _mean_rating(conversation: Conversation) -> float:
    """Mean rating of the DM's decisions: the selected candidate of every rated composition step (stop included)."""
    ratings = [
        sum(c.ratings.values()) / len(c.ratings)
        for turn in conversation.agent_turns()
        for c in turn.candidates
        if c.selected and c.ratings
    ]
    return sum(ratings) / len(ratings) if ratings else math.nan


def conversation_metrics(conversation: Conversation) -> dict[str, float]:
    """Per-conversation counts: bot responses, answers to bot questions, explicit feedback, whether the user left,
    mean rating."""
    users = [turn.meta for turn in conversation.turns if turn.speaker == "user"]
    answers = [meta["answer"] for meta in users if meta.get("answer") is not None]
    # Feedback is what the NLU read in a user message ("cool!") and, in stored live sessions, a feedback button
    # pressed on a bot response (kept in that agent turn's meta by the store).
    feedback = [turn.meta.get("feedback") for turn in conversation.turns]
    return {
        "length": float(sum(turn.action == "stop" for turn in conversation.agent_turns())),
        "cooperative_answers": float(sum(answer not in NON_COOPERATIVE for answer in answers)),
        "non_cooperative_answers": float(sum(answer in NON_COOPERATIVE for answer in answers)),
        "positive_feedback": float(feedback.count("positive")),
        "negative_feedback": float(feedback.count("negative")),
        # The end, apart from feedback: the user left (said goodbye or told the bot to stop), rather than the bot
        # closing or the conversation being cut off.
        "user_left": float(
            conversation.meta.get("ended_by") == "user" or any(meta.get("stop") is True for meta in users)
        ),
        "mean_rating": _mean_rating(conversation),
    }


def metric_values(conversations: Sequence[Conversation], metric: str) -> np.ndarray:
    """One value per conversation (conversations where the metric is undefined, e.g. unrated, are left out)."""
    values = np.array([conversation_metrics(c)[metric] for c in conversations], dtype=float)
    return np.asarray(values[~np.isnan(values)])


@dataclass(frozen=True)
class Comparison:
    metric: str
    control_mean: float
    arm_mean: float
    relative_change: float
    """arm_mean / control_mean - 1."""
    low: float
    high: float
    """Bootstrap confidence interval of the relative change."""
    difference_low: float
    difference_high: float
    """Bootstrap confidence interval of arm_mean - control_mean."""
    paired_low: float = math.nan
    paired_high: float = math.nan
    """Paired bootstrap interval of the relative change: users resampled, each with both arms' conversations (NaN
    where the arms did not meet the same users, e.g. stored live sessions)."""
    paired_difference_low: float = math.nan
    paired_difference_high: float = math.nan
    """Paired bootstrap interval of the mean per-user difference, arm minus control."""

    def paired(self) -> str:
        """The relative change with its paired interval, "+12.3% [+4.5%, +20.1%]" (the change alone where the arms
        did not meet the same users)."""
        if math.isnan(self.paired_low):
            return percent(self.relative_change)
        return f"{percent(self.relative_change)} [{percent(self.paired_low)}, {percent(self.paired_high)}]"


def percent(value: float) -> str:
    """A relative change as "+12.3%" ("n/a" where it is undefined)."""
    return f"{value:+.1%}" if math.isfinite(value) else "n/a"


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """The bootstrap statistic of an arm against its control: mean(b) - mean(a)."""
    return np.asarray(np.mean(b, axis=axis) - np.mean(a, axis=axis))


def bootstrap_interval(
    control: np.ndarray,
    arm: np.ndarray,
    statistic: Callable[..., np.ndarray],
    confidence: float,
    resamples: int,
    seed: int,
    paired: bool = False,
) -> tuple[float, float]:
    """The percentile bootstrap interval of `statistic(control, arm)` (vectorised over `axis`): conversations (or
    users) resampled, each arm on its own, or with `paired` the same draws in both."""
    from scipy.stats import bootstrap

    result = bootstrap(
        (control, arm),
        statistic,
        n_resamples=resamples,
        confidence_level=confidence,
        vectorized=True,
        paired=paired,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(
    control: Sequence[Conversation],
    arm: Sequence[Conversation],
    metric: str,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """The arm against the control on one metric, with bootstrap intervals: conversations resampled per arm, and,
    where both arms met the same simulated users, users resampled with both their conversations (paired: the
    users' own variation cancels in the per-user difference)."""
    x, y = metric_values(control, metric), metric_values(arm, metric)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{metric}: need at least two conversations with a value in each arm")

    def relative(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(np.mean(b, axis=axis) / np.mean(a, axis=axis) - 1.0)

    low, high = bootstrap_interval(x, y, relative, confidence, resamples, seed)
    difference_low, difference_high = bootstrap_interval(x, y, mean_difference, confidence, resamples, seed)
    paired = (math.nan,) * 4
    users = _paired(control, arm, metric)
    if users is not None:
        px, py = users
        paired = (
            *bootstrap_interval(px, py, relative, confidence, resamples, seed, paired=True),
            *bootstrap_interval(px, py, mean_difference, confidence, resamples, seed, paired=True),
        )
    return Comparison(
        metric=metric,
        control_mean=float(x.mean()),
        arm_mean=float(y.mean()),
        relative_change=float(y.mean() / x.mean() - 1.0),
        low=low,
        high=high,
        difference_low=difference_low,
        difference_high=difference_high,
        paired_low=paired[0],
        paired_high=paired[1],
        paired_difference_low=paired[2],
        paired_difference_high=paired[3],
    )


def _paired(
    control: Sequence[Conversation], arm: Sequence[Conversation], metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The metric of the users both arms met, aligned by user: simulated conversations name their user by
    (purpose, seed, index) in meta. None when the arms met different users or too few have a value in both."""

    def by_user(conversations: Sequence[Conversation]) -> dict[tuple[object, ...], float] | None:
        keys = [(c.meta.get("purpose"), c.meta.get("seed"), c.meta.get("index")) for c in conversations]
        if any(key[2] is None for key in keys) or len(set(keys)) < len(keys):
            return None
        return {key: conversation_metrics(c)[metric] for key, c in zip(keys, conversations, strict=True)}

    x, y = by_user(control), by_user(arm)
    if x is None or y is None or set(x) != set(y):
        return None
    users = [key for key in x if not (math.isnan(x[key]) or math.isnan(y[key]))]
    if len(users) < 2:
        return None
    return np.array([x[key] for key in users]), np.array([y[key] for key in users])


# --- behaviour statistics (sec. 6.4) ---------------------------------------------------------------------------

QUESTIONS = frozenset({"quiz", "yes_no_question", "open_question"})
"""Dialogue acts that ask the user something (the composition loop's QUESTION_ACTIONS)."""
_STOP = "stop"
_ACK = "ack"

BEHAVIOURS = (
    "responses",
    "question_responses",
    "question_share",
    "unique_providers",
    "fact_utterances",
    "sound_utterances",
    "fact_share",
    "focus_changes",
    "cooperation_rate",
)
"""The keys of `behaviour_metrics`; a share is NaN where its denominator is zero."""


def _utterance(turn: Turn) -> Candidate:
    """What the bot chose at a composition step: the selected candidate, or the turn itself where none is logged."""
    selected = next((c for c in turn.candidates if c.selected), None)
    return selected if selected is not None else Candidate(text=turn.text, action=turn.action)


def bot_responses(conversation: Conversation) -> list[list[Candidate]]:
    """The utterances of each bot response that says something, in order.

    A response is the agent's step messages up to its closing "stop" message; a goodbye (a stop with no step
    before it) says nothing and is left out. Agent messages that no stop closes (logs of a bot that does not
    compose) count as a response each run of them up to the next user message.
    """
    responses: list[list[Candidate]] = []
    steps: list[Candidate] = []
    for turn in conversation.turns:
        if turn.speaker == "agent" and turn.action != _STOP:
            steps.append(_utterance(turn))
            continue
        if steps:
            responses.append(steps)
        steps = []
    if steps:
        responses.append(steps)
    return responses


def _content_focus(response: list[Candidate]) -> str | None:
    """The entity a response talks about: the focus of its last content utterance that stays on its entity
    (acknowledgements and focus-changing offers such as "Do you want to hear about walruses?" do not count)."""
    return next(
        (c.focus for c in reversed(response) if c.focus is not None and not c.changes_focus and c.action != _ACK),
        None,
    )


def _focus_changes(responses: list[list[Candidate]]) -> int:
    """Responses whose content focus differs from that of the last earlier response that had one."""
    changes, previous = 0, None
    for response in responses:
        focus = _content_focus(response)
        if focus is None:
            continue
        if previous is not None and focus != previous:
            changes += 1
        previous = focus
    return changes


def _share(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def behaviour_metrics(conversation: Conversation) -> dict[str, float]:
    """How the bot behaved in one conversation (the paper's sec. 6.4), from its canonical log alone.

    - responses: bot responses that say something (goodbyes left out);
    - question_responses: those whose last utterance is a question (quiz, yes/no question, open question), and
      question_share, their share of the responses;
    - unique_providers: distinct content providers among the chosen utterances (content diversity);
    - fact_utterances, sound_utterances: chosen utterances of each kind (the rich fact sub-dialogue against the
      poorer sound one), and fact_share, facts among facts and sounds;
    - focus_changes: responses whose content focus (see `_content_focus`) differs from the previous one's
      (conversation breadth);
    - cooperation_rate: cooperative answers among the user's answers to bot questions.
    """
    responses = bot_responses(conversation)
    utterances = [c for response in responses for c in response]
    facts = sum(c.action == "fact" for c in utterances)
    sounds = sum(c.action == "sound" for c in utterances)
    questions = sum(response[-1].action in QUESTIONS for response in responses)
    engagement = conversation_metrics(conversation)
    cooperative = engagement["cooperative_answers"]
    return {
        "responses": float(len(responses)),
        "question_responses": float(questions),
        "question_share": _share(questions, len(responses)),
        "unique_providers": float(len({c.provider for c in utterances if c.provider is not None})),
        "fact_utterances": float(facts),
        "sound_utterances": float(sounds),
        "fact_share": _share(facts, facts + sounds),
        "focus_changes": float(_focus_changes(responses)),
        "cooperation_rate": _share(cooperative, cooperative + engagement["non_cooperative_answers"]),
    }


def behaviour_summary(conversations: Sequence[Conversation]) -> dict[str, float]:
    """An arm's behaviour, keyed as `behaviour_metrics`: counts are means per conversation; shares are pooled over
    the arm (the share of all its responses that end in a question, of all its facts and sounds that are facts, of
    all the answers to its questions that cooperate), so that each response counts once, whatever the length of
    its conversation. NaN for an empty arm or an empty denominator."""
    rows = [behaviour_metrics(c) for c in conversations]
    engagement = [conversation_metrics(c) for c in conversations]

    def total(table: list[dict[str, float]], key: str) -> float:
        return sum(row[key] for row in table)

    facts, sounds = total(rows, "fact_utterances"), total(rows, "sound_utterances")
    cooperative = total(engagement, "cooperative_answers")
    pooled = {
        "question_share": _share(total(rows, "question_responses"), total(rows, "responses")),
        "fact_share": _share(facts, facts + sounds),
        "cooperation_rate": _share(cooperative, cooperative + total(engagement, "non_cooperative_answers")),
    }
    return {key: pooled[key] if key in pooled else _share(total(rows, key), len(rows)) for key in BEHAVIOURS}

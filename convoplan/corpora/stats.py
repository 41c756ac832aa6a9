"""Summary statistics of a set of canonical conversations (`convoplan data stats`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from convoplan.schema import Conversation

__all__ = ["CorpusStats", "corpus_stats"]


@dataclass(frozen=True)
class CorpusStats:
    conversations: int
    turns: int
    agent_messages: int
    user_messages: int
    labelled_agent_messages: int
    actions: dict[str, int]
    """Agent action label -> count, most frequent first."""
    with_outcome: int
    converted: int
    splits: dict[str, int]

    @property
    def labelled_share(self) -> float:
        return self.labelled_agent_messages / self.agent_messages if self.agent_messages else 0.0

    @property
    def conversion_rate(self) -> float | None:
        """Share of conversations with a known `converted` that converted."""
        return self.converted / self.with_outcome if self.with_outcome else None

    def as_dict(self) -> dict[str, object]:
        return {
            "conversations": self.conversations,
            "turns": self.turns,
            "agent_messages": self.agent_messages,
            "user_messages": self.user_messages,
            "labelled_agent_messages": self.labelled_agent_messages,
            "labelled_share": self.labelled_share,
            "distinct_actions": len(self.actions),
            "actions": self.actions,
            "with_outcome": self.with_outcome,
            "converted": self.converted,
            "conversion_rate": self.conversion_rate,
            "splits": self.splits,
        }


def corpus_stats(conversations: Sequence[Conversation]) -> CorpusStats:
    agent = [turn for conversation in conversations for turn in conversation.agent_turns()]
    actions = Counter(turn.action for turn in agent if turn.action is not None)
    known = [c.outcome.converted for c in conversations if c.outcome is not None and c.outcome.converted is not None]
    splits = Counter(str(c.meta.get("split", "none")) for c in conversations)
    return CorpusStats(
        conversations=len(conversations),
        turns=sum(len(c.turns) for c in conversations),
        agent_messages=len(agent),
        user_messages=sum(len(c.turns) for c in conversations) - len(agent),
        labelled_agent_messages=sum(actions.values()),
        actions=dict(actions.most_common()),
        with_outcome=len(known),
        converted=sum(known),
        splits=dict(sorted(splits.items())),
    )

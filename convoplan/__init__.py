"""convoplan: learn from logged conversations which action to take next and how to say it.

The canonical data format lives in `convoplan.schema`; readers of real corpora in `convoplan.corpora`.
"""

from convoplan.schema import (
    CallFlow,
    Candidate,
    Conversation,
    Event,
    FormatError,
    Outcome,
    Turn,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "CallFlow",
    "Candidate",
    "Conversation",
    "Event",
    "FormatError",
    "Outcome",
    "Turn",
    "read_jsonl",
    "write_jsonl",
]
__version__ = "0.1.0"

"""The exemplar index: the agent messages of the training logs, each with its action and the vector of its context,
and the nearest past messages for a (history, action).

What an agent said before, in a context like this one and for the same action, is the simplest suggestion there is,
and often the best one: STAR's wizards picked template messages, and copying the train message of the true action
whose previous two turns are nearest beat every LM we trained (issue 28). So the index is both

- a **suggestion source** of its own (no LM: a search, milliseconds), marked `exemplar` in the API, and
- a **baseline** that every LM evaluation prints beside the LMs (`convoplan lm eval`), with the most frequent train
  message of the action (`most_frequent`).

**Context.** A message's context is its previous `context_turns` turns rendered one per line as `speaker: text`
(`context_text`), embedded with the project's sentence encoder (all-MiniLM-L6-v2, unit vectors, through the one
embedding cache), so cosine similarity is a dot product. A query is the same rendering of the history's last turns.

**Search** is exact: the query vector against every row of the action ([N_a, 384] @ [384]) and a top-k partial
sort. At corpus scale this is nothing (STAR: ~20,000 messages, 30 MB of float32; a query costs well under a
millisecond). Past a few million messages, exact search costs N x 384 multiply-adds per query (1.5 G for 4 M
messages, about half a second on one core) and 1.5 kB of memory per message: there an approximate index such as
FAISS (IVF or HNSW, product quantisation to shrink the vectors, sharded by action) answers in about a millisecond
for a small loss in recall; this class's `nearest` is the one place to swap it in.

**On disk**: a folder (by convention `exemplars/` inside the LM folder it serves) with `index.json` (the format tag,
the config, every message's text, action and source) and `vectors.safetensors` ([N, 384] float32), written as a
whole (`convoplan.atomic.atomic_folder`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from annotated_types import Ge

from convoplan.atomic import atomic_folder
from convoplan.configs import Config, config_from_dict
from convoplan.schema import Conversation, Turn

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder

__all__ = ["EXEMPLARS", "Exemplar", "ExemplarConfig", "ExemplarIndex", "context_text", "load_exemplars"]

FORMAT = "convoplan-exemplars/1"
EXEMPLARS = "exemplars"
CHUNK = 256
"""Queries scored together against an action's messages: one matrix product each, [messages, CHUNK] floats."""
"""The index's folder inside the LM folder it serves."""
INDEX_FILE, VECTORS_FILE = "index.json", "vectors.safetensors"


@dataclass
class ExemplarConfig(Config):
    """Which messages the index holds and how their contexts are read."""

    context_turns: Annotated[int, Ge(1)] = 2
    """Turns before a message that make its context (the query reads the history's last as many)."""
    split: str = "train"
    """The `meta.split` of the conversations whose agent messages are indexed (conversations without one count as
    train); test messages must never be suggestions for themselves."""
    labelled_only: bool = True
    """Index only messages that carry an action (an unlabelled one can answer no action-directed query)."""


@dataclass(frozen=True)
class Exemplar:
    """A past agent message retrieved for a history."""

    text: str
    action: str | None
    source: str
    """Where it was said: `conversation id#turn index`."""
    score: float
    """Cosine similarity of its context to the query's (-1..1)."""


TIE_DECIMALS = 6
"""Cosines equal to this many decimals tie (`ExemplarIndex.nearest`)."""


def context_text(turns: Sequence[Turn], context_turns: int) -> str:
    """The last `context_turns` turns as `speaker: text` lines (an empty history reads as "(start)", so that opening
    messages have a context like any other)."""
    recent = turns[-context_turns:] if context_turns else []
    return "\n".join(f"{turn.speaker}: {turn.text}" for turn in recent) or "(start)"


class ExemplarIndex:
    """Past agent messages with their actions and context vectors; `nearest` finds the closest for a history."""

    def __init__(
        self,
        texts: Sequence[str],
        actions: Sequence[str | None],
        sources: Sequence[str],
        vectors: np.ndarray,
        config: ExemplarConfig,
    ) -> None:
        if not len(texts) == len(actions) == len(sources) == len(vectors):
            raise ValueError(f"{len(texts)} texts, {len(actions)} actions, {len(sources)} sources, {len(vectors)} rows")
        self.texts, self.actions, self.sources = list(texts), list(actions), list(sources)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D], unit rows
        self.config = config
        # Rows of each action, and each action's most frequent text (ties: the first said), computed once.
        rows: dict[str | None, list[int]] = {}
        for row, action in enumerate(self.actions):
            rows.setdefault(action, []).append(row)
        self._rows = {action: np.asarray(members) for action, members in rows.items()}
        self._frequent = {
            action: Counter(self.texts[r] for r in members).most_common(1)[0][0] for action, members in rows.items()
        }

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def known_actions(self) -> list[str]:
        return sorted(action for action in self._rows if action is not None)

    @classmethod
    def build(
        cls, conversations: Sequence[Conversation], embedder: SentenceEmbedder, config: ExemplarConfig | None = None
    ) -> ExemplarIndex:
        """The agent messages of `config.split` (with an action, by default) and their embedded contexts; ValueError
        when there is none."""
        config = config or ExemplarConfig()
        texts: list[str] = []
        actions: list[str | None] = []
        sources: list[str] = []
        contexts: list[str] = []
        for conversation in conversations:
            if conversation.meta.get("split", "train") != config.split:
                continue
            for index, turn in enumerate(conversation.turns):
                if turn.speaker != "agent" or (config.labelled_only and turn.action is None):
                    continue
                texts.append(turn.text)
                actions.append(turn.action)
                sources.append(f"{conversation.id}#{index}")
                contexts.append(context_text(conversation.turns[:index], config.context_turns))
        if not texts:
            which = "labelled agent messages" if config.labelled_only else "agent messages"
            raise ValueError(f"no {which} in split {config.split!r} to index")
        return cls(texts, actions, sources, embedder.embed(contexts), config)

    def most_frequent(self, action: str | None) -> str | None:
        """The most frequent indexed message of `action` (None when the index has none of it)."""
        return self._frequent.get(action)

    def nearest(
        self,
        histories: Sequence[Sequence[Turn]],
        actions: Sequence[str | None],
        embedder: SentenceEmbedder,
        k: int = 1,
    ) -> list[list[Exemplar]]:
        """For each history, the `k` indexed messages of its action whose contexts are nearest, best first (fewer
        where the action has fewer; none for an action the index lacks). `None` as an action searches every
        message. All queries are embedded in one call."""
        if k < 1:
            raise ValueError(f"k = {k}: ask for at least one exemplar")
        if len(histories) != len(actions):
            raise ValueError(f"{len(histories)} histories but {len(actions)} actions")
        queries = embedder.embed([context_text(h, self.config.context_turns) for h in histories])  # [Q, D]
        found: list[list[Exemplar]] = [[] for _ in histories]
        asking: dict[str | None, list[int]] = {}  # action -> the queries that ask for it
        for number, action in enumerate(actions):
            asking.setdefault(action, []).append(number)
        for action, numbers in asking.items():
            rows = np.arange(len(self.texts)) if action is None else self._rows.get(action)
            if rows is None or not len(rows):
                continue
            vectors = self.vectors if action is None else self.vectors[rows]  # [N_a, D]: gathered once per action
            for start in range(0, len(numbers), CHUNK):
                chunk = numbers[start : start + CHUNK]
                scores = vectors @ queries[chunk].T  # [N_a, C]: cosines, the rows and the queries being unit vectors
                for column, number in enumerate(chunk):
                    found[number] = self._best(scores[:, column], rows, k)
        return found

    def _best(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[Exemplar]:
        """The `k` best of `scores` (one per row of `rows`), best first; ties in index order. Scores equal to 6
        decimals tie: the same context (every opening's "(start)") embedded in another batch differs by float noise,
        which would otherwise pick among the tied messages by chance."""
        rounded = -np.round(scores, TIE_DECIMALS)  # [N_a], lower is better
        if k < len(rows):
            kth = np.partition(rounded, k - 1)[k - 1]  # the k-th best score: those better, then ties by index
            better = np.flatnonzero(rounded < kth)
            top = np.concatenate([better, np.flatnonzero(rounded == kth)[: k - len(better)]])
        else:
            top = np.arange(len(rows))
        top = top[np.lexsort((top, rounded[top]))]  # by score, then index
        return [
            Exemplar(self.texts[r], self.actions[r], self.sources[r], float(scores[i]))
            for i, r in zip(top.tolist(), rows[top].tolist(), strict=True)
        ]

    def save(self, folder: str | Path) -> Path:
        """Write the index as a folder (whole, or not at all)."""
        from safetensors.numpy import save_file

        with atomic_folder(folder) as temp:
            save_file({"vectors": self.vectors}, str(temp / VECTORS_FILE))
            record = {
                "format": FORMAT,
                "config": asdict(self.config),
                "texts": self.texts,
                "actions": self.actions,
                "sources": self.sources,
            }
            (temp / INDEX_FILE).write_text(json.dumps(record, ensure_ascii=False) + "\n", "utf-8")
        return Path(folder)


def load_exemplars(folder: str | Path) -> ExemplarIndex:
    """An index written by `ExemplarIndex.save`; ValueError naming the file when it is missing, of another format or
    inconsistent (a message to build it: `convoplan lm index`)."""
    from safetensors.numpy import load_file

    path = Path(folder)
    where = path / INDEX_FILE
    try:
        record: Any = json.loads(where.read_text("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no exemplar index (build one with `convoplan lm index DATA --model LM`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: not an exemplar index ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise ValueError(f"{where}: format {found!r}, expected {FORMAT!r}")
    config = config_from_dict(ExemplarConfig, record.get("config", {}), str(where), "config")
    texts, actions, sources = record.get("texts"), record.get("actions"), record.get("sources")
    if not (isinstance(texts, list) and isinstance(actions, list) and isinstance(sources, list)):
        raise ValueError(f"{where}: texts, actions and sources must be lists")
    try:
        vectors = load_file(str(path / VECTORS_FILE))["vectors"]
    except Exception as error:  # safetensors raises several types for missing, truncated or foreign files
        raise ValueError(f"{path / VECTORS_FILE}: cannot load the vectors ({error})") from None
    try:
        return ExemplarIndex(texts, actions, sources, vectors, config)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None

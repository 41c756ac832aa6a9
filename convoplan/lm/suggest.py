"""Suggestions for the agent's next message: label the history, pick the next action, let the LM write it.

The inference path of the action-directed system ("Action Directed GPT-2", 2021; docs/lm.md):

1. **Label** the agent messages of the history that carry no action yet, with a `Labeller` (optional): the model
   was trained on labelled text, so the history it reads should be labelled the same way.
2. **Plan** the next action: the one given by the caller, or else the top action of a `NextActionModel`. The
   message is written *without* an action (the fallback: the model then acts as a plain LM) when there is no
   next-action model, it ranks nothing, its top score is under `threshold`, the model has no tag for the action
   (one never seen in training), or the model is the vanilla one.
3. **Write** n messages for that action (or for each of the top k) in one batched, KV-cached `generate` call
   (`generate_messages`) that reads the history once, each message stopping at `<|end|>`; or **retrieve** them:
   the past agent messages of that action whose contexts are nearest (`convoplan.retrieval.exemplars`), no LM
   run at all. `sources` picks: "lm" (n written), "exemplars" (n retrieved), "both" (the nearest past message,
   then n - 1 written). Each suggestion says its `origin`.

Each `Suggestion` carries its text, the action it was written for (None after a fallback), that action's score
from the next-action model, and its own score: a written message's mean token log-probability, a retrieved one's
context similarity. Given a knowledge file, each is also **checked** (`convoplan.retrieval.support`): its statements
and numbers against the passages of the entity in focus, with the passages that support them (`sources`) and the
claims none does (`unsupported`).

A grounded model (its folder records a `GroundingConfig`, `convoplan.lm.grounding`) reads its prompts as it was
trained on them: the conversation's events in the history, and the knowledge passages (`knowledge`, a
`KnowledgeIndex` of the file it should read) and exemplars (its folder's exemplar index) retrieved for each one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from annotated_types import Interval

from convoplan.actions.protocols import Labeller, NextActionModel
from convoplan.configs import UNBOUNDED, Config
from convoplan.lm.generate import OnText, PrefixCache, SamplingConfig, generate_messages, prompt_budget
from convoplan.lm.grounding import Grounder, Prompt, grounding_config
from convoplan.lm.model import LanguageModel
from convoplan.retrieval.exemplars import ExemplarIndex
from convoplan.retrieval.knowledge import Passage
from convoplan.retrieval.support import SupportConfig, check_support
from convoplan.schema import Conversation, Turn

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["Plan", "Sources", "SuggestConfig", "Suggester", "Suggestion", "suggest"]

Sources = Literal["lm", "exemplars", "both"]
"""Where suggestions come from: written by the LM, retrieved from the logs, or the nearest past message first and
then written ones."""

History = Conversation | Sequence[Turn]
"""The conversation so far: a Conversation or its turns."""


@dataclass
class SuggestConfig(Config):
    """Suggestions for the next agent message."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How each message is decoded (temperature, top-p, max_new_tokens = 40, seed)."""
    n: Annotated[int, Interval(ge=1, le=20)] = 3
    """Suggestions per request (sampled together in one batch)."""
    threshold: Annotated[float, UNBOUNDED] = 0.0
    """Least score of the next-action model's top action for it to direct the message; under it the message is
    written without an action. A supervised model scores probabilities, an outcome-driven one Q-values."""
    cached_histories: Annotated[int, Interval(ge=1, le=256)] = 16
    """Histories whose KV cache is kept, one per conversation served side by side, so that a follow-up request of a
    conversation reads only its new turns (PyTorch; least recently used out first). Each costs about 46 KB a token
    with SmolLM2-135M (14 MB for 300)."""


@dataclass(frozen=True)
class Plan:
    """The action the next message is written for, and why."""

    action: str | None
    """The action that directs generation; None = written without an action."""
    proposed: str | None
    """The action asked for or predicted, before the fallback checks."""
    score: float | None
    """The next-action model's score of `proposed` (None when the caller gave the action)."""
    source: Literal["given", "predicted", "none"]
    reason: str
    """In words: why this action, or why none."""

    @property
    def action_score(self) -> float | None:
        """The score of the action the message is written for (None when given, or after a fallback)."""
        return self.score if self.action is not None else None


@dataclass(frozen=True)
class Suggestion:
    text: str
    action: str | None
    """The action the message was written for; None when generation fell back to no action."""
    action_score: float | None
    """The next-action model's score of that action (None when given by the caller or after a fallback)."""
    score: float
    """Written: mean log-probability of the message's tokens under the LM (its end token included). Retrieved: the
    cosine similarity of its context to this one's."""
    finished: bool
    """Whether the message ended with `<|end|>` within `max_new_tokens` (else it was cut there); a retrieved message
    is always whole."""
    origin: Literal["lm", "exemplar"] = "lm"
    """Written by the LM, or a past agent message retrieved from the logs."""
    source: str | None = None
    """A retrieved message's place in the logs (`conversation id#turn index`)."""
    checked: bool = False
    """Whether its claims were checked against a knowledge file (`Suggester.check`)."""
    sources: tuple[Passage, ...] = ()
    """The passages that support its claims."""
    unsupported: tuple[str, ...] = ()
    """Its claims that no passage supports (statements, and numbers as written)."""


def _conversation(history: History) -> Conversation:
    if isinstance(history, Conversation):
        return history
    return Conversation(id="history", domain="", turns=list(history))


def _unlabelled(turn: Turn) -> bool:
    """An agent message no one has looked at: no action and no labeller's verdict."""
    return turn.speaker == "agent" and turn.action is None and turn.action_source is None


class Suggester:
    """A loaded action-directed LM with its (optional) labeller and next-action model."""

    def __init__(
        self,
        lm: LanguageModel,
        labeller: Labeller | None = None,
        nba: NextActionModel | None = None,
        config: SuggestConfig | None = None,
        *,
        exemplars: ExemplarIndex | None = None,
        sources: Sources = "lm",
        embedder: SentenceEmbedder | None = None,
        knowledge: KnowledgeIndex | None = None,
    ) -> None:
        if sources != "lm" and exemplars is None:
            raise ValueError(f"suggestions from {sources!r} need an exemplar index (`convoplan lm index`)")
        self.lm = lm
        self.labeller = labeller
        self.nba = nba
        self.config = config or SuggestConfig()
        self.exemplars, self.sources = exemplars, sources
        self.grounder = Grounder(
            lm.codec, grounding_config(lm.info), knowledge=knowledge, exemplars=exemplars, embedder=embedder
        )
        """Builds the prompts as the model was trained on them (ValueError when it needs an index not given)."""
        self.prefix = PrefixCache(self.config.cached_histories)
        """The last histories read: the next request of a conversation reads only its new messages."""
        self.knowledge = knowledge
        """What suggestions are checked against (whether or not the model's prompts read it); None: unchecked."""
        self.support = SupportConfig()
        """How close a claim must be to a passage to count as supported."""

    @classmethod
    def load(
        cls,
        model: str | Path,
        labeller: str | Path | None = None,
        nba: str | Path | None = None,
        config: SuggestConfig | None = None,
        sources: Sources = "lm",
        knowledge: KnowledgeIndex | None = None,
        embedder: SentenceEmbedder | None = None,
    ) -> Suggester:
        """From folders: an LM (`convoplan lm train`), a labeller (`convoplan label train`), a next-action model
        (`convoplan nba train`), and for `sources` other than "lm", or a model whose prompts carry exemplars, the LM
        folder's exemplar index (`convoplan lm index`); `knowledge` for a model that reads knowledge, and to check
        every suggestion's claims against; `embedder` for the exemplar queries (default: the shared one). ValueError
        naming the folder when one cannot be loaded, or the model needs what it was not given."""
        from convoplan.lm.model import load_model
        from convoplan.retrieval.exemplars import EXEMPLARS, load_exemplars

        loaded_labeller = loaded_nba = None
        if labeller is not None:
            from convoplan.actions.labeller import load_labeller

            loaded_labeller = load_labeller(labeller)
        if nba is not None:
            from convoplan.actions.load import load_nba

            loaded_nba = load_nba(nba)
        lm = load_model(model)
        needs_index = sources != "lm" or grounding_config(lm.info).exemplars > 0
        index = load_exemplars(Path(model) / EXEMPLARS) if needs_index else None
        try:
            return cls(
                lm,
                loaded_labeller,
                loaded_nba,
                config,
                exemplars=index,
                sources=sources,
                embedder=embedder,
                knowledge=knowledge,
            )
        except ValueError as error:
            raise ValueError(f"{model}: {error}") from None

    def label(self, history: History) -> Conversation:
        """The history with its unlabelled agent messages labelled (unchanged without a labeller or when none is
        unlabelled). Human labels are never touched."""
        conversation = _conversation(history)
        if self.labeller is None or not any(_unlabelled(turn) for turn in conversation.turns):
            return conversation
        from convoplan.actions.labeller import apply_labels

        (labelled,), _ = apply_labels([conversation], self.labeller)
        return labelled

    def plans(self, history: History, action: str | None = None, k: int = 1) -> list[Plan]:
        """The actions to write the next message for, best first (`history` labelled already: see `label`): the
        given action, or the next-action model's top `k` that score at least the threshold. One plan without an
        action (the fallback) when none qualifies."""
        if self.lm.codec.vanilla:
            return [Plan(None, action, None, "none", "vanilla model: it has no action tags")]
        if action is not None:
            return [self._checked(action, None, "given")]
        if self.nba is None:
            return [Plan(None, None, None, "none", "no next-action model: written without an action")]
        (ranking,) = self.nba.next_actions([_conversation(history)])
        if not ranking:
            return [Plan(None, None, None, "none", "the next-action model predicts no action")]
        top = ranking[0]
        if top.score < self.config.threshold:
            why = f"{top.action} scores {top.score:.3g}, under the threshold {self.config.threshold:g}"
            return [Plan(None, top.action, top.score, "none", f"{why}: written without an action")]
        plans = [self._checked(r.action, r.score, "predicted") for r in ranking[:k] if r.score >= self.config.threshold]
        directed = [plan for plan in plans if plan.action is not None]
        return directed or plans[:1]

    def plan(self, history: History, action: str | None = None) -> Plan:
        """The one action to write the next message for (`plans` with k = 1)."""
        return self.plans(history, action)[0]

    def _checked(self, action: str, score: float | None, source: Literal["given", "predicted"]) -> Plan:
        if action not in self.lm.codec.actions:
            return Plan(None, action, score, "none", f"the model has no tag for {action!r}: written without an action")
        return Plan(action, action, score, source, source if score is None else f"{source}, score {score:.3g}")

    def prompts(self, history: History, actions: Sequence[str | None]) -> list[Prompt]:
        """The prompts asking for the next agent message with each action, each with what it left out to leave room
        to write (`Prompt.cut`) and the passages and exemplars it grounds on; retrieved in one batch."""
        budget = prompt_budget(self.lm, self.config.sampling)
        conversation = _conversation(history)
        return self.grounder.prompts([conversation] * len(actions), actions, budget)

    def prompt(self, history: History, action: str | None) -> list[int]:
        """Token ids asking for the next agent message with `action` (left-truncated to leave room to write)."""
        return self.prompts(history, [action])[0].ids

    def write(self, history: History, plan: Plan, n: int | None = None) -> list[Suggestion]:
        """`n` (default: the config's) messages for a plan, sampled in one batched generate call."""
        return self.write_plans(history, [plan], n)[0]

    def write_plans(
        self,
        history: History,
        plans: Sequence[Plan],
        n: int | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[Suggestion]]:
        """`n` messages for each plan, all sampled in one batched generate call that reads the history once (the
        prompts differ only in the action tag). `on_text(row, text)` hears the messages grow, row = plan * n + k;
        setting `cancel` stops the writing before its next decoding step (`Cancelled`)."""
        count = self.config.n if n is None else n
        prompts = [prompt.ids for prompt in self.prompts(history, [plan.action for plan in plans])]
        written = generate_messages(
            self.lm, prompts, self.config.sampling, count, prefix=self.prefix, on_text=on_text, cancel=cancel
        )
        return [
            [Suggestion(m.text, plan.action, plan.action_score, m.score, m.finished) for m in group]
            for plan, group in zip(plans, written, strict=True)
        ]

    def shares(self, n: int) -> tuple[int, int]:
        """(retrieved, written) suggestions per action out of `n`, by `sources`."""
        return {"lm": (0, n), "exemplars": (n, 0), "both": (min(1, n), n - min(1, n))}[self.sources]

    def retrieve(self, history: History, plans: Sequence[Plan], n: int) -> list[list[Suggestion]]:
        """The `n` past agent messages of each plan's action whose contexts are nearest to this history's, best first
        (fewer where the logs have fewer; for a plan without an action, of any action). No LM runs."""
        if self.exemplars is None or n == 0:
            return [[] for _ in plans]
        turns = _conversation(history).turns
        embedder = self.grounder.embedder  # one encoder for the prompts' exemplars and the retrieved suggestions
        found = self.exemplars.nearest([turns] * len(plans), [plan.action for plan in plans], embedder, n)
        return [
            [Suggestion(e.text, plan.action, plan.action_score, e.score, True, "exemplar", e.source) for e in hits]
            for plan, hits in zip(plans, found, strict=True)
        ]

    def check(self, history: History, groups: Sequence[Sequence[Suggestion]]) -> list[list[Suggestion]]:
        """The suggestions with their claims checked against the knowledge's passages of the entity in focus (none for
        one about another entity: `KnowledgeIndex.for_claims`); unchanged without a knowledge file."""
        if self.knowledge is None:
            return [list(group) for group in groups]
        turns = _conversation(history).turns
        checked = []
        for group in groups:
            row = []
            for suggestion in group:
                passages = self.knowledge.for_claims(suggestion.text, turns)
                support = check_support(suggestion.text, passages, self.support)
                by_id = {passage.id: passage for passage in passages}
                found = tuple(by_id[source] for source in support.sources)
                missing = tuple(claim.text for claim in support.unsupported)
                row.append(replace(suggestion, checked=True, sources=found, unsupported=missing))
            checked.append(row)
        return checked

    def suggestions(
        self,
        history: History,
        plans: Sequence[Plan],
        n: int | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[Suggestion]]:
        """`n` suggestions for each plan from the `sources`: the retrieved ones first, then the written ones
        (`on_text` and `cancel` as in `write_plans`)."""
        retrieved, written = self.shares(self.config.n if n is None else n)
        found = self.retrieve(history, plans, retrieved)
        if written:
            groups = self.write_plans(history, plans, written, on_text, cancel)
            found = [hits + group for hits, group in zip(found, groups, strict=True)]
        return self.check(history, found)

    def suggest(self, history: History, action: str | None = None, n: int | None = None) -> list[Suggestion]:
        """Label the history, plan the action (`action`, or the next-action model's), and make `n` suggestions for
        it from the `sources`."""
        labelled = self.label(history)
        return self.suggestions(labelled, [self.plan(labelled, action)], n)[0]


def suggest(
    lm: LanguageModel,
    history: History,
    action: str | None = None,
    n: int = 3,
    *,
    labeller: Labeller | None = None,
    nba: NextActionModel | None = None,
    config: SuggestConfig | None = None,
) -> list[Suggestion]:
    """`n` suggestions for the agent message after `history` (see `Suggester`)."""
    return Suggester(lm, labeller, nba, config).suggest(history, action, n)

"""The action-directed LM as a content provider: the join of the two systems (README.md, docs/lm.md).

In the composition loop every provider proposes candidates and a dialogue manager picks one at a time. `LMProvider`
proposes one free-text candidate per action: the LM writes the next agent message after the conversation so far
with that action's tag, so the DM chooses among *actions* that the LM realises in words, instead of among texts
that templates and knowledge bases happen to offer. Its actions default to every action the LM has a tag for
(the dialogue acts of its training logs) but `stop`, which is the loop's own.

The LM reads the conversation as it was trained on it (`lm_turns`): user messages and the agent's step messages
(one per chosen utterance, with its dialogue act), without the loop's closing `stop` messages, which repeat the
fused response the user saw. All prompts of a step share that history and differ only in the one action token, so
they go through one `generate` call that reads the history once; the provider's `PrefixCache` keeps what it read,
so the next step of the turn (the history grown by the chosen message) reads only that message.

What the loop needs besides text comes from the text and the state: the focus is the first entity the text names
(read by the NLU's lexicon, when one is given) or else the current focus; question actions carry their question
kind (`quiz`, `yes_no`, `open`) in `meta`, and a quiz its options (the entities it names) and answer (the focus).
Decoding is greedy by default, so a simulation stays reproducible from its seed. A grounded LM
(`convoplan.lm.grounding`) reads the prompts it was trained on: give it the knowledge index and exemplar index its
folder says it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from annotated_types import Interval
from pydantic import JsonValue

from convoplan.compose.loop import STOP, DialogueState
from convoplan.compose.nlu import Lexicon, interpret
from convoplan.configs import Config
from convoplan.lm.generate import Generated, PrefixCache, SamplingConfig, generate_messages, prompt_budget
from convoplan.lm.grounding import Grounder, grounding_config
from convoplan.lm.model import LanguageModel
from convoplan.retrieval.support import check_support
from convoplan.schema import Candidate, Conversation, Turn

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder
    from convoplan.retrieval.exemplars import ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["LMProvider", "LMProviderConfig", "lm_conversations", "lm_turns"]

QUESTION_KINDS = {"quiz": "quiz", "yes_no_question": "yes_no", "open_question": "open"}
"""Question actions of the loop (`QUESTION_ACTIONS`) and the question kind the NLU and users read from `meta`."""


def lm_turns(turns: Sequence[Turn]) -> list[Turn]:
    """The messages the LM reads and writes: user messages and agent step messages, not the closing `stop`
    messages (the fused response, or the bot's goodbye). Only speaker, text and action are kept."""
    return [Turn(speaker=t.speaker, text=t.text, action=t.action) for t in turns if t.action != STOP]


def lm_conversations(conversations: Sequence[Conversation]) -> list[Conversation]:
    """Composition-loop logs as LM training data (`lm_turns` of each; id, domain, outcome and meta kept)."""
    return [
        Conversation(id=c.id, domain=c.domain, turns=lm_turns(c.turns), outcome=c.outcome, meta=c.meta)
        for c in conversations
    ]


@dataclass
class LMProviderConfig(Config):
    """The LM content provider."""

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(do_sample=False))
    """Decoding of the candidates (default greedy: deterministic, so simulations stay reproducible)."""
    actions: tuple[str, ...] = ()
    """Actions to offer a candidate for; empty = every action the LM has a tag for, except stop."""
    name: str = "lm"
    """The `provider` of its candidates."""
    keep_unfinished: bool = False
    """Offer messages cut at max_new_tokens (they end mid-sentence)."""
    check: bool = True
    """With a knowledge file, offer only candidates whose every claim a passage about their entity supports (the
    grounding check, `convoplan.retrieval.support`): the bot never says what no source says."""
    cached_histories: Annotated[int, Interval(ge=1, le=256)] = 16
    """Histories whose KV cache is kept, one per conversation served side by side, so that the next composition step or
    bot turn reads only its new turns (PyTorch; least recently used out first). Each costs about 46 KB a token with
    SmolLM2-135M (14 MB for 300)."""


class LMProvider:
    """A `Provider`: one candidate per action, written by an action-directed LM from the conversation so far."""

    def __init__(
        self,
        lm: LanguageModel,
        lexicon: Lexicon | None = None,
        config: LMProviderConfig | None = None,
        *,
        knowledge: KnowledgeIndex | None = None,
        exemplars: ExemplarIndex | None = None,
        embedder: SentenceEmbedder | None = None,
    ):
        self.lm = lm
        self.knowledge = knowledge
        """What candidates' claims are checked against (`LMProviderConfig.check`); None: unchecked."""
        self.grounder = Grounder(
            lm.codec, grounding_config(lm.info), knowledge=knowledge, exemplars=exemplars, embedder=embedder
        )
        """The prompts as the LM was trained on them (ValueError when it needs an index not given)."""
        self.lexicon = lexicon
        """Reads which entities a candidate names (its focus); without it candidates keep the current focus."""
        self.config = config or LMProviderConfig()
        known = lm.codec.actions
        wanted = self.config.actions or tuple(a for a in known if a != STOP)
        missing = [a for a in wanted if a not in known]
        if missing:
            raise ValueError(f"the LM has no tag for the action(s) {', '.join(map(repr, missing))}")
        self.actions: tuple[str, ...] = tuple(sorted(wanted))
        self.prefix = PrefixCache(self.config.cached_histories)
        """The histories read at the last steps (shared by every session this provider serves)."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        if not self.actions:
            return []
        history = lm_turns(state.turns)
        budget = prompt_budget(self.lm, self.config.sampling)
        built = self.grounder.prompts([history] * len(self.actions), self.actions, budget)
        prompts = [prompt.ids for prompt in built]
        written = generate_messages(self.lm, prompts, self.config.sampling, prefix=self.prefix)  # [actions][1]
        taken = state.said | {c.text for c in state.chosen}
        candidates = []
        for action, (message,) in zip(self.actions, written, strict=True):
            fresh = message.text.strip() and message.text not in taken
            if fresh and (message.finished or self.config.keep_unfinished):
                candidate = self._candidate(action, message, state)
                if candidate is not None and self._supported(candidate):
                    candidates.append(candidate)
        return candidates

    def _supported(self, candidate: Candidate) -> bool:
        """Whether the knowledge supports every claim of the candidate: against the passages of the entity it is
        about (all of them where it is about none the knowledge knows). True when nothing is checked."""
        if self.knowledge is None or not self.config.check:
            return True
        passages = self.knowledge.of(candidate.focus) if candidate.focus is not None else []
        return check_support(candidate.text, passages or self.knowledge.passages).supported

    def _candidate(self, action: str, message: Generated, state: DialogueState) -> Candidate | None:
        """The message as a candidate of `action`, or None for a quiz with no subject (no focus, names nothing)."""
        named = list(interpret(message.text, self.lexicon, state.focus, None).mentions) if self.lexicon else []
        meta: dict[str, JsonValue] = {"lm_score": round(message.score, 4)}
        kind = QUESTION_KINDS.get(action)
        if kind is None:  # content or acknowledgement: about what it names, or the current focus
            focus = named[0] if named else state.focus
        elif kind == "yes_no":  # offers another entity
            focus = next((n for n in named if n != state.focus), None)
        elif kind == "quiz":  # about the focus (or the first entity it names), among the entities it names
            focus = state.focus or (named[0] if named else None)
            if focus is None:
                return None
            options: list[JsonValue] = [*(named or [focus])]
            meta |= {"options": options, "answer": focus}
        else:  # open question: the user picks
            focus = None
        if kind is not None:
            meta["question"] = kind
        return Candidate(
            text=message.text,
            action=action,
            provider=self.config.name,
            focus=focus,
            changes_focus=kind in ("yes_no", "open") or (focus is not None and focus != state.focus),
            meta=meta,
        )

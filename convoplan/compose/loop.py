"""Dynamic composition: a bot response built one utterance at a time (Szpektor et al. 2020; the RL paper, sec. 3).

At each step every content provider proposes candidates given the conversation and the utterances already chosen
this turn; a dialogue manager (DM) scores them together with a *stop* option; the best one is appended, until stop
wins, a question has been asked, or the response reaches its bound. The chosen utterances are then fused into one
response. The bot ends the conversation when the DM's best score at the first step falls below a threshold.

Logged as canonical turns: one agent message per step (its candidates, ratings, the DM's scores and propensities),
and a closing message with action "stop" whose text is the fused response the user saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Protocol, cast, get_args

from annotated_types import Ge, Interval

from convoplan.compose.fusion import Entity, Fuser
from convoplan.compose.nlu import Interpretation, Lexicon, Question, QuestionKind, interpret
from convoplan.configs import UNBOUNDED, Config
from convoplan.schema import Candidate, Turn

__all__ = [
    "QUESTION_ACTIONS",
    "STOP",
    "Bot",
    "ComposerConfig",
    "DialogueManager",
    "DialogueState",
    "Provider",
    "Response",
]

STOP = "stop"
QUESTION_ACTIONS = frozenset({"quiz", "yes_no_question", "open_question"})
STOP_TEXT = "<stop>"


@dataclass
class DialogueState:
    """What the bot knows when it picks the next utterance."""

    turns: list[Turn] = field(default_factory=list)
    """The conversation so far, as logged (user turns and agent step messages)."""
    focus: str | None = None
    question: Question | None = None
    """The bot's last question, which the latest user message answered (or not)."""
    heard: Interpretation | None = None
    """The NLU's reading of the latest user message."""
    chosen: list[Candidate] = field(default_factory=list)
    """Utterances chosen so far in the response being composed."""
    responses: list[list[Candidate]] = field(default_factory=list)
    """The utterances of every earlier response, oldest first."""
    mentioned: list[str] = field(default_factory=list)
    """Entities the user named, in order (elicited preferences)."""
    said: set[str] = field(default_factory=set)
    """Texts already said, to avoid repeating content."""

    @property
    def turn_index(self) -> int:
        return len(self.responses)


class Provider(Protocol):
    """Proposes candidate utterances for the next step of the response."""

    def propose(self, state: DialogueState) -> list[Candidate]: ...


class DialogueManager(Protocol):
    """Scores the candidates of one composition step; the highest score is chosen."""

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> Sequence[float]: ...


@dataclass
class ComposerConfig(Config):
    max_utterances: Annotated[int, Ge(1)] = 4
    """Bound on the utterances of one response (the paper's responses hold a few)."""
    end_threshold: Annotated[float, UNBOUNDED] = 0.0
    """The bot ends the conversation when its best first-step score is below this."""
    epsilon: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """Exploration when logging data: with this probability a step picks uniformly at random."""


@dataclass
class Response:
    steps: list[Turn]
    """One agent message per composition step, the closing "stop" message last."""
    text: str
    """The fused response."""
    chosen: list[Candidate]
    ends_conversation: bool = False


def step_features(state: DialogueState, candidate: Candidate) -> dict[str, float]:
    """Metadata features of a candidate at a step (the DMs' "action" side besides its sentence embedding)."""
    recent = [c for response in state.responses[-3:] for c in response]
    depth = sum(c.focus == candidate.focus and c.action not in QUESTION_ACTIONS for r in state.responses for c in r)
    request = state.heard.request if state.heard is not None else None
    return {
        "step": float(len(state.chosen)),
        "response_length": float(sum(len(c.text.split()) for c in state.chosen)),
        "turn_index": float(state.turn_index),
        "changes_focus": float(candidate.changes_focus),
        "is_question": float(candidate.action in QUESTION_ACTIONS),
        "provider_recent": float(sum(c.provider == candidate.provider for c in recent)),
        "focus_depth": float(depth),
        "about_mentioned": float(candidate.focus is not None and candidate.focus in state.mentioned),
        "request_match": float(request is not None and candidate.action == request),
        "repeated": float(candidate.text in state.said),
    }


def stop_candidate() -> Candidate:
    return Candidate(text=STOP_TEXT, action=STOP, provider=STOP)


StepHook = Callable[[DialogueState, list[Candidate]], None]


class Bot:
    """NLU, providers, a DM and fusion: reads a user message, composes the response, keeps the state."""

    def __init__(
        self,
        providers: Sequence[Provider],
        dm: DialogueManager,
        fuser: Fuser,
        lexicon: Lexicon,
        entity: Callable[[str], Entity | None],
        config: ComposerConfig | None = None,
        rng: random.Random | None = None,
        on_step: StepHook | None = None,
    ) -> None:
        self.providers = providers
        self.dm = dm
        self.fuser = fuser
        self.lexicon = lexicon
        self.entity = entity
        self.config = config or ComposerConfig()
        self.rng = rng or random.Random(0)
        self.on_step = on_step
        self.state = DialogueState()

    def hear(self, text: str) -> Interpretation:
        """Record a user message and update the focus, the mentions and the open question."""
        state = self.state
        heard = interpret(text, self.lexicon, state.focus, state.question)
        read = {
            "focus": heard.focus,
            "answer": heard.answer,
            "feedback": heard.feedback,
            "request": heard.request,
            "attribute": heard.attribute,
            "stop": heard.wants_to_stop or None,  # kept only when true
        }
        state.turns.append(Turn(speaker="user", text=text, meta={k: v for k, v in read.items() if v is not None}))
        state.heard = heard
        state.focus = heard.focus
        state.mentioned.extend(m for m in heard.mentions if m not in state.mentioned)
        return heard

    def replay(self, turns: Sequence[Turn]) -> None:
        """Rebuild the state from this bot's logged turns (a stored session after a server restart): each user
        message is heard again (the NLU is deterministic) and each response's chosen utterances applied again, so
        the focus, the open question and what was said are as they were. The logged turns themselves are kept."""
        for _ in self.replay_steps(turns):
            pass

    def replay_steps(self, turns: Sequence[Turn]) -> Iterator[tuple[DialogueState, list[Candidate]]]:
        """`replay`, pausing at every logged composition step (an agent turn with candidates, one selected) to
        yield the state as the DM saw it (the response's earlier picks in `state.chosen`) and the candidates it was
        offered: what another DM would have scored there (off-policy evaluation of any DM)."""
        chosen: list[Candidate] = []
        for turn in turns:
            if turn.speaker == "user":
                self.hear(turn.text)
                self.state.turns[-1] = turn
                continue
            if turn.candidates and sum(c.selected for c in turn.candidates) == 1:
                self.state.chosen = list(chosen)
                yield self.state, turn.candidates
            self.state.turns.append(turn)
            if turn.action != STOP:
                chosen.extend(c for c in turn.candidates if c.selected)
            elif chosen:  # a response's closing message; a goodbye has no utterances
                self.state.chosen = chosen
                self._after_response(chosen)
                chosen = []

    def _choose(self, scores: Sequence[float]) -> tuple[int, list[float]]:
        """Index of the chosen candidate and every candidate's probability of being chosen (epsilon-greedy)."""
        best = max(range(len(scores)), key=scores.__getitem__)
        n, epsilon = len(scores), self.config.epsilon
        chosen = self.rng.randrange(n) if epsilon > 0 and self.rng.random() < epsilon else best
        return chosen, [epsilon / n + (1 - epsilon) * (i == best) for i in range(n)]

    def respond(self) -> Response:
        """Compose the next response from the current state."""
        state, config = self.state, self.config
        state.chosen = []
        steps: list[Turn] = []
        while True:
            closing = state.chosen and (
                len(state.chosen) >= config.max_utterances or state.chosen[-1].action in QUESTION_ACTIONS
            )
            candidates = [] if closing else [c for p in self.providers for c in p.propose(state)]
            if state.chosen:
                candidates.append(stop_candidate())
            for candidate in candidates:
                candidate.features.update(step_features(state, candidate))
            scores = list(self.dm.score(state, candidates))
            if not state.chosen and (not candidates or max(scores) < config.end_threshold):
                return self._goodbye(steps)
            index, propensities = self._choose(scores)
            for candidate, score, propensity in zip(candidates, scores, propensities, strict=True):
                candidate.score, candidate.propensity = float(score), propensity
            if self.on_step is not None:
                self.on_step(state, candidates)
            pick = candidates[index]
            pick.selected = True
            if pick.action == STOP:
                break
            steps.append(Turn(speaker="agent", text=pick.text, action=pick.action, candidates=candidates))
            state.turns.append(steps[-1])
            state.chosen.append(pick)

        chosen = state.chosen
        text = self.fuser.fuse([c.text for c in chosen], self._focus_entity(chosen), self._last_user_text())
        steps.append(Turn(speaker="agent", text=text, action=STOP, candidates=candidates))
        state.turns.append(steps[-1])
        self._after_response(chosen)
        return Response(steps=steps, text=text, chosen=chosen)

    def _focus_entity(self, chosen: list[Candidate]) -> Entity | None:
        focus = next((c.focus for c in reversed(chosen) if c.focus and not c.changes_focus), self.state.focus)
        return self.entity(focus) if focus is not None else None

    def _last_user_text(self) -> str:
        return next((t.text for t in reversed(self.state.turns) if t.speaker == "user"), "")

    def _after_response(self, chosen: list[Candidate]) -> None:
        state = self.state
        state.responses.append(list(chosen))
        state.said.update(c.text for c in chosen)
        state.question = None
        for candidate in chosen:
            if candidate.action in QUESTION_ACTIONS:
                options = candidate.meta.get("options", [])
                answer = candidate.meta.get("answer")
                kind = candidate.meta["question"]
                if kind not in get_args(QuestionKind):
                    raise ValueError(f"{candidate.provider}: unknown question kind {kind!r} in candidate meta")
                state.question = Question(
                    kind=cast(QuestionKind, kind),
                    about=candidate.focus,
                    options=tuple(str(o) for o in options) if isinstance(options, list) else (),
                    answer=str(answer) if answer is not None else None,
                )
            elif candidate.focus is not None:
                state.focus = candidate.focus  # content moves the focus to its entity

    def _goodbye(self, steps: list[Turn]) -> Response:
        text = "Thanks for chatting with me. Goodbye!"
        steps.append(Turn(speaker="agent", text=text, action=STOP))
        self.state.turns.append(steps[-1])
        return Response(steps=steps, text=text, chosen=[], ends_conversation=True)

"""The animals world's content providers (the RL paper, Table 1): each proposes candidates for the next step.

Structured content is rendered from templates; unstructured content (facts) is quoted verbatim with its source.
A provider sees the state: the focus, the user's latest message as the NLU read it, the utterances already
chosen this turn, and everything said before (so that content is not repeated).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from convoplan.compose.loop import DialogueState, Provider
from convoplan.schema import Candidate
from convoplan.worlds.animals.knowledge import Animal, KnowledgeBase, attribute_sentences

__all__ = []


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _content(animal: Animal, state: DialogueState, action: str, text: str, **meta: str) -> Candidate | None:
    """A content candidate about `animal`, or None when it was already said."""
    if text in state.said or any(c.text == text for c in state.chosen):
        return None
    return Candidate(
        text=text,
        action=action,
        provider=action,
        focus=animal.name,
        changes_focus=animal.name != state.focus,
        meta=dict(meta),
    )


class _KnowledgeProvider:
    def __init__(self, kb: KnowledgeBase, rng: random.Random | None = None) -> None:
        self.kb = kb
        self.rng = rng or random.Random(0)

    def focus_animal(self, state: DialogueState) -> Animal | None:
        return self.kb.by_name.get(state.focus) if state.focus is not None else None


class AcknowledgementProvider(_KnowledgeProvider):
    """A short reaction to the user's answer, offered only as the first utterance of a response."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        if state.chosen:
            return []
        answer = state.heard.answer if state.heard is not None else None
        question = state.question
        if question is not None and question.kind == "quiz" and answer in ("right", "wrong"):
            text = "That's right!" if answer == "right" else f"Not quite, it was the {question.answer}."
        elif answer in (None, "ignored", "none"):
            text = "Okay."
        elif answer == "no":
            text = "Sure."
        else:
            text = self.rng.choice(("Cool.", "Great.", "Nice.", "Awesome."))
        return [Candidate(text=text, action="ack", provider="acknowledgement", focus=state.focus)]


class SoundProvider(_KnowledgeProvider):
    """The sound of the focus animal (described in words; a real bot would play the recording)."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        animal = self.focus_animal(state)
        if animal is None:
            return []
        text = f"Here's what {animal.with_article} sounds like: {animal.sound.description}."
        candidate = _content(animal, state, "sound", text)
        return [candidate] if candidate is not None else []


class _StatementProvider(_KnowledgeProvider):
    """Up to `per_step` statements about the focus animal that have not been said yet, in a fixed order."""

    action = ""

    def __init__(self, kb: KnowledgeBase, rng: random.Random | None = None, per_step: int = 2) -> None:
        super().__init__(kb, rng)
        self.per_step = per_step

    def statements(self, animal: Animal) -> list[tuple[str, dict[str, str]]]:
        """(text, meta) of every statement the provider knows about `animal`."""
        raise NotImplementedError

    def propose(self, state: DialogueState) -> list[Candidate]:
        animal = self.focus_animal(state)
        if animal is None:
            return []
        fresh = [
            c for text, meta in self.statements(animal) if (c := _content(animal, state, self.action, text, **meta))
        ]
        return self.ranked(state, fresh)[: self.per_step]

    def ranked(self, state: DialogueState, fresh: list[Candidate]) -> list[Candidate]:
        """The fresh statements in the order they are offered (default: the fixed order of `statements`)."""
        return fresh


class FactProvider(_StatementProvider):
    """Facts about the focus animal, quoted verbatim with their source."""

    action = "fact"

    def statements(self, animal: Animal) -> list[tuple[str, dict[str, str]]]:
        return [(f'{_capital(fact.source)} says: "{fact.text}"', {"topic": fact.topic}) for fact in animal.facts]


def attribute_statements(animal: Animal) -> list[str]:
    """Template sentences for the structured attributes, in a fixed order (`attribute_sentences`)."""
    return list(attribute_sentences(animal).values())


class AttributeProvider(_StatementProvider):
    """Attribute statements from templates: weight, size, lifespan, diet, habitat, speed. Each candidate names its
    attribute in `meta["attribute"]`; when the user asked about one ("how heavy are they?"), its statement comes
    first (unless it was said already), so that the answer to the question is among the two offered."""

    action = "attribute"

    def statements(self, animal: Animal) -> list[tuple[str, dict[str, str]]]:
        return [(text, {"attribute": name}) for name, text in attribute_sentences(animal).items()]

    def ranked(self, state: DialogueState, fresh: list[Candidate]) -> list[Candidate]:
        asked = state.heard.attribute if state.heard is not None else None
        return sorted(fresh, key=lambda c: c.meta.get("attribute") != asked) if asked else fresh


class QuizProvider(_KnowledgeProvider):
    """A sound quiz on the focus animal against two animals that sound alike; once per animal."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        animal = self.focus_animal(state)
        if animal is None or any(c.action == "quiz" and c.focus == animal.name for r in state.responses for c in r):
            return []
        decoys = list(animal.sounds_like[:2])
        for other in (*animal.looks_like, *self.kb.by_name):
            if len(decoys) == 2:
                break
            if other != animal.name and other not in decoys:
                decoys.append(other)
        options = [animal.name, *decoys]
        self.rng.shuffle(options)
        text = (
            f"Quiz time! Which of these makes {animal.sound.description}: "
            f"the {options[0]}, the {options[1]} or the {options[2]}?"
        )
        return [
            Candidate(
                text=text,
                action="quiz",
                provider="quiz",
                focus=animal.name,
                meta={"question": "quiz", "options": list(options), "answer": animal.name},
            )
        ]


class FocusChangeProvider(_KnowledgeProvider):
    """Yes/no questions that offer another animal: one related to the focus, one the user named, one at random."""

    TEMPLATES = (
        "Do you want to hear about {plural}?",
        "Hey, do you want to hear the sound of {with_article}?",
        "Shall we talk about {plural} next?",
    )

    def propose(self, state: DialogueState) -> list[Candidate]:
        animal = self.focus_animal(state)
        offered = {c.focus for r in state.responses for c in r if c.action == "yes_no_question"}
        pool: list[str] = []
        if animal is not None:
            pool.extend(n for n in (*animal.looks_like, *animal.sounds_like) if n not in offered)
        pool.extend(n for n in state.mentioned if n != state.focus and n not in offered)
        picks = _distinct(self.rng, pool[:4], 1) + _distinct(self.rng, list(self.kb.by_name), 1, exclude=state.focus)
        return [
            Candidate(
                text=self.rng.choice(self.TEMPLATES).format(plural=other.plural, with_article=other.with_article),
                action="yes_no_question",
                provider="focus_change",
                focus=other.name,
                changes_focus=True,
                meta={"question": "yes_no"},
            )
            for other in (self.kb[name] for name in dict.fromkeys(picks) if name != state.focus)
        ]


def _distinct(rng: random.Random, pool: Sequence[str], k: int, exclude: str | None = None) -> list[str]:
    choices = [name for name in dict.fromkeys(pool) if name != exclude]
    return rng.sample(choices, min(k, len(choices)))


class OpenQuestionProvider(_KnowledgeProvider):
    """ "Which animal do you want to learn about next?": lets the user pick (and reveals what they like)."""

    def propose(self, state: DialogueState) -> list[Candidate]:
        return [
            Candidate(
                text="Which animal do you want to learn about next?",
                action="open_question",
                provider="open_question",
                changes_focus=True,
                meta={"question": "open"},
            )
        ]


def default_providers(kb: KnowledgeBase, rng: random.Random) -> list[Provider]:
    return [
        AcknowledgementProvider(kb, rng),
        SoundProvider(kb, rng),
        FactProvider(kb, rng),
        AttributeProvider(kb, rng),
        QuizProvider(kb, rng),
        FocusChangeProvider(kb, rng),
        OpenQuestionProvider(kb, rng),
    ]

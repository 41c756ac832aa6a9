"""Rule fusion, the default: (a) pronominalise the repeated focus, (b) drop repeated context mentions, (c) add a
discourse marker; no training, predictable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from convoplan.compose.fusion.text import (
    Entity,
    ReadUtterance,
    analyse,
    detokenize,
    tokenize,
)
from convoplan.configs import Config

# ---------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class RuleFusionConfig(Config):
    """The wording of the rules. The defaults are the most frequent choices of the train split's targets."""

    repeated_source: str = "It also"
    """Replaces the source of a quote that follows a quote: `The convoplan animal guide says:` -> `It also says:`."""
    join: str = ", and"
    """Joins a second statement about the focus to the first: `... kilograms, and they live ...`."""
    addition: str = "Plus,"
    """Opens a further statement about the focus: `Plus, they ...`."""
    elaboration: str = "In fact,"
    """Opens a size or weight statement after a quoted size superlative: `... the largest ...` `In fact, they ...`."""
    superlatives: tuple[str, ...] = ("largest", "tallest")
    """Words that make a quote a size superlative (those of the train split)."""
    size_verbs: tuple[str, ...] = ("weigh", "grow")
    """Words that make a statement one about size or weight."""
    offer: str = "Also,"
    """Replaces the `Hey,` of a yes/no question that follows content: `Also, do you want to hear ...`."""
    open_question: str = "And"
    """Opens an open question that follows content: `And which animal ...`."""


class RuleFusion:
    """Hand-written fusion rules, the default fuser.

    (a) A statement (or a quote's sentence) that opens with the subject of the utterance before it gets "they"
    ("it" for "A dolphin" after "it was the dolphin"); so does the first statement when the user asked about the
    focus ("how heavy are hippos?" -> "They weigh ..."); a sound names "it" once the focus has been named.
    (b) A quote after a quote says "It also says:"; its sentence is otherwise left as written.
    (c) A second statement about the focus is joined to the first (", and they"), a further one opens with
    "Plus," ("In fact," after a quoted size superlative); questions after content get "Also," / "And".
    A lone utterance is returned unchanged: there is nothing to fuse it with.
    """

    def __init__(self, config: RuleFusionConfig | None = None) -> None:
        self.config = config or RuleFusionConfig()

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        if len(utterances) == 1:
            return utterances[0]
        ctx, config = analyse(utterances, focus, user), self.config
        out: list[str] = []
        joined_last = False
        for i, utterance in enumerate(ctx.utterances):
            tokens = list(utterance.tokens)
            previous = ctx.utterances[i - 1] if i else None
            joined = False
            if utterance.kind == "quote":
                if previous is not None and previous.kind == "quote":  # the data's quotes change only here
                    if ctx.repeats[i] and not utterance.singular:
                        tokens[utterance.body : utterance.body + len(utterance.subject)] = ["They"]
                    tokens[: tokens.index("says")] = tokenize(config.repeated_source)
            elif utterance.kind == "sound" and ctx.named_before[i] and "sounds" in tokens:
                start, end = tokens.index("what") + 1, tokens.index("sounds")
                if end > start and tokens[end - 1].lower() in ctx.words:
                    tokens[start:end] = ["it"]
            elif utterance.kind == "statement" and utterance.subject:
                rest = tokens[len(utterance.subject) :]
                pronoun = "it" if utterance.singular else "they"
                if ctx.repeats[i] and previous is not None:
                    if previous.kind == "statement" and not joined_last and pronoun == "they":
                        if out and out[-1] == ".":
                            out.pop()
                        tokens, joined = [*tokenize(config.join), pronoun, *rest], True
                    elif previous.kind == "quote" and self._elaborates(previous, utterance):
                        tokens = [*tokenize(config.elaboration), pronoun, *rest]
                    elif previous.kind in ("statement", "quote"):
                        tokens = [*tokenize(config.addition), pronoun, *rest]
                    else:
                        tokens = [pronoun.capitalize(), *rest]
                elif ctx.user_asks and not ctx.content_before[i] and not utterance.singular:
                    tokens = ["They", *rest]
            elif utterance.kind == "yes_no" and ctx.content_before[i] and tokens[:2] == ["Hey", ","]:
                tokens = [*tokenize(config.offer), *tokens[2:]]
            elif utterance.kind == "open_question" and ctx.content_before[i]:
                tokens = [*tokenize(config.open_question), tokens[0].lower(), *tokens[1:]]
            out += tokens
            joined_last = joined
        return detokenize(out)

    def _elaborates(self, quote: ReadUtterance, statement: ReadUtterance) -> bool:
        """Whether the statement backs up the quote with a figure: a size superlative, then a weight or size."""
        quoted = {t.lower() for t in quote.tokens[quote.body : quote.quote_end]}
        return bool(quoted & set(self.config.superlatives)) and any(
            t in self.config.size_verbs for t in statement.tokens
        )

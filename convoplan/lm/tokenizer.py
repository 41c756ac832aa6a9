"""Tokenizers of the text format, and the format at the token level (`Codec`).

Two ways to get a tokenizer:
- from scratch: a byte-level BPE trained with the `tokenizers` library on the message texts of the training split
  (exactly what the model reads between the tags), with the format's tags as special tokens, wrapped as a
  transformers `PreTrainedTokenizerFast` (`save_pretrained` / `AutoTokenizer.from_pretrained`);
- from a base checkpoint (`gpt2`, a local folder): its own tokenizer, extended with the tags (`add_format_tokens`).

The BPE merges are learnt before the action tags are added, so the action-directed and vanilla tokenizers of the
same data share every merge and differ only by the action tags. `Codec` turns messages into token ids: tags become
their special-token ids and message text is tokenised with special-token matching off, so a message that happens to
contain `<|end|>` is read as text, never as a tag.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from convoplan.lm.text import (
    AGENT,
    END,
    EOS,
    FORMAT_TOKENS,
    NOTE_TAGS,
    USER,
    Block,
    Note,
    NoteKind,
    action_name,
    action_token,
    keep_recent,
)
from convoplan.schema import Conversation, Turn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Codec", "train_tokenizer"]

_REPLACE_FLAGS = ("replace_extra_special_tokens", "replace_additional_special_tokens")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, actions: Sequence[str] = (), *, notes: bool = False
) -> PreTrainedTokenizerBase:
    """A byte-level BPE of `vocab_size` entries (tags included) trained on `texts`, plus one tag per action (and the
    notes' tags with `notes`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(FORMAT_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: nothing is unknown
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return wrap_tokenizer(bpe.to_str(), actions, notes=notes)


def wrap_tokenizer(serialised: str, actions: Sequence[str] = (), *, notes: bool = False) -> PreTrainedTokenizerBase:
    """A transformers tokenizer around a `tokenizers` tokenizer given as its JSON (`Tokenizer.to_str()`), with the
    format's tags registered as special tokens (added when missing)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(serialised)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, eos_token=EOS, pad_token=EOS, clean_up_tokenization_spaces=False
    )
    add_format_tokens(tokenizer, actions, notes=notes)
    return tokenizer


def add_format_tokens(tokenizer: PreTrainedTokenizerBase, actions: Sequence[str] = (), *, notes: bool = False) -> int:
    """Add the tags (speakers, end of message, one per action, and with `notes` the tags of events, knowledge and
    exemplars) as special tokens, and an end-of-text token as EOS and padding where the tokenizer has none; return
    how many tokens were added (resize the model's embeddings to `len(tokenizer)` after)."""
    before = len(tokenizer)
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": EOS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    known = set(tokenizer.all_special_tokens)
    note_tags = list(NOTE_TAGS.values()) if notes else []
    tags = [tag for tag in [USER, AGENT, END, *note_tags, *map(action_token, actions)] if tag not in known]
    if tags:
        # As additional special tokens they are never split and `decode(skip_special_tokens=True)` drops them. Extend
        # the tokenizer's list rather than replace it (the keyword is spelt differently across transformers versions).
        parameters = inspect.signature(tokenizer.add_special_tokens).parameters
        extend = {name: False for name in _REPLACE_FLAGS if name in parameters}
        tokenizer.add_special_tokens({"additional_special_tokens": tags}, **extend)
    return len(tokenizer) - before


def format_actions(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The actions that have a tag in this tokenizer, sorted."""
    return sorted(name for token in tokenizer.all_special_tokens if (name := action_name(token)) is not None)


class Codec:
    """The text format at the token level for one tokenizer: messages -> ids, ids -> message text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, vanilla: bool = False) -> None:
        self.tokenizer = tokenizer
        self.vanilla = vanilla
        """Render no action tags (the vanilla LM)."""
        vocabulary = tokenizer.get_vocab()
        missing = [tag for tag in (USER, AGENT, END) if tag not in vocabulary]
        if missing or tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer lacks the format's tokens {missing or ['eos']}: see add_format_tokens")
        self.eos: int = tokenizer.eos_token_id
        self.end: int = vocabulary[END]
        self.actions: dict[str, int] = {name: vocabulary[action_token(name)] for name in format_actions(tokenizer)}
        """Action name -> its tag's token id (empty for a vanilla tokenizer)."""
        self.notes: dict[NoteKind, int] = {
            kind: vocabulary[tag] for kind, tag in NOTE_TAGS.items() if tag in vocabulary
        }
        """Note kind -> its tag's token id: a grounded model's tokenizer has all three, any other none."""
        self._tags = {USER: vocabulary[USER], AGENT: vocabulary[AGENT]}

    def tag_ids(self) -> list[int]:
        """The ids of every tag of the format: speakers, end of message, notes, actions (what a base model lacks)."""
        return [*self._tags.values(), self.end, *self.notes.values(), *self.actions.values()]

    def action_id(self, action: str) -> int:
        """The token id of an action's tag; ValueError when the tokenizer has none (e.g. an action never seen in
        training: generate without it)."""
        if action not in self.actions:
            raise ValueError(f"action {action!r} has no token in this tokenizer ({len(self.actions)} actions known)")
        return self.actions[action]

    def head(self, action: str | None) -> list[int]:
        """The ids that ask for an agent message: `<|agent|>` and the action's tag (none for a vanilla model or
        `action=None`; ValueError for an action without a tag)."""
        return self._tag_ids(Turn(speaker="agent", text="", action=action))

    def _tag_ids(self, turn: Turn) -> list[int]:
        ids = [self._tags[USER if turn.speaker == "user" else AGENT]]
        if turn.action is not None and not self.vanilla:
            ids.append(self.action_id(turn.action))
        return ids

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Message texts as token ids, each with its leading space, in one batched call; tags in them stay text."""
        if not texts:
            return []
        encoded = self.tokenizer([" " + text for text in texts], add_special_tokens=False, split_special_tokens=True)
        return list(encoded["input_ids"])

    def encode_turns(self, turns: Sequence[Turn]) -> list[list[int]]:
        """Each message's ids: its tags, its text, `<|end|>`. Concatenated they tokenise `render(turns)`."""
        texts = self.encode_texts([turn.text for turn in turns])
        return [[*self._tag_ids(turn), *text, self.end] for turn, text in zip(turns, texts, strict=True)]

    def note_id(self, kind: NoteKind) -> int:
        """The token id of a note's tag; ValueError when the tokenizer has none (a model trained without grounding)."""
        if kind not in self.notes:
            raise ValueError(f"this tokenizer has no {NOTE_TAGS[kind]} tag: the model was trained without grounding")
        return self.notes[kind]

    def encode_blocks(self, blocks: Sequence[Block]) -> list[list[int]]:
        """Each block's ids: a message as in `encode_turns`, a note as its tag, its text and `<|end|>`.
        Concatenated they tokenise `render(blocks)`; text is read with special tokens off, so a tag in it stays text."""
        texts = self.encode_texts([block.text for block in blocks])
        return [
            [*([self.note_id(block.kind)] if isinstance(block, Note) else self._tag_ids(block)), *text, self.end]
            for block, text in zip(blocks, texts, strict=True)
        ]

    def encode_conversations(self, conversations: Sequence[Conversation]) -> list[list[int]]:
        """Each conversation as one sequence: EOS (the separator from whatever came before), then its messages."""
        turns = [turn for conversation in conversations for turn in conversation.turns]
        messages = iter(self.encode_turns(turns))
        return [[self.eos, *(i for _ in conversation.turns for i in next(messages))] for conversation in conversations]

    def prompt(self, history: Sequence[Turn], action: str | None, budget: int) -> list[int]:
        """Ids that ask for the next agent message: the most recent whole messages that fit in `budget` tokens, then
        `<|agent|>` and the action's tag (none for a vanilla model or `action=None`; ValueError for an action
        without a tag). An EOS starts the prompt when the whole history fits, as it starts every conversation in
        training. History messages labelled with an action that has no tag are rendered as having none."""
        head = self._tag_ids(Turn(speaker="agent", text="", action=action))
        known = [t if t.action in self.actions else Turn(speaker=t.speaker, text=t.text) for t in history]
        messages = self.encode_turns(known)
        start = keep_recent([len(m) for m in messages], budget - len(head))
        kept = [i for message in messages[start:] for i in message]
        if start == 0 and len(kept) + len(head) < budget:
            kept.insert(0, self.eos)
        return [*kept, *head]

    def decode_text(self, ids: Sequence[int]) -> str:
        """The text of one message from its ids (tags and `<|end|>` dropped, the leading space removed)."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(text).removeprefix(" ")

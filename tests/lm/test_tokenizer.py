"""Tokenizers of the format: a byte-level BPE trained from scratch, a base checkpoint extended with the tags, and
the token-level codec (ids that spell the rendered text, truncated prompts, tags in text kept as text)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from convoplan.lm.model import load_base
from convoplan.lm.text import AGENT, END, EOS, USER, action_token, render
from convoplan.lm.tokenizer import Codec, format_actions, train_tokenizer
from convoplan.schema import Conversation, Turn

ACTIONS = ["ask for sale", "greeting", "thank"]


@pytest.fixture(scope="module")
def tokenizer(corpus: list[Conversation]) -> PreTrainedTokenizerBase:
    texts = [" " + turn.text for c in corpus if c.meta["split"] == "train" for turn in c.turns]
    return train_tokenizer(texts, 300, ACTIONS)


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def test_from_scratch_tokenizer_has_the_tags_as_single_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    assert len(tokenizer) == 300 + len(ACTIONS)
    assert format_actions(tokenizer) == ACTIONS
    for tag in (EOS, USER, AGENT, END, action_token("ask for sale")):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    assert tokenizer.eos_token == EOS


def test_ids_spell_the_rendered_text(tokenizer: PreTrainedTokenizerBase, corpus: list[Conversation]) -> None:
    codec = Codec(tokenizer)
    for conversation in corpus[:10]:
        ids = codec.encode_conversations([conversation])[0]
        assert ids[0] == codec.eos
        assert decode(tokenizer, ids[1:]) == render(conversation.turns)
        # tokenising the rendered string gives the same ids (tags are special tokens, text is byte-level BPE)
        assert tokenizer(render(conversation.turns), add_special_tokens=False)["input_ids"] == ids[1:]
    vanilla = Codec(tokenizer, vanilla=True).encode_conversations(corpus[:1])[0]
    assert decode(tokenizer, vanilla[1:]) == render(corpus[0].turns, actions=False)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1))
def test_any_message_text_survives_and_never_becomes_a_tag(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    codec = Codec(tokenizer)
    (ids,) = codec.encode_turns([Turn(speaker="user", text=text + " <|end|><|agent|>")])
    assert ids.count(codec.end) == 1 and ids[-1] == codec.end  # the tags inside the text stay plain text
    assert codec.decode_text(ids[1:-1]) == text + " <|end|><|agent|>"


def test_unknown_action_is_an_error_not_a_silent_drop(tokenizer: PreTrainedTokenizerBase) -> None:
    refund = [Turn(speaker="agent", text="ok", action="refund")]
    with pytest.raises(ValueError, match="'refund' has no token"):
        Codec(tokenizer).encode_turns(refund)
    with pytest.raises(ValueError, match="'refund' has no token"):
        Codec(tokenizer).prompt([], "refund", 100)
    # in a live history, a label the model never saw is read as no label
    unlabelled = Codec(tokenizer).prompt([Turn(speaker="agent", text="ok")], None, 100)
    assert Codec(tokenizer).prompt(refund, None, 100) == unlabelled
    assert Codec(tokenizer, vanilla=True).encode_turns(refund)  # the vanilla format has no action tags at all


def test_prompt_keeps_whole_recent_messages_within_the_budget(
    tokenizer: PreTrainedTokenizerBase, corpus: list[Conversation]
) -> None:
    codec = Codec(tokenizer)
    agent = tokenizer.convert_tokens_to_ids(AGENT)
    history = corpus[0].turns[:8]
    messages = codec.encode_turns(history)
    full = codec.prompt(history, "thank", budget=1000)
    assert full == [codec.eos, *(i for m in messages for i in m), agent, codec.actions["thank"]]
    budget = sum(len(m) for m in messages[-3:]) + 2
    cut = codec.prompt(history, "thank", budget)
    assert cut == [*(i for m in messages[-3:] for i in m), agent, codec.actions["thank"]]  # no EOS: cut
    assert decode(tokenizer, cut) == render(history[-3:]) + "<|agent|><|action:thank|>"
    assert codec.prompt(history, "thank", budget - 1)[: len(messages[-2])] == messages[-2]
    assert codec.prompt(history, None, 1000)[-1] == agent
    assert Codec(tokenizer, vanilla=True).prompt(history, "thank", 1000)[-1] == agent


def plain_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE that knows nothing of the format but an end-of-text token, as a base checkpoint's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=[EOS], initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator([" hello world", " how are you"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)


def test_base_checkpoint_is_extended_with_the_tags(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """The Hugging Face path: a saved GPT-2 and a tokenizer without the format's tokens load through load_base."""
    from transformers import GPT2Config, GPT2LMHeadModel

    base_tokenizer = plain_tokenizer()
    vocabulary = len(base_tokenizer)
    base_tokenizer.save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocabulary, n_layer=1, n_head=2, n_embd=16, n_positions=32)).save_pretrained(
        tmp_path
    )
    extended, model = load_base(str(tmp_path), ACTIONS)
    assert format_actions(extended) == ACTIONS
    assert model.get_input_embeddings().weight.shape[0] == len(extended)
    codec = Codec(extended)
    (ids,) = codec.encode_turns([Turn(speaker="agent", text="hello", action="greeting")])
    assert decode(extended, ids) == "<|agent|><|action:greeting|> hello<|end|>"
    with pytest.raises(ValueError, match="cannot load"):
        load_base(str(tmp_path / "missing"))

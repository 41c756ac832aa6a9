"""The inline-action text format: render and parse are inverses, action names map to tags and back, truncation
keeps whole recent messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convoplan.lm.text import TAG, action_name, action_token, keep_recent, parse, render
from convoplan.schema import Conversation, Turn

texts = st.text(min_size=1).filter(lambda text: TAG.search(text) is None)
actions = st.none() | st.text(max_size=30)
turns = st.builds(Turn, speaker=st.sampled_from(["agent", "user"]), text=texts, action=actions)


def essentials(turns: list[Turn]) -> list[tuple[str, str, str | None]]:
    return [(turn.speaker, turn.text, turn.action) for turn in turns]


def test_the_documented_example() -> None:
    conversation = [
        Turn(speaker="user", text="Hi, how are you?"),
        Turn(speaker="agent", text="Hello! Doing well.", action="greeting"),
        Turn(speaker="agent", text="Anyway."),
    ]
    expected = (
        "<|user|> Hi, how are you?<|end|><|agent|><|action:greeting|> Hello! Doing well.<|end|><|agent|> Anyway.<|end|>"
    )
    assert render(conversation) == expected
    assert render(conversation, actions=False) == expected.replace("<|action:greeting|>", "")
    assert essentials(parse(expected)) == essentials(conversation)


@given(st.lists(turns, max_size=8))
def test_parse_inverts_render(conversation: list[Turn]) -> None:
    assert essentials(parse(render(conversation))) == essentials(conversation)


@given(st.lists(turns, max_size=8))
def test_vanilla_is_the_same_conversation_without_actions(conversation: list[Turn]) -> None:
    vanilla = parse(render(conversation, actions=False))
    assert essentials(vanilla) == [(t.speaker, t.text, None) for t in conversation]
    assert "<|action:" not in render(conversation, actions=False)


@given(st.text())
def test_action_names_map_to_one_tag_and_back(name: str) -> None:
    token = action_token(name)
    assert action_name(token) == name
    assert TAG.fullmatch(token) and not any(c.isspace() for c in token)


def test_action_names_with_spaces_and_symbols() -> None:
    assert action_token("ask for sale") == "<|action:ask%20for%20sale|>"
    assert action_token("a|b>c") == "<|action:a%7Cb%3Ec|>"
    assert action_token("donation-information") == "<|action:donation-information|>"
    assert action_name("<|user|>") is None and action_name("plain") is None


def test_text_that_contains_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="contains the format tag"):
        render([Turn(speaker="user", text="type <|end|> to stop")])


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("hello", "character 0: expected <|user|> or <|agent|>"),
        ("<|agent|> hi", "character 9: message without <|end|>"),
        ("<|agent|>hi<|end|>", "character 9: expected a space"),
        ("<|user|> a<|end|><|end|>", "character 17: expected"),
    ],
)
def test_malformed_text_says_where(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=where.replace("|", r"\|")):
        parse(text)


@given(st.lists(st.integers(0, 20), max_size=12), st.integers(-1, 100))
def test_keep_recent_keeps_the_longest_suffix_of_whole_messages_that_fits(lengths: list[int], budget: int) -> None:
    start = keep_recent(lengths, budget)
    assert sum(lengths[start:]) <= budget or start == len(lengths)
    if start > 0:  # one more message from the left would not fit
        assert sum(lengths[start - 1 :]) > budget


def check_corpus(conversations: list[Conversation]) -> None:
    for conversation in conversations:
        text = render(conversation.turns)
        assert essentials(parse(text)) == essentials(conversation.turns), conversation.id
        assert text.count("<|end|>") == len(conversation.turns)


def test_real_persuasion_conversations_round_trip(persuasion: list[Conversation]) -> None:
    check_corpus(persuasion)


def test_real_star_conversations_round_trip(star: list[Conversation]) -> None:
    check_corpus(star)

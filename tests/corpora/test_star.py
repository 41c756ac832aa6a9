from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from convoplan.corpora import read_star, read_star_flows
from convoplan.corpora.star import read_star_dialogue
from convoplan.schema import Conversation, FormatError


def test_real_corpus_counts_match_source_md(star: list[Conversation]) -> None:
    assert len(star) == 6652
    agent = [t for c in star for t in c.agent_turns()]
    assert len(agent) == 53923
    assert sum(len(c.turns) for c in star) - len(agent) == 54214
    labels = Counter(t.action for t in agent if t.action is not None)
    assert sum(labels.values()) == 46640
    assert len(labels) == 163
    assert labels["anything_else"] == 3333 and labels["ask_name"] == 3027
    events = Counter(e.kind for c in star for e in c.events)
    assert events["query"] == events["return_item"] == 22169
    assert Counter(c.meta["completion_level"] for c in star)["Complete"] == 5820


def test_real_corpus_outcome_rule(star: list[Conversation]) -> None:
    sources = Counter(c.meta["outcome_source"] for c in star)
    assert sources["questionnaire"] == 2301  # dialogues where a task question was asked (SOURCE.md)
    by_questionnaire = [c for c in star if c.meta["outcome_source"] == "questionnaire"]
    assert sum(c.outcome is not None and c.outcome.converted for c in by_questionnaire) == 1668
    assert all(c.outcome is None for c in star if c.meta["outcome_source"] is None)


def test_real_flow_graphs(star_dir: Path) -> None:
    flows = read_star_flows(star_dir)
    assert len(flows) == 24
    hotel = flows["hotel_book"]
    assert hotel.start == "hello" and hotel.edges["hello"] == ["ask_name"]
    assert hotel.texts["ask_name"] == "May I have your name, please?"


def test_fixture_dialogue(tmp_path: Path) -> None:
    dialogue = {
        "DialogueID": 7,
        "CompletionLevel": "Complete",
        "Scenario": {
            "Domains": ["hotel"],
            "Happy": True,
            "MultiTask": False,
            "WizardCapabilities": [{"Task": "hotel_book"}],
        },
        "UserQuestionnaire": [{"Question": "Did the assistant stay calm and helpful?", "Answer": True}],
        "Events": [
            {"Agent": "UserGuide", "Action": "instruct", "Text": "Be nice."},
            {"Agent": "User", "Action": "utter", "Text": "Book me  a room."},
            {"Agent": "Wizard", "Action": "request_suggestions", "Text": "draft"},
            {"Agent": "Wizard", "Action": "query", "APIName": "hotel", "Constraints": [{"Name": '"Ritz"'}]},
            {"Agent": "KnowledgeBase", "Action": "return_item", "Item": {"Name": "Ritz"}, "TotalItems": 1},
            {
                "Agent": "Wizard",
                "Action": "pick_suggestion",
                "ActionLabel": "hotel_reservation_failed",
                "ActionLabelOptions": ["hotel_reservation_failed", "anything_else"],
                "Text": "Sorry, it failed.",
            },
            {"Agent": "Wizard", "Action": "utter", "Text": "Anything else?"},
        ],
    }
    path = tmp_path / "dialogues" / "7.json"
    path.parent.mkdir()
    path.write_text(json.dumps(dialogue))
    (conversation,) = read_star(tmp_path)
    assert conversation.id == "star-7"
    assert [(t.speaker, t.text, t.action) for t in conversation.turns] == [
        ("user", "Book me a room.", None),
        ("agent", "Sorry, it failed.", "hotel_reservation_failed"),
        ("agent", "Anything else?", None),
    ]
    assert [(e.kind, e.position) for e in conversation.events] == [("query", 1), ("return_item", 1)]
    assert conversation.events[1].data["Item"] == {"Name": "Ritz"}
    assert conversation.outcome is not None and conversation.outcome.converted is False  # transaction rule
    assert conversation.meta["outcome_source"] == "transaction" and conversation.meta["task"] == "hotel_book"


def test_broken_dialogue_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "3.json").write_text('{"DialogueID": 3')
    with pytest.raises(FormatError, match=r"3.json: not a STAR dialogue"):
        read_star_dialogue(tmp_path / "3.json")
    with pytest.raises(FormatError, match="no dialogue files"):
        read_star(tmp_path / "empty")

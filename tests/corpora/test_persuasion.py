from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import openpyxl
import pytest

from convoplan.corpora import read_persuasion
from convoplan.corpora.persuasion import STRATEGIES as persuasion_strategies
from convoplan.schema import Conversation, FormatError

STRATEGIES = set(persuasion_strategies)


def test_real_corpus_counts_match_source_md(persuasion: list[Conversation]) -> None:
    assert len(persuasion) == 1017
    assert sum(c.outcome is not None and c.outcome.converted for c in persuasion) == 545
    annotated = [c for c in persuasion if c.meta["annotated"]]
    assert len(annotated) == 300
    labelled = [t for c in persuasion for t in c.agent_turns() if t.action is not None]
    assert len(labelled) == 6017
    labels = Counter(t.action for t in labelled)
    assert len(labels) == 27
    assert set(labels) >= STRATEGIES
    assert labels["credibility-appeal"] == 1083
    assert all(t.action is None for c in persuasion if not c.meta["annotated"] for t in c.turns)


def test_real_corpus_outcomes_are_clipped_donations(persuasion: list[Conversation]) -> None:
    values = [c.outcome.value for c in persuasion if c.outcome is not None]
    assert len(values) == 1017 and all(v is not None and 0.0 <= v <= 2.0 for v in values)
    clipped = [c for c in persuasion if c.meta["donation_raw"] > 2]  # type: ignore[operator]
    assert clipped and all(c.outcome is not None and c.outcome.value == 2.0 for c in clipped)
    first = next(c for c in persuasion if c.id == "p4g-20180719-210146_172_live")
    assert [(t.speaker, t.text, t.action) for t in first.turns[:3]] == [
        ("agent", "Hello.", "greeting"),
        ("agent", "How are you?", "greeting"),
        ("user", "I'm good, how are you doing?", None),
    ]


def write_fixture(root: Path) -> Path:
    """A two-dialogue copy of the release layout: d1 annotated, d2 not."""
    (root / "FullData").mkdir(parents=True)
    (root / "AnnotatedData").mkdir()
    with open(root / "FullData/full_dialog.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["", "Unit", "Turn", "B4", "B2"])
        writer.writerows(
            [
                [0, "Hi there. Would you donate?", 0, 0, "d1"],
                [1, "Hello! Maybe.", 0, 1, "d1"],
                [2, "Hey.", 0, 0, "d2"],
                [3, "  ", 0, 1, "d2"],
                [4, "No thanks.", 1, 1, "d2"],
            ]
        )
    with open(root / "FullData/full_info.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["B2", "B3", "B4", "B6", "B7"])
        writer.writerows(
            [["d1", "u1", 0, 0, 2], ["d1", "u2", 1, 50.0, 2], ["d2", "u3", 0, 0, 2], ["d2", "u4", 1, 0, 2]]
        )
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([None, "B2", "B4", "Turn", "Unit", "er_label_1", "ee_label_1", "er_label_2", "ee_label_2"])
    sheet.append([0, "d1", 0, 0, "Hi there.", "greeting", None, None, None])
    sheet.append([1, "d1", 0, 0, "Would you donate?", "proposition-of-donation", None, "logical-appeal", None])
    sheet.append([2, "d1", 1, 0, "Hello!", None, "greeting", None, None])
    sheet.append([3, "d1", 1, 0, "Maybe.", None, "ask-donation-info", None, "greeting"])
    book.save(root / "AnnotatedData/300_dialog.xlsx")
    info = openpyxl.Workbook()
    sheet = info.active
    assert sheet is not None
    sheet.append(["B2", "B3", "B4", "B5", "B6", "B7"])
    sheet.append(["d1", "u2", 1, 0.5, 50.0, 2])
    info.save(root / "AnnotatedData/300_info.xlsx")
    return root


def test_fixture_sentences_become_messages_and_donations_are_clipped(tmp_path: Path) -> None:
    conversations = {c.id: c for c in read_persuasion(write_fixture(tmp_path / "p4g"))}
    d1, d2 = conversations["p4g-d1"], conversations["p4g-d2"]
    assert [(t.speaker, t.text, t.action) for t in d1.turns] == [
        ("agent", "Hi there.", "greeting"),
        ("agent", "Would you donate?", "proposition-of-donation"),
        ("user", "Hello! Maybe.", None),
    ]
    assert d1.turns[1].meta == {"second_action": "logical-appeal"}
    assert d1.turns[2].meta == {"acts": ["greeting", "ask-donation-info"]}
    assert d1.outcome is not None and d1.outcome.value == 2.0 and d1.outcome.converted
    assert d1.meta["intended_donation"] == 0.5 and d1.meta["donation_raw"] == 50.0
    assert [t.text for t in d2.turns] == ["Hey.", "No thanks."]  # the blank utterance is dropped
    assert d2.outcome is not None and d2.outcome.converted is False
    assert {c.meta["split"] for c in conversations.values()} <= {"train", "validation", "test"}


def test_fixture_bad_role_is_named_with_file_and_line(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "p4g")
    text = (root / "FullData/full_dialog.csv").read_text().replace("Hey.,0,0,d2", "Hey.,0,7,d2")
    (root / "FullData/full_dialog.csv").write_text(text)
    with pytest.raises(FormatError, match=r"full_dialog.csv:4: B4: expected role 0 \(persuader\) or 1"):
        read_persuasion(root)


def test_missing_release_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"full_info\.csv: missing"):
        read_persuasion(tmp_path)

"""PersuasionForGood (Wang et al., ACL 2019) -> canonical conversations.

The persuader is the agent, the persuadee the user. All 1,017 dialogues come from `FullData/full_dialog.csv`
(one row per utterance). For the 300 annotated dialogues the text comes instead from
`AnnotatedData/300_dialog.xlsx` (one row per sentence): every persuader sentence becomes one agent message carrying
its most salient strategy `er_label_1` as action (`er_label_2`, where present, goes to `meta["second_action"]`);
the persuadee sentences of one turn are joined into one user message, their acts kept in `meta["acts"]`.
Agent messages of the other 717 dialogues carry no action.

Outcome: the persuadee's actual donation `B6` from `FullData/full_info.csv`, clipped to [0, 2] dollars (a few
entries above the $2 task bonus are data-entry noise; the raw value stays in `meta["donation_raw"]`);
converted = donation > 0.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

from convoplan.corpora.splits import assign_splits
from convoplan.schema import Conversation, FormatError, Outcome, Turn

__all__ = ["STRATEGIES", "read_persuasion"]

DOMAIN = "persuasion"
PERSUADER, PERSUADEE = 0, 1
MAX_DONATION = 2.0
STRATEGIES = (
    "logical-appeal",
    "emotion-appeal",
    "credibility-appeal",
    "foot-in-the-door",
    "self-modeling",
    "personal-story",
    "donation-information",
    "source-related-inquiry",
    "task-related-inquiry",
    "personal-related-inquiry",
)
"""The 10 persuasion strategies of Wang et al. (2019); their published classifiers put every other persuader
label into one non-strategy class."""


def _path(src: Path, relative: str) -> Path:
    path = src / relative
    if not path.is_file():
        raise FormatError(f"{path}: missing; expected the PersuasionForGood release layout under {src}")
    return path


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as stream:
        yield from enumerate(csv.DictReader(stream), start=2)


def _xlsx_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import openpyxl  # imported here: only this reader needs it

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = [str(cell) if cell is not None else "" for cell in next(rows)]
        for line, values in enumerate(rows, start=2):
            yield line, dict(zip(header, values, strict=False))
    finally:
        workbook.close()


def _role(value: Any, where: str) -> int:
    try:
        role = int(float(value))
    except (TypeError, ValueError):
        role = -1
    if role not in (PERSUADER, PERSUADEE):
        raise FormatError(f"{where}: B4: expected role 0 (persuader) or 1 (persuadee), got {value!r}")
    return role


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _donations(src: Path) -> dict[str, float]:
    path = _path(src, "FullData/full_info.csv")
    donations = {}
    for line, row in _csv_rows(path):
        if _role(row["B4"], f"{path}:{line}") == PERSUADEE:
            try:
                donations[row["B2"]] = float(row["B6"])
            except ValueError:
                raise FormatError(f"{path}:{line}: B6: expected a donation amount, got {row['B6']!r}") from None
    return donations


def _full_dialogues(src: Path) -> dict[str, list[Turn]]:
    """Every dialogue from the CSV, one turn per utterance, in file order."""
    path = _path(src, "FullData/full_dialog.csv")
    dialogues: dict[str, list[Turn]] = defaultdict(list)
    for line, row in _csv_rows(path):
        text = _text(row["Unit"])
        if not text:
            continue
        persuader = _role(row["B4"], f"{path}:{line}") == PERSUADER
        dialogues[row["B2"]].append(Turn(speaker="agent" if persuader else "user", text=text))
    return dialogues


def _annotated_dialogues(src: Path) -> dict[str, list[Turn]]:
    """The 300 annotated dialogues: one agent message per labelled persuader sentence."""
    path = _path(src, "AnnotatedData/300_dialog.xlsx")
    rows: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for line, row in _xlsx_rows(path):
        if row["B2"] is not None and _text(row["Unit"]):
            rows[row["B2"]].append((_role(row["B4"], f"{path}:{line}"), row))

    dialogues = {}
    for dialogue, sentences in rows.items():
        turns: list[Turn] = []
        # Consecutive sentences of one speaker in one turn: persuader ones stay separate messages (each has its
        # own strategy), persuadee ones are joined into one user message.
        for (role, _), group in groupby(sentences, key=lambda item: (item[0], item[1]["Turn"])):
            units = [row for _, row in group]
            if role == PERSUADER:
                turns.extend(
                    Turn(
                        speaker="agent",
                        text=_text(row["Unit"]),
                        action=row["er_label_1"] or None,
                        meta={"second_action": row["er_label_2"]} if row["er_label_2"] else {},
                    )
                    for row in units
                )
            else:
                acts = [row[key] for row in units for key in ("ee_label_1", "ee_label_2") if row[key]]
                text = " ".join(_text(row["Unit"]) for row in units)
                turns.append(Turn(speaker="user", text=text, meta={"acts": list(dict.fromkeys(acts))}))
        dialogues[dialogue] = turns
    return dialogues


def _intended_donations(src: Path) -> dict[str, float]:
    path = _path(src, "AnnotatedData/300_info.xlsx")
    return {
        row["B2"]: float(row["B5"])
        for line, row in _xlsx_rows(path)
        if row["B2"] is not None and row["B5"] not in (None, "") and _role(row["B4"], f"{path}:{line}") == PERSUADEE
    }


def read_persuasion(src: str | Path, *, seed: int = 0) -> list[Conversation]:
    """Read the PersuasionForGood release folder (holding FullData/ and AnnotatedData/) into conversations."""
    src = Path(src)
    donations = _donations(src)
    dialogues = _full_dialogues(src)
    annotated = _annotated_dialogues(src)
    intended = _intended_donations(src)
    unknown = sorted(set(annotated) - set(dialogues))
    if unknown:
        raise FormatError(f"{src}: annotated dialogues missing from FullData/full_dialog.csv: {unknown[:3]}")

    conversations = []
    for dialogue_id, turns in dialogues.items():
        if dialogue_id not in donations:
            raise FormatError(f"{src}/FullData/full_info.csv: no persuadee row for dialogue {dialogue_id!r}")
        raw = donations[dialogue_id]
        donation = min(max(raw, 0.0), MAX_DONATION)
        meta: dict[str, Any] = {"annotated": dialogue_id in annotated, "donation_raw": raw}
        if dialogue_id in intended:
            meta["intended_donation"] = intended[dialogue_id]
        conversations.append(
            Conversation(
                id=f"p4g-{dialogue_id}",
                domain=DOMAIN,
                turns=annotated.get(dialogue_id, turns),
                outcome=Outcome(converted=donation > 0, value=donation),
                meta=meta,
            )
        )
    assign_splits(conversations, seed)
    return conversations

"""STAR (Mosig, Mehri and Kober, 2020) -> canonical conversations and call-flow graphs.

The wizard is the agent. Spoken turns are the user's `utter` events and the wizard's `pick_suggestion` (the action
is its `ActionLabel`; the other labels offered go to `meta["action_options"]`) and `utter` events (free text, no
action). Knowledge-base traffic and task switches are kept as structured events, not turns: `query`,
`return_item` and `select_task`, each with its original fields in `data`. The wizard's `request_suggestions`
drafts (which the user never saw), the user guide's instructions and `complete` markers are dropped.

Outcome (converted, value 1.0 or 0.0), first rule that applies:
1. `questionnaire`: the user answered task questions ("Did the assistant reserve your hotel?"; the "stay calm
   and helpful" and "Did you enjoy this task?" questions do not count): converted = every answer is yes.
2. `transaction`: the wizard picked a transaction result label (`*_successful`, `*_succeeded` or `*_failed`):
   converted = the last such label is a success.
3. otherwise no outcome (weather, trivia and unfinished dialogues mostly); `meta["completion_level"]` still says
   how the dialogue ended.
`meta["outcome_source"]` records which rule applied.

Flow graphs (`read_star_flows`): one per task. Some of their nodes are not wizard actions (`PSEUDO_NODES`) and
two are named otherwise in the wizards' label set (`NODE_ALIASES`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convoplan.corpora.splits import assign_splits
from convoplan.progress import Progress, Update
from convoplan.schema import CallFlow, Conversation, Event, FormatError, Outcome, Turn

__all__ = ["read_star", "read_star_flows"]

DOMAIN = "task"
EVENT_KINDS = ("query", "return_item", "select_task")
_NOT_TASK_QUESTIONS = ("stay calm", "enjoy this task")
_SUCCESS_SUFFIXES = ("_successful", "_succeeded")


def _outcome(questionnaire: list[dict[str, Any]], turns: list[Turn]) -> tuple[Outcome | None, str | None]:
    answers = [
        bool(item["Answer"])
        for item in questionnaire
        if not any(phrase in item["Question"].lower() for phrase in _NOT_TASK_QUESTIONS)
    ]
    if answers:
        converted = all(answers)
        return Outcome(converted=converted, value=float(converted)), "questionnaire"
    results = [
        turn.action.endswith(_SUCCESS_SUFFIXES)
        for turn in turns
        if turn.action and turn.action.endswith((*_SUCCESS_SUFFIXES, "_failed"))
    ]
    if results:
        return Outcome(converted=results[-1], value=float(results[-1])), "transaction"
    return None, None


def read_star_dialogue(path: str | Path) -> Conversation:
    """One `dialogues/<id>.json` file as a conversation (no split assigned)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
        events, scenario = data["Events"], data["Scenario"]
        dialogue_id = data["DialogueID"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise FormatError(f"{path}: not a STAR dialogue ({type(error).__name__}: {error})") from None

    turns: list[Turn] = []
    structured: list[Event] = []
    for number, event in enumerate(events):
        agent, action = event.get("Agent"), event.get("Action")
        text = " ".join(str(event.get("Text") or "").split())
        if (agent, action) in (("User", "utter"), ("Wizard", "utter"), ("Wizard", "pick_suggestion")):
            if not text:
                raise FormatError(f"{path}: Events[{number}].Text: expected non-empty text for {agent} {action}")
            if action == "pick_suggestion":
                options = event.get("ActionLabelOptions", [])
                turns.append(
                    Turn(
                        speaker="agent",
                        text=text,
                        action=event["ActionLabel"],
                        meta={"action_options": options},
                    )
                )
            else:
                turns.append(Turn(speaker="user" if agent == "User" else "agent", text=text))
        elif action in EVENT_KINDS:
            data_fields = {key: value for key, value in event.items() if key not in ("Agent", "Action")}
            structured.append(Event(kind=action, position=len(turns), data=data_fields))

    outcome, source = _outcome(data.get("UserQuestionnaire", []), turns)
    tasks = [capability["Task"] for capability in scenario.get("WizardCapabilities", [])]
    meta: dict[str, Any] = {
        "task": tasks[0] if tasks else None,
        "tasks": tasks,
        "domains": scenario.get("Domains", []),
        "happy": scenario.get("Happy"),
        "multitask": scenario.get("MultiTask"),
        "completion_level": data.get("CompletionLevel"),
        "outcome_source": source,
    }
    return Conversation(
        id=f"star-{dialogue_id}", domain=DOMAIN, turns=turns, outcome=outcome, events=structured, meta=meta
    )


def _dialogue_files(src: Path) -> list[Path]:
    folder = src / "dialogues"
    files = sorted(folder.glob("*.json"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise FormatError(f"{folder}: no dialogue files; expected the STAR release layout under {src}")
    return files


def read_star(
    src: str | Path,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Conversation]:
    """Read every dialogue under `src/dialogues`; `progress` is told after each file."""
    files = _dialogue_files(Path(src))
    conversations = []
    for done, path in enumerate(files, start=1):
        conversations.append(read_star_dialogue(path))
        if progress is not None:
            progress(Update("reading STAR", done, len(files), "files"))
    assign_splits(conversations, seed)
    return conversations


PSEUDO_NODES = frozenset(
    {
        # knowledge-base calls (the converted data holds them as `query` events, not agent messages)
        "query",
        "query_check",
        "query_book",
        # their results
        "query_success",
        "query_failure",
        "available",
        "unavailable",
        "info_missing",
        "info_missing2",
        # the user's answers to the wizard's last question
        "yes",
        "no",
        "done",
        "correct",
        "incorrect",
        "noanswer",
    }
)
"""Flow nodes that are branch conditions, not wizard actions: no wizard message carries these labels."""

NODE_ALIASES: Mapping[str, str] = {
    "plane_ask_departure_city": "ask_departure_location",
    "trip_ask_departure_location": "ask_departure_location",
}
"""Flow nodes whose action the wizards' label set names otherwise (both graphs ask for the departure place; the
wizards picked the shared `ask_departure_location`, and never a label of the graph's name)."""


def read_star_flows(src: str | Path) -> dict[str, CallFlow]:
    """The ideal flow graph of each task (`tasks/<task>/<task>.json`), keyed by the task's folder name.

    Edges are kept exactly as the corpus gives them (one successor per node); branch points such as
    `query_check -> available | unavailable` appear there as separate chains that start at the branch outcome.
    """
    flows = {}
    for folder in sorted(path for path in (Path(src) / "tasks").iterdir() if path.is_dir()):
        path = folder / f"{folder.name}.json"
        try:
            spec = json.loads(path.read_bytes())
            graph: dict[str, str] = spec["graph"]
            replies: dict[str, str] = spec.get("replies", {})
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise FormatError(f"{path}: not a STAR task flow ({type(error).__name__}: {error})") from None
        start = "hello" if "hello" in graph else next(iter(graph))
        flows[folder.name] = CallFlow(
            name=folder.name, start=start, edges={node: [nxt] for node, nxt in graph.items()}, texts=replies
        )
    if not flows:
        raise FormatError(f"{src}/tasks: no task flows found")
    return flows

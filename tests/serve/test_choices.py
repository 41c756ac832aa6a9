"""What agents do with suggestions through the API (`choice`; the outcome itself: tests/lm/test_choices.py): every
suggest answer is kept
under a request id with its suggestions numbered; an agent message names the request and the suggestion it started
from; the stored turn carries what was shown as candidates and the outcome (taken, edited, own) with its edit
distance; a request nothing answered is exported as an event; a choice that does not fit is a 4xx that stores
nothing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.preferences import build_pairs
from convoplan.schema import Candidate, Turn
from convoplan.serve.app import ServeConfig, create_app
from convoplan.serve.artifacts import Artifacts, read_manifest, write_manifest
from convoplan.serve.store import Store, StoreError

runner = CliRunner()
SHOWN = [Candidate("Lions live in prides.", "fact", "lm"), Candidate("Lions roar.", "sound", "exemplar")]


def _suggest(client: TestClient, session: str) -> dict[str, Any]:
    answer = client.post("/v1/suggest", json={"session_id": session, "actions": 2, "n": 2})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _send(client: TestClient, session: str, text: str, choice: dict[str, Any] | None) -> Any:
    body = {"speaker": "agent", "text": text} | ({} if choice is None else {"choice": choice})
    return client.post(f"/v1/sessions/{session}/messages", json=body)


def test_an_agent_takes_edits_or_writes_and_the_store_keeps_what_was_shown(client: TestClient, store: Store) -> None:
    session = client.post("/v1/sessions", json={"mode": "assist"}).json()["id"]
    client.post(f"/v1/sessions/{session}/messages", json={"speaker": "user", "text": "tell me about lions"})
    first = _suggest(client, session)
    shown = [(g["action"], s) for g in first["actions"] for s in g["suggestions"]]
    assert first["request_id"] and [s["number"] for _, s in shown] == list(range(len(shown)))
    action, taken = shown[-1]
    sent = _send(client, session, taken["text"], {"request_id": first["request_id"], "suggestion": taken["number"]})
    assert sent.status_code == 200, sent.text
    again = _send(client, session, "twice", {"request_id": first["request_id"], "suggestion": 0})
    assert again.status_code == 409 and "answered by turn 1" in again.json()["detail"]

    client.post(f"/v1/sessions/{session}/messages", json={"speaker": "user", "text": "and elephants?"})
    second = _suggest(client, session)
    start = second["actions"][0]["suggestions"][0]
    assert (
        _send(
            client, session, start["text"] + " Anything else?", {"request_id": second["request_id"], "suggestion": 0}
        ).status_code
        == 200
    )
    third = _suggest(client, session)
    assert (
        _send(client, session, "My own words.", {"request_id": third["request_id"], "suggestion": None}).status_code
        == 200
    )
    fourth = _suggest(client, session)  # shown, never answered

    conversation = store.conversation(session)
    assert conversation is not None
    agent = [t for t in conversation.turns if t.speaker == "agent"]
    outcomes = [(t.meta["choice"]["outcome"], t.meta["choice"]["edit_distance"]) for t in agent]  # type: ignore[index]
    assert outcomes[:2] == [("taken", 0), ("edited", len(" Anything else?"))] and outcomes[2][0] == "own"
    assert [c.text for c in agent[0].candidates] == [s["text"] for _, s in shown]
    assert [c.selected for c in agent[0].candidates].index(True) == taken["number"]
    assert (agent[0].action, agent[0].action_source) == (action, "agent" if action else None)
    assert {c.provider for c in agent[0].candidates} == {"lm"}
    assert not any(c.selected for c in agent[2].candidates)
    [event] = conversation.events
    assert (event.kind, event.position, event.data["request"]) == ("suggestions", 5, fourth["request_id"])
    assert len(event.data["candidates"]) == sum(len(g["suggestions"]) for g in fourth["actions"])  # type: ignore[arg-type]
    exported = json.loads(client.get(f"/v1/sessions/{session}").text)["conversation"]
    assert exported["turns"][1]["meta"]["choice"]["request"] == first["request_id"]
    # What the store exports is what preference pairs are built from.
    pairs, counts = build_pairs([conversation])
    assert counts.choices == {"taken": 1, "edited": 1, "own": 1}
    assert {p.chosen for p in pairs} <= {agent[0].text, agent[1].text} and pairs


def test_a_choice_that_does_not_fit_is_refused_and_stores_nothing(client: TestClient, store: Store) -> None:
    session = client.post("/v1/sessions", json={"mode": "assist"}).json()["id"]
    other = client.post("/v1/sessions", json={"mode": "assist"}).json()["id"]
    client.post(f"/v1/sessions/{session}/messages", json={"speaker": "user", "text": "hi"})
    request = _suggest(client, session)["request_id"]
    count = sum(1 for _ in _suggest(client, session)["actions"])  # (a second request: the first stays open)
    assert count
    refused = {
        "unknown request": (session, "agent", {"request_id": "f" * 32, "suggestion": 0}, 422),
        "another session's": (other, "agent", {"request_id": request, "suggestion": 0}, 422),
        "not shown": (session, "agent", {"request_id": request, "suggestion": 99}, 422),
        "negative": (session, "agent", {"request_id": request, "suggestion": -1}, 422),
        "a user's": (session, "user", {"request_id": request, "suggestion": 0}, 422),
    }
    for why, (where, speaker, choice, status) in refused.items():
        answer = client.post(f"/v1/sessions/{where}/messages", json={"speaker": speaker, "text": "x", "choice": choice})
        assert answer.status_code == status, (why, answer.text)
    assert store.turn_count(session) == 1 and store.turn_count(other) == 0


def test_a_second_answer_rolls_back_its_turn(store: Store) -> None:
    store.create_session("s1", user_id="u", arm="a", mode="assist", domain="animals", meta={})
    store.add_shown("r1", "s1", 0, SHOWN)
    store.append_turns("s1", 0, [Turn("agent", "Lions roar.")], answers="r1")
    with pytest.raises(StoreError, match="already answered"):
        store.append_turns("s1", 1, [Turn("agent", "Again.")], answers="r1")
    assert store.turn_count("s1") == 1
    record = store.shown("r1")
    assert record is not None and record.answered == 0 and record.shown() == SHOWN


def test_streamed_suggestions_end_with_their_request_id(artifacts: Artifacts, store: Store) -> None:
    client = TestClient(create_app(artifacts, store, ServeConfig()))
    body = {"conversation": [{"speaker": "user", "text": "hi"}], "actions": 1, "n": 2, "stream": True}
    with client.stream("POST", "/v1/suggest", json=body) as response:
        text = "".join(response.iter_text())
    done = json.loads(text.split("event: done\ndata: ")[1].split("\n")[0])
    record = store.shown(done["request_id"])
    assert record is not None and record.session_id is None and len(record.shown()) == 2


def test_assist_arms_by_agent_and_their_report_from_the_store(artifacts_dir: Path, tmp_path: Path) -> None:
    """serve.json assist_arms: each agent (an assist session's user) gets one arm's suggestions, and `experiment
    report --assist` reads the store: per arm the share sent as suggested, against the control."""
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, root)
    write_manifest(root, replace(read_manifest(root), assist_arms={"base": "lm", "tuned": "lm"}))
    loaded = Artifacts.load(root)
    assert set(loaded.assist) == {"base", "tuned"} and loaded.suggester_of("tuned") is loaded.assist["tuned"]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    client = TestClient(create_app(loaded, store, ServeConfig()))
    assert client.get("/healthz").json()["assist_arms"] == ["base", "tuned"]
    arms: dict[str, int] = {}
    for k in range(40):
        session = client.post("/v1/sessions", json={"mode": "assist", "user_id": f"agent-{k}"}).json()
        if arms.get(session["arm"], 0) >= 3:
            continue
        arms[session["arm"]] = arms.get(session["arm"], 0) + 1
        client.post(f"/v1/sessions/{session['id']}/messages", json={"speaker": "user", "text": "tell me about lions"})
        shown = _suggest(client, session["id"])
        first = shown["actions"][0]["suggestions"][0]["text"]
        taken = {"request_id": shown["request_id"], "suggestion": 0 if k % 2 else None}
        assert _send(client, session["id"], first if k % 2 else "My own words.", taken).status_code == 200
    assert arms == {"base": 3, "tuned": 3}
    store.close()
    out = tmp_path / "report"
    result = runner.invoke(
        app, ["experiment", "report", "--assist", "--db", url, "--control", "base", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "| base | 3 |" in report and "| tuned | 3 |" in report and "(unpaired)" in report
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")
    result = runner.invoke(
        app, ["experiment", "report", "--db", url, "--control", "base", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 2  # the bot's report: no bot sessions stored

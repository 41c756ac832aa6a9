"""The API in process: sessions, bot turns, assist messages, suggestions, feedback, limits."""

from __future__ import annotations

from fastapi.testclient import TestClient

from convoplan.serve.store import Store


def test_a_bot_session_stores_every_turn_and_exports_it(client: TestClient, store: Store) -> None:
    session = client.post("/v1/sessions", json={"user_id": "alice"}).json()
    assert session["arm"] in ("heuristic", "greedy")
    reply = client.post(f"/v1/sessions/{session['id']}/messages", json={"text": "tell me about elephants"}).json()
    assert reply["response"] and reply["steps"] and reply["steps"][0]["candidates"]
    assert sum(c["selected"] for c in reply["steps"][0]["candidates"]) == 1
    stored = client.get(f"/v1/sessions/{session['id']}").json()["conversation"]
    assert len(stored["turns"]) == reply["response_position"] + 1 == store.counts()["turns"]
    assert stored["meta"]["arm"] == session["arm"]


def test_suggest_ranks_actions_and_writes_for_each(client: TestClient) -> None:
    history = [{"speaker": "user", "text": "hi, tell me about lions"}]
    body = client.post("/v1/suggest", json={"conversation": history, "actions": 2, "n": 2}).json()
    assert 1 <= len(body["actions"]) <= 2
    assert all(len(group["suggestions"]) == 2 for group in body["actions"])
    assert client.post("/v1/suggest", json={"conversation": history, "action": "no-such-act"}).status_code == 422

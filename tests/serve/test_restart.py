"""A server killed in the middle of its sessions loses nothing, and the sessions go on after a restart: every turn
is stored before its answer leaves, and a session's bot is rebuilt from the store (`Bot.replay`)."""

from __future__ import annotations

from pathlib import Path

import httpx

from convoplan.serve.process import ServerProcess, free_port
from convoplan.serve.store import Store

SESSIONS = 4
BEFORE = ["tell me about elephants", "what sound does it make?", "and what do lions eat?"]
AFTER = ["where do giraffes live?", "tell me more", "thanks, what about zebras?"]


def send_round(client: httpx.Client, sessions: list[str], texts: list[str], next_position: dict[str, int]) -> None:
    """Each message to every session in turn; each answer must continue its session's positions contiguously."""
    for text in texts:
        for session_id in sessions:
            reply = client.post(f"/v1/sessions/{session_id}/messages", json={"text": text})
            assert reply.status_code == 200, f"{session_id} {text!r}: {reply.status_code} {reply.text}"
            body = reply.json()
            assert body["position"] == next_position[session_id], body
            assert not body["ended"], f"the bot ended session {session_id} early; pick other messages"
            assert body["response_position"] > body["position"]
            assert [s["position"] for s in body["steps"]] == list(
                range(body["position"] + 1, body["response_position"])
            )
            next_position[session_id] = body["response_position"] + 1


def test_a_killed_server_loses_nothing_and_its_sessions_continue(
    artifacts_dir: Path, db_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(artifacts_dir, db_url, free_port(), tmp_path / "server.log")
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            created = [client.post("/v1/sessions", json={"user_id": f"user-{n}"}) for n in range(SESSIONS)]
            assert all(r.status_code == 201 for r in created), [r.text for r in created]
            sessions = [r.json()["id"] for r in created]
            next_position = dict.fromkeys(sessions, 0)
            send_round(client, sessions, BEFORE, next_position)

        server.stop(kill=True)  # SIGKILL: no shutdown, no flush
        server.start()  # the same port and database
        with httpx.Client(base_url=server.url, timeout=60) as client:
            send_round(client, sessions, AFTER, next_position)
            for session_id in sessions:
                detail = client.get(f"/v1/sessions/{session_id}")
                assert detail.status_code == 200, detail.text
                turns = detail.json()["conversation"]["turns"]
                assert len(turns) == next_position[session_id]
                assert [t["text"] for t in turns if t["speaker"] == "user"] == BEFORE + AFTER
    finally:
        server.stop()

    store = Store(db_url)
    try:
        assert store.counts()["sessions"] == SESSIONS
        assert store.counts()["turns"] == sum(next_position.values())
        for session_id in sessions:
            conversation = store.conversation(session_id)
            assert conversation is not None
            assert sum(turn.speaker == "user" for turn in conversation.turns) == len(BEFORE) + len(AFTER)
            assert len(conversation.turns) == next_position[session_id]
    finally:
        store.close()

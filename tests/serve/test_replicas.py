"""Replicas: two `convoplan serve` processes on one PostgreSQL, as behind a load balancer without sticky sessions.
Messages of one session sent in parallel through both are handled one at a time (the database's advisory lock),
each answered and stored with its response right after it, none lost; a replica whose cached bot is behind the
store catches up before answering."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from convoplan.compose.loop import STOP
from convoplan.serve.process import ServerProcess, free_port
from tests.serve.postgres import PostgresServer

MESSAGES = 20


@pytest.fixture
def replicas(artifacts_dir: Path, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    url = postgres_server.createdb()
    servers = [ServerProcess(artifacts_dir, url, free_port(), tmp_path / f"replica-{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
        postgres_server.dropdb(url.rsplit("/", 1)[1])


def send_in_parallel(
    replicas: list[ServerProcess], session_id: str, bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    """Every body at once, alternately through each replica."""

    def send(index: int) -> httpx.Response:
        url = f"{replicas[index % 2].url}/v1/sessions/{session_id}/messages"
        return httpx.post(url, json=bodies[index], timeout=120)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, range(len(bodies))))


@pytest.mark.bad_input("27.7 replicas: one session's messages through two servers at once")
def test_parallel_messages_to_one_session_through_two_replicas_are_stored_in_order(
    replicas: list[ServerProcess],
) -> None:
    first, second = replicas
    # Assist: each message goes at the end of the session, whichever replica takes it.
    assist = httpx.post(f"{first.url}/v1/sessions", json={"mode": "assist"}, timeout=30).json()["id"]
    texts = [f"message {i}" for i in range(MESSAGES)]
    answers = send_in_parallel(replicas, assist, [{"text": text, "speaker": "user"} for text in texts])
    assert [a.status_code for a in answers] == [200] * MESSAGES, [a.text for a in answers if a.status_code != 200]
    assert sorted(a.json()["position"] for a in answers) == list(range(MESSAGES))
    stored = httpx.get(f"{second.url}/v1/sessions/{assist}", timeout=30).json()["conversation"]["turns"]
    assert sorted(t["text"] for t in stored) == sorted(texts)
    for answer, text in zip(answers, texts, strict=True):  # each stored where its answer said
        assert stored[answer.json()["position"]]["text"] == text

    # Bot: each user message is followed by its own response; a replica's cached bot that is behind catches up.
    bot = httpx.post(f"{first.url}/v1/sessions", json={"user_id": "replicated"}, timeout=30).json()["id"]
    texts = [f"tell me about {animal}" for animal in ("lions", "penguins", "zebras", "owls", "bears") * 4]
    answers = send_in_parallel(replicas, bot, [{"text": text} for text in texts])
    assert [a.status_code for a in answers] == [200] * MESSAGES, [a.text for a in answers if a.status_code != 200]
    turns = httpx.get(f"{second.url}/v1/sessions/{bot}", timeout=30).json()["conversation"]["turns"]
    assert sorted(t["text"] for t in turns if t["speaker"] == "user") == sorted(texts)
    for answer in answers:  # the message at its position, its response's turns right after, closed by STOP
        body = answer.json()
        assert turns[body["position"]]["speaker"] == "user"
        response = turns[body["position"] + 1 : body["response_position"] + 1]
        assert response and all(t["speaker"] == "agent" for t in response) and response[-1]["action"] == STOP
    assert len(turns) == max(a.json()["response_position"] for a in answers) + 1

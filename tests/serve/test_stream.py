"""Streamed suggestions: POST /v1/suggest with "stream": true over real HTTP (a server process, httpx) sends the
plans first, then each suggestion's text in pieces that add up to the final answer, which ends the stream; errors
found before the stream starts keep their status; a client that leaves does not break the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from convoplan.serve.process import ServerProcess

HISTORY = [{"speaker": "user", "text": "tell me about lions"}]


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) of a text/event-stream response, as they arrive."""
    name, data = "message", []
    for line in response.iter_lines():
        if not line:  # a blank line ends an event
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


def test_suggestions_stream_as_they_are_written(server: ServerProcess) -> None:
    body = {"conversation": HISTORY, "actions": 2, "n": 3, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/suggest", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            received = list(events(response))
        names = [name for name, _ in received]
        assert names[0] == "plans" and names[-1] == "done" and set(names[1:-1]) == {"text"}
        plans, answer = received[0][1], received[-1][1]
        assert [a["action"] for a in plans["actions"]] == [a["action"] for a in answer["actions"]] and plans["n"] == 3
        pieces: dict[tuple[int, int], str] = {}
        for _name, data in received[1:-1]:
            key = (data["action"], data["suggestion"])
            pieces[key] = pieces.get(key, "") + data["text"]
        for i, group in enumerate(answer["actions"]):
            assert len(group["suggestions"]) == 3
            for j, suggestion in enumerate(group["suggestions"]):
                assert pieces.get((i, j), "") == suggestion["text"]
        assert len(received) - 2 > len(pieces)  # in pieces, not one event per suggestion
        # Without streaming: the same shape of answer, as before.
        plain = client.post("/v1/suggest", json={**body, "stream": False}).json()
        assert [a["action"] for a in plain["actions"]] == [a["action"] for a in answer["actions"]]


def test_errors_before_the_stream_keep_their_status_and_a_client_may_leave(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        bad = client.post("/v1/suggest", json={"conversation": HISTORY, "action": "no-such-act", "stream": True})
        assert bad.status_code == 422 and "unknown action" in bad.json()["detail"]
        body = {"conversation": HISTORY, "actions": 3, "n": 5, "stream": True}
        for _ in range(3):  # leave after the first piece of text, three times
            with client.stream("POST", "/v1/suggest", json=body) as response:
                for name, _data in events(response):
                    if name == "text":
                        break
        assert client.get("/healthz").status_code == 200
        after = client.post("/v1/suggest", json={**body, "stream": False})
        assert after.status_code == 200 and len(after.json()["actions"][0]["suggestions"]) == 5

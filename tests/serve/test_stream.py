"""Streamed suggestions: POST /v1/suggest with "stream": true over real HTTP (a server process, httpx) sends the
plans first, then each suggestion's text in pieces that add up to the final answer, which ends the stream; errors
found before the stream starts keep their status; a client that leaves does not break the server, and stops the
work done for it within one decoding step (measured on an LM slowed down to count its passes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from convoplan.serve.app import ServeConfig, create_app
from convoplan.serve.artifacts import Artifacts
from convoplan.serve.process import ServerProcess, free_port
from convoplan.serve.store import Store

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


def test_retrieved_suggestions_arrive_whole_with_the_plans(mixed_artifacts: Artifacts, store: Store) -> None:
    client = TestClient(create_app(mixed_artifacts, store, ServeConfig()))
    body = {"conversation": HISTORY, "actions": 2, "n": 3, "stream": True}
    with client.stream("POST", "/v1/suggest", json=body) as response:
        received = list(events(response))
    plans, answer = received[0][1], received[-1][1]
    assert received[0][0] == "plans" and received[-1][0] == "done"
    pieces: dict[tuple[int, int], str] = {}
    for name, data in received[1:-1]:
        assert name == "text" and data["suggestion"] >= 1  # index 0 of each action is the retrieved one
        pieces[data["action"], data["suggestion"]] = pieces.get((data["action"], data["suggestion"]), "") + data["text"]
    for i, (planned, group) in enumerate(zip(plans["actions"], answer["actions"], strict=True)):
        (retrieved,) = planned["suggestions"]
        # (numbered in the final answer only: which written ones are shown is not known yet)
        assert retrieved["origin"] == "exemplar" and group["suggestions"][0] == retrieved | {"number": i * 3}
        for j, written in enumerate(group["suggestions"][1:], 1):
            # (the tiny LM writes stray bytes: text that ends inside a character is held back from the stream)
            whole = not written["text"].endswith("\ufffd")
            piece = pieces.get((i, j), "")
            assert written["origin"] == "lm" and (
                piece == written["text"] if whole else written["text"].startswith(piece)
            )


# --- a client that leaves stops the work -----------------------------------------------------------------------

STEP_SECONDS = 0.05
"""The slowed LM's time per forward pass: a full stream of 3 x 5 suggestions takes seconds, a leaving client's
cost is counted in passes."""


@dataclass
class SlowServer:
    url: str
    passes: list[float]
    """When each forward pass of the LM started (monotonic seconds)."""

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        (value,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
        return value

    def passes_since(self, moment: float) -> int:
        return sum(started > moment for started in self.passes)


@pytest.fixture
def slow_server(artifacts: Artifacts, store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowServer]:
    """The app over real HTTP in this process (uvicorn on a thread, 2 model workers), its LM slowed to
    STEP_SECONDS per forward pass, every pass recorded."""
    assert artifacts.suggester is not None
    model = artifacts.suggester.lm.model
    forward = model.forward
    passes: list[float] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        passes.append(time.monotonic())
        time.sleep(STEP_SECONDS)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow)
    # Long messages: a stream that is not stopped runs for 40 passes (2 s) after its first text.
    sampling = replace(artifacts.suggester.config.sampling, max_new_tokens=40, temperature=5.0)
    monkeypatch.setattr(artifacts.suggester, "config", replace(artifacts.suggester.config, sampling=sampling))
    app = create_app(artifacts, store, ServeConfig(model_workers=2, torch_threads=1))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield SlowServer(f"http://127.0.0.1:{server.config.port}", passes)
    server.should_exit = True
    thread.join(timeout=30)


def leave_after_first_text(url: str, body: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client, client.stream("POST", "/v1/suggest", json=body) as response:
        for name, _data in events(response):
            if name == "text":
                return


BODY = {"conversation": HISTORY, "actions": 3, "n": 5, "stream": True}


@pytest.mark.bad_input("27.2 streaming clients that leave")
def test_a_client_that_leaves_stops_generation_within_a_step(slow_server: SlowServer) -> None:
    leave_after_first_text(slow_server.url, BODY)
    left = time.monotonic()
    time.sleep(1.0)  # 20 passes' time
    assert slow_server.passes_since(left) <= 1  # at most the pass that was running when the client left
    assert slow_server.metric("convoplan_model_workers_busy") == 0
    assert slow_server.metric("convoplan_streams_cancelled_total") == 1
    # The full stream, for comparison: it runs far more passes after its first text than the one that was left.
    with (
        httpx.Client(base_url=slow_server.url, timeout=60) as client,
        client.stream("POST", "/v1/suggest", json=BODY) as response,
    ):
        received = [name for name, _ in events(response)]
    assert received[-1] == "done" and len(slow_server.passes) > 10


@pytest.mark.bad_input("27.2 streaming clients that leave")
def test_a_burst_of_clients_that_leave_leaves_the_workers_idle(slow_server: SlowServer) -> None:
    """20 streams on 2 workers: 2 compute, 18 wait for a worker. All leave at once; within a second nothing runs,
    and none of the waiting ones starts."""
    opened = threading.Barrier(21)
    close = threading.Event()

    def client() -> None:
        with (
            httpx.Client(base_url=slow_server.url, timeout=60) as http,
            http.stream("POST", "/v1/suggest", json=BODY) as response,
        ):
            assert response.status_code == 200
            opened.wait(timeout=30)  # the headers are out: the server is handling this one
            close.wait(timeout=30)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    opened.wait(timeout=30)
    time.sleep(0.5)  # the first two are writing
    assert slow_server.metric("convoplan_model_workers_busy") == 2
    close.set()
    for thread in threads:
        thread.join(timeout=30)
    left = time.monotonic()
    time.sleep(1.0)
    assert slow_server.metric("convoplan_model_workers_busy") == 0
    idle = time.monotonic()
    time.sleep(0.5)
    assert slow_server.passes_since(idle) == 0  # no waiting stream started after its client had gone
    assert slow_server.passes_since(left) <= 2  # the passes running as they left, one per worker
    assert slow_server.metric("convoplan_streams_cancelled_total") == 20

"""Fuzzing: schemathesis generates requests for every operation of the OpenAPI document (valid and invalid bodies,
boundary values, and stateful sequences over the links it infers) against a live server, and no answer may be a
server error. Then the requests that fuzzing and probing found answered with 500, replayed one by one in process
(regression tests of the fixes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from convoplan.schema import write_jsonl
from convoplan.serve.process import ServerProcess, free_port
from convoplan.serve.store import Store

FUZZ_TIMEOUT = 300
"""Seconds schemathesis may run (it takes well under a minute per server on a busy 2-core machine)."""
FUZZ_OPTIONS = [
    "--checks=not_a_server_error",
    "--max-examples=25",
    "--workers=1",
    "--seed=1",
    "--request-timeout=60",
    "--generation-database=none",
    "--no-color",
]


def fuzz(server: ServerProcess, folder: Path, *options: str) -> None:
    """Run schemathesis against a live server; fail with its reproductions and the server's log on any 5xx."""
    # A bot session and an assist session with a turn each: most path and body session ids come from them, so the
    # fuzzer gets past 404 into message handling, the bot, suggestions and feedback.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        bot = client.post("/v1/sessions", json={"user_id": "fuzz-bot"}).json()["id"]
        assist = client.post("/v1/sessions", json={"user_id": "fuzz-agent", "mode": "assist"}).json()["id"]
        assert client.post(f"/v1/sessions/{bot}/messages", json={"text": "tell me about elephants"}).status_code == 200
        assert client.post(f"/v1/sessions/{assist}/messages", json={"text": "hello"}).status_code == 200
    config = folder / "schemathesis.toml"
    config.write_text(
        f"[dictionaries.sessions]\nvalues = {json.dumps([bot, assist])}\n\n[parameters]\n"
        '"path.session_id" = { dictionary = "sessions", probability = 0.8 }\n'
        '"body.session_id" = { dictionary = "sessions", probability = 0.5 }\n'
    )
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    command += [f"{server.url}/openapi.json", *FUZZ_OPTIONS, *options]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=FUZZ_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"schemathesis ran past {FUZZ_TIMEOUT} s:\n{error.stdout!r}"[-8000:])
    log = server.log.read_text(errors="replace")
    if done.returncode != 0 or "Traceback" in log:
        pytest.fail(
            f"schemathesis exited with {done.returncode}:\n{done.stdout[-12000:]}\n{done.stderr[-3000:]}\n"
            f"--- server log ---\n{log[-12000:]}"
        )
    selected = re.search(r"Selected: (\d+)/(\d+)", done.stdout)
    tested = re.search(r"Tested: (\d+)", done.stdout)
    assert selected and tested, done.stdout[-3000:]
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)) >= 6, done.stdout[-3000:]


def test_fuzzing_every_operation_finds_no_server_error(server: ServerProcess, tmp_path: Path) -> None:
    fuzz(server, tmp_path)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_fuzzing_every_operation_over_postgresql_finds_no_server_error(
    artifacts_dir: Path, db_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(artifacts_dir, db_url, free_port(), tmp_path / "server.log")
    try:
        server.start()
        fuzz(server, tmp_path)
    finally:
        server.stop()


# --- the 500s found, one request each -----------------------------------------------------------------------


def sessions(client: TestClient) -> tuple[str, str]:
    bot = client.post("/v1/sessions", json={"user_id": "alice"}).json()["id"]
    assist = client.post("/v1/sessions", json={"user_id": "bob", "mode": "assist"}).json()["id"]
    return bot, assist


def post_raw(client: TestClient, path: str, body: str) -> Any:
    """POST a JSON text as it is (json.dumps would not write the escapes these requests are about)."""
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lone_surrogate_in_a_text_field_gets_422(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    bot, assist = sessions(client)
    answers = {
        "assist text": post_raw(client, f"/v1/sessions/{assist}/messages", '{"text": "a\\ud800b"}'),
        "bot text": post_raw(client, f"/v1/sessions/{bot}/messages", '{"text": "a\\ud800b"}'),
        "suggest text": post_raw(client, "/v1/suggest", '{"conversation": [{"speaker": "user", "text": "\\ud800"}]}'),
        "user_id": post_raw(client, "/v1/sessions", '{"user_id": "\\udc00"}'),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 422)


def test_a_lone_surrogate_in_meta_does_not_poison_the_session(api: tuple[TestClient, Store], tmp_path: Path) -> None:
    client, store = api
    bot, assist = sessions(client)
    meta = '"meta": {"note": "a\\ud800b"}'
    answers = {
        "session meta": post_raw(client, "/v1/sessions", "{" + meta + "}"),
        "assist meta": post_raw(client, f"/v1/sessions/{assist}/messages", '{"text": "hi", ' + meta + "}"),
        "bot meta": post_raw(client, f"/v1/sessions/{bot}/messages", '{"text": "hi", ' + meta + "}"),
    }
    assert all(r.status_code < 500 for r in answers.values()), {n: r.status_code for n, r in answers.items()}
    stored = [record.id for record in (store.session(bot), store.session(assist)) if record is not None]
    if answers["session meta"].status_code == 201:
        stored.append(answers["session meta"].json()["id"])
    gets = {session_id: client.get(f"/v1/sessions/{session_id}").status_code for session_id in stored}
    assert gets == dict.fromkeys(stored, 200)
    write_jsonl(tmp_path / "export.jsonl", store.conversations())  # what `experiment report --db` and training read


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_nul_byte_is_not_a_server_error(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    bot, assist = sessions(client)
    answers = {
        "assist text": client.post(f"/v1/sessions/{assist}/messages", json={"text": "a\x00b"}),
        "bot text": client.post(f"/v1/sessions/{bot}/messages", json={"text": "a\x00b"}),
        "action": client.post(
            f"/v1/sessions/{assist}/messages", json={"text": "hi", "speaker": "agent", "action": "fact\x00"}
        ),
        "user_id": client.post("/v1/sessions", json={"user_id": "a\x00"}),
        "suggest session_id": client.post("/v1/suggest", json={"session_id": "a\x00"}),
        "GET path": client.get("/v1/sessions/a%00"),
        "messages path": client.post("/v1/sessions/a%00/messages", json={"text": "hi"}),
        "feedback path": client.post("/v1/sessions/a%00/feedback", json={"position": 0, "value": "positive"}),
    }
    codes = {name: r.status_code for name, r in answers.items()}
    assert all(code < 500 for code in codes.values()), codes
    assert codes["GET path"] == codes["messages path"] == codes["feedback path"] == 404, codes


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_long_action_is_not_a_server_error(api: tuple[TestClient, Store]) -> None:
    client, store = api
    _, assist = sessions(client)
    action = "a" * 150
    answer = client.post(f"/v1/sessions/{assist}/messages", json={"text": "hi", "speaker": "agent", "action": action})
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        assert store.turns(assist)[-1].action == action

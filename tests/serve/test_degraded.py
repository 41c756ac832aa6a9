"""A store that cannot be written (a full disk) gives 503 with a JSON body and a `/healthz` that says so, loses
nothing already stored, and recovers by itself once writes succeed again; on SQLite and PostgreSQL (the disk-full
error injected where the driver raises it)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from convoplan.serve.store import Store


@pytest.fixture
def full_disk(api: tuple[TestClient, Store]) -> Iterator[threading.Event]:
    """While set, every INSERT or UPDATE of the store fails as the database driver fails on a full disk."""
    _, store = api
    full = threading.Event()

    def fail_writes(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if full.is_set() and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            if store.engine.dialect.name == "sqlite":
                raise sqlite3.OperationalError("database or disk is full")
            import psycopg

            raise psycopg.errors.DiskFull("could not extend file: No space left on device")

    event.listen(store.engine, "before_cursor_execute", fail_writes)
    yield full
    event.remove(store.engine, "before_cursor_execute", fail_writes)


@pytest.mark.bad_input("27.3 a full disk")
def test_a_full_disk_gives_503_and_healthz_says_so_until_writes_succeed_again(
    api: tuple[TestClient, Store], full_disk: threading.Event
) -> None:
    client, store = api
    bot = client.post("/v1/sessions", json={"user_id": "before"}).json()["id"]
    assist = client.post("/v1/sessions", json={"mode": "assist"}).json()["id"]
    assert client.post(f"/v1/sessions/{bot}/messages", json={"text": "tell me about lions"}).status_code == 200
    before = store.counts()
    assert client.get("/healthz").json()["store"] == {"state": "ok"}

    full_disk.set()
    answers = [
        client.post("/v1/sessions", json={"user_id": "during"}),
        client.post(f"/v1/sessions/{bot}/messages", json={"text": "and penguins?"}),
        client.post(f"/v1/sessions/{assist}/messages", json={"text": "hello", "speaker": "user"}),
        client.post(f"/v1/sessions/{bot}/feedback", json={"position": 0, "value": "positive"}),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json" and answer.headers["retry-after"]
        assert "disk is full" in answer.json()["detail"] or "No space left" in answer.json()["detail"]
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["store"]["state"] == "failing writes" and health.json()["store"]["since"]
    assert client.get(f"/v1/sessions/{bot}").status_code == 200  # reads still work
    assert store.counts() == before  # nothing half-written

    full_disk.clear()  # space freed: the health probe's write succeeds, and so do the requests
    assert client.get("/healthz").json()["store"] == {"state": "ok"}
    again = client.post(f"/v1/sessions/{bot}/messages", json={"text": "and penguins?"})
    assert again.status_code == 200, again.text
    user_texts = [
        t["text"] for t in client.get(f"/v1/sessions/{bot}").json()["conversation"]["turns"] if t["speaker"] == "user"
    ]
    assert user_texts == ["tell me about lions", "and penguins?"]


def test_an_unreachable_store_is_a_503_on_healthz(client: TestClient, store: Store) -> None:
    def fail_reads(*_args: Any) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    event.listen(store.engine, "before_cursor_execute", fail_reads)
    try:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["store"]["state"] == "unreachable"
        assert client.get("/v1/sessions/" + "0" * 32).status_code == 503
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_reads)

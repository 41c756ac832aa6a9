"""The conversation store on SQLite and on PostgreSQL (`db_url` runs each test on both): round trips, the canonical
export, feedback, refused writes, concurrent writers, SQLite's WAL mode, and the API over PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from convoplan.schema import Candidate, Turn, read_jsonl, write_jsonl
from convoplan.serve.app import ServeConfig, create_app
from convoplan.serve.artifacts import Artifacts
from convoplan.serve.store import Store, StoreError


@pytest.fixture
def db(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.close()


def new_session(
    store: Store, session_id: str, *, user_id: str = "alice", arm: str = "greedy", mode: str = "bot"
) -> None:
    store.create_session(session_id, user_id=user_id, arm=arm, mode=mode, domain="animals", meta={"source": "test"})


def exchange(index: int) -> list[Turn]:
    """A user message and a bot response as the server stores them: one utterance step (its candidates scored,
    one selected) and the closing turn."""
    candidates = [
        Candidate(
            text=f"Elephants are big ({index}).",
            action="fact",
            provider="facts",
            focus="elephant",
            changes_focus=index == 0,
            features={"step": 0.0, "length": 3.5},
            score=0.75,
            propensity=0.9,
            selected=True,
            meta={"key": ["elephant", "size"], "nested": {"ok": True, "n": None}},
        ),
        Candidate(text="Lions roar — loudly! ✓", action="sound", provider="sounds", score=-1.25, propensity=0.1),
    ]
    return [
        Turn(speaker="user", text=f"tell me about elephants, part {index} 🐘", meta={"client": {"lang": "en"}}),
        Turn(speaker="agent", text=candidates[0].text, action="fact", candidates=candidates),
        Turn(
            speaker="agent",
            text=f"Elephants are big ({index}). Anything else?",
            action="stop",
            action_confidence=0.5,
            action_source="test-1",
            candidates=[Candidate(text="(stop)", action="stop", score=0.1, selected=True)],
        ),
    ]


def test_sessions_turns_and_feedback_round_trip(db: Store) -> None:
    new_session(db, "s1", user_id="alice", arm="greedy")
    new_session(db, "s2", user_id="bob", arm="heuristic", mode="assist")
    turns = exchange(0) + exchange(1)
    db.append_turns("s1", 0, turns[:3])
    db.append_turns("s1", 3, turns[3:])
    db.add_feedback("s1", 2, "positive")

    record = db.session("s1")
    assert record is not None
    assert (record.id, record.user_id, record.arm, record.mode, record.domain) == (
        "s1",
        "alice",
        "greedy",
        "bot",
        "animals",
    )
    assert record.meta == {"source": "test"}
    assert db.turns("s1") == turns
    assert db.turns("s2") == []
    assert db.counts() == {"sessions": 2, "turns": 6, "feedback": 1, "shown": 0}


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_created_at_reads_back_as_it_was_stored(db: Store) -> None:
    created = db.create_session("s1", user_id="alice", arm="greedy", mode="bot", domain="animals", meta={})
    record = db.session("s1")
    conversation = db.conversation("s1")
    assert record is not None and conversation is not None
    assert record.created_at.tzinfo is not None
    assert record.created_at == created.created_at
    assert conversation.meta["created_at"] == created.created_at.isoformat()


def test_conversations_export_canonical_conversations_that_survive_jsonl(db: Store, tmp_path: Path) -> None:
    for index, session_id in enumerate(["a", "b", "c"]):
        new_session(db, session_id, user_id=f"user-{index}", arm=("greedy", "heuristic")[index % 2])
    db.append_turns("a", 0, exchange(0) + exchange(1))
    db.append_turns("b", 0, exchange(2))
    db.add_feedback("b", 2, "negative")
    # "c" has no turns: left out of the export

    exported = list(db.conversations())
    assert [c.id for c in exported] == ["a", "b"]
    assert exported[0].turns == exchange(0) + exchange(1)
    assert exported[1].meta["arm"] == exported[1].meta["dm"] == "heuristic"
    assert exported[1].meta["user_id"] == "user-1" and exported[1].meta["source"] == "test"
    assert [c.id for c in db.conversations(mode="assist")] == []

    path = tmp_path / "export.jsonl"
    assert write_jsonl(path, exported) == 2
    assert read_jsonl(path) == exported
    assert db.conversation("a") == exported[0]


def test_feedback_lands_in_the_turns_meta_and_the_latest_wins(db: Store) -> None:
    new_session(db, "s1")
    db.append_turns("s1", 0, exchange(0) + exchange(1))
    db.add_feedback("s1", 2, "positive")
    db.add_feedback("s1", 5, "positive")
    db.add_feedback("s1", 5, "negative")  # changed their mind
    db.add_feedback("s1", 99, "negative")  # past the last turn: stored, not exported

    conversation = db.conversation("s1")
    assert conversation is not None
    feedback = {i: t.meta.get("feedback") for i, t in enumerate(conversation.turns) if "feedback" in t.meta}
    assert feedback == {2: "positive", 5: "negative"}
    assert conversation.turns[0].meta == {"client": {"lang": "en"}}  # other meta kept
    assert db.counts()["feedback"] == 4
    assert "feedback" not in db.turns("s1")[5].meta  # the stored turns themselves are untouched


def test_a_taken_position_is_refused_and_nothing_changes(db: Store) -> None:
    new_session(db, "s1")
    first = exchange(0)
    db.append_turns("s1", 0, first)
    with pytest.raises(StoreError, match="already stored"):
        db.append_turns("s1", 2, exchange(1)[:2])  # 2 is taken, 3 is free: all or none
    with pytest.raises(StoreError):
        db.append_turns("s1", 0, [Turn(speaker="user", text="again")])
    assert db.turns("s1") == first
    assert db.counts()["turns"] == 3
    db.append_turns("s1", 3, exchange(1))  # the store still works after the refusals
    assert len(db.turns("s1")) == 6


def test_an_unknown_session_is_refused(db: Store) -> None:
    with pytest.raises(StoreError):
        db.append_turns("no-such-session", 0, exchange(0))
    with pytest.raises(StoreError):
        db.add_feedback("no-such-session", 0, "positive")
    assert db.session("no-such-session") is None
    assert db.conversation("no-such-session") is None
    assert db.turns("no-such-session") == []
    assert db.counts() == {"sessions": 0, "turns": 0, "feedback": 0, "shown": 0}


def test_concurrent_writers_lose_nothing(db: Store) -> None:
    threads, appends = 8, 20
    barrier = threading.Barrier(threads, timeout=60)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            session_id = f"writer-{n}"
            new_session(db, session_id, user_id=f"user-{n}")
            barrier.wait()
            for i in range(appends):
                db.append_turns(session_id, 3 * i, exchange(i))
                db.add_feedback(session_id, 3 * i + 2, "positive")
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "a writer did not finish within 120 s"
    assert errors == []
    assert db.counts() == {
        "sessions": threads,
        "turns": threads * appends * 3,
        "feedback": threads * appends,
        "shown": 0,
    }
    for n in range(threads):
        assert db.turns(f"writer-{n}") == [turn for i in range(appends) for turn in exchange(i)]


def test_writers_racing_for_one_position_store_it_once(db: Store) -> None:
    new_session(db, "s1")
    threads = 6
    barrier = threading.Barrier(threads, timeout=60)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        barrier.wait()
        try:
            db.append_turns("s1", 0, [Turn(speaker="user", text=f"writer {n}"), Turn(speaker="agent", text="hi")])
            outcome = "stored"
        except StoreError:
            outcome = "refused"
        except Exception as error:  # anything else is a failure, shown in the assertion below
            outcome = repr(error)
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(outcomes) == ["refused"] * (threads - 1) + ["stored"]
    stored = db.turns("s1")
    assert len(stored) == 2 and stored[0].text.startswith("writer ") and stored[1].text == "hi"


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = Store(f"sqlite:///{path}")
    try:
        new_session(store, "s1")
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        # WAL is a property of the file: a plain connection sees it too
        with sqlite3.connect(path) as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_api_over_postgresql_stores_every_turn(artifacts: Artifacts, db: Store) -> None:
    client = TestClient(create_app(artifacts, db, ServeConfig()))
    session = client.post("/v1/sessions", json={"user_id": "alice"})
    assert session.status_code == 201, session.text
    session_id = session.json()["id"]
    messages = ["tell me about elephants", "what sound does it make?", "and what do lions eat?"]
    position = 0
    for text in messages:
        reply = client.post(f"/v1/sessions/{session_id}/messages", json={"text": text})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["position"] == position and body["response_position"] > position
        position = body["response_position"] + 1
    feedback = client.post(f"/v1/sessions/{session_id}/feedback", json={"position": position - 1, "value": "positive"})
    assert feedback.status_code == 201, feedback.text

    detail = client.get(f"/v1/sessions/{session_id}")
    assert detail.status_code == 200, detail.text
    turns = detail.json()["conversation"]["turns"]
    assert len(turns) == position == db.counts()["turns"]
    assert [t["text"] for t in turns if t["speaker"] == "user"] == messages
    assert turns[-1]["meta"]["feedback"] == "positive"
    assert detail.json()["conversation"]["meta"]["arm"] == session.json()["arm"]
    assert detail.json()["session"]["created_at"] == session.json()["created_at"]

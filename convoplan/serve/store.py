"""The conversation store: every session, turn and reaction the server sees, through SQLAlchemy.

A SQLite file by default (`sqlite:///runs/serve.db`, in WAL mode so readers never block the writer), PostgreSQL by
URL (`postgresql+psycopg://user@127.0.0.1:5432/convoplan`). Four tables:

    sessions  id, user_id, arm, mode ("bot" | "assist"), domain, created_at, meta
    turns     (session_id, position) -> speaker, text, action, the whole canonical Turn as JSON, created_at
    feedback  session_id, position of the turn it is about, value ("positive" | "negative" | a rating), created_at
    shown     id of a suggest request, session_id (none for a conversation sent whole), position (turns before it),
              the suggestions shown as canonical Candidates, created_at, answered (the agent turn that said what
              became of them)

A turn's position is part of its key, so a turn can be neither lost nor stored twice: the server writes a user
message and the bot's response in one transaction, and a second writer at the same position fails instead of
interleaving. `conversation(id)` exports a session as a canonical `Conversation` (docs/format.md), with the arm in
`meta` and explicit feedback in the meta of the turn it is about, so stored sessions feed training and
`convoplan experiment report --db URL` directly. An agent turn that answered a suggest request carries the
suggestions shown as its candidates (the one it started from `selected`) and the agent's choice in `meta.choice`
(`Store.append_turns(..., answers=)`); a request nothing answered is an event `suggestions` at its position.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import JsonValue, TypeAdapter
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from convoplan.schema import Candidate, Conversation, Event, Turn

__all__ = ["SessionRecord", "ShownRecord", "Store", "StoreError", "StoreHealth", "StoreUnavailable"]

DEFAULT_URL = "sqlite:///runs/serve.db"
_TURN: TypeAdapter[Turn] = TypeAdapter(Turn)
_CANDIDATE: TypeAdapter[Candidate] = TypeAdapter(Candidate)
_CANDIDATES: TypeAdapter[list[Candidate]] = TypeAdapter(list[Candidate])


class _Answered(Exception):
    """Raised inside a write to roll it back: the suggest request was answered already (or is unknown)."""


class StoreError(ValueError):
    """A write the store refuses: an unknown session, or a turn position already taken."""


class StoreUnavailable(RuntimeError):
    """The database failed a read or a write (unreachable, disk full, read-only): nothing of that call was stored,
    and the same call may succeed later. The server answers 503."""


@dataclass(frozen=True)
class StoreHealth:
    """What `/healthz` reports of the store."""

    state: str
    """"ok"; "failing writes" (the last write failed, and a probe write still does: e.g. a full disk); or
    "unreachable" (a read fails)."""
    detail: str = ""
    """The database's own first line of the error."""
    since: str | None = None
    """When writes started failing (ISO 8601, UTC)."""


class _Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _UTC(TypeDecorator[dt.datetime]):
    """A time stamp that reads back in UTC, as written: SQLite keeps no zone (a naive value comes back) and
    PostgreSQL answers in the server's TimeZone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class SessionRecord(_Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    arm: Mapped[str] = mapped_column(String(100), index=True)
    mode: Mapped[str] = mapped_column(String(10))
    domain: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(_UTC, default=_now)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class _TurnRecord(_Base):
    __tablename__ = "turns"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    speaker: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The canonical Turn (candidates, scores, meta), fields at their default left out."""
    created_at: Mapped[dt.datetime] = mapped_column(_UTC, default=_now)


class _Probe(_Base):
    """One row that `Store.health` rewrites to learn whether the database takes writes again."""

    __tablename__ = "health_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[dt.datetime] = mapped_column(_UTC, default=_now)


class _FeedbackRecord(_Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(_UTC, default=_now)


class ShownRecord(_Base):
    """The suggestions one suggest request showed, kept until an agent turn says what became of them."""

    __tablename__ = "shown"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    """Turns in the conversation when they were shown: the position of the agent turn they were for."""
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """The suggestions in the order shown (their numbers), as canonical Candidates."""
    created_at: Mapped[dt.datetime] = mapped_column(_UTC, default=_now)
    answered: Mapped[int | None] = mapped_column(Integer, default=None)
    """Position of the agent turn that answered it; None while none has."""

    def shown(self) -> list[Candidate]:
        return _CANDIDATES.validate_python(self.candidates)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer, nor it them
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at every checkpoint; safe with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error  # the driver's own error, without SQLAlchemy's statement dump
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def _lock_key(session_id: str) -> int:
    """A session's PostgreSQL advisory-lock key: a signed 64-bit number from its id (the same in every process)."""
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big", signed=True)


class Store:
    """Sessions, turns and feedback in one database; every method is one transaction and safe across threads.

    A database error other than a refused write (`StoreError`) raises `StoreUnavailable`; a failed write is
    remembered, and `health()` then probes whether writes succeed again."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # One file shared by the server's worker threads; a writer waits up to 30 s for the lock.
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            options.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._failing: tuple[dt.datetime, str] | None = None
        """When writes started failing and why; None while they succeed."""
        self._guard = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[Session]:
        """A database session (a transaction committed at the end when `write`); a database failure other than an
        integrity error becomes `StoreUnavailable`, and a write's outcome updates the health state."""
        try:
            with self._sessions.begin() if write else self._sessions() as db:
                yield db
        except IntegrityError:
            raise
        except DBAPIError as error:
            detail = _first_line(error)
            if write:
                with self._guard:
                    self._failing = self._failing or (_now(), detail)
            raise StoreUnavailable(f"the store cannot be {'written' if write else 'read'}: {detail}") from error
        if write and self._failing is not None:
            with self._guard:
                self._failing = None

    def ping(self) -> None:
        """Raise `StoreUnavailable` if the database cannot be read."""
        with self._db() as db:
            db.execute(select(1))

    def health(self) -> StoreHealth:
        """The store's state: reads answer, and writes succeed, or (after a failed write) a probe write does."""
        try:
            self.ping()
        except StoreUnavailable as error:
            return StoreHealth("unreachable", str(error))
        if self._failing is not None:
            with contextlib.suppress(StoreUnavailable), self._db(write=True) as db:
                db.merge(_Probe(id=1, checked_at=_now()))
            failing = self._failing
            if failing is not None:
                return StoreHealth("failing writes", failing[1], failing[0].isoformat())
        return StoreHealth("ok")

    @contextlib.contextmanager
    def session_lock(self, session_id: str) -> Iterator[None]:
        """Hold the session's lock across processes: on PostgreSQL an advisory lock (on a connection of its own,
        released by the server if this process dies), so that replicas behind a load balancer handle one session's
        messages one at a time. On SQLite (one server process) nothing: the server's own per-session lock does."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = _lock_key(session_id)
        try:
            connection = self.engine.connect()
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()  # the lock is the session's, not the transaction's: end the transaction now
        except DBAPIError as error:
            raise StoreUnavailable(f"the store cannot lock session {session_id}: {_first_line(error)}") from error
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except DBAPIError:
                connection.invalidate()  # never back to the pool holding the lock: closing it releases the lock
            connection.close()

    # --- writes ---------------------------------------------------------------------------------------------

    def create_session(
        self, session_id: str, *, user_id: str, arm: str, mode: str, domain: str, meta: dict[str, JsonValue]
    ) -> SessionRecord:
        record = SessionRecord(id=session_id, user_id=user_id, arm=arm, mode=mode, domain=domain, meta=meta)
        with self._db(write=True) as db:
            db.add(record)
        return record

    def add_shown(self, request_id: str, session_id: str | None, position: int, shown: Sequence[Candidate]) -> None:
        """Keep what suggest request `request_id` showed (at `position` of session `session_id`, if any)."""
        candidates = [_CANDIDATE.dump_python(c, mode="json", exclude_defaults=True) for c in shown]
        record = ShownRecord(id=request_id, session_id=session_id, position=position, candidates=candidates)
        try:
            with self._db(write=True) as db:
                db.add(record)
        except IntegrityError:
            raise StoreError(f"suggest request {request_id} is already stored, or no session {session_id}") from None

    def append_turns(self, session_id: str, position: int, turns: Sequence[Turn], answers: str | None = None) -> None:
        """Store `turns` at positions `position`, `position + 1`, ... in one transaction (all or none); with
        `answers`, the first of them answers that suggest request (once: a second answer is a `StoreError`)."""
        rows = [
            _TurnRecord(
                session_id=session_id,
                position=position + offset,
                speaker=turn.speaker,
                text=turn.text,
                action=turn.action,
                data=_TURN.dump_python(turn, mode="json", exclude_defaults=True),
            )
            for offset, turn in enumerate(turns)
        ]
        try:
            with self._db(write=True) as db:
                db.add_all(rows)
                if answers is not None:
                    answer = (
                        update(ShownRecord)
                        .where(ShownRecord.id == answers, ShownRecord.answered.is_(None))
                        .values(answered=position)
                    )
                    if db.execute(answer).rowcount != 1:  # type: ignore[attr-defined]
                        raise _Answered
        except IntegrityError:
            raise StoreError(f"session {session_id}: turn {position} is already stored, or no such session") from None
        except _Answered:  # (the transaction rolled back: the turn is not stored either)
            raise StoreError(f"suggest request {answers} was already answered, or is unknown") from None

    def add_feedback(self, session_id: str, position: int, value: str) -> None:
        try:
            with self._db(write=True) as db:
                db.add(_FeedbackRecord(session_id=session_id, position=position, value=value))
        except IntegrityError:
            raise StoreError(f"no session {session_id}") from None

    # --- reads ----------------------------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionRecord | None:
        with self._db() as db:
            return db.get(SessionRecord, session_id)

    def shown(self, request_id: str) -> ShownRecord | None:
        """What suggest request `request_id` showed (None for an unknown id)."""
        with self._db() as db:
            return db.get(ShownRecord, request_id)

    def turns(self, session_id: str) -> list[Turn]:
        """The session's turns in order (empty for an unknown session)."""
        with self._db() as db:
            return _turns(db, session_id)

    def turn_count(self, session_id: str) -> int:
        """How many turns the session has stored (0 for an unknown session)."""
        with self._db() as db:
            query = select(func.count()).select_from(_TurnRecord).where(_TurnRecord.session_id == session_id)
            return db.scalar(query) or 0

    def conversation(self, session_id: str) -> Conversation | None:
        """The session as a canonical conversation (None for an unknown session)."""
        record = self.session(session_id)
        return None if record is None else self.export(record)

    def conversations(self, *, mode: str | None = None) -> Iterator[Conversation]:
        """Every stored session as a canonical conversation, oldest first; sessions without turns are left out."""
        with self._db() as db:
            query = select(SessionRecord).order_by(SessionRecord.created_at, SessionRecord.id)
            records = list(db.scalars(query if mode is None else query.where(SessionRecord.mode == mode)))
        for record in records:
            conversation = self.export(record)
            if conversation.turns:
                yield conversation

    def counts(self) -> dict[str, int]:
        """Rows per table (what the load test compares with what it sent)."""
        with self._db() as db:
            return {
                "sessions": db.scalar(select(func.count()).select_from(SessionRecord)) or 0,
                "turns": db.scalar(select(func.count()).select_from(_TurnRecord)) or 0,
                "feedback": db.scalar(select(func.count()).select_from(_FeedbackRecord)) or 0,
                "shown": db.scalar(select(func.count()).select_from(ShownRecord)) or 0,
            }

    def export(self, record: SessionRecord) -> Conversation:
        """A stored session (its record already read) as a canonical conversation."""
        with self._db() as db:
            turns = _turns(db, record.id)
            feedback = db.execute(
                select(_FeedbackRecord.position, _FeedbackRecord.value)
                .where(_FeedbackRecord.session_id == record.id)
                .order_by(_FeedbackRecord.id)
            ).all()
            unanswered = list(
                db.scalars(
                    select(ShownRecord)
                    .where(ShownRecord.session_id == record.id, ShownRecord.answered.is_(None))
                    .order_by(ShownRecord.created_at, ShownRecord.id)
                )
            )
        events = [
            Event(
                "suggestions",
                min(r.position, len(turns)),
                {"request": r.id, "candidates": cast(JsonValue, r.candidates)},
            )
            for r in unanswered  # (a request's candidates are canonical JSON already)
        ]
        for position, value in feedback:  # the latest reaction to a turn wins
            if 0 <= position < len(turns):
                turns[position].meta["feedback"] = value
        meta: dict[str, JsonValue] = {
            **record.meta,
            "arm": record.arm,
            "dm": record.arm,
            "user_id": record.user_id,
            "mode": record.mode,
            "created_at": record.created_at.isoformat(),
        }
        return Conversation(id=record.id, domain=record.domain, turns=turns, events=events, meta=meta)


def _turns(db: Session, session_id: str) -> list[Turn]:
    rows = db.scalars(
        select(_TurnRecord.data).where(_TurnRecord.session_id == session_id).order_by(_TurnRecord.position)
    )
    return [_TURN.validate_python(data) for data in rows]

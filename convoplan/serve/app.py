"""The HTTP API (FastAPI): agent-assist suggestions, bot sessions, feedback, health and metrics, and the console.

    POST /v1/suggest                   the conversation so far (or a stored session) -> next actions, scores and
                                       suggestions for each; with "stream": true, server-sent events as they are
                                       written
    POST /v1/sessions                  start a session: the user is assigned an A/B arm by a hash of their id
    POST /v1/sessions/{id}/messages    bot mode: a user message -> the composed response with every step's
                                       candidates and scores; assist mode: store a user or agent message
    POST /v1/sessions/{id}/feedback    a thumbs up or down on a turn
    GET  /v1/sessions/{id}             the session as a canonical conversation
    GET  /healthz, GET /metrics        liveness (the store is reachable) and Prometheus text
    GET  /                             the web console (convoplan/serve/console)

Every turn is in the store before its answer leaves: a user message and the bot's response are written in one
transaction, so a restart loses nothing, and a session whose bot is not in memory (after a restart, or evicted) is
rebuilt from its stored turns (`Bot.replay`). Messages of one session are handled one at a time; sessions run in
parallel on the server's worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from annotated_types import Ge, Interval
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from convoplan.compose.loop import STOP, Bot
from convoplan.configs import Config
from convoplan.lm.choices import answered, shown_candidate
from convoplan.lm.generate import Cancelled
from convoplan.lm.model import Precision
from convoplan.lm.suggest import Plan, SuggestConfig, Suggester, Suggestion
from convoplan.schema import MAX_NESTING, Candidate, Turn, check_json, to_json
from convoplan.serve.artifacts import Artifacts
from convoplan.serve.assignment import assign_arm
from convoplan.serve.middleware import ApiKey, BodyLimit, Measure, SecurityHeaders
from convoplan.serve.store import SessionRecord, Store, StoreError, StoreUnavailable

__all__ = ["ServeConfig", "create_app"]

CONSOLE = Path(__file__).with_name("console")
SWAGGER_UI = Path(__file__).with_name("swagger")
"""Swagger UI's files for /docs (swagger-ui-dist, see its README.md): served from here, never from a CDN."""
MAX_TEXT = 2000
"""Characters in one message (longer ones get 422)."""
STREAM_TIMEOUT = 300.0
"""Seconds a streamed answer may go without an event before it ends with an error (waiting for a worker included)."""
MAX_ID = 200
MAX_ACTION = 100
SESSION_ID = re.compile(r"[0-9a-f]{32}")
_T = TypeVar("_T")


@dataclass
class ServeConfig(Config):
    """Limits and options of the server."""

    max_body_bytes: Annotated[int, Ge(1024)] = 64 * 1024
    """Largest request body; a larger one gets 413 (at least 1 kB: below it no request would fit)."""
    max_turns: Annotated[int, Ge(1)] = 400
    """Most turns in a session or a /v1/suggest conversation (each bot response stores one turn per utterance and
    one closing turn); past it a message gets 422."""
    api_key: str | None = None
    """When set, /v1/* requires it in the X-API-Key header (or as a Bearer token); an empty key is refused (an
    unset shell variable must not open the server)."""
    cached_bots: Annotated[int, Ge(1)] = 1000
    """Bots kept in memory; a session whose bot was evicted is rebuilt from the store."""
    salt: str = ""
    """The experiment's salt in the arm assignment hash (change it to reshuffle users)."""
    max_actions: Annotated[int, Interval(ge=1, le=20)] = 5
    """Most next actions /v1/suggest writes suggestions for (the API takes at most 20)."""
    max_suggestions: Annotated[int, Interval(ge=1, le=20)] = 5
    """Most suggestions per action (the API takes at most 20, as `SuggestConfig.n`)."""
    embedding_cache: Annotated[int, Ge(0)] = 200_000
    """Sentence vectors the server keeps in memory (1.5 kB each; the oldest go first): a long-running server meets
    new texts forever."""
    model_workers: Annotated[int, Ge(1)] = field(
        default_factory=lambda: os.cpu_count() or 1, metadata={"default": "the CPU cores"}
    )
    """Requests running models at once (the others wait their turn): more than the cores only adds contention."""
    torch_threads: Annotated[int, Ge(0)] = 0
    """torch threads each of those requests computes with; 0 = the cores shared out among the workers (at least 1).
    Workers x threads above the cores oversubscribes them: on 2 loaded cores 2 threads per process ran 3-23x
    slower than 1. More workers serve more requests at once; more threads per worker cut one request's latency."""
    precision: Precision = "fp32"
    """How the LMs compute: fp32, int8 (dynamic quantisation of the linear layers, CPU) or bf16 (CUDA)."""
    drop_unsupported: bool = False
    """Leave out the suggestions with a claim that serve.json's knowledge file does not support (each suggestion's
    `unsupported`): an agent then never sees a statement that no source makes. Without a knowledge file nothing is
    checked or dropped."""
    suggest: SuggestConfig = field(default_factory=SuggestConfig)
    """Agent-assist decoding (temperature, top-p, max_new_tokens) and the next-action threshold under which a
    message is written without an action."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the numbers' ranges
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty: give a real key, or none to serve without one")

    @property
    def threads(self) -> int:
        """The torch threads per worker: `torch_threads`, or else the cores divided among the workers."""
        return self.torch_threads or max(1, (os.cpu_count() or 1) // self.model_workers)


# --- request and response bodies ----------------------------------------------------------------------------


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, dict keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _storable(value: _T) -> _T:
    """Refuse what a store cannot keep or a JSON line cannot carry: NUL (PostgreSQL text has none) and lone
    surrogates (not UTF-8), anywhere in a string or a JSON value."""
    for text in _strings(value):
        if "\x00" in text:
            raise ValueError("NUL characters are not allowed")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError("lone surrogates are not text (not UTF-8 encodable)") from None
    return value


Storable = AfterValidator(_storable)
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"\S"), Storable]
Name = Annotated[str, Field(min_length=1, max_length=MAX_ID), Storable]
Action = Annotated[str, Field(min_length=1, max_length=MAX_ACTION), Storable]
Meta = Annotated[
    dict[str, JsonValue], Field(max_length=50), AfterValidator(lambda meta: check_json(meta, MAX_NESTING - 1)), Storable
]
"""A client's free-form meta: the format's limits (finite numbers; nesting one level under the format's, since the
server may file it one level down, under a turn's "client"), and what the store can keep."""


class Body(BaseModel):
    """A request body: a misspelt field is an error (422), as in the JSON Lines format, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Message(Body):
    speaker: Literal["agent", "user"]
    text: Text
    action: Action | None = None


class SuggestRequest(Body):
    conversation: list[Message] = Field(default_factory=list)
    """The conversation so far (or give session_id to use a stored session's)."""
    session_id: Name | None = None
    action: Action | None = None
    """Write for this action instead of the predicted ones."""
    actions: int = Field(3, ge=1, le=20)
    """Next actions to write suggestions for."""
    n: int = Field(3, ge=1, le=20)
    """Suggestions per action."""
    stream: bool = False
    """Answer with server-sent events as the suggestions are written (text/event-stream): `plans` (the actions,
    before any text), `text` ({action, suggestion, text}: the next piece of one suggestion), then `done` (the whole
    answer, as without streaming) or `error` ({detail})."""


class SourceOut(BaseModel):
    """A passage of the knowledge file that supports a suggestion's claim."""

    id: str
    source: str
    """Where the passage comes from ("the convoplan animal guide", a URL)."""
    text: str


class SuggestionOut(BaseModel):
    number: int = 0
    """Its number in this answer, counting across the actions in order from 0 (a message's `choice` names it)."""
    text: str
    score: float
    """Written: the mean token log-probability under the LM. Retrieved: its context's cosine similarity to this
    conversation's."""
    finished: bool
    origin: Literal["lm", "exemplar"] = "lm"
    """Written by the LM, or a past agent message retrieved from the logs (serve.json `suggestions`)."""
    source: str | None = None
    """A retrieved message's place in the logs: `conversation id#turn index`."""
    checked: bool = False
    """Whether its claims were checked against the knowledge file (serve.json `knowledge`)."""
    sources: list[SourceOut] = Field(default_factory=list)
    """The passages that support its claims."""
    unsupported: list[str] = Field(default_factory=list)
    """Its claims (statements, numbers) that no passage of the entity in focus supports."""


class ActionOut(BaseModel):
    action: str | None
    """None: written without an action (fallback)."""
    score: float | None
    """The next-action model's score (None when given or after a fallback)."""
    reason: str
    suggestions: list[SuggestionOut]


class SuggestResponse(BaseModel):
    actions: list[ActionOut]
    seconds: float
    request_id: str | None = None
    """What the agent's message names in its `choice` (the store keeps what was shown); None when the store could
    not keep it."""


class SessionRequest(Body):
    user_id: Name | None = None
    """Decides the A/B arm (the same user always gets the same arm); a random one when absent."""
    mode: Literal["bot", "assist"] = "bot"
    meta: Meta = Field(default_factory=dict)


class SessionOut(BaseModel):
    id: str
    user_id: str
    arm: str
    mode: str
    created_at: str


class Choice(Body):
    """What an agent's message did with the suggestions of one suggest request."""

    request_id: Name
    """The suggest answer's `request_id`."""
    suggestion: int | None = Field(None, ge=0)
    """The `number` of the suggestion the agent started from (sent as it was, or edited); None: their own text."""


class MessageRequest(Body):
    text: Text
    speaker: Literal["agent", "user"] = "user"
    """Bot sessions take user messages only; assist sessions store either."""
    action: Action | None = None
    """An agent message's action (assist mode); by default that of the suggestion in `choice`."""
    choice: Choice | None = None
    """An agent message sent after suggestions were shown (assist mode): which one it started from, if any. The
    server stores the suggestions shown as the turn's candidates and the outcome (taken, edited, own) in its
    `meta.choice` (docs/format.md)."""
    meta: Meta = Field(default_factory=dict)
    """Stored with the turn."""


class CandidateOut(BaseModel):
    text: str
    action: str | None
    provider: str | None
    score: float | None
    selected: bool


class StepOut(BaseModel):
    text: str
    action: str | None
    position: int
    candidates: list[CandidateOut]


class MessageResponse(BaseModel):
    position: int
    """The stored position of the message sent."""
    response: str | None = None
    """The bot's response (None in assist mode)."""
    response_position: int | None = None
    """Position of the response's closing turn (feedback goes there)."""
    steps: list[StepOut] = Field(default_factory=list)
    """Every composition step: the utterance chosen, its candidates and the DM's scores."""
    ended: bool = False
    """The bot ended the conversation."""


class FeedbackRequest(Body):
    position: int = Field(ge=0)
    """The turn the feedback is about (a bot response's `response_position`)."""
    value: Literal["positive", "negative"]


class SessionDetail(BaseModel):
    session: SessionOut
    conversation: dict[str, Any]
    """The canonical conversation (docs/format.md)."""


# --- sessions in memory -------------------------------------------------------------------------------------


class _Sessions:
    """Bots of live sessions (a bounded LRU cache) and one lock per session."""

    def __init__(self, artifacts: Artifacts, store: Store, capacity: int) -> None:
        self.artifacts, self.store, self.capacity = artifacts, store, capacity
        self._bots: OrderedDict[str, Bot] = OrderedDict()
        # A session's lock lives as long as some request holds a reference to it, so concurrent requests of one
        # session share it, and locks of finished sessions go away by themselves.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()
        """Guards the two dicts (never held while a bot composes)."""

    def lock(self, session_id: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = threading.Lock()
            return lock

    def bot(self, record: SessionRecord) -> Bot:
        """The session's bot (call under its lock): cached, or rebuilt from the stored turns."""
        with self._guard:
            bot = self._bots.get(record.id)
            if bot is not None:
                self._bots.move_to_end(record.id)
                return bot
        bot = self.artifacts.new_bot(record.arm, record.id)
        bot.replay(self.store.turns(record.id))
        self.keep(record.id, bot)
        return bot

    def keep(self, session_id: str, bot: Bot) -> None:
        with self._guard:
            self._bots[session_id] = bot
            while len(self._bots) > self.capacity:
                self._bots.popitem(last=False)  # the least recently used

    def forget(self, session_id: str) -> None:
        with self._guard:
            self._bots.pop(session_id, None)


def _ended(turns: list[Turn]) -> bool:
    """The bot said goodbye: its last response closed with no utterance chosen (and so no candidates)."""
    return bool(turns) and turns[-1].speaker == "agent" and turns[-1].action == STOP and not turns[-1].candidates


def _candidate_out(candidate: Candidate) -> CandidateOut:
    return CandidateOut(
        text=candidate.text,
        action=candidate.action,
        provider=candidate.provider,
        score=candidate.score,
        selected=candidate.selected,
    )


def _session_out(record: SessionRecord) -> SessionOut:
    return SessionOut(
        id=record.id, user_id=record.user_id, arm=record.arm, mode=record.mode, created_at=record.created_at.isoformat()
    )


def _event(name: str, data: object) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=True)}\n\n"


def _suggestion_out(s: Suggestion) -> SuggestionOut:
    return SuggestionOut(
        text=s.text,
        score=s.score,
        finished=s.finished,
        origin=s.origin,
        source=s.source,
        checked=s.checked,
        sources=[SourceOut(id=p.id, source=p.source, text=p.text) for p in s.sources],
        unsupported=list(s.unsupported),
    )


def _kept(suggestions: list[Suggestion], drop_unsupported: bool) -> list[Suggestion]:
    """The suggestions shown: with `drop_unsupported`, not those that make an unsupported claim."""
    return [s for s in suggestions if not (drop_unsupported and s.unsupported)]


def _action_out(plan: Plan, suggestions: list[Suggestion], drop_unsupported: bool = False) -> ActionOut:
    """An action's answer; with `drop_unsupported`, without the suggestions that make an unsupported claim."""
    shown = _kept(suggestions, drop_unsupported)
    return ActionOut(
        action=plan.action, score=plan.action_score, reason=plan.reason, suggestions=[_suggestion_out(s) for s in shown]
    )


# --- the app ------------------------------------------------------------------------------------------------


def create_app(artifacts: Artifacts, store: Store, config: ServeConfig | None = None) -> FastAPI:
    """The API over loaded artifacts and a store (`convoplan serve` runs it with uvicorn)."""
    config = config or ServeConfig()
    app = FastAPI(
        title="convoplan",
        version="0.1.0",
        description="Next actions and suggestions for agents, composed bot responses, and the conversation store.",
        docs_url=None,  # served below from local files: the default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    sessions = app.state.sessions = _Sessions(artifacts, store, config.cached_bots)
    computing = threading.BoundedSemaphore(config.model_workers)
    registry = CollectorRegistry()
    requests = Counter("convoplan_requests", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram(
        "convoplan_request_seconds",
        "Request latency",
        ["route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    turns_stored = Counter("convoplan_turns_stored", "Turns written to the store", ["mode"], registry=registry)
    busy = Gauge("convoplan_model_workers_busy", "Model workers computing now", registry=registry)
    cancelled = Counter(
        "convoplan_streams_cancelled", "Streamed suggestions stopped because their client left", registry=registry
    )

    @contextlib.contextmanager
    def worker(cancel: threading.Event | None = None) -> Iterator[None]:
        """One of the `model_workers` slots for a model computation. A waiter whose `cancel` is set (its client
        has gone) gives up with `Cancelled` instead of computing for no one."""
        while not computing.acquire(timeout=None if cancel is None else 0.05):
            if cancel is not None and cancel.is_set():
                raise Cancelled("the client left while waiting for a model worker")
        busy.inc()
        try:
            yield
        finally:
            busy.dec()
            computing.release()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input as UTF-8, which a lone surrogate cannot be: escape everything.
        body = json.dumps({"detail": jsonable_encoder(error.errors())}, ensure_ascii=True, default=repr)
        return Response(body, status_code=422, media_type="application/json")

    def observe(route: str, status: int, seconds: float) -> None:
        latency.labels(route).observe(seconds)
        requests.labels(route, str(status)).inc()

    # Added later = outer: the key is checked first, then the body's size, both before any body is parsed; the
    # headers go on every response, and `Measure` (outermost) counts 401s and 413s too.
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(ApiKey, key=config.api_key)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Measure, observe=observe)

    def record_of(session_id: str) -> SessionRecord:
        # Session ids are 32 hex digits (uuid4().hex); anything else is no session, and never reaches the database.
        record = store.session(session_id) if SESSION_ID.fullmatch(session_id) else None
        if record is None:
            raise HTTPException(404, f"no session {session_id!r}")
        return record

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(request.url_for("console", path="/"))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="convoplan API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, error: StoreUnavailable) -> Response:
        # Nothing of the request was stored (each write is one transaction): the client may send it again.
        logging.getLogger("convoplan.serve").warning("%s %s: %s", request.method, request.url.path, error)
        detail = f"{error}; nothing was stored, try again later"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 when the store answers reads and takes writes, else 503 with the store's state (for load balancers
        and orchestrators); after a failed write it probes whether writes succeed again."""
        health = store.health()
        store_state = {k: v for k, v in asdict(health).items() if v}
        if health.state != "ok":
            return JSONResponse({"status": "store unavailable", "store": store_state}, 503)
        return JSONResponse(
            {
                "status": "ok",
                "store": store_state,
                "arms": list(artifacts.manifest.arms),
                "weights": dict(artifacts.weights),
                "control": artifacts.control,
                "assist": artifacts.suggester is not None,
                "assist_arms": list(artifacts.assist),
            }
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/suggest",
        response_model=SuggestResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: server-sent events"}},
    )
    def suggest(body: SuggestRequest) -> Response | SuggestResponse:
        """Next actions with their scores, and suggestions for each, after the conversation so far (streamed as
        server-sent events with `stream`)."""
        suggester = artifacts.suggester
        if suggester is None:
            raise HTTPException(404, "agent assist is off: the artifacts have no LM (serve.json: lm)")
        if body.session_id is not None:
            record = record_of(body.session_id)
            history = store.turns(body.session_id)
            if record.mode == "assist":  # the agent's A/B arm (serve.json assist_arms), where there are arms
                suggester = artifacts.suggester_of(record.arm) or suggester
        else:
            history = [Turn(speaker=m.speaker, text=m.text, action=m.action) for m in body.conversation]
        if len(history) > config.max_turns:
            raise HTTPException(422, f"the conversation has {len(history)} turns; the limit is {config.max_turns}")
        if body.action is not None and body.action not in suggester.lm.codec.actions:
            known = ", ".join(a for a in suggester.lm.codec.actions if a != STOP)
            raise HTTPException(422, f"unknown action {body.action!r}; the model knows: {known}")
        actions, n = min(body.actions, config.max_actions), min(body.n, config.max_suggestions)
        if body.stream:
            return StreamingResponse(
                _stream(suggester, history, body.action, actions, n, body.session_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # no proxy may hold events back
            )
        started = time.perf_counter()
        with worker():
            labelled = suggester.label(history)
            plans = suggester.plans(labelled, body.action, actions)
            written = suggester.suggestions(labelled, plans, n)
        return shown(plans, written, started, body.session_id, len(history))

    def shown(
        plans: list[Plan], groups: list[list[Suggestion]], started: float, session_id: str | None, position: int
    ) -> SuggestResponse:
        """The answer to a suggest request, its suggestions numbered, and what it shows kept in the store under a
        new request id (none when the store fails: the suggestions still go out)."""
        kept = [_kept(group, config.drop_unsupported) for group in groups]
        actions = [_action_out(plan, group) for plan, group in zip(plans, kept, strict=True)]
        for number, out in enumerate(out for action in actions for out in action.suggestions):
            out.number = number
        candidates = [shown_candidate(s) for group in kept for s in group]
        request_id = uuid.uuid4().hex
        try:
            store.add_shown(request_id, session_id, position, candidates)
        except (StoreError, StoreUnavailable):
            logging.getLogger("convoplan.serve").exception("the suggestions shown could not be stored")
            return SuggestResponse(actions=actions, seconds=time.perf_counter() - started)
        return SuggestResponse(actions=actions, seconds=time.perf_counter() - started, request_id=request_id)

    async def _stream(
        suggester: Suggester, history: list[Turn], action: str | None, actions: int, n: int, session_id: str | None
    ) -> AsyncIterator[str]:
        """The events of one streamed suggest request. The models run on a thread of their own and hand events to
        the event loop; when the client leaves, Starlette cancels this generator, its `finally` sets `cancel`, and
        the thread stops: before its next decoding step, or before it starts if it was still waiting for a worker."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(event: str | None) -> None:
            if not cancel.is_set():
                with contextlib.suppress(RuntimeError):  # the loop has closed (the server is stopping)
                    loop.call_soon_threadsafe(events.put_nowait, event)

        retrieving, writing = suggester.shares(n)
        found: list[list[Suggestion]] = []  # the retrieved suggestions shown: text events number the written after

        def on_text(row: int, text: str) -> None:  # row = plan * writing + k; the retrieved ones come first
            plan, k = divmod(row, writing)
            put(_event("text", {"action": plan, "suggestion": len(found[plan]) + k, "text": text}))

        def work() -> None:
            started = time.perf_counter()
            try:
                with worker(cancel):
                    labelled = suggester.label(history)
                    plans = suggester.plans(labelled, action, actions)
                    retrieved = suggester.check(labelled, suggester.retrieve(labelled, plans, retrieving))
                    found.extend(_kept(group, config.drop_unsupported) for group in retrieved)
                    # The plans, with the retrieved suggestions whole (checked): they cost no LM and show at once.
                    outs = [_action_out(plan, hits).model_dump() for plan, hits in zip(plans, found, strict=True)]
                    put(_event("plans", {"actions": outs, "n": n}))
                    written = suggester.write_plans(labelled, plans, writing, on_text, cancel) if writing else []
                    written = suggester.check(labelled, written)
                groups = [hits + group for hits, group in zip(found, written or [[] for _ in plans], strict=True)]
                put(_event("done", shown(plans, groups, started, session_id, len(history)).model_dump()))
            except Cancelled:
                cancelled.inc()
            except Exception as error:  # the status line has gone out: the failure can only be an event
                logging.getLogger("convoplan.serve").exception("streamed suggest failed")
                put(_event("error", {"detail": f"the suggestions failed: {type(error).__name__}"}))
            finally:
                put(None)

        threading.Thread(target=work, name="suggest-stream", daemon=True).start()
        try:
            while (event := await asyncio.wait_for(events.get(), STREAM_TIMEOUT)) is not None:
                yield event
        except TimeoutError:
            yield _event("error", {"detail": f"no progress in {STREAM_TIMEOUT:.0f} s"})
        finally:
            cancel.set()  # also when the client has gone: the task running this generator was cancelled

    @app.post("/v1/sessions", status_code=201)
    def create_session(body: SessionRequest) -> SessionOut:
        """Start a session; its A/B arm follows from a hash of the user id (stored with it)."""
        session_id = uuid.uuid4().hex
        user_id = body.user_id or f"anonymous-{session_id}"
        # An assist session's user is the agent: it gets a suggestion arm where there are some, else the bot's.
        weights = artifacts.assist_weights if body.mode == "assist" and artifacts.assist else artifacts.weights
        arm = assign_arm(user_id, weights, config.salt)
        record = store.create_session(
            session_id, user_id=user_id, arm=arm, mode=body.mode, domain=artifacts.manifest.domain, meta=body.meta
        )
        return _session_out(record)

    @app.get("/v1/sessions/{session_id}")
    def get_session(session_id: str) -> SessionDetail:
        record = record_of(session_id)
        conversation = json.loads(to_json(store.export(record)))
        return SessionDetail(session=_session_out(record), conversation=conversation)

    @app.post("/v1/sessions/{session_id}/messages")
    def post_message(session_id: str, body: MessageRequest) -> MessageResponse:
        """Bot mode: the user's message -> the bot's response. Assist mode: store the message."""
        record = record_of(session_id)
        # One message of a session at a time: in this process, and across replicas on one PostgreSQL.
        with sessions.lock(session_id), store.session_lock(session_id):
            if record.mode == "assist":
                return _store_assist(record, body)
            if body.speaker != "user":
                raise HTTPException(422, "a bot session takes user messages only (speaker: user)")
            return _bot_turn(record, body)

    def _store_assist(record: SessionRecord, body: MessageRequest) -> MessageResponse:
        position = store.turn_count(record.id)
        if position + 1 > config.max_turns:
            raise HTTPException(422, f"the session has reached its limit of {config.max_turns} turns")
        turn = Turn(speaker=body.speaker, text=body.text, action=body.action, meta=body.meta)
        choice = body.choice
        if choice is not None:
            turn = _answer(turn, record, choice)
        if turn.action is not None:
            turn.action_source = "agent"  # chosen by the human agent: a human label
        try:
            store.append_turns(record.id, position, [turn], answers=None if choice is None else choice.request_id)
        except StoreError as error:
            raise HTTPException(409, str(error)) from None
        turns_stored.labels("assist").inc()
        return MessageResponse(position=position)

    def _answer(turn: Turn, record: SessionRecord, choice: Choice) -> Turn:
        """The agent's turn with its answer to the suggest request `choice` names filed (`choices.answered`); 422
        where the choice does not fit what that request showed."""
        if turn.speaker != "agent":
            raise HTTPException(422, "choice: only an agent message answers suggestions (speaker: agent)")
        request = store.shown(choice.request_id)
        if request is None or request.session_id != record.id:
            raise HTTPException(422, f"choice: no suggest request {choice.request_id!r} in this session")
        if request.answered is not None:
            raise HTTPException(409, f"choice: request {choice.request_id} was answered by turn {request.answered}")
        candidates = request.shown()
        if choice.suggestion is not None and choice.suggestion >= len(candidates):
            count = len(candidates)
            raise HTTPException(422, f"choice: suggestion {choice.suggestion} was not shown (it showed {count})")
        seconds = (dt.datetime.now(dt.UTC) - request.created_at).total_seconds()
        return answered(turn, request.id, candidates, choice.suggestion, request.position, seconds)

    def _bot_turn(record: SessionRecord, body: MessageRequest) -> MessageResponse:
        bot = sessions.bot(record)
        if len(bot.state.turns) != store.turn_count(record.id):  # another replica answered since: catch up
            sessions.forget(record.id)
            bot = sessions.bot(record)
        turns = bot.state.turns
        if _ended(turns):
            raise HTTPException(409, "the bot has ended this conversation; start a new session")
        position = len(turns)
        if position + 1 + bot.config.max_utterances + 1 > config.max_turns:
            raise HTTPException(422, f"the session has reached its limit of {config.max_turns} turns")
        try:
            bot.hear(body.text)
            if body.meta:
                turns[-1].meta["client"] = body.meta
            with worker():
                response = bot.respond()
            store.append_turns(record.id, position, turns[position:])
        except BaseException as error:
            sessions.forget(record.id)  # its state is ahead of the store: rebuild it from the store next time
            if isinstance(error, StoreError):
                raise HTTPException(409, str(error)) from None
            raise
        turns_stored.labels("bot").inc(len(turns) - position)
        steps = [
            StepOut(
                text=t.text,
                action=t.action,
                position=position + 1 + i,
                candidates=[_candidate_out(c) for c in t.candidates],
            )
            for i, t in enumerate(response.steps[:-1])
        ]
        return MessageResponse(
            position=position,
            response=response.text,
            response_position=len(turns) - 1,
            steps=steps,
            ended=response.ends_conversation,
        )

    @app.post("/v1/sessions/{session_id}/feedback", status_code=201)
    def feedback(session_id: str, body: FeedbackRequest) -> dict[str, str]:
        """A reaction to a turn (thumbs up or down on a bot response, or on an agent message)."""
        record_of(session_id)
        count = store.turn_count(session_id)
        if body.position >= count:
            raise HTTPException(422, f"position {body.position} is past the session's last turn ({count - 1})")
        store.add_feedback(session_id, body.position, body.value)
        return {"status": "stored"}

    app.mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    return app

"""ASGI middleware of the server, outermost first: the request metrics, the headers every response carries, the
API key, the body limit.

Each runs before the endpoint reads or parses anything, so a request without the key gets 401 whatever its body
(not 422 for malformed JSON), and a body over the limit gets 413 whether it declares its length or is chunked.
All are plain ASGI (no `BaseHTTPMiddleware`, which runs the endpoint in a task of its own): a streamed response's
endpoint hears its client leave, and stops.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["CONSOLE_POLICY", "DOCS_POLICY", "ApiKey", "BodyLimit", "Measure", "SecurityHeaders"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

CONSOLE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The Content-Security-Policy of everything but the API docs: only this server's own files, no inline code."""
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""/docs: Swagger UI starts from one inline script; its files are served from here too, never from a CDN."""


class ApiKey:
    """Paths under /v1/ require the key, in the X-API-Key header or as a Bearer token; others are open (the
    console, the docs, /healthz, /metrics)."""

    def __init__(self, app: App, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if hmac.compare_digest(given.encode(), self.key.encode()):
            await self.app(scope, receive, send)
            return
        detail = "missing or wrong API key (send it in the X-API-Key header)"
        refusal = JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """A request body over `limit` bytes gets 413, whether it declares its length or not: a declared length is
    checked up front and the body counted as it streams; a body of undeclared length (chunked) is read, up to the
    limit, before the endpoint sees it."""

    def __init__(self, app: App, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is None:
            await self._buffered(scope, receive, send)
            return
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than {self.limit} bytes"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


class SecurityHeaders:
    """Every response says what a deployment expects: a Content-Security-Policy (the console's, or the docs'),
    `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] == "/docs" or scope["path"].startswith("/docs/")
        policy = DOCS_POLICY if docs else CONSOLE_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", policy.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


class Measure:
    """Hands `observe(route, status, seconds)` every HTTP request once it is answered: the route's path template
    ("unmatched" when none matched), the status sent (500 when the app failed before sending one), the seconds."""

    def __init__(self, app: App, observe: Callable[[str, int, float], None]) -> None:
        self.app, self.observe = app, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.observe(route, status, time.perf_counter() - started)

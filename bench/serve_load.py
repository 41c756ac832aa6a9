"""Load test of `convoplan serve`: concurrent bot sessions, then concurrent /v1/suggest calls, and a check that no
turn was lost.

Starts `convoplan serve` as a child process on a free loopback port with a fresh SQLite store (or `--db URL`) on
the artifacts the main job serves (`--artifacts`, default runs/demo/artifacts, written by `convoplan demo
--no-serve`: SAQL against the supervised RNN DM as A/B arms, the LM as a content provider, the next-action model).
Then:

1. bot phase: `--sessions` users at once, each sending `--turns` messages (drawn, seeded, from a fixed list of
   plausible messages about animals) to its bot session, one after the other; a user whose bot says goodbye
   (`ended`) starts a new session (counted as a restart);
2. suggest phase: `--suggest-requests` POST /v1/suggest {"session_id"} calls over the stored sessions,
   `--suggest-concurrency` at a time;
3. verification: every session's stored turns (GET /v1/sessions/{id}) against the count its answers imply
   (the last `response_position` + 1), user messages stored against user messages answered, and the store's row
   counts (`Store(url).counts()`) before and after.

Prints and writes OUT/report.md and OUT/report.json (latency p50/p99/mean/max per request kind, requests per
second, errors by status, the verification, the machine and the command); the server's log is OUT/server.log.
The server is stopped at the end, also on an error. The load generator runs on the same machine as the server.

    .venv/bin/python bench/serve_load.py --sessions 50 --turns 20 --out runs/bench-serve
    .venv/bin/python bench/serve_load.py --backend pytorch --backend ctranslate2-int8_float32 --out runs/bench-serve

With several `--backend`s the same load runs on each in turn (the artifacts' LMs exported for CTranslate2 into a
temp copy), each report under OUT/BACKEND.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from convoplan.atomic import atomic_write
from convoplan.serve.process import ServerProcess, free_port
from convoplan.serve.store import Store

MESSAGES = (
    "hi",
    "hello!",
    "tell me about elephants",
    "can I hear what a lion sounds like?",
    "I really like dolphins",
    "what about penguins?",
    "can we talk about giraffes?",
    "tell me about koalas",
    "how fast is a cheetah?",
    "what do pandas eat?",
    "yes please",
    "sure!",
    "no thanks",
    "I don't know",
    "is it the zebra?",
    "that's so cool",
    "tell me a fun fact",
    "ok",
)
"""What the simulated users say (the same kind of messages as the animals world's simulated users)."""


@contextmanager
def running_server(
    artifacts: Path, db: str, log: Path, settings: Sequence[str] = (), start_timeout: float = 300.0
) -> Iterator[Any]:
    """`convoplan serve` (with `--set` `settings`) on a free loopback port, stopped on leaving, also on error."""
    server = ServerProcess(artifacts, db, free_port(), log, tuple(settings))
    try:
        server.start(timeout=start_timeout)
        yield server
    finally:
        server.stop()


# --- the load -----------------------------------------------------------------------------------------------


@dataclass
class Call:
    kind: str
    """session (POST /v1/sessions), message (a bot turn), suggest, get (the verification's reads)."""
    seconds: float
    status: str
    """The HTTP status, or timeout, or the transport error's class."""


@dataclass
class SessionLog:
    """What the answers of one session imply."""

    id: str
    user: str
    arm: str
    answered: int = 0
    """User messages answered with 200 (each stores that message)."""
    implied: int = 0
    """Turns the answers imply are stored: the last answer's response_position + 1."""
    unanswered: int = 0
    """Messages with no 2xx/4xx answer (5xx, timeout, transport error): whether they were stored is unknown."""
    out_of_order: int = 0
    """Answers whose position was not the count the previous answer implied."""
    ended: bool = False


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)
    sessions: list[SessionLog] = field(default_factory=list)
    restarts: int = 0
    """Sessions started again because the bot had ended the previous one."""
    bot_seconds: float = 0.0
    suggest_seconds: float = 0.0


def client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client with bounded timeouts and enough connections for every user at once."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
    )


async def call(
    http: httpx.AsyncClient, load: Load, kind: str, method: str, url: str, body: Any = None
) -> httpx.Response | None:
    """One request, timed and recorded; None when it got no HTTP answer."""
    started = time.perf_counter()
    try:
        response = await http.request(method, url, json=body)
    except httpx.TimeoutException:
        load.calls.append(Call(kind, time.perf_counter() - started, "timeout"))
        return None
    except httpx.TransportError as error:
        load.calls.append(Call(kind, time.perf_counter() - started, type(error).__name__))
        return None
    load.calls.append(Call(kind, time.perf_counter() - started, str(response.status_code)))
    return response


async def user(http: httpx.AsyncClient, url: str, load: Load, index: int, turns: int, seed: int) -> None:
    """One user: `turns` messages, each after the previous answer; a new session when the bot ended the last."""
    rng = random.Random(f"{seed}-{index}")
    user_id = f"load-{seed}-{index}"
    session: SessionLog | None = None
    for _ in range(turns):  # bounded: one message (or one failed session start) per iteration
        if session is None:
            created = await call(http, load, "session", "POST", f"{url}/v1/sessions", {"user_id": user_id})
            if created is None or created.status_code != 201:
                continue
            record = created.json()
            session = SessionLog(record["id"], user_id, record["arm"])
            load.sessions.append(session)
        text = rng.choice(MESSAGES)
        answer = await call(http, load, "message", "POST", f"{url}/v1/sessions/{session.id}/messages", {"text": text})
        if answer is None or answer.status_code >= 500:
            session.unanswered += 1
            continue
        if answer.status_code == 409:  # ended (or a position already taken): start again
            session.ended = True
            session = None
            continue
        if answer.status_code != 200:
            continue
        reply = answer.json()
        session.out_of_order += reply["position"] != session.implied
        session.answered += 1
        session.implied = reply["response_position"] + 1
        if reply["ended"]:
            session.ended = True
            load.restarts += 1
            session = None


async def bot_phase(url: str, load: Load, sessions: int, turns: int, seed: int, timeout: float) -> None:
    async with client(timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(user(http, url, load, i, turns, seed) for i in range(sessions)))
        load.bot_seconds = time.perf_counter() - started


async def suggest_phase(url: str, load: Load, requests: int, concurrency: int, warmup: int, timeout: float) -> None:
    """`warmup` suggestion calls one at a time (the first loads the sentence encoder of the next-action model),
    then `requests` calls over the stored sessions (round robin), `concurrency` in flight at once."""
    ids = [s.id for s in load.sessions if s.answered]
    if not ids:
        return
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(http, load, "suggest", "POST", f"{url}/v1/suggest", {"session_id": ids[i % len(ids)]})

    async with client(timeout) as http:
        for i in range(warmup):
            body = {"session_id": ids[-1 - i % len(ids)]}
            await call(http, load, "suggest-warmup", "POST", f"{url}/v1/suggest", body)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        load.suggest_seconds = time.perf_counter() - started


async def stored_turns(url: str, load: Load, timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Every session's stored turns through GET /v1/sessions/{id} (sessions whose read failed are left out)."""
    gate = asyncio.Semaphore(16)
    stored: dict[str, list[dict[str, Any]]] = {}

    async def one(session_id: str) -> None:
        async with gate:
            got = await call(http, load, "get", "GET", f"{url}/v1/sessions/{session_id}")
        if got is not None and got.status_code == 200:
            stored[session_id] = got.json()["conversation"]["turns"]

    async with client(timeout) as http:
        await asyncio.gather(*(one(s.id) for s in load.sessions))
    return stored


def verify(load: Load, stored: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Stored against implied, per session and in all; `lost_turns` > 0 means the server dropped turns."""
    lost = extra = unread = 0
    user_stored = 0
    for session in load.sessions:
        turns = stored.get(session.id)
        if turns is None:
            unread += 1
            continue
        lost += max(0, session.implied - len(turns))
        extra += max(0, len(turns) - session.implied)
        user_stored += sum(t["speaker"] == "user" for t in turns)
    return {
        "sessions": len(load.sessions),
        "sessions_unread": unread,
        "turns_implied": sum(s.implied for s in load.sessions),
        "turns_stored": sum(len(t) for t in stored.values()),
        "lost_turns": lost,
        "extra_turns": extra,
        "user_messages_answered": sum(s.answered for s in load.sessions),
        "user_messages_stored": user_stored,
        "unanswered_messages": sum(s.unanswered for s in load.sessions),
        "out_of_order_answers": sum(s.out_of_order for s in load.sessions),
        "restarts": load.restarts,
    }


def run_load(
    url: str,
    *,
    sessions: int,
    turns: int,
    suggest_requests: int,
    suggest_concurrency: int,
    suggest_warmup: int = 1,
    seed: int = 0,
    timeout: float = 120.0,
    deadline: float = 3600.0,
) -> tuple[Load, dict[str, Any]]:
    """Both phases against a server at `url`, then the verification (the whole within `deadline` seconds)."""
    load = Load()

    async def everything() -> dict[str, list[dict[str, Any]]]:
        await bot_phase(url, load, sessions, turns, seed, timeout)
        await suggest_phase(url, load, suggest_requests, suggest_concurrency, suggest_warmup, timeout)
        return await stored_turns(url, load, timeout)

    async def bounded() -> dict[str, list[dict[str, Any]]]:
        return await asyncio.wait_for(everything(), deadline)

    stored = asyncio.run(bounded())
    return load, verify(load, stored)


# --- the report ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a share q of the values at or below it."""
    return float(np.percentile(values, 100 * q, method="inverted_cdf"))


def latency(calls: list[Call], kind: str, seconds: float) -> dict[str, Any]:
    """Latency of the answered calls of one kind, and their rate over the phase's wall time."""
    mine = [c for c in calls if c.kind == kind]
    answered = [c.seconds for c in mine if c.status.isdigit()]
    row: dict[str, Any] = {
        "requests": len(mine),
        "ok": sum(c.status.startswith("2") for c in mine),
        "errors": dict(Counter(c.status for c in mine if not c.status.startswith("2"))),
        "per_second": len(mine) / seconds if seconds > 0 else None,
    }
    if answered:
        row.update(
            p50_ms=percentile(answered, 0.5) * 1000,
            p99_ms=percentile(answered, 0.99) * 1000,
            mean_ms=sum(answered) / len(answered) * 1000,
            max_ms=max(answered) * 1000,
        )
    return row


def markdown(report: dict[str, Any]) -> str:
    def number(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [
        "| requests | count | ok | errors by status | p50 ms | p99 ms | mean ms | max ms | req/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["latency"].items():
        errors = ", ".join(f"{status}: {n}" for status, n in sorted(row["errors"].items())) or "none"
        lines.append(
            f"| {name} | {row['requests']} | {row['ok']} | {errors} | {number(row.get('p50_ms'), '.0f')} "
            f"| {number(row.get('p99_ms'), '.0f')} | {number(row.get('mean_ms'), '.0f')} "
            f"| {number(row.get('max_ms'), '.0f')} | {number(row['per_second'], '.1f')} |"
        )
    check = report["verification"]
    ok = "yes" if report["passed"] else "NO"
    lines += [
        "",
        "| check | implied by the answers | stored | |",
        "|---|---:|---:|---|",
        f"| turns (GET every session) | {check['turns_implied']} | {check['turns_stored']} "
        f"| lost {check['lost_turns']}, extra {check['extra_turns']} |",
        f"| turns (store rows, after - before) | {check['turns_implied']} | {check['store_turns_delta']} | |",
        f"| user messages | {check['user_messages_answered']} | {check['user_messages_stored']} | |",
        f"| sessions | {check['sessions']} | {check['store_sessions_delta']} | "
        f"{check['restarts']} restarts after the bot ended |",
        "",
        f"zero lost turns, no 5xx, no timeouts: {ok}",
    ]
    return "\n".join(lines)


def machine(settings: Sequence[str]) -> str:
    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores (load average {load} at the start), "
        f"Python {platform.python_version()}, torch {torch.__version__}; server: 1 uvicorn process, "
        f"settings: {', '.join(settings) or 'defaults'} (its log says its workers and threads), OMP_NUM_THREADS=1; "
        "the load generator runs on the same machine"
    )


def command() -> str:
    executable = Path(sys.executable)
    with suppress(ValueError):  # shown relative when it lies under the working folder
        executable = executable.relative_to(Path.cwd())
    return shlex.join([str(executable), *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--artifacts", type=Path, default=Path("runs/demo/artifacts"), help="what `convoplan demo --no-serve` writes"
    )
    parser.add_argument("--db", default=None, help="store URL (default: a fresh SQLite file in a temp folder)")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent users")
    parser.add_argument("--turns", type=int, default=20, help="messages per user")
    parser.add_argument("--suggest-requests", type=int, default=200)
    parser.add_argument("--suggest-concurrency", type=int, default=50)
    parser.add_argument(
        "--suggest-warmup", type=int, default=1, help="suggest calls one at a time before the timed ones (0: none)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds for the whole load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-serve"))
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        help="a server setting KEY=VALUE (`convoplan serve --set`)",
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=None,
        help="pytorch (default), or ctranslate2-QUANTIZATION (e.g. ctranslate2-int8_float32): the artifacts' LMs "
        "exported for CTranslate2 into a temp copy; repeat to load each backend in turn, in one run",
    )
    args = parser.parse_args()
    if not (args.artifacts / "serve.json").is_file():
        parser.error(f"--artifacts {args.artifacts}: no serve.json (run `convoplan demo --no-serve` first)")
    backends = args.backend or ["pytorch"]
    for backend in backends:
        if backend != "pytorch" and not backend.startswith("ctranslate2-"):
            parser.error(f"--backend {backend}: expected pytorch or ctranslate2-QUANTIZATION")
    passed = True
    for backend in backends:
        out = args.out if len(backends) == 1 else args.out / backend
        with tempfile.TemporaryDirectory(prefix="serve-load-artifacts-") as temp:
            artifacts = args.artifacts if backend == "pytorch" else exported(args.artifacts, Path(temp), backend)
            passed &= run(args, artifacts, out, backend)
    if not passed:
        sys.exit(1)


def exported(artifacts: Path, temp: Path, backend: str) -> Path:
    """A copy of `artifacts` whose LM folders (serve.json `lm`, and `lm_provider` when it names one) are exported for
    CTranslate2 in the backend's quantisation."""
    import shutil

    from convoplan.lm.model import export_model

    copy = temp / "artifacts"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "serve.json").read_text())
    for key in ("lm", "lm_provider"):
        if isinstance(manifest.get(key), str):
            print(f"exporting {manifest[key]} for {backend} ...", flush=True)
            export_model(artifacts / manifest[key], copy / manifest[key], backend.removeprefix("ctranslate2-"))
    return copy


def run(args: argparse.Namespace, artifacts: Path, out: Path, backend: str) -> bool:
    """One load on `artifacts`; writes OUT/report.md and report.json and says whether it passed."""
    started = time.perf_counter()
    header = [machine(args.settings), f"command: `{command()}`"]
    print(header[0], flush=True)
    header[0] += f"; backend: {backend}"
    with tempfile.TemporaryDirectory(prefix="serve-load-") as temp:
        db = args.db or f"sqlite:///{Path(temp) / 'serve.db'}"
        store = Store(db)
        before = store.counts()
        out.mkdir(parents=True, exist_ok=True)
        (out / "server.log").unlink(missing_ok=True)
        with running_server(artifacts, db, out / "server.log", args.settings) as server:
            print(f"serving {artifacts} on {server.url} (store: {db}); load ...", flush=True)
            load, check = run_load(
                server.url,
                sessions=args.sessions,
                turns=args.turns,
                suggest_requests=args.suggest_requests,
                suggest_concurrency=args.suggest_concurrency,
                suggest_warmup=args.suggest_warmup,
                seed=args.seed,
                timeout=args.timeout,
                deadline=args.deadline,
            )
        after = store.counts()
        store.close()
    check["store_turns_delta"] = after["turns"] - before["turns"]
    check["store_sessions_delta"] = after["sessions"] - before["sessions"]
    report: dict[str, Any] = {
        "machine": header[0],
        "command": command(),
        "sessions": args.sessions,
        "turns": args.turns,
        "latency": {
            "bot turn (POST /v1/sessions/{id}/messages)": latency(load.calls, "message", load.bot_seconds),
            "session start (POST /v1/sessions)": latency(load.calls, "session", load.bot_seconds),
            "suggest warm-up, one at a time (the first loads the encoder)": latency(
                load.calls, "suggest-warmup", sum(c.seconds for c in load.calls if c.kind == "suggest-warmup")
            ),
            "suggest (POST /v1/suggest {session_id})": latency(load.calls, "suggest", load.suggest_seconds),
        },
        "bot_phase_seconds": load.bot_seconds,
        "suggest_phase_seconds": load.suggest_seconds,
        "verification": check,
        "seconds": time.perf_counter() - started,
    }
    failed = [c for c in load.calls if not c.status.isdigit() or c.status.startswith("5")]
    report["passed"] = (
        not failed
        and check["lost_turns"] == 0
        and check["extra_turns"] == 0
        and check["sessions_unread"] == 0
        and check["user_messages_stored"] == check["user_messages_answered"]
        and check["store_turns_delta"] == check["turns_implied"]
    )
    header.append(
        f"{args.sessions} users x {args.turns} messages: bot phase {load.bot_seconds:.1f} s, "
        f"{args.suggest_warmup} warm-up suggest call(s), then {args.suggest_requests} ({args.suggest_concurrency} at "
        f"a time): {load.suggest_seconds:.1f} s; "
        f"whole run {report['seconds']:.0f} s"
    )
    text = "\n".join(header) + "\n\n" + markdown(report) + "\n"
    print("\n" + text)
    with atomic_write(out / "report.json") as stream:
        stream.write(json.dumps({**report, "calls": [asdict(c) for c in load.calls]}, indent=2) + "\n")
    with atomic_write(out / "report.md") as stream:
        stream.write(text)
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}")
    return bool(report["passed"])


if __name__ == "__main__":
    main()

"""bench/serve_load.py at a small scale against a real server process: concurrent bot sessions and suggest calls,
no 5xx or timeouts, and every turn the answers imply is in the store."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from convoplan.serve.process import ServerProcess
from convoplan.serve.store import Store

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"


@pytest.fixture(scope="module")
def serve_load() -> ModuleType:
    """The bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_concurrent_sessions_lose_no_turn(serve_load: ModuleType, server: ServerProcess) -> None:
    load, check = serve_load.run_load(
        server.url,
        sessions=8,
        turns=5,
        suggest_requests=6,
        suggest_concurrency=3,
        suggest_warmup=1,
        timeout=60.0,
        deadline=120.0,
    )
    failed = [c for c in load.calls if not c.status.isdigit() or c.status.startswith("5")]
    assert failed == []
    assert [c.status for c in load.calls if c.kind == "message"] == ["200"] * (8 * 5)  # ended sessions restarted
    assert sum(c.kind == "suggest" and c.status == "200" for c in load.calls) == 6
    assert check["sessions_unread"] == 0 and check["out_of_order_answers"] == 0
    assert check["lost_turns"] == 0 and check["extra_turns"] == 0
    assert check["user_messages_stored"] == check["user_messages_answered"] == 8 * 5
    store = Store(server.db)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts["turns"] == check["turns_implied"] == check["turns_stored"]
    assert counts["sessions"] == check["sessions"] == 8 + check["restarts"]
    row = serve_load.latency(load.calls, "message", load.bot_seconds)
    assert row["ok"] == 8 * 5 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]

"""The store from the command line: export to canonical JSONL, and the A/B report of a live experiment."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.schema import read_jsonl
from convoplan.serve.app import ServeConfig
from convoplan.serve.store import Store

runner = CliRunner()


def test_stored_sessions_export_and_report_like_a_simulated_ab(
    client: TestClient, store: Store, tmp_path: Path
) -> None:
    arms = set()
    for user in range(12):  # both arms get users (the hash splits them about evenly)
        session = client.post("/v1/sessions", json={"user_id": f"user-{user}"}).json()
        arms.add(session["arm"])
        for text in ("tell me about penguins", "yes"):
            client.post(f"/v1/sessions/{session['id']}/messages", json={"text": text})
    assert arms == {"heuristic", "greedy"}
    exported = runner.invoke(app, ["data", "export", "--db", store.url, "--out", str(tmp_path / "live.jsonl")])
    assert exported.exit_code == 0, exported.output
    conversations = read_jsonl(tmp_path / "live.jsonl")
    assert len(conversations) == 12 and {c.meta["arm"] for c in conversations} == arms

    out = tmp_path / "report"
    args = [
        "experiment",
        "report",
        "--db",
        store.url,
        "--control",
        "heuristic",
        "--out",
        str(out),
        "--resamples",
        "200",
    ]
    reported = runner.invoke(app, args)
    assert reported.exit_code == 0, reported.output
    report = json.loads((out / "report.json").read_text())
    assert "greedy" in json.dumps(report) and "length" in json.dumps(report)


def test_a_report_names_what_is_wrong(store: Store, tmp_path: Path) -> None:
    args = ["experiment", "report", "--db", store.url, "--control", "heuristic", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is not an arm of --db" in result.output
    unreadable = runner.invoke(app, ["data", "export", "--db", "nosuchdb://x", "--out", str(tmp_path / "x.jsonl")])
    assert unreadable.exit_code == 2 and "--db nosuchdb://x" in unreadable.output


def test_serve_refuses_a_port_in_use_before_printing_its_url(artifacts_dir: Path, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        args = ["serve", "--artifacts", str(artifacts_dir), "--db", f"sqlite:///{tmp_path / 's.db'}"]
        settings = ["--set", "model_workers=1", "--set", "torch_threads=1", "--set", "precision=int8"]
        result = runner.invoke(app, [*args, "--port", str(port), *settings])
    assert result.exit_code == 2 and f"--port {port}: cannot listen" in result.output
    assert "console:" not in result.output
    assert "1 model worker(s) x 1 torch thread(s)" in result.output  # the thread policy, said before loading


def test_the_thread_policy_shares_the_cores_among_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert ServeConfig().threads == 1  # a worker per core, one thread each
    assert ServeConfig(model_workers=2).threads == 4
    assert ServeConfig(model_workers=3, torch_threads=2).threads == 2  # set: as set
    assert ServeConfig(model_workers=16).threads == 1
    with pytest.raises(ValueError, match="model_workers"):
        ServeConfig(model_workers=0)


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_serve_names_the_host_or_the_port_at_fault_before_loading_anything(tmp_path: Path) -> None:
    missing = ["serve", "--artifacts", str(tmp_path / "never-read"), "--db", f"sqlite:///{tmp_path / 's.db'}"]
    for host in ("256.1.1.1", "192.0.2.1", "no-such-host.invalid"):  # not an address; not this machine's; no name
        result = runner.invoke(app, [*missing, "--host", host])
        assert result.exit_code == 2, result.output
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: --host {host}: not an address this machine can listen on ("), error
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = runner.invoke(app, [*missing, "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 2 and f"error: --port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "never-read" not in result.output and not (tmp_path / "s.db").exists()

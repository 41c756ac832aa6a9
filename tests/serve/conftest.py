"""Serving fixtures: a small artifacts folder built once per test session (heuristic and greedy arms, a tiny LM and
next-action model trained on the animals world's logs), an in-process client, and a real server process."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from convoplan.actions.nba import NBAConfig
from convoplan.actions.train_nba import train_nba
from convoplan.embed import SentenceEmbedder
from convoplan.lm.provider import lm_conversations
from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarIndex
from convoplan.serve.app import ServeConfig, create_app
from convoplan.serve.artifacts import Arm, Artifacts, Manifest, write_manifest
from convoplan.serve.process import ServerProcess, free_port
from convoplan.serve.store import Store
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world
from convoplan.worlds.animals.planning import HeuristicDM

TINY_NBA = NBAConfig(hidden=16, action_dim=8, head=16, epochs=3, batch_size=8)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceEmbedder, world_lm_dir: Path) -> Path:
    """serve.json with two arms (heuristic, the control, and greedy), a tiny LM and a tiny next-action model."""
    root = tmp_path_factory.mktemp("artifacts")
    logs = lm_conversations(
        list(simulate(animals_world(), HeuristicDM(), SimulationConfig(conversations=12, raters=0)))
    )
    shutil.copytree(world_lm_dir, root / "lm")
    ExemplarIndex.build(logs, embedder).save(root / "lm" / EXEMPLARS)  # for serve.json "suggestions" (unused here)
    train_nba(logs, embedder, TINY_NBA).model.save(root / "nba")
    arms = {"heuristic": Arm("heuristic"), "greedy": Arm("greedy")}
    write_manifest(root, Manifest(arms=arms, control="heuristic", lm="lm", nba="nba"))
    return root


@pytest.fixture(scope="session")
def artifacts(artifacts_dir: Path) -> Artifacts:
    return Artifacts.load(artifacts_dir)


@pytest.fixture(scope="session")
def mixed_artifacts(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The same artifacts serving "suggestions": "both": the nearest past message of each action, then written ones."""
    root = tmp_path_factory.mktemp("mixed") / "artifacts"
    shutil.copytree(artifacts_dir, root)
    manifest = json.loads((root / "serve.json").read_text())
    (root / "serve.json").write_text(json.dumps({**manifest, "suggestions": "both"}))
    return Artifacts.load(root)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield store
    store.close()


@pytest.fixture
def client(artifacts: Artifacts, store: Store) -> TestClient:
    return TestClient(create_app(artifacts, store, ServeConfig()))


@pytest.fixture
def server(artifacts_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server process on a free loopback port, with its own SQLite store (stopped after the test)."""
    process = ServerProcess(artifacts_dir, f"sqlite:///{tmp_path / 'served.db'}", free_port(), tmp_path / "server.log")
    process.start()
    yield process
    process.stop()


# --- PostgreSQL (tests/serve/postgres.py) --------------------------------------------------------------------

from tests.serve.postgres import PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the test session. Skips when PostgreSQL is not installed, or fails when
    CONVOPLAN_REQUIRE_SERVICES=1 (where the services are required, a skip would hide a broken setup)."""
    why = PostgresServer.why_absent()
    if why is not None:
        if os.environ.get("CONVOPLAN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CONVOPLAN_REQUIRE_SERVICES=1, but PostgreSQL cannot run here: {why}")
        pytest.skip(f"PostgreSQL is not available: {why}")
    server = PostgresServer.find()
    assert server is not None
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of the session's PostgreSQL database `convoplan` (shared by every test that uses it)."""
    return postgres_server.url()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new database on the session's PostgreSQL server
    (CREATE DATABASE, dropped after the test with its connections closed)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.createdb()
    yield url
    server.dropdb(url.rsplit("/", 1)[1])


@pytest.fixture
def api(artifacts: Artifacts, db_url: str) -> Iterator[tuple[TestClient, Store]]:
    """The app in process over a fresh store (SQLite, then PostgreSQL); a server error comes back as a 500, as it
    would over HTTP."""
    store = Store(db_url)
    yield TestClient(create_app(artifacts, store, ServeConfig()), raise_server_exceptions=False), store
    store.close()

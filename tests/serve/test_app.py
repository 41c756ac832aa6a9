"""The API in process: sessions, bot turns, assist messages, suggestions, feedback, limits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import convoplan
from convoplan.actions.outcome import OutcomeConfig
from convoplan.actions.train_outcome import train_outcome
from convoplan.embed import SentenceEmbedder
from convoplan.lm.provider import LMProvider, lm_conversations
from convoplan.lm.suggest import Plan, Suggestion
from convoplan.retrieval.knowledge import write_knowledge
from convoplan.retrieval.support import check_support
from convoplan.schema import Conversation
from convoplan.serve.app import ServeConfig, _action_out, create_app
from convoplan.serve.artifacts import Artifacts, read_manifest, write_manifest
from convoplan.serve.store import Store
from convoplan.worlds.animals.knowledge import knowledge_passages


def test_a_bot_session_stores_every_turn_and_exports_it(client: TestClient, store: Store) -> None:
    session = client.post("/v1/sessions", json={"user_id": "alice"}).json()
    assert session["arm"] in ("heuristic", "greedy")
    reply = client.post(f"/v1/sessions/{session['id']}/messages", json={"text": "tell me about elephants"}).json()
    assert reply["response"] and reply["steps"] and reply["steps"][0]["candidates"]
    assert sum(c["selected"] for c in reply["steps"][0]["candidates"]) == 1
    stored = client.get(f"/v1/sessions/{session['id']}").json()["conversation"]
    assert len(stored["turns"]) == reply["response_position"] + 1 == store.counts()["turns"]
    assert stored["meta"]["arm"] == session["arm"]


def test_suggest_ranks_actions_and_writes_for_each(client: TestClient) -> None:
    history = [{"speaker": "user", "text": "hi, tell me about lions"}]
    body = client.post("/v1/suggest", json={"conversation": history, "actions": 2, "n": 2}).json()
    assert 1 <= len(body["actions"]) <= 2
    assert all(len(group["suggestions"]) == 2 for group in body["actions"])
    assert client.post("/v1/suggest", json={"conversation": history, "action": "no-such-act"}).status_code == 422


def test_suggestions_from_the_logs_come_first_and_say_where_they_were_said(
    mixed_artifacts: Artifacts, store: Store
) -> None:
    client = TestClient(create_app(mixed_artifacts, store, ServeConfig()))
    answer = client.post("/v1/suggest", json={"conversation": [{"speaker": "user", "text": "tell me about lions"}]})
    assert answer.status_code == 200, answer.text
    index = mixed_artifacts.suggester.exemplars if mixed_artifacts.suggester else None
    assert index is not None
    said = {index.sources[r]: (index.texts[r], index.actions[r]) for r in range(len(index))}
    for group in answer.json()["actions"]:
        first, *written = group["suggestions"]
        assert first["origin"] == "exemplar" and said[first["source"]] == (first["text"], group["action"])
        assert len(written) == 2 and all(s["origin"] == "lm" and s["source"] is None for s in written)


def test_the_bot_s_lm_provider_may_have_an_lm_of_its_own(artifacts_dir: Path, tmp_path: Path) -> None:
    """The demo's layout: agent assist on one LM (`lm`), the bot's provider on another (`lm_provider`: a folder)."""
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, root)
    (root / "lm").rename(root / "small")
    manifest = read_manifest(root)
    write_manifest(root, replace(manifest, lm=None, lm_provider="small"))
    loaded = Artifacts.load(root)
    assert loaded.suggester is None  # no agent-assist LM ...
    [provider] = loaded.extra_providers  # ... yet the bot has its LM provider
    assert isinstance(provider, LMProvider) and provider.lm.codec.actions
    assert loaded.new_bot("heuristic", "s").providers[0] is provider
    with pytest.raises(ValueError, match="lm_provider true needs an lm"):
        replace(manifest, lm=None, lm_provider=True)


def test_a_rebuilt_bot_continues_where_the_stored_session_left_off(artifacts: Artifacts, store: Store) -> None:
    first = TestClient(create_app(artifacts, store, ServeConfig()))
    session = first.post("/v1/sessions", json={"user_id": "bob"}).json()
    for text in ("tell me about lions", "yes"):
        first.post(f"/v1/sessions/{session['id']}/messages", json={"text": text})
    # A new app over the same store (a restart): the bot is rebuilt from the stored turns with the same state.
    original = first.app.state.sessions.bot(store.session(session["id"]))  # type: ignore[attr-defined]
    rebuilt = artifacts.new_bot(session["arm"], session["id"])
    rebuilt.replay(store.turns(session["id"]))
    assert (rebuilt.state.focus, rebuilt.state.question, rebuilt.state.said, rebuilt.state.mentioned) == (
        original.state.focus,
        original.state.question,
        original.state.said,
        original.state.mentioned,
    )
    assert [len(r) for r in rebuilt.state.responses] == [len(r) for r in original.state.responses]
    second = TestClient(create_app(artifacts, store, ServeConfig()))
    reply = second.post(f"/v1/sessions/{session['id']}/messages", json={"text": "tell me more"})
    assert reply.status_code == 200 and reply.json()["position"] == len(original.state.turns)


def test_an_assist_session_stores_what_the_agent_sent(client: TestClient) -> None:
    session = client.post("/v1/sessions", json={"mode": "assist"}).json()
    client.post(f"/v1/sessions/{session['id']}/messages", json={"speaker": "user", "text": "hi there"})
    suggestion = client.post("/v1/suggest", json={"session_id": session["id"], "actions": 1, "n": 1}).json()
    group = suggestion["actions"][0]
    sent = {"speaker": "agent", "text": "edited reply", "action": group["action"], "meta": {"edited": True}}
    assert client.post(f"/v1/sessions/{session['id']}/messages", json=sent).json()["position"] == 1
    turns = client.get(f"/v1/sessions/{session['id']}").json()["conversation"]["turns"]
    assert turns[1]["text"] == "edited reply" and turns[1]["meta"] == {"edited": True}
    assert (turns[1].get("action"), turns[1].get("action_source")) == (
        group["action"],
        "agent" if group["action"] else None,
    )


def test_bad_requests_get_clear_4xx_answers(artifacts: Artifacts, store: Store) -> None:
    client = TestClient(create_app(artifacts, store, ServeConfig(max_body_bytes=2000, max_turns=12)))
    assert client.post("/v1/sessions/nope/messages", json={"text": "hi"}).status_code == 404
    session = client.post("/v1/sessions", json={}).json()
    url = f"/v1/sessions/{session['id']}"
    assert client.post(f"{url}/messages", json={"text": "  "}).status_code == 422
    assert client.post(f"{url}/messages", json={"text": "hi", "speaker": "agent"}).status_code == 422
    big = client.post(f"{url}/messages", json={"text": "x" * 1999})
    assert big.status_code == 413 and "2000 bytes" in big.json()["detail"]
    assert client.post(f"{url}/feedback", json={"position": 0, "value": "positive"}).status_code == 422  # no turn
    codes = [client.post(f"{url}/messages", json={"text": "tell me about sharks"}).status_code for _ in range(4)]
    assert codes[0] == 200 and codes[-1] == 422  # the session's turn limit
    assert store.counts()["turns"] <= 12


def test_the_api_key_guards_v1_but_not_health(artifacts: Artifacts, store: Store) -> None:
    client = TestClient(create_app(artifacts, store, ServeConfig(api_key="s3cret")))
    assert client.post("/v1/sessions", json={}).status_code == 401
    assert client.post("/v1/sessions", json={}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/sessions", json={}, headers={"X-API-Key": "s3cret"}).status_code == 201
    assert client.post("/v1/sessions", json={}, headers={"Authorization": "Bearer s3cret"}).status_code == 201
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "store": {"state": "ok"},
        "arms": ["heuristic", "greedy"],
        "weights": {"heuristic": 1.0, "greedy": 1.0},
        "control": "heuristic",
        "assist": True,
        "assist_arms": [],
    }


def test_metrics_count_requests_by_route(client: TestClient) -> None:
    client.post("/v1/sessions", json={})
    text = client.get("/metrics").text
    assert 'convoplan_requests_total{route="/v1/sessions",status="201"} 1.0' in text
    assert "convoplan_request_seconds_bucket" in text


def _training_modules() -> list[str]:
    """Every module of the package that trains something: train*.py, the losses and the pipeline, the LM's
    resumable training state. Computed from the files, so that a new training module is covered too."""
    package = Path(convoplan.__file__).parent
    names = [".".join(p.relative_to(package.parent).with_suffix("").parts) for p in package.rglob("*.py")]
    extra = {"convoplan.dm.losses", "convoplan.sim.pipeline", "convoplan.lm.checkpoint"}
    return sorted(n for n in names if n.rsplit(".", 1)[-1].startswith("train") or n in extra)


def test_the_server_imports_no_training_code(
    artifacts_dir: Path, animal_logs: list[Conversation], embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    """The server loads every kind of artifact (here an outcome-driven next-action model, whose Q-network is the
    DMs') through the checkpoint readers only."""
    folder = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, folder)
    config = OutcomeConfig(q=replace(OutcomeConfig().q, steps=2), reward="value")
    shutil.rmtree(folder / "nba")
    train_outcome(lm_conversations(animal_logs), embedder, config).model.save(folder / "nba")
    code = (
        "import sys; from convoplan.serve.app import create_app; from convoplan.serve.artifacts import Artifacts;"
        "from convoplan.serve.store import Store;"
        f"artifacts = Artifacts.load({str(folder)!r}); assert type(artifacts.suggester.nba).__name__ == 'OutcomeNBA';"
        "create_app(artifacts, Store('sqlite://'));"
        "print(sorted(m for m in sys.modules if m.startswith('convoplan')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    modules = loaded.stdout
    assert "convoplan.serve.app" in modules and "convoplan.actions.outcome" in modules
    training = _training_modules()
    assert {"convoplan.dm.train", "convoplan.actions.train_outcome", "convoplan.lm.train"} <= set(training)
    assert [name for name in training if f"'{name}'" in modules] == []


@pytest.fixture(scope="module")
def checked_artifacts(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The artifacts serving "both" with a knowledge file (the animals guide's lions and tigers)."""
    root = tmp_path_factory.mktemp("checked") / "artifacts"
    shutil.copytree(artifacts_dir, root)
    write_knowledge(root / "kb.jsonl", [p for p in knowledge_passages() if p.entity in ("lion", "tiger")])
    write_manifest(root, replace(read_manifest(root), suggestions="both", knowledge="kb.jsonl"))
    return Artifacts.load(root)


def test_every_suggestion_is_checked_against_the_knowledge_and_unsupported_ones_can_be_dropped(
    checked_artifacts: Artifacts, store: Store
) -> None:
    assert checked_artifacts.suggester is not None and checked_artifacts.suggester.knowledge is not None
    lions = [p for p in checked_artifacts.suggester.knowledge.passages if p.entity == "lion"]
    body = {"conversation": [{"speaker": "user", "text": "tell me about lions"}], "actions": 3, "n": 4}
    kept = TestClient(create_app(checked_artifacts, store, ServeConfig())).post("/v1/suggest", json=body).json()
    every = [s for group in kept["actions"] for s in group["suggestions"]]
    assert every and all(s["checked"] for s in every)
    for s in every:  # the answer is the check's, against the lion's passages (the animal in focus)
        support = check_support(s["text"], lions)
        assert s["unsupported"] == [claim.text for claim in support.unsupported]
        assert [p["id"] for p in s["sources"]] == support.sources
        assert all(p["source"] == "the convoplan animal guide" and p["text"] for p in s["sources"])
    assert any(s["unsupported"] for s in every), "the tiny LM's sentences should not all be supported"

    dropping = TestClient(create_app(checked_artifacts, store, ServeConfig(drop_unsupported=True)))
    shown = dropping.post("/v1/suggest", json=body).json()
    assert all(not s["unsupported"] for group in shown["actions"] for s in group["suggestions"])
    with dropping.stream("POST", "/v1/suggest", json={**body, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    plans, done = json.loads(lines[0].removeprefix("data:")), json.loads(lines[-1].removeprefix("data:"))
    for group in [*plans["actions"], *done["actions"]]:
        assert all(not s["unsupported"] for s in group["suggestions"])


def test_an_action_s_answer_leaves_out_unsupported_suggestions_only_when_told() -> None:
    plan = Plan("fact", "fact", 0.5, "predicted", "predicted")
    good = Suggestion("Lions live in prides.", "fact", 0.5, -1.0, True, checked=True)
    bad = replace(good, text="Lions fly.", unsupported=("Lions fly.",))
    assert [s.text for s in _action_out(plan, [good, bad]).suggestions] == ["Lions live in prides.", "Lions fly."]
    assert [s.text for s in _action_out(plan, [good, bad], drop_unsupported=True).suggestions] == [good.text]


def test_an_lm_exported_for_ctranslate2_serves_suggestions_and_the_bot(artifacts_dir: Path, tmp_path: Path) -> None:
    """serve.json names an exported folder as it names a PyTorch one: suggestions (plain and streamed) and the bot's
    LM provider run on CTranslate2, with a generator replica per model worker."""
    pytest.importorskip("ctranslate2")
    from convoplan.lm.model import export_model

    root = tmp_path / "artifacts"
    shutil.copytree(artifacts_dir, root)
    export_model(artifacts_dir / "lm", root / "lm", "int8_float32")  # replaces the PyTorch folder, exemplars kept
    write_manifest(root, replace(read_manifest(root), lm_provider=True))
    loaded = Artifacts.load(root, replicas=ServeConfig().model_workers)
    assert loaded.suggester is not None and loaded.suggester.lm.engine == "ctranslate2"
    assert loaded.suggester.lm.generator.num_generators == ServeConfig().model_workers == 2
    [provider] = loaded.extra_providers
    assert isinstance(provider, LMProvider) and provider.lm.engine == "ctranslate2"
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    client = TestClient(create_app(loaded, store, ServeConfig()))
    body = {"conversation": [{"speaker": "user", "text": "hi, tell me about lions"}], "actions": 2, "n": 2}
    answer = client.post("/v1/suggest", json=body)
    assert answer.status_code == 200, answer.text
    groups = answer.json()["actions"]
    assert groups and all(len(g["suggestions"]) == 2 and all(s["text"] for s in g["suggestions"]) for g in groups)
    with client.stream("POST", "/v1/suggest", json={**body, "stream": True}) as response:
        events = "".join(response.iter_text())
    assert response.status_code == 200 and "event: done" in events
    session = client.post("/v1/sessions", json={"user_id": "u1"}).json()
    reply = client.post(f"/v1/sessions/{session['id']}/messages", json={"text": "hi, tell me about lions"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["steps"]  # a bot turn with the provider on the engine (its candidates tested in tests/lm)
    store.close()

"""Bad input refused where it enters the server, and the headers a deployment expects (issue 13's probe)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from convoplan.cli import app as cli
from convoplan.schema import MAX_NESTING, read_jsonl, write_jsonl
from convoplan.serve.app import ServeConfig, create_app
from convoplan.serve.artifacts import Artifacts
from convoplan.serve.middleware import CONSOLE_POLICY, DOCS_POLICY
from convoplan.serve.store import Store

runner = CliRunner()


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def post_raw(client: TestClient, path: str, body: str, **headers: str) -> int:
    """POST a JSON text as it is (json.dumps refuses NaN; clients do send it)."""
    sent = {"content-type": "application/json", **headers}
    return client.post(path, content=body.encode(), headers=sent).status_code


# --- non-finite numbers and nesting: one limit, where data enters ---------------------------------------------------


@pytest.mark.bad_input("1 non-finite numbers")
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_number_that_is_not_finite_in_meta_gets_422(api: tuple[TestClient, Store], number: str) -> None:
    client, store = api
    assist = client.post("/v1/sessions", json={"mode": "assist"}).json()["id"]
    answers = [
        post_raw(client, "/v1/sessions", f'{{"meta": {{"x": {number}}}}}'),
        post_raw(client, f"/v1/sessions/{assist}/messages", f'{{"text": "hi", "meta": {{"x": [{number}]}}}}'),
    ]
    assert answers == [422, 422]
    assert store.counts()["turns"] == 0


@pytest.mark.bad_input("2 nesting: what the API accepts, the reader reads")
def test_meta_nests_as_deep_as_the_format_allows_and_exports_what_the_reader_reads(
    api: tuple[TestClient, Store], tmp_path: Path
) -> None:
    client, store = api
    deepest = nested(MAX_NESTING - 2)  # under "deep", in a meta the server may file one level down
    for mode in ("assist", "bot"):
        created = client.post("/v1/sessions", json={"mode": mode, "meta": {"deep": deepest}})
        assert created.status_code == 201
        session = created.json()["id"]
        sent = client.post(f"/v1/sessions/{session}/messages", json={"text": "hello", "meta": {"deep": deepest}})
        assert sent.status_code == 200
    too_deep = {"text": "x", "meta": {"deep": nested(MAX_NESTING - 1)}}
    answer = client.post(f"/v1/sessions/{session}/messages", json=too_deep)
    assert answer.status_code == 422 and f"deeper than {MAX_NESTING - 1}" in answer.text
    path = tmp_path / "export.jsonl"
    write_jsonl(path, store.conversations())
    assist, bot = read_jsonl(path)  # the worst accepted requests read back
    assert assist.meta["deep"] == deepest and assist.turns[0].meta["deep"] == deepest
    assert bot.meta["deep"] == deepest and bot.turns[0].meta["client"] == {"deep": deepest}


# --- limits as documented -----------------------------------------------------------------------------------------


def chunks(size: int, piece: int = 4096) -> Iterator[bytes]:
    body = json.dumps({"mode": "assist", "meta": {"pad": "x" * size}}).encode()
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


@pytest.mark.bad_input("8 limits as documented (413, 401 first)")
def test_a_chunked_body_over_the_limit_gets_413_and_one_under_it_goes_through(
    artifacts: Artifacts, store: Store
) -> None:
    client = TestClient(create_app(artifacts, store, ServeConfig(max_body_bytes=10_000)))
    big = client.post("/v1/sessions", content=chunks(20_000), headers={"content-type": "application/json"})
    small = client.post("/v1/sessions", content=chunks(1_000), headers={"content-type": "application/json"})
    assert (big.status_code, small.status_code) == (413, 201)
    assert "transfer-encoding" in big.request.headers and "content-length" not in big.request.headers


@pytest.mark.bad_input("8 limits as documented (413, 401 first)")
def test_the_key_is_checked_before_the_body_is_read(artifacts: Artifacts, store: Store) -> None:
    client = TestClient(create_app(artifacts, store, ServeConfig(api_key="sesame")))
    assert post_raw(client, "/v1/sessions", "{not json") == 401
    assert post_raw(client, "/v1/sessions", '{"meta": {"x": NaN}}') == 401
    assert post_raw(client, "/v1/sessions", "{not json", **{"x-api-key": "sesame"}) == 422
    assert post_raw(client, "/v1/sessions", "{}", authorization="Bearer sesame") == 201


@pytest.mark.bad_input("5 an empty API key")
def test_an_empty_api_key_is_refused_at_start_up(artifacts_dir: Path) -> None:
    with pytest.raises(ValueError, match="the API key is empty"):
        ServeConfig(api_key="")
    result = runner.invoke(cli, ["serve", "--artifacts", str(artifacts_dir), "--api-key", ""])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --api-key: the API key is empty: give a real key, or none to serve without one"
    )


@pytest.mark.bad_input("27.1 an empty API key from the environment")
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_api_key_from_the_environment_is_refused_at_start_up(artifacts_dir: Path, empty: str) -> None:
    # `CONVOPLAN_API_KEY= convoplan serve`: click reads "" as unset, which served every request without a key
    result = runner.invoke(cli, ["serve", "--artifacts", str(artifacts_dir)], env={"CONVOPLAN_API_KEY": empty})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: $CONVOPLAN_API_KEY: the API key is empty: give a real key, or none to serve without one"
    )


@pytest.mark.bad_input("27.4 settings nobody checks")
@pytest.mark.parametrize("dm", ["os:system", "os:getcwd"])
def test_a_dm_import_path_that_makes_no_dm_is_one_line(artifacts_dir: Path, tmp_path: Path, dm: str) -> None:
    manifest = json.loads((artifacts_dir / "serve.json").read_text())
    manifest["arms"] = {"evil": {"dm": dm, "weight": 1.0}}
    manifest["control"], manifest["lm"], manifest["nba"] = None, None, None
    (tmp_path / "serve.json").write_text(json.dumps(manifest))
    result = runner.invoke(cli, ["serve", "--artifacts", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path / 'serve.json'}: arms.evil: '{dm}'"), result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the store was opened


# --- what a deployment expects -----------------------------------------------------------------------------------


@pytest.mark.bad_input("10 headers, offline docs, unknown fields")
def test_unknown_fields_in_a_body_get_422(client: TestClient) -> None:
    answers = [
        client.post("/v1/sessions", json={"user": "alice"}),  # user_id misspelt
        client.post("/v1/suggest", json={"conversation": [], "count": 2}),
        client.post("/v1/suggest", json={"conversation": [{"speaker": "user", "text": "hi", "mood": "ok"}]}),
    ]
    assert [a.status_code for a in answers] == [422, 422, 422]
    assert "extra_forbidden" in answers[0].text


@pytest.mark.bad_input("10 headers, offline docs, unknown fields")
def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path, policy in [
        ("/console/", CONSOLE_POLICY),
        ("/healthz", CONSOLE_POLICY),
        ("/v1/sessions/nope", CONSOLE_POLICY),
        ("/docs", DOCS_POLICY),
    ]:
        headers = client.get(path).headers
        assert headers["content-security-policy"] == policy, path
        assert (headers["x-content-type-options"], headers["x-frame-options"]) == ("nosniff", "DENY"), path
    assert "script-src 'self';" in CONSOLE_POLICY and "'unsafe-inline'" not in CONSOLE_POLICY


@pytest.mark.bad_input("10 headers, offline docs, unknown fields")
def test_the_api_docs_load_their_assets_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN: off

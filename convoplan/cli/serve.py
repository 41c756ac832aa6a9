"""`convoplan serve`: the suggestion and bot API, the conversation store and the web console (docs/serve.md)."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convoplan.cli.common import ShowConfig, configured, errors, fail, say, set_option

if TYPE_CHECKING:
    from convoplan.serve.app import ServeConfig

__all__ = ["serve"]

API_KEY_VARIABLE = "CONVOPLAN_API_KEY"


def serve(
    artifacts: Annotated[
        Path, typer.Option(help="Folder with serve.json and the trained models it names (convoplan demo writes one).")
    ],
    db: Annotated[
        str,
        typer.Option(help="Conversation store: a SQLAlchemy URL, e.g. postgresql+psycopg://user@127.0.0.1/convoplan."),
    ] = "sqlite:///runs/serve.db",
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_VARIABLE, help="Require this key on /v1/* (X-API-Key header); an empty one is refused."
        ),
    ] = None,
    overrides: Annotated[list[str] | None, set_option("max_turns=200")] = None,
    show_config: ShowConfig = False,
) -> None:
    """Serve trained artifacts: POST /v1/suggest (agent assist), /v1/sessions (the bot, A/B by user), the store,
    /metrics, and the web console at /.

    Example, after `convoplan demo --no-serve`:

        convoplan serve --artifacts runs/demo/artifacts --db sqlite:///runs/serve.db
    """
    from convoplan.serve.app import ServeConfig

    config = configured(ServeConfig(), overrides, show_config)
    if api_key is None:  # click reads an empty variable as unset, which would serve without a key
        api_key = os.environ.get(API_KEY_VARIABLE)
    from_environment = api_key is not None and api_key == os.environ.get(API_KEY_VARIABLE)
    try:
        config = dataclasses.replace(config, api_key=api_key)  # checked: an empty key (an unset $VAR) is refused
    except ValueError as error:
        fail(f"{'$' + API_KEY_VARIABLE if from_environment else '--api-key'}: {error}")
    start_server(artifacts, db, host, port, config)


def check_address(host: str, port: int) -> None:
    """Fail in one line when the server could not listen on `host`:`port`, naming the option at fault: --host when
    the address is not one of this machine's (or no address at all), --port when the port is taken or reserved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn binds
    for option, address in (("--host", (host, 0)), ("--port", (host, port))):  # port 0: any free one
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closing port is free
                probe.bind(address)
                probe.listen()
        except OSError as error:  # a name that does not resolve is a socket.gaierror, an OSError too
            reason = error.strerror or str(error)
            if option == "--host":
                fail(f"--host {host}: not an address this machine can listen on ({reason})")
            fail(f"--port {port}: cannot listen on {host}:{port} ({reason}); choose another port with --port")


def start_server(artifacts: Path, db: str, host: str, port: int, config: ServeConfig) -> None:
    """Load the artifacts, open the store, print the console's URL and serve until interrupted."""
    import torch
    import uvicorn

    from convoplan.embed import shared_embedder
    from convoplan.serve.app import create_app
    from convoplan.serve.artifacts import Artifacts
    from convoplan.serve.store import Store

    torch.set_num_threads(config.threads)  # the thread policy: workers x threads <= cores (ServeConfig)
    workers, threads, cores = config.model_workers, config.threads, os.cpu_count() or 1
    oversubscribed = " (more than the cores: expect contention)" if workers * threads > cores else ""
    say(f"{workers} model worker(s) x {threads} torch thread(s) on {cores} cores{oversubscribed}", to=errors)
    check_address(host, port)  # before loading anything, and before printing a URL that another process answers
    shared_embedder().max_cached = config.embedding_cache  # the one every loaded model embeds with
    try:
        loaded = Artifacts.load(artifacts, config.suggest, config.precision, config.model_workers)
    except ValueError as error:
        fail(str(error))
    with errors.status("warming up the models"):
        loaded.warm_up()
    if db.startswith("sqlite:///") and db != "sqlite:///:memory:":
        Path(db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        store = Store(db)
        store.ping()
    except Exception as error:  # SQLAlchemy's errors are many; any means the store cannot be used
        fail(f"--db {db}: {str(error).splitlines()[0]}")
    app = create_app(loaded, store, config)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    say(f"serving {artifacts} (arms: {', '.join(loaded.manifest.arms)}; store: {db})", to=errors)
    say(f"console: http://{shown}:{port}/console/   API docs: http://{shown}:{port}/docs   (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")

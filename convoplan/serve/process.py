"""`convoplan serve` as a child process on loopback: what integration tests, load tests and scripts start and stop.

server = ServerProcess(Path("runs/demo/artifacts"), "sqlite:///runs/serve.db", free_port(), Path("server.log"))
server.start()          # returns once /healthz answers 200 (the models are loaded and warmed up)
...                     # talk to server.url
server.stop()           # SIGTERM (kill=True: SIGKILL, as a crash would)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`convoplan serve` in a child process on 127.0.0.1, its output appended to `log`."""

    artifacts: Path
    db: str
    port: int
    log: Path
    settings: tuple[str, ...] = ()
    """ServeConfig overrides, each `KEY=VALUE` (`convoplan serve --set`), e.g. ("precision=int8",)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait (at most `timeout` s) until /healthz answers; RuntimeError with the log if it
        exits or does not answer in time."""
        command = [sys.executable, "-m", "convoplan.cli", "serve", "--artifacts", str(self.artifacts)]
        command += ["--db", self.db, "--port", str(self.port)]
        command += [option for setting in self.settings for option in ("--set", setting)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded: the server is up, or it died, or the deadline passes
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop(kill=True)
        raise RuntimeError(f"the server did not answer /healthz within {timeout} s:\n{self.log.read_text()}")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM and wait (SIGKILL after 30 s); `kill` sends SIGKILL at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

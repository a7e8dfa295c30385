"""Stores: where collections live, behind one interface (:mod:`ragstore.store.base`).

The embedded default is one directory with a SQLite file (``store/sqlite``); a
``postgresql://`` URL opens a PostgreSQL database instead (``store/postgres``).
"""

from __future__ import annotations

from pathlib import Path

from ragstore.errors import InvalidConfig
from ragstore.store.base import StorageBackend

URL_SCHEMES = ("postgresql://", "postgres://")
"""Locations that name a PostgreSQL database rather than a directory."""


def open_backend(location: str | Path, *, create: bool = True) -> StorageBackend:
    """The backend for ``location``: a ``postgresql://`` URL, or a directory path.

    Without ``create``, a location that holds no store yet raises ``NotFound`` rather
    than becoming one."""
    if is_url(location):
        try:
            from ragstore.store.postgres import PostgresBackend
        except ImportError as exc:
            raise InvalidConfig(
                "a postgresql:// store needs the postgres extra: "
                f"pip install 'ragstore[postgres]' ({exc})"
            ) from None
        return PostgresBackend(str(location), create=create)
    from ragstore.store.sqlite.backend import SqliteBackend

    return SqliteBackend(Path(location).expanduser(), create=create)


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a database server rather than a directory."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)

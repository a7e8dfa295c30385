"""Keeps a process's in-memory vector index in step with the chunks in SQLite.

SQLite is the source of truth. Chunk ids only grow (AUTOINCREMENT) and every removed
chunk leaves a tombstone, so catching up after another process wrote means reading the
chunks newer than the last one seen and the tombstones newer than the last one applied.
"""

from __future__ import annotations

import sqlite3
import threading

from ragstore.config import IndexConfig
from ragstore.index import VectorIndex, create_index
from ragstore.store import rows


class IndexSync:
    """One collection's vector index and how far it has caught up with the store."""

    def __init__(self, collection_id: int, dim: int, config: IndexConfig) -> None:
        self._collection_id = collection_id
        self._dim = dim
        self._config = config
        self._index: VectorIndex | None = None
        self._last_chunk = 0
        self._last_tombstone = 0
        self.lock = threading.RLock()

    def current(self, conn: sqlite3.Connection) -> VectorIndex:
        """The index, caught up with what ``conn``'s open read transaction sees.

        The caller holds :attr:`lock` and keeps the transaction open while it uses the
        index, so index and rows agree.
        """
        floor = self._tombstone_floor(conn)
        if self._index is None or self._last_tombstone < floor:
            self._reload(conn)
        else:
            self._catch_up(conn)
        assert self._index is not None
        return self._index

    def _reload(self, conn: sqlite3.Connection) -> None:
        self._index = create_index(self._config.kind, self._dim)
        self._last_chunk = 0
        self._last_tombstone = rows.last_tombstone(conn)
        self._add_new_chunks(conn, self._index)

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        assert self._index is not None
        removed, self._last_tombstone = rows.tombstones_after(
            conn, self._collection_id, self._last_tombstone
        )
        if removed.size:
            self._index.remove(removed)
        self._add_new_chunks(conn, self._index)

    def _add_new_chunks(self, conn: sqlite3.Connection, index: VectorIndex) -> None:
        ids, vectors = rows.chunks_after(conn, self._collection_id, self._last_chunk, self._dim)
        if ids.size:
            index.add(ids, vectors)
            self._last_chunk = int(ids[-1])

    def _tombstone_floor(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT tombstone_floor FROM collections WHERE id = ?", (self._collection_id,)
        ).fetchone()
        return int(row[0]) if row else 0

"""The in-process backend: entries in memory for speed, persisted in a SQLite file (the
store's own for the embedded backend) so they survive a restart and are shared with
other processes.

SQLite is the durable copy: in the store's own file the cache migration's triggers
delete the rows citing a document in the transaction that updates or deletes it; beside
a PostgreSQL store, an entry is checked against the store's change feed before it is
served, like any other. The in-memory copy is a mirror
loaded on first use; the cache drops entries from it through :meth:`invalidate` as soon
as it sees changes in the store's change log. Cache writes never wait long for the
store's write lock: under a busy writer an entry simply stays in memory only.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ragstore.cache.base import Entry, Vector
from ragstore.cache.settings import CacheSettings
from ragstore.store.sqlite.db import Database
from ragstore.store.sqlite.rows import batched, placeholders

logger = logging.getLogger(__name__)

Key = tuple[str, str]
WRITE_WAIT_S = 0.25
"""How long a cache write waits for the store's write lock before giving up."""
PAGE = 500
"""Entries read at a time by :meth:`LocalBackend.entries`."""
_COLUMNS = "id, collection_id, scope, text_key, hits, vector, seq, writes, created_at, expires_at"


class LocalBackend:
    """Entries in this process's memory, persisted in the store's SQLite file."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)

    def __init__(self, directory: Path, settings: CacheSettings) -> None:
        # Connections of its own, which give up on the write lock quickly: a busy store
        # skips persisting an entry rather than delaying the search.
        self._db = Database(directory, busy_timeout_s=WRITE_WAIT_S)
        self._settings = settings
        self._lock = threading.RLock()
        self._memory = _Memory()
        self._touched: dict[Key, float] = {}
        self._loaded = False

    def get(self, scope: str, text_key: str) -> Entry | None:
        """The entry under this key, from memory or else from the store."""
        with self._lock:
            self._ensure_loaded()
            found = self._memory.entries.get((scope, text_key))
        if found is not None:
            return found
        row = (
            self._db.connection()
            .execute(
                f"SELECT {_COLUMNS} FROM cache_entries WHERE scope = ? AND text_key = ?",
                (scope, text_key),
            )
            .fetchone()
        )
        if row is None:
            return None
        entry = _entry(row, self._cites_of(row[0]))
        with self._lock:
            self._add(entry)
        return entry

    def peek(self, scope: str, text_key: str) -> Entry | None:
        """The entry under this key if the memory copy is loaded and holds it."""
        with self._lock:
            return self._memory.entries.get((scope, text_key)) if self._loaded else None

    def nearest(self, scope: str, vector: Vector) -> tuple[Entry, float] | None:
        """The entry of ``scope`` with the most similar query vector."""
        with self._lock:
            self._ensure_loaded()
            return self._memory.nearest(scope, vector)

    def put(self, entry: Entry, now: float) -> int:
        """Persist ``entry`` and keep it in memory; returns how many entries were evicted."""
        evicted: list[Key] = []
        try:
            with self._db.write() as conn:
                self._flush_touched(conn)
                _insert(conn, entry, now)
                evicted = _evict(conn, self._settings)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            logger.debug("cache entry kept in memory only: %s", exc)
        with self._lock:
            for key in evicted:
                self._memory.drop(key)
            self._add(entry)
        return len(evicted)

    def touch(self, entry: Entry, now: float) -> None:
        """Move ``entry`` to the young end of the LRU order (persisted on the next write)."""
        with self._lock:
            self._memory.use(entry.key)
            self._touched[entry.key] = now

    def remove(self, entry: Entry) -> None:
        """Drop one entry from memory and from the store."""
        with self._lock:
            self._memory.drop(entry.key)
            self._touched.pop(entry.key, None)
        try:
            with self._db.write() as conn:
                conn.execute(
                    "DELETE FROM cache_entries WHERE scope = ? AND text_key = ?", entry.key
                )
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise

    def invalidate(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Drop from memory the entries citing ``doc_ids``. The store's rows were deleted
        (and counted) by the trigger in the writer's transaction, so this returns 0."""
        with self._lock:
            for doc_id in doc_ids:
                for key in list(self._memory.by_doc.get((collection_id, doc_id), ())):
                    self._memory.drop(key)
        return 0

    def entries(self, collection_id: int) -> Iterator[Entry]:
        """The collection's entries persisted in the store, a page at a time (entries
        kept in memory only are not given)."""
        after = 0
        while True:
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM cache_entries WHERE collection_id = ? AND id > ? "
                    "ORDER BY id LIMIT ?",
                    (collection_id, after, PAGE),
                )
                .fetchall()
            )
            if not rows:
                return
            cites = self._cites_by_entry([row[0] for row in rows])
            yield from (_entry(row, cites.get(row[0], [])) for row in rows)
            after = rows[-1][0]

    def reset(self) -> None:
        """Forget the in-memory copy; it is loaded again on next use."""
        with self._lock:
            self._memory = _Memory()
            self._touched.clear()
            self._loaded = False

    def clear(self) -> int:
        """Delete every entry of the store and tell other processes."""
        with self._db.write() as conn:
            count = int(conn.execute("SELECT count(*) FROM cache_entries").fetchone()[0])
            conn.execute("DELETE FROM cache_entries")
        self.reset()
        return count

    def add_stats(self, deltas: Mapping[str, float]) -> None:
        """Add to the store's persisted counters."""
        try:
            with self._db.write() as conn:
                self._flush_touched(conn)
                conn.executemany(
                    "INSERT INTO cache_stats (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    list(deltas.items()),
                )
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            logger.debug("cache statistics not saved this time: %s", exc)

    def read_stats(self) -> dict[str, float]:
        """The store's persisted counters."""
        return dict(self._db.connection().execute("SELECT name, value FROM cache_stats").fetchall())

    def size(self) -> tuple[int, int]:
        """Entries and bytes held in the store."""
        row = (
            self._db.connection()
            .execute("SELECT count(*), total(bytes) FROM cache_entries")
            .fetchone()
        )
        return int(row[0]), int(row[1])

    def close(self) -> None:
        """Close this backend's connections."""
        self._db.close()

    def _add(self, entry: Entry) -> None:
        self._memory.add(entry)
        self._memory.bound(self._settings.max_entries, self._settings.max_bytes)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        conn = self._db.connection()
        cites: dict[int, list[str]] = {}
        for entry_id, doc_id in conn.execute("SELECT entry_id, doc_id FROM cache_cites"):
            cites.setdefault(entry_id, []).append(doc_id)
        for row in conn.execute(f"SELECT {_COLUMNS} FROM cache_entries ORDER BY last_used, id"):
            self._memory.add(_entry(row, cites.get(row[0], [])))
        self._memory.bound(self._settings.max_entries, self._settings.max_bytes)
        self._loaded = True

    def _cites_of(self, entry_id: int) -> list[str]:
        rows = self._db.connection().execute(
            "SELECT doc_id FROM cache_cites WHERE entry_id = ?", (entry_id,)
        )
        return [row[0] for row in rows]

    def _cites_by_entry(self, entry_ids: Sequence[int]) -> dict[int, list[str]]:
        cites: dict[int, list[str]] = {}
        for part in batched(entry_ids):
            rows = self._db.connection().execute(
                "SELECT entry_id, doc_id FROM cache_cites "
                f"WHERE entry_id IN ({placeholders(len(part))})",
                part,
            )
            for entry_id, doc_id in rows:
                cites.setdefault(entry_id, []).append(doc_id)
        return cites

    def _flush_touched(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            touched, self._touched = self._touched, {}
        conn.executemany(
            "UPDATE cache_entries SET last_used = ? WHERE scope = ? AND text_key = ?",
            [(when, scope, text) for (scope, text), when in touched.items()],
        )


class _Memory:
    """The in-memory mirror: LRU-ordered entries, reverse index and per-scope vectors."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Key, Entry] = OrderedDict()
        self.by_doc: dict[tuple[int, str], set[Key]] = {}
        self.vectors: dict[str, dict[Key, bytes]] = {}
        self.matrices: dict[str, tuple[list[Key], Vector]] = {}
        self.bytes = 0

    def add(self, entry: Entry) -> None:
        self.drop(entry.key)
        self.entries[entry.key] = entry
        self.bytes += entry.nbytes
        for doc_id in entry.cites:
            self.by_doc.setdefault((entry.collection_id, doc_id), set()).add(entry.key)
        if entry.vector is not None:
            self.vectors.setdefault(entry.scope, {})[entry.key] = entry.vector
            self.matrices.pop(entry.scope, None)

    def drop(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.nbytes
        for doc_id in entry.cites:
            keys = self.by_doc.get((entry.collection_id, doc_id))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_doc[(entry.collection_id, doc_id)]
        scope = self.vectors.get(entry.scope)
        if scope is not None and scope.pop(key, None) is not None:
            self.matrices.pop(entry.scope, None)
            if not scope:
                del self.vectors[entry.scope]

    def use(self, key: Key) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)

    def bound(self, max_entries: int, max_bytes: int) -> None:
        while self.entries and (len(self.entries) > max_entries or self.bytes > max_bytes):
            self.drop(next(iter(self.entries)))

    def nearest(self, scope: str, vector: Vector) -> tuple[Entry, float] | None:
        if scope not in self.vectors:
            return None
        keys, matrix = self._matrix(scope)
        sims = matrix @ vector
        best = int(np.argmax(sims))
        return self.entries[keys[best]], float(sims[best])

    def _matrix(self, scope: str) -> tuple[list[Key], Vector]:
        cached = self.matrices.get(scope)
        if cached is None:
            vectors = self.vectors[scope]
            keys = list(vectors)
            rows = [np.frombuffer(vectors[key], dtype=np.float32) for key in keys]
            cached = keys, np.stack(rows)
            self.matrices[scope] = cached
        return cached


def _entry(row: Sequence[object], cites: Sequence[str]) -> Entry:
    _, collection_id, scope, text_key, hits, vector, seq, writes, created, expires = row
    return Entry(
        collection_id=int(collection_id),  # type: ignore[call-overload]
        scope=str(scope),
        text_key=str(text_key),
        hits=str(hits),
        cites=tuple(cites),
        vector=bytes(vector) if vector is not None else None,  # type: ignore[call-overload]
        seq=int(seq),  # type: ignore[call-overload]
        writes=int(writes),  # type: ignore[call-overload]
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=float(expires),  # type: ignore[arg-type]
    )


def _insert(conn: sqlite3.Connection, entry: Entry, now: float) -> None:
    conn.execute("DELETE FROM cache_entries WHERE scope = ? AND text_key = ?", entry.key)
    cursor = conn.execute(
        "INSERT INTO cache_entries (collection_id, scope, text_key, hits, vector, seq, writes, "
        "created_at, expires_at, last_used, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.collection_id,
            entry.scope,
            entry.text_key,
            entry.hits,
            entry.vector,
            entry.seq,
            entry.writes,
            entry.created_at,
            entry.expires_at,
            now,
            entry.nbytes,
        ),
    )
    entry_id = int(cursor.lastrowid or 0)
    conn.executemany(
        "INSERT INTO cache_cites (collection_id, doc_id, entry_id) VALUES (?, ?, ?)",
        [(entry.collection_id, doc_id, entry_id) for doc_id in entry.cites],
    )


def _evict(conn: sqlite3.Connection, settings: CacheSettings) -> list[Key]:
    """Delete least recently used rows until the store is within bounds."""
    count, total = conn.execute("SELECT count(*), total(bytes) FROM cache_entries").fetchone()
    if count <= settings.max_entries and total <= settings.max_bytes:
        return []
    victims: list[tuple[int, Key]] = []
    cursor = conn.execute(
        "SELECT id, bytes, scope, text_key FROM cache_entries ORDER BY last_used, id"
    )
    for entry_id, size, scope, text_key in cursor:
        if count <= settings.max_entries and total <= settings.max_bytes:
            break
        victims.append((entry_id, (scope, text_key)))
        count, total = count - 1, total - size
    cursor.close()
    for part in batched([entry_id for entry_id, _ in victims]):
        conn.execute(f"DELETE FROM cache_entries WHERE id IN ({placeholders(len(part))})", part)
    return [key for _, key in victims]


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)

"""What the store says about freshness: the counters and change log kept by the
triggers of the cache migration (``store/db.py``), read in autocommit.

Every update or delete of a document, by any process, bumps its collection's ``seq`` and
records that seq against the document, in the writer's own transaction. An entry keeps
the seq read before its search ran; it is fresh while no document it cites has a later
change. This check needs only the store, so it also guards entries held in a backend that
writers know nothing about (Redis).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from ragstore.store.rows import batched, placeholders


@dataclass(frozen=True, slots=True)
class Clock:
    """A collection's change counters and the store's cache epoch, read at one moment."""

    seq: int
    writes: int
    index_version: int
    epoch: int


def read_clock(conn: sqlite3.Connection, collection_id: int) -> Clock:
    """The counters of one collection (zeros before its first write)."""
    row = conn.execute(
        "SELECT k.seq, k.writes, k.index_version, "
        "(SELECT value FROM cache_meta WHERE name = 'epoch') "
        "FROM (SELECT ? AS id) q LEFT JOIN cache_clock k ON k.collection_id = q.id",
        (collection_id,),
    ).fetchone()
    return Clock(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))


def changed_since(
    conn: sqlite3.Connection, collection_id: int, doc_ids: Sequence[str], seq: int
) -> bool:
    """Whether any of ``doc_ids`` was updated or deleted after change ``seq``."""
    for part in batched(list(doc_ids)):
        row = conn.execute(
            "SELECT 1 FROM cache_doc_changes WHERE collection_id = ? AND seq > ? "
            f"AND doc_id IN ({placeholders(len(part))}) LIMIT 1",
            (collection_id, seq, *part),
        ).fetchone()
        if row is not None:
            return True
    return False


def changes_after(conn: sqlite3.Connection, collection_id: int, seq: int) -> list[str]:
    """Ids of the documents updated or deleted after change ``seq``."""
    rows = conn.execute(
        "SELECT doc_id FROM cache_doc_changes WHERE collection_id = ? AND seq > ?",
        (collection_id, seq),
    )
    return [row[0] for row in rows]


def youngest_update(
    conn: sqlite3.Connection, collection_id: int, doc_ids: Sequence[str]
) -> float | None:
    """The newest ``updated_at`` among ``doc_ids`` (``None`` when none exists)."""
    newest: float | None = None
    for part in batched(list(doc_ids)):
        row = conn.execute(
            "SELECT max(updated_at) FROM documents WHERE collection_id = ? "
            f"AND doc_id IN ({placeholders(len(part))})",
            (collection_id, *part),
        ).fetchone()
        if row[0] is not None:
            newest = row[0] if newest is None else max(newest, row[0])
    return newest


def store_id(conn: sqlite3.Connection) -> str:
    """A random id made when the store's cache tables were created."""
    return str(conn.execute("SELECT value FROM cache_meta WHERE name = 'store_id'").fetchone()[0])


def bump_epoch(conn: sqlite3.Connection) -> None:
    """Tell other processes that the store's cache was cleared."""
    conn.execute("UPDATE cache_meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'epoch'")

"""Consistent copies of a live SQLite store file, and what a copy holds.

A copy is the database file and its write-ahead log copied by the kernel while one read
transaction is held on the source, then recovered on its own: it holds exactly the
transactions committed before one instant of the copy, while other connections and
processes keep reading and writing (WAL mode). Why that read transaction is enough:

- While it reads the log up to some frame, no checkpoint copies later frames into the
  database file and no writer starts the log over; while it reads the database file
  alone, no checkpoint writes into that file at all (sqlite.org/wal.html).
- So every page of the file that changes during the copy is one whose newer version is
  in the log below that frame, and the log, copied after the file, holds it: recovery
  puts it back whole. Frames past the last whole commit of the copied log (a write in
  progress) fail their checksums and are ignored by recovery.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.store.base import ChunkRow, DocumentRow
from ragstore.store.sqlite.db import SCHEMA_VERSION, Database


@dataclass(frozen=True, slots=True)
class CopiedCollection:
    """One collection in a copy: its id, name, config (JSON text) and counts."""

    id: int
    name: str
    config: str
    documents: int
    chunks: int


@dataclass(frozen=True, slots=True)
class CopiedSegment:
    """One sealed-segment manifest row in a copy: its collection, directory and the
    CRC-32 of each of its files."""

    collection_id: int
    directory: str
    crc32: dict[str, int]


def backup(database: Database, destination: Path) -> None:
    """Copy the database, as of one instant, into a new file ``destination``."""
    log = Path(f"{database.path}-wal")
    copied_log = Path(f"{destination}-wal")
    source = sqlite3.connect(database.path, timeout=60.0, isolation_level=None)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read begins
        shutil.copyfile(database.path, destination)
        if log.exists():
            shutil.copyfile(log, copied_log)
        source.execute("COMMIT")
    finally:
        source.close()
    target = sqlite3.connect(destination, isolation_level=None)
    try:
        # A copy is synced whole by its caller, and one cut short is thrown away.
        target.execute("PRAGMA synchronous = OFF")
        # Recovers the copied log, folds it into the file and removes it: the copy is
        # read as a whole file by itself.
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads ``path`` as it is, writes nothing and leaves no
    ``-wal``/``-shm`` file beside it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


def schema_version(conn: sqlite3.Connection) -> int:
    """The copy's schema version (``SCHEMA_VERSION`` of the ragstore that wrote it)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def collections(conn: sqlite3.Connection) -> list[CopiedCollection]:
    """Every collection in the copy, by name, with its document and chunk counts."""
    rows = conn.execute(
        "SELECT c.id, c.name, c.config,"
        " (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),"
        " (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id)"
        " FROM collections c ORDER BY c.name"
    ).fetchall()
    return [CopiedCollection(int(i), n, cfg, int(d), int(k)) for i, n, cfg, d, k in rows]


def segments(conn: sqlite3.Connection) -> list[CopiedSegment]:
    """Every sealed segment the copy's manifest names."""
    found = []
    for collection_id, files in conn.execute("SELECT collection_id, files FROM segments"):
        parsed: dict[str, Any] = json.loads(files)
        found.append(CopiedSegment(int(collection_id), str(parsed["dir"]), parsed["crc32"]))
    return found


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """SQLite's own structural check of the copy: ``None`` when it finds nothing."""
    try:
        answer = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if answer == [("ok",)] else "; ".join(str(row[0]) for row in answer[:3])


def document_rows(
    conn: sqlite3.Connection, collection_id: int, batch: int = 512
) -> Iterator[list[DocumentRow]]:
    """A copied collection's documents with their chunks and vectors, ``batch`` documents
    at a time, ready to be written into another store without embedding anything."""
    last = 0
    while found := conn.execute(
        "SELECT id, doc_id, source, origin, title, text, metadata, content_hash FROM documents"
        " WHERE collection_id = ? AND id > ? ORDER BY id LIMIT ?",
        (collection_id, last, batch),
    ).fetchall():
        last = int(found[-1][0])
        chunks = _chunks_of(conn, [int(row[0]) for row in found])
        yield [
            DocumentRow(doc_id, source, origin, title, text, json.loads(meta), digest,
                        chunks.get(int(row_id), []), meta)
            for row_id, doc_id, source, origin, title, text, meta, digest in found
        ]  # fmt: skip


def _chunks_of(conn: sqlite3.Connection, document_ids: Sequence[int]) -> dict[int, list[ChunkRow]]:
    marks = ",".join("?" * len(document_ids))
    chunks: dict[int, list[ChunkRow]] = {}
    for document_id, ordinal, text, start, end, digest, vector in conn.execute(
        "SELECT document_id, ordinal, text, start_char, end_char, hash, vector FROM chunks"
        f" WHERE document_id IN ({marks}) ORDER BY document_id, ordinal",
        document_ids,
    ):
        row = ChunkRow(ordinal, text, start, end, digest, np.frombuffer(vector, dtype=np.float32))
        chunks.setdefault(int(document_id), []).append(row)
    return chunks


def keep_only(path: Path, collection_ids: Sequence[int]) -> None:
    """Remove every collection but ``collection_ids`` from a copy, and compact it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        kept = ",".join(str(int(i)) for i in collection_ids)
        conn.execute("BEGIN IMMEDIATE")
        # In this order: removing chunks and documents fires triggers that write into the
        # tables cleared after them.
        for table in ("chunks", "documents", "segments", "cache_entries", "tombstones",
                      "cache_clock", "cache_doc_changes"):  # fmt: skip
            conn.execute(f"DELETE FROM {table} WHERE collection_id NOT IN ({kept})")
        conn.execute(f"DELETE FROM aliases WHERE collection_id NOT IN ({kept})")
        conn.execute(f"UPDATE aliases SET previous_id = NULL WHERE previous_id NOT IN ({kept})")
        conn.execute(f"DELETE FROM collections WHERE id NOT IN ({kept})")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    finally:
        conn.close()


def give_new_identity(path: Path) -> None:
    """Make a restored copy a store of its own: a new store id (the key of its entries
    in a shared cache) and an empty query cache."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE cache_meta SET value = lower(hex(randomblob(16))) WHERE name = 'store_id'"
        )
        conn.execute("DELETE FROM cache_entries")
        conn.execute("COMMIT")
    finally:
        conn.close()


def is_current_schema(version: int) -> bool:
    """Whether a copy with ``version`` can be opened by this ragstore (older ones are
    upgraded in place when opened)."""
    return 0 < version <= SCHEMA_VERSION

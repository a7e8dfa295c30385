"""Bulk statements and the background checkpointer, on real SQLite files.

Packed reads must return exactly what row-by-row reads return (binary values, NUL bytes,
empty values, many pages); bulk inserts must assign the consecutive rowids the store
relies on; the checkpointer must keep the write-ahead log copied into the database file
while writers never checkpoint themselves.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ragstore
from ragstore.store.sqlite import db as database
from ragstore.store.sqlite import packed
from ragstore.store.sqlite.db import Database


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, b BLOB, s TEXT)")
    return connection


def rows_of(count: int, seed: int = 0) -> list[tuple[bytes, str]]:
    rng = np.random.default_rng(seed)
    values = []
    for i in range(count):
        blob = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        values.append((blob + b"\0" * (i % 3), f"é{i},\0;{'x' * (i % 5)}"))
    return values


def test_bulk_insert_gives_consecutive_rowids_and_packed_reads_match_row_reads(
    conn: sqlite3.Connection,
) -> None:
    conn.execute("INSERT INTO t (b, s) VALUES (x'00', 'first')")
    values = rows_of(5000)
    conn.execute("BEGIN IMMEDIATE")
    last = packed.insert(conn, "INSERT INTO t (b, s)", values)  # several statements
    conn.execute("COMMIT")
    assert last == 5001
    expected = conn.execute("SELECT id, b, s FROM t WHERE id > 1 ORDER BY id").fetchall()
    assert [row[0] for row in expected] == list(range(2, 5002))
    assert [(row[1], row[2]) for row in expected] == values

    pages = list(
        packed.read_after(
            conn,
            "SELECT id AS c0, b AS c1, s AS c2 FROM t WHERE id > ? ORDER BY id LIMIT ?",
            (),
            3,
            1,
        )
    )
    assert len(pages) == 1  # under READ_ROWS
    ids, blobs, texts = pages[0]
    assert ids.ints().tolist() == list(range(2, 5002))
    assert blobs.values() == [row[1] for row in expected]
    assert texts.texts() == [row[2] for row in expected]


def test_reads_page_through_many_rows_and_handle_none(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packed, "READ_ROWS", 7)
    packed.insert(conn, "INSERT INTO t (b, s)", rows_of(50, seed=1))
    query = "SELECT id AS c0, s AS c1 FROM t WHERE id > ? ORDER BY id LIMIT ?"
    pages = list(packed.read_after(conn, query, (), 2, 0))
    assert [len(page[0]) for page in pages] == [7] * 7 + [1]
    assert np.concatenate([page[0].ints() for page in pages]).tolist() == list(range(1, 51))
    empty = packed.read(conn, "SELECT id AS c0 FROM t WHERE id < 0", (), 1)[0]
    assert len(empty) == 0 and empty.values() == [] and empty.ints().size == 0
    assert packed.insert(conn, "INSERT INTO t (b, s)", []) == 0


def test_a_null_value_is_refused_not_misaligned(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t (b, s) VALUES (x'01', NULL)")
    with pytest.raises(ValueError, match="NULL"):
        packed.read(conn, "SELECT id AS c0, s AS c1 FROM t", (), 2)


def wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the log, frames copied into the database), asked of a new connection."""
    with sqlite3.connect(path) as other:
        _, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames), int(copied)


def _checkpointers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "ragstore-checkpoint"}


def test_writers_leave_checkpoints_to_the_background_thread(tmp_path: Path) -> None:
    others = _checkpointers()  # of stores other tests left open
    db = Database(tmp_path)
    conn = db.connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    with db.write() as tx:
        tx.execute("CREATE TABLE v (x BLOB)")
    blob = os.urandom(4096)
    for _ in range(20):
        with db.write() as tx:
            packed.insert(tx, "INSERT INTO v (x)", [(blob,)] * 50)
    assert _checkpointers() - others
    # The writer's connection never checkpoints, so only the background thread can have
    # copied the 4 MB of pages from the log into the database file.
    deadline = time.monotonic() + 10
    while db.path.stat().st_size < 20 * 50 * 4096 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.path.stat().st_size >= 20 * 50 * 4096
    db.close()
    assert not _checkpointers() - others
    frames, copied = wal_frames(db.path)
    assert frames == copied


def test_a_writer_waits_while_the_log_is_too_far_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "CHECKPOINT_BACKLOG_PAGES", 10)
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("v", embedder=None, dim=64)
        reader = sqlite3.connect(store.path / "ragstore.db", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM chunks").fetchone()  # pins the log
        vectors = np.eye(64, dtype=np.float32)
        col.upsert_vectors([f"a{i}" for i in range(64)], vectors)  # the log falls behind
        checkpointer = store._db.db._checkpointer
        deadline = time.monotonic() + 10
        while checkpointer._backlog <= 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # until a round has found it behind
        done = threading.Event()

        def write() -> None:
            col.upsert_vectors([f"b{i}" for i in range(64)], vectors)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(1.0)  # held back: the checkpointer cannot catch up
        reader.execute("COMMIT")
        assert done.wait(10.0)  # the reader let go, the log was copied, the writer went on
        writer.join()
        reader.close()
        assert col.count() == 128

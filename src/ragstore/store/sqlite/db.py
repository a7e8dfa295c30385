"""The SQLite file under a store directory: connections, transactions and the schema.

Concurrency model: WAL mode, so readers never block and never see uncommitted rows;
every write runs in ``BEGIN IMMEDIATE`` so writers queue on the busy timeout instead of
failing mid-transaction with "database is locked". Each thread gets its own connection.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragstore import terms
from ragstore.errors import SchemaTooNew, StoreError

DB_FILENAME = "ragstore.db"
BUSY_TIMEOUT_S = 60.0
MMAP_BYTES = 1 << 30
"""Reads map up to this much of the database file instead of copying pages."""
WAL_INDEX_HEADER_BYTES = 96
"""The start of the ``-shm`` file: SQLite's WAL-index header, written twice (48 bytes
each). Every commit by any connection rewrites it (its change counter goes up), so
while these bytes stay the same nothing was committed (sqlite.org/walformat.html)."""

_SCHEMA = """
CREATE TABLE collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    tombstone_floor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    doc_id TEXT NOT NULL,
    source TEXT,
    origin TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (collection_id, doc_id)
);
CREATE INDEX documents_by_origin ON documents(collection_id, origin);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    document_id INTEGER NOT NULL REFERENCES documents(id),
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_by_hash ON chunks(hash);
CREATE INDEX chunks_by_collection ON chunks(collection_id, id);
-- Every removed chunk leaves a tombstone, so other processes' in-memory indexes can
-- catch up by reading only what changed since they last looked.
CREATE TABLE tombstones (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    chunk_id INTEGER NOT NULL
);
CREATE INDEX tombstones_by_collection ON tombstones(collection_id, seq);
-- Schema 4 adds chunks.terms, the chunk's keyword terms (see search/keyword.py).
CREATE TRIGGER chunk_removed AFTER DELETE ON chunks BEGIN
    INSERT INTO tombstones (collection_id, chunk_id) VALUES (old.collection_id, old.id);
END;
"""

# Sealed vector index segments (see store/segments.py). The files live under
# indexes/<collection id>/; this table is the manifest that says which files are current.
_SEGMENTS = """
CREATE TABLE segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    kind TEXT NOT NULL,
    vectors INTEGER NOT NULL,
    first_chunk INTEGER NOT NULL,
    last_chunk INTEGER NOT NULL,
    files TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX segments_by_collection ON segments(collection_id, id);
"""

# The query cache (see cache/). cache_clock counts, per collection, updates and deletes of
# documents (seq), every document write (writes) and index changes (index_version);
# cache_doc_changes holds the seq of each document's last update or delete. The triggers
# run inside the writer's own transaction, whichever process writes: a cache entry records
# the seq it was computed at and is served only while none of the documents it cites
# changed after it. cache_cites is the reverse index document -> entries, so the entries
# citing a changed document are deleted in the same transaction.
_CACHE_DOCUMENT_TRIGGER = """
CREATE TRIGGER cache_document_{event} AFTER {event} ON documents BEGIN
    INSERT OR IGNORE INTO cache_clock (collection_id) VALUES (old.collection_id);
    UPDATE cache_clock SET seq = seq + 1, writes = writes + 1
        WHERE collection_id = old.collection_id;
    INSERT OR REPLACE INTO cache_doc_changes (collection_id, doc_id, seq)
        SELECT old.collection_id, old.doc_id, seq FROM cache_clock
        WHERE collection_id = old.collection_id;
    UPDATE cache_stats SET value = value + (SELECT count(*) FROM cache_cites
        WHERE collection_id = old.collection_id AND doc_id = old.doc_id)
        WHERE name = 'invalidations';
    DELETE FROM cache_entries WHERE id IN (SELECT entry_id FROM cache_cites
        WHERE collection_id = old.collection_id AND doc_id = old.doc_id);
END;
"""

_CACHE_INDEX_TRIGGER = """
CREATE TRIGGER cache_{table}_{name} AFTER {event} ON {table} BEGIN
    INSERT OR IGNORE INTO cache_clock (collection_id) VALUES ({row}.{column});
    UPDATE cache_clock SET index_version = index_version + 1
        WHERE collection_id = {row}.{column};
END;
"""

_CACHE = (
    """
CREATE TABLE cache_clock (
    collection_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL DEFAULT 0,
    writes INTEGER NOT NULL DEFAULT 0,
    index_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE cache_doc_changes (
    collection_id INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (collection_id, doc_id)
) WITHOUT ROWID;
CREATE TABLE cache_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    text_key TEXT NOT NULL,
    vector BLOB,
    hits TEXT NOT NULL,
    seq INTEGER NOT NULL,
    writes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used REAL NOT NULL,
    bytes INTEGER NOT NULL,
    UNIQUE (scope, text_key)
);
CREATE INDEX cache_entries_by_use ON cache_entries(last_used);
CREATE TABLE cache_cites (
    collection_id INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES cache_entries(id) ON DELETE CASCADE,
    PRIMARY KEY (collection_id, doc_id, entry_id)
) WITHOUT ROWID;
CREATE INDEX cache_cites_by_entry ON cache_cites(entry_id);
CREATE TABLE cache_stats (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
INSERT INTO cache_stats (name, value) VALUES ('invalidations', 0);
CREATE TABLE cache_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO cache_meta (name, value) VALUES ('store_id', lower(hex(randomblob(16))));
INSERT INTO cache_meta (name, value) VALUES ('epoch', '0');
CREATE TRIGGER cache_document_insert AFTER INSERT ON documents BEGIN
    INSERT OR IGNORE INTO cache_clock (collection_id) VALUES (new.collection_id);
    UPDATE cache_clock SET writes = writes + 1 WHERE collection_id = new.collection_id;
END;
CREATE TRIGGER cache_collection_delete AFTER DELETE ON collections BEGIN
    DELETE FROM cache_entries WHERE collection_id = old.id;
END;
"""
    + _CACHE_DOCUMENT_TRIGGER.format(event="UPDATE")
    + _CACHE_DOCUMENT_TRIGGER.format(event="DELETE")
    + _CACHE_INDEX_TRIGGER.format(
        table="segments", name="insert", event="INSERT", row="new", column="collection_id"
    )
    + _CACHE_INDEX_TRIGGER.format(
        table="segments", name="delete", event="DELETE", row="old", column="collection_id"
    )
    + _CACHE_INDEX_TRIGGER.format(
        table="collections", name="config", event="UPDATE OF config", row="new", column="id"
    )
)


def _keyword_terms(conn: sqlite3.Connection) -> None:
    """Each chunk stores its keyword terms, the source of the in-memory BM25 postings;
    the per-collection FTS5 tables that schemas 1-3 kept go."""
    conn.execute("ALTER TABLE chunks ADD COLUMN terms BLOB NOT NULL DEFAULT x''")
    last = 0
    while found := conn.execute(
        "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE c.id > ? ORDER BY c.id LIMIT 10000",
        (last,),
    ).fetchall():
        conn.executemany(
            "UPDATE chunks SET terms = ? WHERE id = ?",
            [(terms.encode_terms(title, text), chunk_id) for chunk_id, title, text in found],
        )
        last = int(found[-1][0])
    tables = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'chunk_fts_[0-9]*' "
        "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
    ).fetchall()
    for (table,) in tables:
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_removed")
        conn.execute(f"DROP TABLE {table}")


# Schema 5: per-row work on inserts that measured as much as the inserts themselves.
# New documents are counted into cache_clock.writes once per statement (rows.py), not by
# a trigger per row; the hash index leaves out chunks whose vectors were given rather
# than embedded (hash ''), since only embedded text is ever looked up by hash.
_LEANER_INSERTS = """
DROP TRIGGER IF EXISTS cache_document_insert;
DROP INDEX IF EXISTS chunks_by_hash;
CREATE INDEX chunks_by_hash ON chunks(hash) WHERE hash != '';
"""

# Schema 6: aliases, names that stand for a collection (see engine/store.py). previous_id
# is the collection an alias named before its last switch, for a rollback.
_ALIASES = """
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    previous_id INTEGER,
    updated_at REAL NOT NULL
);
"""

# The schema is built by applying these steps in order; ``user_version`` counts how many
# have been applied, so an older store is upgraded in place by running the rest.
_MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    _SCHEMA,
    _SEGMENTS,
    _CACHE,
    _keyword_terms,
    _LEANER_INSERTS,
    _ALIASES,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class Database:
    """One SQLite database file, shared safely by threads and processes.

    Writers never checkpoint: copying the write-ahead log back into the database file
    (and its fsyncs) took more time than the writes themselves, so a background thread
    does it (:class:`_Checkpointer`) while the writer goes on.
    """

    def __init__(self, directory: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = directory / DB_FILENAME
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._checkpointer = _Checkpointer(self)
        self._ensure_schema()
        self._wal = _WalIndex(Path(f"{self.path}-shm"))

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: waits its turn, commits on success, rolls back on error."""
        conn = self.connection()
        with _storage_failures():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._local.writes = getattr(self._local, "writes", 0) + 1
        self._checkpointer.wrote()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one committed snapshot."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def change_stamp(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """A value that stays the same while nothing is committed to the database.

        ``PRAGMA data_version`` changes when another connection commits; this thread's
        own commits are counted apart. ``conn`` must be this thread's connection.
        Outside a transaction, the statement (which takes SQLite's shared-memory locks)
        is skipped while the WAL-index header is byte for byte what it was before the
        last one ran in this thread.
        """
        writes = getattr(self._local, "writes", 0)
        if conn.in_transaction:  # the version is the transaction's snapshot's
            return id(conn), self._data_version(conn), writes
        header = self._wal.header()
        last = getattr(self._local, "last_look", None)
        if header is not None and last is not None and last[0] == header:
            # This thread's own commits rewrite the header too.
            unchanged: tuple[int, int, int] = last[1]
            return unchanged
        # The header is read before the version: a commit between the two changes the
        # header again, so the next call looks again.
        stamp = id(conn), self._data_version(conn), writes
        self._local.last_look = (header, stamp)
        return stamp

    def commit_marker(self) -> bytes | None:
        """Bytes that stay the same while nothing is committed to the database by any
        connection of any process: the WAL-index header, read from memory without a
        statement or a lock (``None`` where it cannot be read). Read it *before* what
        it should vouch for; a commit in between changes it again. ``None`` too until
        this process holds a connection: only then is the file's header sure to stay."""
        if not self._connections:
            return None
        return self._wal.header()

    @staticmethod
    def _data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Checkpoint what is left, close every connection this object opened."""
        self._checkpointer.stop()
        self._wal.close()  # before the connections: SQLite may truncate a file none holds
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        timeout = self._busy_timeout_s
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the _Checkpointer does it
        return conn

    def _ensure_schema(self) -> None:
        conn = self.connection()
        version = _user_version(conn)
        if version == SCHEMA_VERSION:
            return
        _refuse_newer(version, self.path)
        with self.write() as tx:
            version = _user_version(tx)  # another process may have upgraded it meanwhile
            _refuse_newer(version, self.path)
            for step in _MIGRATIONS[version:]:
                if callable(step):
                    step(tx)
                    continue
                for statement in _statements(step):
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_STORAGE_FAILURES = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN")


@contextmanager
def _storage_failures() -> Iterator[None]:
    """SQLite's "cannot write here" errors (a read-only file, a full disk, an I/O
    error) as :class:`StoreError`; a programming error stays what it is."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith(_STORAGE_FAILURES):
            raise StoreError(f"the store cannot be written: {exc}") from exc
        raise


class _WalIndex:
    """A read-only map of the WAL-index header, opened at first use.

    Used only while this process holds a connection to the database: SQLite deletes or
    truncates the ``-shm`` file only when no connection to it is open anywhere, so the
    map cannot outlive the file's first bytes. Without a ``-shm`` file big enough (no
    WAL mode, or a VFS without shared memory) :meth:`header` is ``None``.

    The file is opened once per process and never closed (see :func:`_shared_map`):
    closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included, and without them another process that opens the database takes
    the shared memory for unused and resets it under this process's feet.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._unavailable = False

    def header(self) -> bytes | None:
        """The header's bytes as they are now, or ``None`` when they cannot be read."""
        view = self._map or self._open()
        if view is None or self._unavailable:
            return None
        try:
            return view[:WAL_INDEX_HEADER_BYTES]
        except ValueError:  # a map of an older file, let go meanwhile
            return None

    def _open(self) -> mmap.mmap | None:
        with self._lock:
            if self._map is None and not self._unavailable:
                self._map = _shared_map(self._path)
                self._unavailable = self._map is None  # one try: a missing file stays so
            return self._map

    def close(self) -> None:
        """Stop reading; later calls of :meth:`header` give ``None``. The map itself
        stays open for the process (see the class docstring)."""
        with self._lock:
            self._unavailable = True
            self._map = None


_SHARED_MAPS: dict[Path, tuple[tuple[int, int], int, mmap.mmap | None]] = {}
"""Per ``-shm`` path: the file's (device, inode), its descriptor and the header's map
(``None`` when the file was too small)."""
_SHARED_MAPS_LOCK = threading.Lock()


def _shared_map(path: Path) -> mmap.mmap | None:
    """The process's map of the header of the file at ``path`` now (``None`` when there
    is no such file or it is too small). An older file at that path (deleted once no
    connection used it, then made anew; the descriptor held here keeps its inode from
    being reused) is let go: closing it drops locks on that old file only."""
    with _SHARED_MAPS_LOCK:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        known = _SHARED_MAPS.get(path)
        if known is not None and known[0] == (stat.st_dev, stat.st_ino):
            return known[2]
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        opened = os.fstat(descriptor)
        view = None
        if opened.st_size >= WAL_INDEX_HEADER_BYTES:
            view = mmap.mmap(descriptor, WAL_INDEX_HEADER_BYTES, access=mmap.ACCESS_READ)
        _SHARED_MAPS[path] = (opened.st_dev, opened.st_ino), descriptor, view
        if known is not None:
            if known[2] is not None:
                known[2].close()
            os.close(known[1])
        return view


class _Checkpointer:
    """Copies the write-ahead log into the database file on a thread of its own.

    Woken by commits, it checkpoints at most every :data:`CHECKPOINT_INTERVAL_S`
    (``PASSIVE``: it never blocks readers or writers, and stops at frames a reader still
    needs; the next round takes them). When the log grows past
    :data:`CHECKPOINT_BACKLOG_PAGES` unwritten pages anyway, the writer waits for a round,
    so the log stays bounded.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._wake = threading.Condition()
        self._pending = 0
        self._backlog = 0
        self._running = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """A commit happened: wake the thread (starting it the first time)."""
        with self._wake:
            self._pending += 1
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="ragstore-checkpoint", daemon=True
                )
                self._thread.start()
            self._wake.notify_all()
            while self._backlog > CHECKPOINT_BACKLOG_PAGES and not self._stopped:
                self._wake.wait()

    def stop(self) -> None:
        """Finish with one last checkpoint and end the thread."""
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._database.path, timeout=BUSY_TIMEOUT_S)
            try:
                while self._wait_for_work():
                    self._checkpoint(conn)
                    with self._wake:  # a pause between rounds, cut short by stop()
                        self._wake.wait_for(lambda: self._stopped, CHECKPOINT_INTERVAL_S)
                self._checkpoint(conn)
            finally:
                conn.close()
        finally:
            with self._wake:  # never leave a writer waiting on a thread that is gone
                self._backlog = 0
                self._thread = None  # the next commit starts another, unless stopped
                self._wake.notify_all()

    def _wait_for_work(self) -> bool:
        """Wait for a commit, or go on at once while the log is too far behind."""
        with self._wake:
            while (
                not self._pending
                and not self._stopped
                and self._backlog <= CHECKPOINT_BACKLOG_PAGES
            ):
                self._wake.wait()
            self._pending = 0
            return not self._stopped

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:  # busy or closing: the next round tries again
            return
        with self._wake:
            self._backlog = max(int(log_pages) - int(copied), 0)
            self._wake.notify_all()


CHECKPOINT_INTERVAL_S = 0.25
"""Least time between two checkpoints."""
CHECKPOINT_BACKLOG_PAGES = 262_144
"""Pages (1 GiB at 4 KiB) the log may hold beyond the last checkpoint before writers
wait for the checkpointer."""


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}; this ragstore reads up to "
            f"{SCHEMA_VERSION}. Upgrade ragstore to open it."
        )


def _statements(script: str) -> list[str]:
    """Split a DDL script into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


def _retry_locked(action: Callable[[], object], attempts: int = 50) -> None:
    """Run ``action`` again while SQLite reports the file locked (WAL switch races)."""
    for attempt in range(attempts):
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise StoreError(str(exc)) from exc
            time.sleep(min(0.01 * (attempt + 1), 0.2))
    action()

"""A store whose source of truth is one PostgreSQL database (with pgvector).

Connections come from a pool. :meth:`PostgresBackend.read` is a ``REPEATABLE READ, READ
ONLY`` transaction, so every read in it sees one snapshot; :meth:`PostgresBackend.write`
is a ``READ COMMITTED`` transaction. Writers that add or remove chunks take one
store-wide advisory lock first: chunk ids and removal seqs come from sequences, and only
when transactions that draw from them commit in the order they drew do "ids past the
last one seen" and "removals past the last seq applied" miss nothing. Manifest changes
take a lock per collection.

Index segments are files on one host, so each backend instance reads and writes only the
manifest rows of its own node (a random id kept in ``index_root/node_id``).

A writer that looks a collection or an alias up by name takes a store-wide lock on the
names first and holds it until it ends, so the names it checked (a name is free, an
alias still names the collection a write resolved) stay as it saw them: under ``READ
COMMITTED`` another writer could otherwise change them in between.

A server that cannot be reached (stopped, restarting, refusing) is a
:class:`~ragstore.errors.StoreError` within about ``timeout`` seconds; a dead pooled
connection is replaced, and the same backend works again once the server is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import struct
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from ragstore.config import IndexConfig
from ragstore.errors import Conflict, InvalidInput, NotFound, StoreError
from ragstore.filters import Filter
from ragstore.store.base import (
    REMOVALS_KEPT,
    AliasRow,
    Anomaly,
    ChunkRow,
    Clock,
    CollectionRow,
    DatabaseIndexes,
    DatabaseSearch,
    DocumentRow,
    HitBody,
    SegmentRecord,
    SegmentValues,
    StorageBackend,
    Writer,
    missing_terms,
    unscored_hits,
)
from ragstore.store.postgres import schema, search
from ragstore.store.postgres.where import compile_where, stored_json
from ragstore.terms import encode_terms  # the one import of the keyword analyser
from ragstore.types import Hit, Ids, Matrix, Scores, StoredDocument

Connection = psycopg.Connection[tuple[Any, ...]]

CHUNKS_LOCK: Final = 0x72616753_00000002
"""Advisory lock held by every transaction that adds or removes chunks."""
SEGMENTS_LOCK: Final = 0x72616753_00000003
"""Advisory locks on one collection's manifest: this key plus the collection id."""
NAMES_LOCK: Final = 0x72616753_00000004
"""Advisory lock held by every writer that looked a collection or alias up by name."""
CACHE_DIRNAME: Final = "query-cache"
"""The local query cache's directory under ``index_root``, beside the collections'
segment directories (named by collection id)."""
DEFAULT_TIMEOUT_S: Final = 5.0
PAGE_ROWS: Final = 65_536
"""Rows fetched per statement when a read may span a whole collection."""

_BEGIN_READ: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
LOCK_TIMEOUT_S: Final = 60
"""How long a writer waits for another's lock before it fails (SQLite's busy timeout)."""

_BEGIN_WRITE: Final = (
    f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"
)
_LAST_ID: Final = 2**63 - 1
POOL_NAME: Final = "ragstore"


class _QuietReconnects(logging.Filter):
    """Drops the pool's warnings about its own failed reconnection attempts: a server
    that cannot be reached reaches the caller as one :class:`StoreError` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        ours = isinstance(args, tuple) and bool(args) and args[0] == POOL_NAME
        return not (ours and record.levelno <= logging.WARNING)


logging.getLogger("psycopg.pool").addFilter(_QuietReconnects())


class PostgresBackend:
    """The store in the PostgreSQL database at ``url`` (its schema made if missing,
    unless ``create`` is false: then a database without one raises :class:`NotFound`)."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        index_root: Path | None = None,
        pool_size: int = 8,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.location = without_password(url)
        self._url = url
        self._timeout = timeout
        self.node = ""  # known once the store is: see below
        self._writing = threading.local()
        self._pool = _open_pool(url, pool_size, timeout)
        try:
            with self._session(None) as session:
                if not create and schema.schema_version(session.conn) == 0:
                    raise NotFound(f"no store in database {self.location}")
                schema.ensure_schema(session.conn, self.location)
                store_id = session.store_id()
        except BaseException:
            self._pool.close()
            raise
        self.index_root = index_root or _default_index_root(self.location, store_id)
        self.node = _node_id(self.index_root)
        self.cache_dir = self.index_root / CACHE_DIRNAME
        self.searches_in_database = True
        self.cache_dir.mkdir(exist_ok=True)

    def read(self) -> AbstractContextManager[PostgresSession]:
        """A read-only snapshot."""
        return self._session(_BEGIN_READ)

    @contextmanager
    def write(self) -> Iterator[PostgresSession]:
        """A write transaction: commits on success, rolls back on error. One at a time
        per thread: a second would wait for the first's locks, which wait for it."""
        if getattr(self._writing, "active", False):
            raise StoreError("a write transaction is already open in this thread")
        self._writing.active = True
        try:
            with self._session(_BEGIN_WRITE) as session:
                yield session
        finally:
            self._writing.active = False

    def peek(self) -> AbstractContextManager[PostgresSession]:
        """Reads in autocommit, each statement on its own."""
        return self._session(None)

    def change_stamp(self) -> Hashable | None:
        """``None``: PostgreSQL cannot tell this without a statement."""
        return None

    def commit_marker(self) -> bytes | None:
        """``None``: there is no such thing for a server."""
        return None

    def close(self) -> None:
        """Close the pool's connections and its threads."""
        self._pool.close(timeout=self._timeout)

    # -- connections -----------------------------------------------------------------

    @contextmanager
    def _session(self, begin: str | None) -> Iterator[PostgresSession]:
        conn = self._acquire(begin)
        try:
            yield PostgresSession(conn, self.node, writing=begin == _BEGIN_WRITE)
            if begin is not None:
                conn.execute("COMMIT")
        except psycopg.OperationalError as exc:
            _roll_back(conn, begin)
            raise self._failure(exc, conn) from exc
        except BaseException:
            _roll_back(conn, begin)
            raise
        finally:
            self._pool.putconn(conn)

    def _acquire(self, begin: str | None) -> Connection:
        """A pooled connection, in a transaction begun with ``begin`` if given; a
        connection that fails at once is replaced by a fresh one, once."""
        for attempt in range(2):
            conn = self._connection()
            if begin is None:
                return conn
            try:
                conn.execute(begin)
                return conn
            except psycopg.OperationalError as exc:
                self._pool.putconn(conn)
                if attempt:
                    raise self._failure(exc, conn) from exc
        raise AssertionError("unreachable")

    def _connection(self) -> Connection:
        """A connection from the pool. While it has none to give, one direct attempt
        tells a server that is down (fail now) from a busy pool (wait on)."""
        first = min(0.5, self._timeout)
        try:
            return self._pool.getconn(timeout=first)
        except psycopg.OperationalError as exc:
            reason = self._probe()
            if reason is not None:
                raise self._unreachable(reason) from exc
        try:
            return self._pool.getconn(timeout=max(self._timeout - first, 0.1))
        except psycopg.OperationalError as exc:
            raise self._unreachable(str(exc)) from exc

    def _probe(self) -> str | None:
        """Why a new connection to the server fails, or ``None`` if it does not."""
        try:
            psycopg.connect(self._url, **_connect_kwargs(self._timeout)).close()
        except psycopg.OperationalError as exc:
            return str(exc)
        return None

    def _failure(self, exc: psycopg.OperationalError, conn: Connection) -> StoreError:
        if conn.broken or conn.closed:
            return self._unreachable(str(exc))
        return StoreError(f"PostgreSQL at {self.location} failed: {_first_line(str(exc))}")

    def _unreachable(self, reason: str) -> StoreError:
        return StoreError(f"cannot reach PostgreSQL at {self.location}: {_first_line(reason)}")


class PostgresSession:
    """Reads and writes on one connection: inside a snapshot for ``read()``, a
    transaction for ``write()``, each statement alone for ``peek()``."""

    def __init__(self, conn: Connection, node: str, *, writing: bool = False) -> None:
        self.conn = conn
        self._node = node
        self._writing = writing
        self._holds_chunks_lock = False
        self._holds_names_lock = False

    def _one(self, query: str, params: Sequence[object] = ()) -> tuple[Any, ...]:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def _all(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Every row, in binary: a ``vector`` comes as its raw binary form (no loader is
        registered for pgvector's type), which :func:`_matrix` reads in one go."""
        return self.conn.cursor(binary=True).execute(query, params).fetchall()

    def _pages(
        self, query: str, params: Sequence[object], after: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``query`` (keyed by its first column, ascending; its last two
        parameters are the key to start after and a row limit), a page at a time."""
        while True:
            rows = self._all(query, (*params, after, PAGE_ROWS))
            if rows:
                yield rows
            if len(rows) < PAGE_ROWS:
                return
            after = int(rows[-1][0])

    def _chunk_pages(
        self, columns: str, collection_id: int, first: int, last: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """``columns`` of the collection's chunks with ids in ``[first, last]``, by id, a
        page at a time.

        The planner cannot know that a collection's ids are clustered (it assumes ids
        past ``first`` are spread over every collection), so an open range looked new
        chunks up by walking the other collections' rows, and a join hashed the whole
        documents table to find none. So the range is closed at the collection's
        newest id first (one index probe), and documents are read apart
        (:meth:`_documents_column`)."""
        newest = self._one("SELECT max(id) FROM chunks WHERE collection_id = %s", (collection_id,))[
            0
        ]
        if newest is None or newest < first:
            return iter(())
        return self._pages(
            f"SELECT {columns} FROM chunks WHERE collection_id = %s AND id <= %s AND id > %s "
            "ORDER BY id LIMIT %s",
            (collection_id, min(int(last), int(newest))),
            first - 1,
        )

    def _documents_column(self, column: str, row_ids: Sequence[int]) -> dict[int, Any]:
        """Document row id -> ``column``, for the documents of ``row_ids``."""
        wanted = sorted(set(row_ids))
        if not wanted:
            return {}
        rows = self._all(
            f"SELECT id, {column} FROM documents WHERE id = ANY(%s::bigint[])", (wanted,)
        )
        return {int(row[0]): row[1] for row in rows}

    # -- collections

    def change_stamp(self) -> Hashable:
        """The snapshot's ``xmin:xmax:xip``: equal for snapshots that see the same
        commits."""
        return str(self._one("SELECT pg_current_snapshot()::text")[0])

    def find_collection(self, name: str) -> CollectionRow | None:
        """The collection called ``name``."""
        self._lock_names()
        row = self.conn.execute(
            "SELECT id, name, config FROM collections WHERE name = %s", (name,)
        ).fetchone()
        return None if row is None else CollectionRow(int(row[0]), row[1], row[2])

    def list_collections(self) -> list[tuple[CollectionRow, int, int]]:
        """Every collection, by name, with its document and chunk counts."""
        rows = self.conn.execute(
            "SELECT c.id, c.name, c.config, "
            "(SELECT count(*) FROM documents d WHERE d.collection_id = c.id), "
            "(SELECT count(*) FROM chunks k WHERE k.collection_id = c.id) "
            "FROM collections c ORDER BY c.name"
        ).fetchall()
        return [
            (CollectionRow(int(i), name, config), int(docs), int(chunks))
            for i, name, config, docs, chunks in rows
        ]

    def chunk_count(self, collection_id: int) -> int:
        """Number of chunks in the collection."""
        return int(
            self._one("SELECT count(*) FROM chunks WHERE collection_id = %s", (collection_id,))[0]
        )

    def find_alias(self, name: str) -> AliasRow | None:
        """The alias called ``name``."""
        self._lock_names()
        found = self._aliases("WHERE a.name = %s", (name,))
        return found[0] if found else None

    def list_aliases(self) -> list[AliasRow]:
        """Every alias, by name."""
        self._lock_names()
        return self._aliases("ORDER BY a.name", ())

    def _aliases(self, clause: str, params: Sequence[object]) -> list[AliasRow]:
        rows = self.conn.execute(
            "SELECT a.name, c.name, p.name FROM aliases a "
            "JOIN collections c ON c.id = a.collection_id "
            f"LEFT JOIN collections p ON p.id = a.previous_id {clause}",
            params,
        ).fetchall()
        return [AliasRow(*row) for row in rows]

    # -- documents

    def content_hashes(self, collection_id: int, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hash of each of ``doc_ids`` that exists."""
        rows = self._all(
            "SELECT doc_id, content_hash FROM documents "
            "WHERE collection_id = %s AND doc_id = ANY(%s::text[])",
            (collection_id, list(doc_ids)),
        )
        return {doc_id: digest for doc_id, digest in rows}

    def vectors_by_hash(
        self, model: tuple[str, str | None], hashes: Sequence[str]
    ) -> dict[str, bytes]:
        """Stored vectors (raw float32 bytes) of chunks whose embedded-text hash is in
        ``hashes``, from any collection built with the same model."""
        rows = self._all(
            "SELECT c.hash, c.vector FROM chunks c "
            "JOIN collections k ON k.id = c.collection_id "
            "WHERE c.hash = ANY(%s::text[]) AND c.hash <> '' "
            "AND k.config::jsonb ->> 'embedder' = %s "
            "AND k.config::jsonb ->> 'embedder_version' IS NOT DISTINCT FROM %s",
            (list(hashes), model[0], model[1]),
        )
        return {digest: _float32_bytes(blob) for digest, blob in rows}

    def matching_doc_ids(self, collection_id: int, where: Filter | None) -> list[str]:
        """Ids of the documents that match a filter (every one when ``where`` is None)."""
        sql, params = _document_filter(collection_id, where)
        rows = self._all(f"SELECT d.doc_id FROM documents d WHERE {sql}", params)
        return [row[0] for row in rows]

    def count_documents(self, collection_id: int, where: Filter | None) -> int:
        """Number of documents that match a filter."""
        sql, params = _document_filter(collection_id, where)
        return int(self._one(f"SELECT count(*) FROM documents d WHERE {sql}", params)[0])

    def page_of_doc_ids(
        self, collection_id: int, after: str, limit: int, where: Filter | None = None
    ) -> list[str]:
        """Up to ``limit`` ids of documents matching ``where`` greater than ``after``,
        ascending."""
        sql, params = _document_filter(collection_id, where)
        rows = self.conn.execute(
            f"SELECT d.doc_id FROM documents d WHERE {sql} AND d.doc_id > %s "
            "ORDER BY d.doc_id LIMIT %s",
            (*params, after, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def docs_from_origins(self, collection_id: int, roots: Sequence[str]) -> list[tuple[str, str]]:
        """``(doc_id, origin)`` of documents loaded from a file at or under any of
        ``roots``."""
        found: list[tuple[str, str]] = []
        for root in roots:
            prefix = root.rstrip("/") + "/"
            rows = self._all(
                "SELECT doc_id, origin FROM documents WHERE collection_id = %s "
                "AND (origin = %s OR starts_with(origin, %s))",
                (collection_id, root, prefix),
            )
            found.extend((doc_id, origin) for doc_id, origin in rows)
        return found

    def document_vectors(
        self, collection_id: int, doc_ids: Sequence[str], dim: int
    ) -> dict[str, Matrix]:
        """The chunk vectors of each of ``doc_ids`` that exists, one row per chunk in
        text order."""
        rows = self._all(
            "SELECT d.doc_id, c.vector FROM documents d JOIN chunks c ON c.document_id = d.id "
            "WHERE d.collection_id = %s AND d.doc_id = ANY(%s::text[]) "
            "ORDER BY d.doc_id, c.ordinal",
            (collection_id, list(doc_ids)),
        )
        blobs: dict[str, list[bytes]] = {}
        for doc_id, vector in rows:
            blobs.setdefault(doc_id, []).append(vector)
        return {doc_id: _matrix(parts, dim) for doc_id, parts in blobs.items()}

    def get_documents(self, collection_id: int, doc_ids: Sequence[str]) -> list[StoredDocument]:
        """Stored documents for ``doc_ids``, in that order; unknown ids are left out."""
        rows = self._all(
            "SELECT d.doc_id, d.text, d.title, d.metadata_text, d.source, d.content_hash, "
            "d.updated_at, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) "
            "FROM documents d WHERE d.collection_id = %s AND d.doc_id = ANY(%s::text[])",
            (collection_id, list(doc_ids)),
        )
        found = {row[0]: _stored_document(row) for row in rows}
        return [found[doc_id] for doc_id in doc_ids if doc_id in found]

    # -- chunks

    def allowed_chunk_ids(self, collection_id: int, where: Filter) -> Ids:
        """Ids of every chunk whose document matches the filter."""
        sql, params = _document_filter(collection_id, where)
        rows = self._all(
            f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {sql}",
            params,
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def chunk_ids_between(self, collection_id: int, first: int, last: int) -> Ids:
        """Ids of the collection's chunks in ``[first, last]``, ascending."""
        parts = [
            np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            for rows in self._chunk_pages("id", collection_id, first, last)
        ]
        return _concatenated(parts)

    def chunk_vectors(
        self, collection_id: int, first: int, last: int, dim: int
    ) -> tuple[Ids, Matrix, list[str]]:
        """Ids (ascending), vectors and document ids of the chunks in ``[first, last]``."""
        ids: list[Ids] = []
        vectors: list[Matrix] = []
        docs: list[str] = []
        for rows in self._chunk_pages("id, vector, document_id", collection_id, first, last):
            ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
            vectors.append(_matrix([row[1] for row in rows], dim))
            doc_ids = self._documents_column("doc_id", [row[2] for row in rows])
            docs.extend(doc_ids[row[2]] for row in rows)
        matrix = np.concatenate(vectors) if vectors else np.empty((0, dim), dtype=np.float32)
        return _concatenated(ids), matrix, docs

    def chunk_terms(self, collection_id: int, first: int) -> tuple[Ids, list[bytes]]:
        """Ids (ascending) and stored keyword terms of the chunks from ``first``."""
        ids: list[Ids] = []
        terms: list[bytes] = []
        for rows in self._chunk_pages("id, terms", collection_id, first, _LAST_ID):
            ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
            terms.extend(row[1] for row in rows)
        return _concatenated(ids), terms

    def chunk_metadata(
        self, collection_id: int, after: int, upto: int
    ) -> tuple[Ids, list[dict[str, object]]]:
        """Ids (ascending) and document metadata of the chunks with ``after < id <=
        upto``; chunks of one document share one parsed object."""
        ids: list[Ids] = []
        metadata: list[dict[str, object]] = []
        parsed: dict[int, dict[str, object]] = {}
        for rows in self._chunk_pages("id, document_id", collection_id, after + 1, upto):
            ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
            texts = self._documents_column("metadata_text", [row[1] for row in rows])
            for _, document in rows:
                value = parsed.get(document)
                if value is None:
                    value = parsed[document] = json.loads(texts[document])
                metadata.append(value)
        return _concatenated(ids), metadata

    def sample_vectors(self, collection_id: int, count: int, dim: int, seed: int) -> Matrix:
        """Up to ``count`` of the collection's vectors, chosen at random (seeded)."""
        ids = self.chunk_ids_between(collection_id, 1, _LAST_ID)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
        picked = [int(ids[i]) for i in sorted(chosen.tolist())]
        if not picked:
            return np.empty((0, dim), dtype=np.float32)
        return self.vectors_for(picked).reshape(len(picked), dim)

    def hits_by_chunk(self, chunk_ids: Sequence[int]) -> dict[int, Hit]:
        """Hits (score 0, to be set by the caller) for the chunk ids that still exist."""
        return unscored_hits(self.hit_bodies(chunk_ids))

    def hit_bodies(self, chunk_ids: Sequence[int]) -> dict[int, HitBody]:
        """chunk id -> what its hit shows, for the chunk ids that still exist."""
        rows = self._all(
            "SELECT c.id, d.doc_id, c.ordinal, c.text, d.source, d.metadata_text, "
            "c.start_char, c.end_char FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.id = ANY(%s::bigint[])",
            (_ints(chunk_ids),),
        )
        return {int(row[0]): _hit_body(row) for row in rows}

    def documents_of(self, chunk_ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> row id of its document, for the chunks that still exist."""
        rows = self._all(
            "SELECT id, document_id FROM chunks WHERE id = ANY(%s::bigint[])", (_ints(chunk_ids),)
        )
        return {int(chunk): int(document) for chunk, document in rows}

    def vectors_for(self, chunk_ids: Sequence[int]) -> Matrix:
        """The stored vectors of chunks, one row per id, in the order given."""
        rows = self._all(
            "SELECT id, vector FROM chunks WHERE id = ANY(%s::bigint[])",
            (_ints(chunk_ids),),
        )
        found = dict(rows)
        blobs = [found[int(i)] for i in chunk_ids]
        if not blobs:
            return np.empty((0, 0), dtype=np.float32)
        return _matrix(blobs, _dim_of(blobs[0]))

    # -- the change feed

    def removed_after(self, collection_id: int, seq: int) -> tuple[Ids, int]:
        """Chunk ids removed since removal ``seq``, and the newest seq seen."""
        seqs: list[int] = []
        removed: list[Ids] = []
        for rows in self._pages(
            "SELECT seq, chunk_id FROM removals WHERE collection_id = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (collection_id,),
            seq,
        ):
            removed.append(np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)))
            seqs.append(int(rows[-1][0]))
        return _concatenated(removed), (seqs[-1] if seqs else seq)

    def last_removal(self) -> int:
        """Newest removal seq in the whole store (0 when none)."""
        return int(self._one("SELECT coalesce(max(seq), 0) FROM removals")[0])

    def removal_floor(self, collection_id: int) -> int:
        """Newest removal seq of the collection that was forgotten (0 when none)."""
        row = self.conn.execute(
            "SELECT removal_floor FROM collections WHERE id = %s", (collection_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def segments(self, collection_id: int) -> list[SegmentRecord]:
        """This node's sealed index segments of the collection, by first chunk."""
        rows = self.conn.execute(
            "SELECT id, kind, vectors, first_chunk, last_chunk, files FROM segments "
            "WHERE collection_id = %s AND node = %s ORDER BY first_chunk",
            (collection_id, self._node),
        ).fetchall()
        return [(int(i), kind, int(n), int(a), int(b), files) for i, kind, n, a, b, files in rows]

    def clock(self, collection_id: int) -> Clock:
        """The collection's change counters (zeros before its first write)."""
        row = self._one(
            "SELECT k.seq, k.writes, k.index_version, "
            "(SELECT value FROM ragstore_meta WHERE name = 'epoch') "
            "FROM (SELECT %s::bigint AS id) q LEFT JOIN cache_clock k ON k.collection_id = q.id",
            (collection_id,),
        )
        return Clock(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))

    def changed_since(self, collection_id: int, doc_ids: Sequence[str], seq: int) -> bool:
        """Whether any of ``doc_ids`` was updated or deleted after change ``seq``."""
        row = self._one(
            "SELECT EXISTS (SELECT 1 FROM cache_doc_changes WHERE collection_id = %s "
            "AND seq > %s AND doc_id = ANY(%s::text[]))",
            (collection_id, seq, list(doc_ids)),
        )
        return bool(row[0])

    def changes_after(self, collection_id: int, seq: int) -> list[str]:
        """Ids of the documents updated or deleted after change ``seq``."""
        rows = self._all(
            "SELECT doc_id FROM cache_doc_changes WHERE collection_id = %s AND seq > %s",
            (collection_id, seq),
        )
        return [row[0] for row in rows]

    def youngest_update(self, collection_id: int, doc_ids: Sequence[str]) -> float | None:
        """The newest ``updated_at`` among ``doc_ids`` (``None`` when none exists)."""
        row = self._one(
            "SELECT max(updated_at) FROM documents WHERE collection_id = %s "
            "AND doc_id = ANY(%s::text[])",
            (collection_id, list(doc_ids)),
        )
        return None if row[0] is None else float(row[0])

    def store_id(self) -> str:
        """A random id made when the store was created."""
        return str(self._one("SELECT value FROM ragstore_meta WHERE name = 'store_id'")[0])

    # -- writing

    def create_collection(self, name: str, config: str, now: float) -> None:
        """Add a collection; :class:`Conflict` if the name was taken meanwhile."""
        cursor = self.conn.execute(
            "INSERT INTO collections (name, config, created_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (name, config, now),
        )
        if cursor.rowcount == 0:
            raise Conflict(f"collection {name!r} already exists")

    def delete_collection(self, collection_id: int) -> None:
        """Remove a collection with all its documents, chunks and segments."""
        self.conn.execute(
            "UPDATE aliases SET previous_id = NULL WHERE previous_id = %s", (collection_id,)
        )
        self._lock_chunks()
        search.drop_indexes(self.conn, collection_id)
        for table in ("chunks", "documents", "removals", "segments"):
            self.conn.execute(f"DELETE FROM {table} WHERE collection_id = %s", (collection_id,))
        self.conn.execute("DELETE FROM collections WHERE id = %s", (collection_id,))

    def set_alias(self, name: str, collection_id: int, now: float) -> None:
        """Point an alias at a collection, keeping the one it named to roll back to."""
        self.conn.execute(
            "INSERT INTO aliases AS a (name, collection_id, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET previous_id = a.collection_id, "
            "collection_id = excluded.collection_id, updated_at = excluded.updated_at "
            "WHERE a.collection_id <> excluded.collection_id",
            (name, collection_id, now),
        )

    def delete_alias(self, name: str) -> bool:
        """Remove an alias; ``False`` when there is none."""
        return self.conn.execute("DELETE FROM aliases WHERE name = %s", (name,)).rowcount > 0

    def rollback_alias(self, name: str, now: float) -> bool:
        """Swap an alias's collection with its previous one; ``False`` without one."""
        swapped = self.conn.execute(
            "UPDATE aliases SET collection_id = previous_id, previous_id = collection_id, "
            "updated_at = %s WHERE name = %s AND previous_id IS NOT NULL",
            (now, name),
        )
        return swapped.rowcount > 0

    def set_config(self, collection_id: int, config: str) -> None:
        """Replace a collection's config."""
        self.conn.execute(
            "UPDATE collections SET config = %s WHERE id = %s", (config, collection_id)
        )

    def write_documents(self, collection_id: int, docs: Sequence[DocumentRow], now: float) -> None:
        """Insert or replace documents with all their chunks; the new chunks' ids
        ascend in the order of ``docs`` and their chunks."""
        if not docs:
            return
        for doc in docs:
            _check_storable(doc)
        self._lock_chunks()
        existing = dict(
            self._all(
                "SELECT doc_id, id FROM documents "
                "WHERE collection_id = %s AND doc_id = ANY(%s::text[])",
                (collection_id, [doc.doc_id for doc in docs]),
            )
        )
        if existing:
            self._replace_documents(
                [(existing[doc.doc_id], doc) for doc in docs if doc.doc_id in existing], now
            )
        fresh = [doc for doc in docs if doc.doc_id not in existing]
        row_ids = existing | self._insert_documents(collection_id, fresh, now)
        self._insert_chunks(collection_id, [(row_ids[doc.doc_id], doc) for doc in docs])

    def _replace_documents(self, replaced: list[tuple[int, DocumentRow]], now: float) -> None:
        ids = [row_id for row_id, _ in replaced]
        self.conn.execute("DELETE FROM chunks WHERE document_id = ANY(%s::bigint[])", (ids,))
        columns = list(zip(*(_document_fields(doc) for _, doc in replaced), strict=True))
        self.conn.execute(
            "UPDATE documents d SET source = v.source, origin = v.origin, title = v.title, "
            "text = v.text, metadata = v.metadata::jsonb, metadata_text = v.metadata_text, "
            "content_hash = v.content_hash, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::text[]) "
            "AS v(id, source, origin, title, text, metadata, metadata_text, content_hash) "
            "WHERE d.id = v.id",
            (now, ids, *(list(column) for column in columns)),
        )

    def _insert_documents(
        self, collection_id: int, docs: list[DocumentRow], now: float
    ) -> dict[str, int]:
        if not docs:
            return {}
        ids = [
            int(row[0])
            for row in self._all(
                "SELECT nextval('documents_id_seq') FROM generate_series(1, %s)", (len(docs),)
            )
        ]
        with self.conn.cursor().copy(
            "COPY documents (id, collection_id, doc_id, source, origin, title, text, "
            "metadata, metadata_text, content_hash, updated_at) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_DOCUMENT_TYPES)
            for row_id, doc in zip(ids, docs, strict=True):
                source, origin, title, text, metadata, written, digest = _document_fields(doc)
                jsonb = b"\x01" + metadata.encode()
                values = (source, origin, title, text, jsonb, written, digest, now)
                copy.write_row((row_id, collection_id, doc.doc_id, *values))
        return {doc.doc_id: row_id for row_id, doc in zip(ids, docs, strict=True)}

    def _insert_chunks(self, collection_id: int, docs: list[tuple[int, DocumentRow]]) -> None:
        with self.conn.cursor().copy(
            "COPY chunks (collection_id, document_id, ordinal, text, start_char, end_char, "
            "hash, vector, terms) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_CHUNK_TYPES)
            for document_id, doc in docs:
                for chunk in doc.chunks:
                    copy.write_row(_chunk_values(collection_id, document_id, doc.title, chunk))

    def delete_documents(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Delete documents and their chunks; returns how many documents existed."""
        self._lock_chunks()
        params = (collection_id, list(doc_ids))
        self.conn.execute(
            "DELETE FROM chunks WHERE document_id IN (SELECT id FROM documents "
            "WHERE collection_id = %s AND doc_id = ANY(%s::text[]))",
            params,
        )
        deleted = self.conn.execute(
            "DELETE FROM documents WHERE collection_id = %s AND doc_id = ANY(%s::text[])", params
        ).rowcount
        self.trim_removals(collection_id, REMOVALS_KEPT)
        return deleted

    def trim_removals(self, collection_id: int, keep: int) -> None:
        """Forget all but the newest ``keep`` removals of a collection, recording the
        newest forgotten seq as the collection's removal floor."""
        self._lock_chunks()
        row = self.conn.execute(
            "SELECT seq FROM removals WHERE collection_id = %s ORDER BY seq DESC LIMIT 1 OFFSET %s",
            (collection_id, keep),
        ).fetchone()
        if row is None:
            return
        self.conn.execute(
            "DELETE FROM removals WHERE collection_id = %s AND seq <= %s", (collection_id, row[0])
        )
        self.conn.execute(
            "UPDATE collections SET removal_floor = %s WHERE id = %s", (row[0], collection_id)
        )

    def replace_segments(
        self, collection_id: int, replaced: Sequence[int], new: SegmentValues
    ) -> int | None:
        """Replace manifest rows ``replaced`` by ``new``; ``None`` if they changed
        meanwhile (one is gone, or another segment overlaps the new one's range)."""
        kind, vectors, first, last, files = new
        self._lock_segments(collection_id)
        overlapping = self._segment_ids(
            "collection_id = %s AND first_chunk <= %s AND last_chunk >= %s",
            (collection_id, last, first),
        )
        present = self._segment_ids("id = ANY(%s::bigint[])", (_ints(replaced),))
        if present != set(replaced) or overlapping - set(replaced):
            return None
        self.conn.execute("DELETE FROM segments WHERE id = ANY(%s::bigint[])", (_ints(replaced),))
        row = self._one(
            "INSERT INTO segments (collection_id, node, kind, vectors, first_chunk, last_chunk, "
            "files, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (collection_id, self._node, kind, vectors, first, last, _files(files), time.time()),
        )
        return int(row[0])

    def delete_segments(self, segment_ids: Sequence[int]) -> bool:
        """Remove manifest rows; ``False`` (and nothing removed) unless all exist."""
        ids = _ints(segment_ids)
        for collection_id in self._segment_collections(ids):
            self._lock_segments(collection_id)
        if len(self._segment_ids("id = ANY(%s::bigint[])", (ids,))) != len(set(ids)):
            return False
        self.conn.execute("DELETE FROM segments WHERE id = ANY(%s::bigint[])", (ids,))
        return True

    def update_segment(self, segment_id: int, new: SegmentValues) -> bool:
        """Point a manifest row at rebuilt files; ``False`` if it is gone."""
        kind, vectors, _, _, files = new
        cursor = self.conn.execute(
            "UPDATE segments SET kind = %s, vectors = %s, files = %s WHERE id = %s AND node = %s",
            (kind, vectors, _files(files), segment_id, self._node),
        )
        return cursor.rowcount > 0

    # -- in-database search (index kind pgvector); see store/postgres/search.py

    def dense_search(
        self,
        collection_id: int,
        dim: int,
        vector: Matrix,
        k: int,
        where: Filter | None,
        ef_search: int,
    ) -> tuple[Ids, Scores]:
        return search.dense(self.conn, collection_id, dim, vector, k, where, ef_search)

    def text_search(
        self, collection_id: int, text: str, k: int, where: Filter | None
    ) -> tuple[Ids, Scores]:
        return search.text(self.conn, collection_id, text, k, where)

    def search_index_bytes(self, collection_id: int) -> int:
        return search.index_bytes(self.conn, collection_id)

    def create_search_indexes(self, collection_id: int, dim: int, index: IndexConfig) -> None:
        search.create_indexes(self.conn, collection_id, dim, index)

    def drop_search_indexes(self, collection_id: int) -> None:
        search.drop_indexes(self.conn, collection_id)

    def bump_epoch(self) -> None:
        """Tell every process that the query cache was cleared."""
        self.conn.execute(
            "UPDATE ragstore_meta SET value = (value::bigint + 1)::text WHERE name = 'epoch'"
        )

    def anomalies(self, collection_id: int, dim: int) -> dict[str, Anomaly]:
        """What the collection holds that its writers never leave behind."""
        found = {
            name: [row[0] for row in self.conn.execute(f"{sql} ORDER BY 1", params)]
            for name, (sql, params) in {
                "documents_without_chunks": (_DOCUMENTS_WITHOUT_CHUNKS, (collection_id,)),
                "chunks_without_document": (_CHUNKS_WITHOUT_DOCUMENT, (collection_id,)),
                "vectors_of_wrong_size": (_VECTORS_OF_WRONG_SIZE, (collection_id, dim)),
            }.items()
        }
        missing = missing_terms(
            self.conn.execute(_CHUNKS_WITHOUT_TERMS, (collection_id,)).fetchall()
        )
        return {name: Anomaly.of(rows) for name, rows in found.items()} | {
            "chunks_without_terms": Anomaly.of([chunk_id for chunk_id, _ in missing])
        }

    def delete_orphan_chunks(self, collection_id: int) -> int:
        """Delete the collection's chunks whose document is gone; returns how many."""
        self._lock_chunks()
        deleted = self.conn.execute(
            f"DELETE FROM chunks WHERE id IN ({_CHUNKS_WITHOUT_DOCUMENT})", (collection_id,)
        )
        return deleted.rowcount

    def restore_terms(self, collection_id: int) -> int:
        """Store again the keyword terms of chunks stored without them."""
        missing = missing_terms(
            self.conn.execute(_CHUNKS_WITHOUT_TERMS, (collection_id,)).fetchall()
        )
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE chunks SET terms = %s WHERE id = %s", [(value, i) for i, value in missing]
            )
        return len(missing)

    def _segment_ids(self, condition: str, params: Sequence[object]) -> set[int]:
        rows = self.conn.execute(
            f"SELECT id FROM segments WHERE node = %s AND {condition}", (self._node, *params)
        ).fetchall()
        return {int(row[0]) for row in rows}

    def _segment_collections(self, segment_ids: list[int]) -> list[int]:
        rows = self.conn.execute(
            "SELECT DISTINCT collection_id FROM segments WHERE id = ANY(%s::bigint[]) "
            "ORDER BY collection_id",
            (segment_ids,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _lock_chunks(self) -> None:
        if not self._holds_chunks_lock:
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHUNKS_LOCK,))
            self._holds_chunks_lock = True

    def _lock_names(self) -> None:
        if self._writing and not self._holds_names_lock:
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (NAMES_LOCK,))
            self._holds_names_lock = True

    def _lock_segments(self, collection_id: int) -> None:
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            (SEGMENTS_LOCK >> 32, collection_id & 0x7FFFFFFF),
        )


# --------------------------------------------------------------------------- helpers

# Binary COPY formats of the columns written. Raw bytes go to two columns whose binary
# form is built here: documents.metadata (jsonb) and chunks.vector (pgvector).
_DOCUMENT_TYPES: Final = [
    "int8",  # id
    "int8",  # collection_id
    "text",  # doc_id
    "text",  # source
    "text",  # origin
    "text",  # title
    "text",  # text
    "bytea",  # metadata: jsonb's version byte, then the JSON text
    "text",  # metadata_text
    "text",  # content_hash
    "float8",  # updated_at
]
_CHUNK_TYPES: Final = [
    "int8",  # collection_id
    "int8",  # document_id
    "int4",  # ordinal
    "text",  # text
    "int4",  # start_char
    "int4",  # end_char
    "text",  # hash
    "bytea",  # vector: pgvector's binary form (see _vector_bytes)
    "bytea",  # terms
]
_TEXT_FIELDS: Final = ("doc_id", "source", "origin", "title", "text", "content_hash")
_NO_NUL: Final = "which PostgreSQL cannot store"


def _document_fields(doc: DocumentRow) -> tuple[Any, ...]:
    """source, origin, title, text, metadata (JSONB text), metadata (as written), hash."""
    written = doc.metadata_json or json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True)
    filtered = stored_json(doc.metadata) or written
    return (doc.source, doc.origin, doc.title, doc.text, filtered, written, doc.content_hash)


def _chunk_values(
    collection_id: int, document_id: int, title: str, chunk: ChunkRow
) -> tuple[Any, ...]:
    return (
        collection_id,
        document_id,
        chunk.ordinal,
        chunk.text,
        chunk.start,
        chunk.end,
        chunk.hash,
        _vector_bytes(chunk.vector),
        encode_terms(title, chunk.text),
    )


def _vector_bytes(vector: Matrix) -> bytes:
    """pgvector's binary form: dimensions and a zero (int16 each), then big-endian
    float32 values."""
    values = np.asarray(vector, dtype=">f4").reshape(-1)
    return struct.pack(">hh", values.size, 0) + values.tobytes()


def _dim_of(blob: bytes) -> int:
    return int(struct.unpack_from(">h", blob)[0])


def _matrix(blobs: list[bytes], dim: int) -> Matrix:
    """Vectors in pgvector's binary form as one float32 matrix: each row's 4-byte header
    takes the place of one big-endian float, dropped."""
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    raw = np.frombuffer(b"".join(blobs), dtype=">f4").reshape(len(blobs), dim + 1)
    return np.ascontiguousarray(raw[:, 1:], dtype=np.float32)


def _float32_bytes(blob: bytes) -> bytes:
    return np.frombuffer(blob, dtype=">f4", offset=4).astype(np.float32).tobytes()


def _check_storable(doc: DocumentRow) -> None:
    """PostgreSQL text cannot hold NUL: refuse it before anything is written."""
    for name in _TEXT_FIELDS:
        value = getattr(doc, name)
        if value is not None and "\0" in value:
            raise InvalidInput(f"{name} holds a NUL character, {_NO_NUL}", field=name)
    for chunk in doc.chunks:
        if "\0" in chunk.text:
            raise InvalidInput(f"text holds a NUL character, {_NO_NUL}", field="text")


def _stored_document(row: tuple[Any, ...]) -> StoredDocument:
    doc_id, text, title, metadata, source, digest, updated_at, chunks = row
    return StoredDocument(
        id=doc_id,
        text=text,
        title=title,
        metadata=json.loads(metadata),
        source=source,
        content_hash=digest,
        updated_at=float(updated_at),
        chunk_count=int(chunks),
    )


def _hit_body(row: tuple[Any, ...]) -> HitBody:
    _, doc_id, ordinal, text, source, metadata, start, end = row
    return (doc_id, f"{doc_id}#{ordinal}", text, source, json.loads(metadata), int(start), int(end))


def _files(files: dict[str, Any]) -> str:
    return json.dumps(files, sort_keys=True)


def _ints(values: Sequence[int]) -> list[int]:
    return [int(value) for value in values]


def _concatenated(parts: list[Ids]) -> Ids:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _document_filter(collection_id: int, where: Filter | None) -> tuple[str, list[object]]:
    if where is None:
        return "d.collection_id = %s", [collection_id]
    sql, params = compile_where(where, "d.metadata")
    return f"d.collection_id = %s AND {sql}", [collection_id, *params]


def _roll_back(conn: Connection, begin: str | None) -> None:
    if begin is not None and not conn.broken and not conn.closed:
        with suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


def _connect_kwargs(timeout: float) -> dict[str, Any]:
    return {
        "autocommit": True,
        "connect_timeout": max(1, math.ceil(timeout)),
        "application_name": "ragstore",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


def _open_pool(url: str, size: int, timeout: float) -> ConnectionPool[Connection]:
    pool: ConnectionPool[Connection] = ConnectionPool(
        url,
        min_size=1,
        max_size=max(size, 1),
        kwargs=_connect_kwargs(timeout),
        check=ConnectionPool.check_connection,
        timeout=timeout,
        reconnect_timeout=timeout,
        name=POOL_NAME,
        open=False,
    )
    pool.open(wait=False)
    return pool


def without_password(url: str) -> str:
    """``url`` (a ``postgresql://`` URL or a ``key=value`` string) without its password."""
    if "://" not in url:
        params = conninfo_to_dict(url)
        params.pop("password", None)
        return make_conninfo("", **params)
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if at and user else hostport
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return urlunsplit(
        (parts.scheme, netloc, parts.path, urlencode(query, safe="/", quote_via=quote), "")
    )


def _default_index_root(location: str, store_id: str) -> Path:
    base = os.environ.get("RAGSTORE_INDEX_DIR") or "~/.cache/ragstore/indexes"
    digest = hashlib.sha256((location + store_id).encode()).hexdigest()[:16]
    return Path(base).expanduser() / digest


def _node_id(root: Path) -> str:
    """This host's id for the segment manifest, made on first use under ``root``."""
    path = root / "node_id"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        spare = root / f"node_id.{os.getpid()}.{secrets.token_hex(4)}"
        spare.write_text(secrets.token_hex(16) + "\n")
        try:
            os.link(spare, path)  # the first process to get here wins
        except FileExistsError:
            pass
        finally:
            spare.unlink()
    return path.read_text().strip()


def _conforms(
    backend: PostgresBackend, session: PostgresSession
) -> tuple[StorageBackend, Writer, DatabaseSearch, DatabaseIndexes]:
    """Never called: mypy checks here that the classes implement the Protocols."""
    return backend, session, session, session


_DOCUMENTS_WITHOUT_CHUNKS = (
    "SELECT d.doc_id FROM documents d WHERE d.collection_id = %s "
    "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)"
)
_CHUNKS_WITHOUT_DOCUMENT = (
    "SELECT c.id FROM chunks c WHERE c.collection_id = %s "
    "AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = c.document_id)"
)
_VECTORS_OF_WRONG_SIZE = (
    "SELECT id FROM chunks WHERE collection_id = %s AND vector_dims(vector) <> %s"
)
_CHUNKS_WITHOUT_TERMS = (
    "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
    "WHERE c.collection_id = %s AND length(c.terms) = 0 ORDER BY c.id"
)

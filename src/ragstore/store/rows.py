"""SQL over the documents and chunks tables. Every function takes an open connection;
the caller owns the transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragstore.filters import Filter, compile_sql
from ragstore.index.base import Ids, Matrix
from ragstore.search import keyword
from ragstore.store import packed
from ragstore.types import Hit, StoredDocument

# SQLite's default limit on bound parameters is 32766; stay well below it.
_MAX_PARAMS = 900
TOMBSTONES_KEPT = 50_000
"""Tombstones kept per collection for other processes' indexes to catch up from."""


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk ready to be written: its place in the document, its text and its vector."""

    ordinal: int
    text: str
    start: int
    end: int
    hash: str
    vector: Matrix


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """A document ready to be written, with all its chunks."""

    doc_id: str
    source: str | None
    origin: str | None
    title: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    chunks: Sequence[ChunkRow]
    metadata_json: str | None = None
    """``metadata`` as stored, when the caller has it already."""


def batched(items: Sequence[Any], size: int = _MAX_PARAMS) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def placeholders(count: int) -> str:
    """``?, ?, ?`` for ``count`` parameters."""
    return ", ".join("?" * count)


def content_hashes(
    conn: sqlite3.Connection, collection_id: int, doc_ids: Sequence[str]
) -> dict[str, str]:
    """Stored content hash of each of ``doc_ids`` that exists."""
    found: dict[str, str] = {}
    for part in batched(doc_ids):
        ids, hashes = packed.read(
            conn,
            "SELECT doc_id AS c0, content_hash AS c1 FROM documents "
            f"WHERE collection_id = ? AND doc_id IN ({placeholders(len(part))})",
            (collection_id, *part),
            2,
        )
        found.update(zip(ids.texts(), hashes.texts(), strict=True))
    return found


def vectors_by_hash(
    conn: sqlite3.Connection, model: tuple[str, str | None], hashes: Sequence[str]
) -> dict[str, bytes]:
    """Stored vectors (raw float32 bytes) of chunks whose embedded-text hash is in
    ``hashes``, from any collection built with the same model ``(name, version)``."""
    found: dict[str, bytes] = {}
    for part in batched(hashes):
        rows = conn.execute(
            "SELECT c.hash, c.vector FROM chunks c JOIN collections k ON k.id = c.collection_id "
            f"WHERE c.hash IN ({placeholders(len(part))}) AND c.hash != '' "
            "AND json_extract(k.config, '$.embedder') = ? "
            "AND json_extract(k.config, '$.embedder_version') IS ?",
            (*part, *model),
        )
        found.update(dict(rows.fetchall()))
    return found


def write_documents(
    conn: sqlite3.Connection, collection_id: int, docs: Sequence[DocumentRow], now: float
) -> None:
    """Insert or replace documents with all their chunks (inside the caller's transaction).

    Documents that do not exist yet are inserted in bulk; existing ones are replaced one
    by one. A batch must not name a document twice.
    """
    existing = content_hashes(conn, collection_id, [d.doc_id for d in docs])
    for doc in docs:
        if doc.doc_id in existing:
            write_document(conn, collection_id, doc, now)
    for part in batched([d for d in docs if d.doc_id not in existing]):
        _insert_new_documents(conn, collection_id, part, now)


def _insert_new_documents(
    conn: sqlite3.Connection, collection_id: int, docs: Sequence[DocumentRow], now: float
) -> None:
    last = packed.insert(
        conn,
        _INSERT_DOCUMENT,
        [(*_document_values(doc, now), collection_id, doc.doc_id) for doc in docs],
    )
    count_new_documents(conn, collection_id, len(docs))
    first = last - len(docs) + 1  # one writer at a time: the new rowids are consecutive
    packed.insert(
        conn,
        _INSERT_CHUNK,
        [
            _chunk_values(collection_id, first + i, doc.title, chunk)
            for i, doc in enumerate(docs)
            for chunk in doc.chunks
        ],
    )


_INSERT_DOCUMENT = (
    "INSERT INTO documents (source, origin, title, text, metadata, content_hash, "
    "updated_at, collection_id, doc_id)"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (collection_id, document_id, ordinal, text, start_char, end_char, "
    "hash, vector, terms)"
)


def _document_values(doc: DocumentRow, now: float) -> tuple[Any, ...]:
    metadata = doc.metadata_json or json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True)
    return (doc.source, doc.origin, doc.title, doc.text, metadata, doc.content_hash, now)


def _chunk_values(
    collection_id: int, document_id: int, title: str, chunk: ChunkRow
) -> tuple[Any, ...]:
    vector = np.ascontiguousarray(chunk.vector, dtype=np.float32).tobytes()
    return (
        collection_id,
        document_id,
        chunk.ordinal,
        chunk.text,
        chunk.start,
        chunk.end,
        chunk.hash,
        vector,
        keyword.encode_terms(title, chunk.text),
    )


def count_new_documents(conn: sqlite3.Connection, collection_id: int, count: int) -> None:
    """Count inserted documents into the collection's write counter (``cache_clock``),
    which the query cache's strict mode compares; updates and deletes are counted by
    triggers on ``documents``."""
    conn.execute("INSERT OR IGNORE INTO cache_clock (collection_id) VALUES (?)", (collection_id,))
    conn.execute(
        "UPDATE cache_clock SET writes = writes + ? WHERE collection_id = ?", (count, collection_id)
    )


def write_document(
    conn: sqlite3.Connection, collection_id: int, doc: DocumentRow, now: float
) -> None:
    """Insert or replace one document and all its chunks (inside the caller's transaction)."""
    row = conn.execute(
        "SELECT id FROM documents WHERE collection_id = ? AND doc_id = ?",
        (collection_id, doc.doc_id),
    ).fetchone()
    values = _document_values(doc, now)
    if row is None:
        document_id = packed.insert(conn, _INSERT_DOCUMENT, [(*values, collection_id, doc.doc_id)])
        count_new_documents(conn, collection_id, 1)
    else:
        document_id = int(row[0])
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        conn.execute(
            "UPDATE documents SET source = ?, origin = ?, title = ?, text = ?, metadata = ?, "
            "content_hash = ?, updated_at = ? WHERE id = ?",
            (*values, document_id),
        )
    packed.insert(
        conn,
        _INSERT_CHUNK,
        [_chunk_values(collection_id, document_id, doc.title, chunk) for chunk in doc.chunks],
    )


def delete_documents(conn: sqlite3.Connection, collection_id: int, doc_ids: Sequence[str]) -> int:
    """Delete documents and their chunks; returns how many documents existed."""
    deleted = 0
    for part in batched(doc_ids):
        where = f"collection_id = ? AND doc_id IN ({placeholders(len(part))})"
        params = (collection_id, *part)
        conn.execute(
            f"DELETE FROM chunks WHERE document_id IN (SELECT id FROM documents WHERE {where})",
            params,
        )
        deleted += conn.execute(f"DELETE FROM documents WHERE {where}", params).rowcount
    trim_tombstones(conn, collection_id, TOMBSTONES_KEPT)
    return deleted


def matching_doc_ids(
    conn: sqlite3.Connection, collection_id: int, where: Filter | None
) -> list[str]:
    """Ids of the documents that match a filter (all documents when ``where`` is None)."""
    sql, params = _document_filter(collection_id, where)
    return [row[0] for row in conn.execute(f"SELECT d.doc_id FROM documents d WHERE {sql}", params)]


def count_documents(conn: sqlite3.Connection, collection_id: int, where: Filter | None) -> int:
    """Number of documents that match a filter."""
    sql, params = _document_filter(collection_id, where)
    return int(conn.execute(f"SELECT count(*) FROM documents d WHERE {sql}", params).fetchone()[0])


def docs_from_origins(
    conn: sqlite3.Connection, collection_id: int, roots: Sequence[str]
) -> list[tuple[str, str]]:
    """``(doc_id, origin)`` of documents loaded from a file at or under any of ``roots``."""
    found: list[tuple[str, str]] = []
    for root in roots:
        prefix = root.rstrip("/") + "/"
        found.extend(
            conn.execute(
                "SELECT doc_id, origin FROM documents WHERE collection_id = ? "
                "AND (origin = ? OR substr(origin, 1, ?) = ?)",
                (collection_id, root, len(prefix), prefix),
            ).fetchall()
        )
    return found


def allowed_chunk_ids(conn: sqlite3.Connection, collection_id: int, where: Filter) -> Ids:
    """Ids of every chunk whose document matches the filter."""
    sql, params = _document_filter(collection_id, where)
    rows = conn.execute(
        f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {sql}", params
    )
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def chunk_ids_between(conn: sqlite3.Connection, collection_id: int, first: int, last: int) -> Ids:
    """Ids of the collection's chunks in ``[first, last]``, ascending."""
    pages = packed.read_after(
        conn,
        "SELECT id AS c0 FROM chunks WHERE collection_id = ? AND id <= ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (collection_id, last),
        1,
        first - 1,
    )
    return _concatenated([ids.ints() for (ids,) in pages])


def chunk_vectors(
    conn: sqlite3.Connection, collection_id: int, first: int, last: int, dim: int
) -> tuple[Ids, Matrix, list[str]]:
    """Ids (ascending), vectors and document ids of the collection's chunks with ids in
    ``[first, last]``."""
    ids: list[Ids] = []
    vectors: list[Matrix] = []
    docs: list[str] = []
    for chunk_ids, blobs, doc_ids in packed.read_after(
        conn,
        "SELECT c.id AS c0, c.vector AS c1, d.doc_id AS c2 FROM chunks c "
        "JOIN documents d ON d.id = c.document_id "
        "WHERE c.collection_id = ? AND c.id <= ? AND c.id > ? ORDER BY c.id LIMIT ?",
        (collection_id, last),
        3,
        first - 1,
    ):
        ids.append(chunk_ids.ints())
        vectors.append(np.frombuffer(blobs.joined(), dtype=np.float32).reshape(-1, dim))
        docs.extend(doc_ids.texts())
    matrix = np.concatenate(vectors) if vectors else np.empty((0, dim), dtype=np.float32)
    return _concatenated(ids), matrix, docs


def chunk_terms(
    conn: sqlite3.Connection, collection_id: int, first: int
) -> tuple[Ids, list[bytes]]:
    """Ids (ascending) and stored keyword terms of the collection's chunks from ``first``."""
    ids: list[Ids] = []
    terms: list[bytes] = []
    for chunk_ids, encoded in packed.read_after(
        conn,
        "SELECT id AS c0, terms AS c1 FROM chunks WHERE collection_id = ? AND id > ? "
        "ORDER BY id LIMIT ?",
        (collection_id,),
        2,
        first - 1,
    ):
        ids.append(chunk_ids.ints())
        terms.extend(encoded.values())
    return _concatenated(ids), terms


def _concatenated(parts: list[Ids]) -> Ids:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


SegmentValues = tuple[str, int, int, int, dict[str, Any]]
"""A new manifest row: kind, vectors, first chunk, last chunk, files."""


def replace_segments(
    conn: sqlite3.Connection,
    collection_id: int,
    replaced: Sequence[int],
    new: SegmentValues,
) -> int | None:
    """Replace manifest rows ``replaced`` by ``new``; ``None`` if they changed meanwhile
    (one is gone, or another segment now overlaps the new one's chunk range)."""
    kind, vectors, first, last, files = new
    overlapping = {
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM segments WHERE collection_id = ? AND first_chunk <= ? "
            "AND last_chunk >= ?",
            (collection_id, last, first),
        )
    }
    present = {
        int(row[0])
        for row in conn.execute(
            f"SELECT id FROM segments WHERE id IN ({placeholders(len(replaced))})", list(replaced)
        )
    }
    if present != set(replaced) or overlapping - set(replaced):
        return None
    conn.execute(
        f"DELETE FROM segments WHERE id IN ({placeholders(len(replaced))})", list(replaced)
    )
    cursor = conn.execute(
        "INSERT INTO segments (collection_id, kind, vectors, first_chunk, last_chunk, files, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (collection_id, kind, vectors, first, last, json.dumps(files, sort_keys=True), time.time()),
    )
    return int(cursor.lastrowid or 0)


def delete_segments(conn: sqlite3.Connection, segment_ids: Sequence[int]) -> bool:
    """Remove manifest rows; ``False`` (and nothing removed) unless all still exist."""
    marks = placeholders(len(segment_ids))
    present = conn.execute(
        f"SELECT count(*) FROM segments WHERE id IN ({marks})", list(segment_ids)
    ).fetchone()[0]
    if present != len(segment_ids):
        return False
    conn.execute(f"DELETE FROM segments WHERE id IN ({marks})", list(segment_ids))
    return True


def update_segment(conn: sqlite3.Connection, segment_id: int, new: SegmentValues) -> bool:
    """Point a manifest row at rebuilt files (same chunk range); ``False`` if it is gone."""
    kind, vectors, _, _, files = new
    cursor = conn.execute(
        "UPDATE segments SET kind = ?, vectors = ?, files = ? WHERE id = ?",
        (kind, vectors, json.dumps(files, sort_keys=True), segment_id),
    )
    return cursor.rowcount > 0


def sample_vectors(
    conn: sqlite3.Connection, collection_id: int, count: int, dim: int, seed: int
) -> Matrix:
    """Up to ``count`` of the collection's vectors, chosen at random (seeded)."""
    ids = conn.execute(
        "SELECT id FROM chunks WHERE collection_id = ? ORDER BY id", (collection_id,)
    ).fetchall()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
    picked = [ids[i][0] for i in sorted(chosen.tolist())]
    if not picked:
        return np.empty((0, dim), dtype=np.float32)
    return vectors_for(conn, picked).reshape(len(picked), dim)


def tombstones_after(
    conn: sqlite3.Connection, collection_id: int, after_seq: int
) -> tuple[Ids, int]:
    """Chunk ids removed since tombstone ``after_seq``, and the newest seq seen."""
    seqs: list[Ids] = []
    removed: list[Ids] = []
    for seq, chunk_ids in packed.read_after(
        conn,
        "SELECT seq AS c0, chunk_id AS c1 FROM tombstones WHERE collection_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (collection_id,),
        2,
        after_seq,
    ):
        seqs.append(seq.ints())
        removed.append(chunk_ids.ints())
    last = int(seqs[-1][-1]) if seqs else after_seq
    return _concatenated(removed), last


def trim_tombstones(conn: sqlite3.Connection, collection_id: int, keep: int) -> None:
    """Forget all but the newest ``keep`` tombstones of a collection.

    The collection's ``tombstone_floor`` records the newest forgotten one: an index that
    has not caught up past it can no longer catch up and reloads from the chunks instead.
    """
    row = conn.execute(
        "SELECT seq FROM tombstones WHERE collection_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
        (collection_id, keep),
    ).fetchone()
    if row is None:
        return
    conn.execute(
        "DELETE FROM tombstones WHERE collection_id = ? AND seq <= ?", (collection_id, row[0])
    )
    conn.execute("UPDATE collections SET tombstone_floor = ? WHERE id = ?", (row[0], collection_id))


def last_tombstone(conn: sqlite3.Connection) -> int:
    """Newest tombstone seq in the whole store (0 when none)."""
    row = conn.execute("SELECT max(seq) FROM tombstones").fetchone()
    return int(row[0] or 0)


def hits_by_chunk(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> dict[int, Hit]:
    """Hits (score 0, to be set by the caller) for the chunk ids that still exist."""
    found: dict[int, Hit] = {}
    for part in batched(list(chunk_ids)):
        for row in conn.execute(
            "SELECT c.id, d.doc_id, c.ordinal, c.text, d.source, d.metadata, c.start_char, "
            "c.end_char FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"WHERE c.id IN ({placeholders(len(part))})",
            part,
        ):
            found[row[0]] = _hit(row)
    return found


def documents_of(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> dict[int, int]:
    """chunk id -> row id of its document, for the chunks that still exist."""
    found: dict[int, int] = {}
    for part in batched(list(chunk_ids)):
        query = f"SELECT id, document_id FROM chunks WHERE id IN ({placeholders(len(part))})"
        found.update(conn.execute(query, part).fetchall())
    return found


def vectors_for(conn: sqlite3.Connection, chunk_ids: Sequence[int]) -> Matrix:
    """The stored vectors of chunks, one row per id, in the order given."""
    found: dict[int, bytes] = {}
    for part in batched(list(chunk_ids)):
        query = f"SELECT id, vector FROM chunks WHERE id IN ({placeholders(len(part))})"
        found.update(conn.execute(query, part).fetchall())
    return np.stack([np.frombuffer(found[i], dtype=np.float32) for i in chunk_ids])


def get_documents(
    conn: sqlite3.Connection, collection_id: int, doc_ids: Sequence[str]
) -> list[StoredDocument]:
    """Stored documents for ``doc_ids``, in that order; unknown ids are left out."""
    found: dict[str, StoredDocument] = {}
    for part in batched(doc_ids):
        for row in conn.execute(
            "SELECT d.doc_id, d.text, d.title, d.metadata, d.source, d.content_hash, "
            "d.updated_at, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) "
            f"FROM documents d WHERE d.collection_id = ? AND d.doc_id IN "
            f"({placeholders(len(part))})",
            (collection_id, *part),
        ):
            found[row[0]] = StoredDocument(
                id=row[0],
                text=row[1],
                title=row[2],
                metadata=json.loads(row[3]),
                source=row[4],
                content_hash=row[5],
                updated_at=row[6],
                chunk_count=row[7],
            )
    return [found[doc_id] for doc_id in doc_ids if doc_id in found]


def _hit(row: tuple[Any, ...]) -> Hit:
    _, doc_id, ordinal, text, source, metadata, start, end = row
    return Hit(
        doc_id=doc_id,
        chunk_id=f"{doc_id}#{ordinal}",
        score=0.0,
        text=text,
        source=source,
        metadata=json.loads(metadata),
        start=start,
        end=end,
    )


def _document_filter(collection_id: int, where: Filter | None) -> tuple[str, list[object]]:
    if where is None:
        return "d.collection_id = ?", [collection_id]
    sql, params = compile_sql(where, "d.metadata")
    return f"d.collection_id = ? AND ({sql})", [collection_id, *params]

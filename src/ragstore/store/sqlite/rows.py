"""The SQLite backend's reads and writes (:class:`SqliteSession`), over one connection
whose transaction the caller owns."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from ragstore import terms
from ragstore.filters import Filter, compile_sql
from ragstore.store.base import (
    REMOVALS_KEPT,
    AliasRow,
    Anomaly,
    ChunkRow,
    Clock,
    CollectionRow,
    DocumentRow,
    HitBody,
    SegmentRecord,
    SegmentValues,
    missing_terms,
    unscored_hits,
)
from ragstore.store.sqlite import packed
from ragstore.store.sqlite.db import Database
from ragstore.types import Hit, Ids, Matrix, StoredDocument

# SQLite's default limit on bound parameters is 32766; stay well below it.
_MAX_PARAMS = 900

_JSON = json.JSONDecoder()


def _loaded(text: str) -> Any:
    """``json.loads(text)``, in half the time for JSON as stored (no whitespace around
    the value): the decoder's checks for whitespace run only when the value does not
    span the whole text."""
    try:
        value, end = _JSON.raw_decode(text)
    except json.JSONDecodeError:
        return json.loads(text)  # leading whitespace, or raise as json.loads does
    return value if end == len(text) else json.loads(text)


def batched(items: Sequence[Any], size: int = _MAX_PARAMS) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def placeholders(count: int) -> str:
    """``?, ?, ?`` for ``count`` parameters."""
    return ", ".join("?" * count)


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
        terms.encode_terms(title, chunk.text),
    )


def _concatenated(parts: list[Ids]) -> Ids:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _document_filter(collection_id: int, where: Filter | None) -> tuple[str, list[object]]:
    if where is None:
        return "d.collection_id = ?", [collection_id]
    sql, params = compile_sql(where, "d.metadata")
    return f"d.collection_id = ? AND ({sql})", [collection_id, *params]


class SqliteSession:
    """Reads and writes over one connection; the caller owns the transaction."""

    def __init__(self, conn: sqlite3.Connection, db: Database) -> None:
        self.conn = conn
        self._db = db

    def content_hashes(self, collection_id: int, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hash of each of ``doc_ids`` that exists."""
        found: dict[str, str] = {}
        for part in batched(doc_ids):
            ids, hashes = packed.read(
                self.conn,
                "SELECT doc_id AS c0, content_hash AS c1 FROM documents "
                f"WHERE collection_id = ? AND doc_id IN ({placeholders(len(part))})",
                (collection_id, *part),
                2,
            )
            found.update(zip(ids.texts(), hashes.texts(), strict=True))
        return found

    def vectors_by_hash(
        self, model: tuple[str, str | None], hashes: Sequence[str]
    ) -> dict[str, bytes]:
        """Stored vectors (raw float32 bytes) of chunks whose embedded-text hash is in
        ``hashes``, from any collection built with the same model ``(name, version)``."""
        found: dict[str, bytes] = {}
        for part in batched(hashes):
            rows = self.conn.execute(
                "SELECT c.hash, c.vector FROM chunks c "
                "JOIN collections k ON k.id = c.collection_id "
                f"WHERE c.hash IN ({placeholders(len(part))}) AND c.hash != '' "
                "AND json_extract(k.config, '$.embedder') = ? "
                "AND json_extract(k.config, '$.embedder_version') IS ?",
                (*part, *model),
            )
            found.update(dict(rows.fetchall()))
        return found

    def write_documents(self, collection_id: int, docs: Sequence[DocumentRow], now: float) -> None:
        """Insert or replace documents with all their chunks (inside the caller's transaction).

        Documents that do not exist yet are inserted in bulk; existing ones are replaced one
        by one. A batch must not name a document twice.
        """
        existing = self.content_hashes(collection_id, [d.doc_id for d in docs])
        for doc in docs:
            if doc.doc_id in existing:
                self._write_document(collection_id, doc, now)
        for part in batched([d for d in docs if d.doc_id not in existing]):
            self._insert_new_documents(collection_id, part, now)

    def _insert_new_documents(
        self, collection_id: int, docs: Sequence[DocumentRow], now: float
    ) -> None:
        last = packed.insert(
            self.conn,
            _INSERT_DOCUMENT,
            [(*_document_values(doc, now), collection_id, doc.doc_id) for doc in docs],
        )
        self._count_new_documents(collection_id, len(docs))
        first = last - len(docs) + 1  # one writer at a time: the new rowids are consecutive
        packed.insert(
            self.conn,
            _INSERT_CHUNK,
            [
                _chunk_values(collection_id, first + i, doc.title, chunk)
                for i, doc in enumerate(docs)
                for chunk in doc.chunks
            ],
        )

    def _count_new_documents(self, collection_id: int, count: int) -> None:
        """Count inserted documents into the collection's write counter (``cache_clock``),
        which the query cache's strict mode compares; updates and deletes are counted by
        triggers on ``documents``."""
        self.conn.execute(
            "INSERT OR IGNORE INTO cache_clock (collection_id) VALUES (?)", (collection_id,)
        )
        self.conn.execute(
            "UPDATE cache_clock SET writes = writes + ? WHERE collection_id = ?",
            (count, collection_id),
        )

    def _write_document(self, collection_id: int, doc: DocumentRow, now: float) -> None:
        """Insert or replace one document and all its chunks (inside the caller's transaction)."""
        row = self.conn.execute(
            "SELECT id FROM documents WHERE collection_id = ? AND doc_id = ?",
            (collection_id, doc.doc_id),
        ).fetchone()
        values = _document_values(doc, now)
        if row is None:
            document_id = packed.insert(
                self.conn, _INSERT_DOCUMENT, [(*values, collection_id, doc.doc_id)]
            )
            self._count_new_documents(collection_id, 1)
        else:
            document_id = int(row[0])
            self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
            self.conn.execute(
                "UPDATE documents SET source = ?, origin = ?, title = ?, text = ?, metadata = ?, "
                "content_hash = ?, updated_at = ? WHERE id = ?",
                (*values, document_id),
            )
        packed.insert(
            self.conn,
            _INSERT_CHUNK,
            [_chunk_values(collection_id, document_id, doc.title, chunk) for chunk in doc.chunks],
        )

    def delete_documents(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Delete documents and their chunks; returns how many documents existed."""
        deleted = 0
        for part in batched(doc_ids):
            where = f"collection_id = ? AND doc_id IN ({placeholders(len(part))})"
            params = (collection_id, *part)
            self.conn.execute(
                f"DELETE FROM chunks WHERE document_id IN (SELECT id FROM documents WHERE {where})",
                params,
            )
            deleted += self.conn.execute(f"DELETE FROM documents WHERE {where}", params).rowcount
        self.trim_removals(collection_id, REMOVALS_KEPT)
        return deleted

    def matching_doc_ids(self, collection_id: int, where: Filter | None) -> list[str]:
        """Ids of the documents that match a filter (all documents when ``where`` is None)."""
        sql, params = _document_filter(collection_id, where)
        return [
            row[0]
            for row in self.conn.execute(f"SELECT d.doc_id FROM documents d WHERE {sql}", params)
        ]

    def count_documents(self, collection_id: int, where: Filter | None) -> int:
        """Number of documents that match a filter."""
        sql, params = _document_filter(collection_id, where)
        return int(
            self.conn.execute(f"SELECT count(*) FROM documents d WHERE {sql}", params).fetchone()[0]
        )

    def docs_from_origins(self, collection_id: int, roots: Sequence[str]) -> list[tuple[str, str]]:
        """``(doc_id, origin)`` of documents loaded from a file at or under any of ``roots``."""
        found: list[tuple[str, str]] = []
        for root in roots:
            prefix = root.rstrip("/") + "/"
            found.extend(
                self.conn.execute(
                    "SELECT doc_id, origin FROM documents WHERE collection_id = ? "
                    "AND (origin = ? OR substr(origin, 1, ?) = ?)",
                    (collection_id, root, len(prefix), prefix),
                ).fetchall()
            )
        return found

    def allowed_chunk_ids(self, collection_id: int, where: Filter) -> Ids:
        """Ids of every chunk whose document matches the filter."""
        sql, params = _document_filter(collection_id, where)
        rows = self.conn.execute(
            f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {sql}",
            params,
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def chunk_ids_between(self, collection_id: int, first: int, last: int) -> Ids:
        """Ids of the collection's chunks in ``[first, last]``, ascending."""
        pages = packed.read_after(
            self.conn,
            "SELECT id AS c0 FROM chunks WHERE collection_id = ? AND id <= ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (collection_id, last),
            1,
            first - 1,
        )
        return _concatenated([ids.ints() for (ids,) in pages])

    def chunk_vectors(
        self, collection_id: int, first: int, last: int, dim: int
    ) -> tuple[Ids, Matrix, list[str]]:
        """Ids (ascending), vectors and document ids of the collection's chunks with ids in
        ``[first, last]``."""
        ids: list[Ids] = []
        vectors: list[Matrix] = []
        docs: list[str] = []
        for chunk_ids, blobs, doc_ids in packed.read_after(
            self.conn,
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

    def chunk_terms(self, collection_id: int, first: int) -> tuple[Ids, list[bytes]]:
        """Ids (ascending) and stored keyword terms of the collection's chunks from ``first``."""
        ids: list[Ids] = []
        terms: list[bytes] = []
        for chunk_ids, encoded in packed.read_after(
            self.conn,
            "SELECT id AS c0, terms AS c1 FROM chunks WHERE collection_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (collection_id,),
            2,
            first - 1,
        ):
            ids.append(chunk_ids.ints())
            terms.extend(encoded.values())
        return _concatenated(ids), terms

    def replace_segments(
        self,
        collection_id: int,
        replaced: Sequence[int],
        new: SegmentValues,
    ) -> int | None:
        """Replace manifest rows ``replaced`` by ``new``; ``None`` if they changed meanwhile
        (one is gone, or another segment now overlaps the new one's chunk range)."""
        kind, vectors, first, last, files = new
        overlapping = {
            int(row[0])
            for row in self.conn.execute(
                "SELECT id FROM segments WHERE collection_id = ? AND first_chunk <= ? "
                "AND last_chunk >= ?",
                (collection_id, last, first),
            )
        }
        present = {
            int(row[0])
            for row in self.conn.execute(
                f"SELECT id FROM segments WHERE id IN ({placeholders(len(replaced))})",
                list(replaced),
            )
        }
        if present != set(replaced) or overlapping - set(replaced):
            return None
        self.conn.execute(
            f"DELETE FROM segments WHERE id IN ({placeholders(len(replaced))})", list(replaced)
        )
        cursor = self.conn.execute(
            "INSERT INTO segments (collection_id, kind, vectors, first_chunk, last_chunk, files, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                collection_id,
                kind,
                vectors,
                first,
                last,
                json.dumps(files, sort_keys=True),
                time.time(),
            ),
        )
        return int(cursor.lastrowid or 0)

    def delete_segments(self, segment_ids: Sequence[int]) -> bool:
        """Remove manifest rows; ``False`` (and nothing removed) unless all still exist."""
        marks = placeholders(len(segment_ids))
        present = self.conn.execute(
            f"SELECT count(*) FROM segments WHERE id IN ({marks})", list(segment_ids)
        ).fetchone()[0]
        if present != len(segment_ids):
            return False
        self.conn.execute(f"DELETE FROM segments WHERE id IN ({marks})", list(segment_ids))
        return True

    def update_segment(self, segment_id: int, new: SegmentValues) -> bool:
        """Point a manifest row at rebuilt files (same chunk range); ``False`` if it is gone."""
        kind, vectors, _, _, files = new
        cursor = self.conn.execute(
            "UPDATE segments SET kind = ?, vectors = ?, files = ? WHERE id = ?",
            (kind, vectors, json.dumps(files, sort_keys=True), segment_id),
        )
        return cursor.rowcount > 0

    def sample_vectors(self, collection_id: int, count: int, dim: int, seed: int) -> Matrix:
        """Up to ``count`` of the collection's vectors, chosen at random (seeded)."""
        ids = self.conn.execute(
            "SELECT id FROM chunks WHERE collection_id = ? ORDER BY id", (collection_id,)
        ).fetchall()
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
        picked = [ids[i][0] for i in sorted(chosen.tolist())]
        if not picked:
            return np.empty((0, dim), dtype=np.float32)
        return self.vectors_for(picked).reshape(len(picked), dim)

    def removed_after(self, collection_id: int, seq: int) -> tuple[Ids, int]:
        """Chunk ids removed since removal ``seq``, and the newest seq seen."""
        seqs: list[Ids] = []
        removed: list[Ids] = []
        for seqs_read, chunk_ids in packed.read_after(
            self.conn,
            "SELECT seq AS c0, chunk_id AS c1 FROM tombstones WHERE collection_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (collection_id,),
            2,
            seq,
        ):
            seqs.append(seqs_read.ints())
            removed.append(chunk_ids.ints())
        last = int(seqs[-1][-1]) if seqs else seq
        return _concatenated(removed), last

    def trim_removals(self, collection_id: int, keep: int) -> None:
        """Forget all but the newest ``keep`` tombstones of a collection.

        The collection's ``tombstone_floor`` records the newest forgotten one: an index that
        has not caught up past it can no longer catch up and reloads from the chunks instead.
        """
        row = self.conn.execute(
            "SELECT seq FROM tombstones WHERE collection_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (collection_id, keep),
        ).fetchone()
        if row is None:
            return
        self.conn.execute(
            "DELETE FROM tombstones WHERE collection_id = ? AND seq <= ?", (collection_id, row[0])
        )
        self.conn.execute(
            "UPDATE collections SET tombstone_floor = ? WHERE id = ?", (row[0], collection_id)
        )

    def last_removal(self) -> int:
        """Newest tombstone seq in the whole store (0 when none)."""
        row = self.conn.execute("SELECT max(seq) FROM tombstones").fetchone()
        return int(row[0] or 0)

    def hits_by_chunk(self, chunk_ids: Sequence[int]) -> dict[int, Hit]:
        """Hits (score 0, to be set by the caller) for the chunk ids that still exist."""
        return unscored_hits(self.hit_bodies(chunk_ids))

    def hit_bodies(self, chunk_ids: Sequence[int]) -> dict[int, HitBody]:
        """chunk id -> what its hit shows, for the chunk ids that still exist."""
        found: dict[int, HitBody] = {}
        for part in batched(chunk_ids):
            rows = self.conn.execute(
                "SELECT c.id, d.doc_id, c.ordinal, c.text, d.source, d.metadata, c.start_char, "
                "c.end_char FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE c.id IN ({placeholders(len(part))})",
                part,
            )
            for chunk_id, doc_id, ordinal, text, source, metadata, start, end in rows:
                chunk = f"{doc_id}#{ordinal}"
                found[chunk_id] = (doc_id, chunk, text, source, _loaded(metadata), start, end)
        return found

    def documents_of(self, chunk_ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> row id of its document, for the chunks that still exist."""
        found: dict[int, int] = {}
        for part in batched(list(chunk_ids)):
            query = f"SELECT id, document_id FROM chunks WHERE id IN ({placeholders(len(part))})"
            found.update(self.conn.execute(query, part).fetchall())
        return found

    def vectors_for(self, chunk_ids: Sequence[int]) -> Matrix:
        """The stored vectors of chunks, one row per id, in the order given."""
        found: dict[int, bytes] = {}
        for part in batched(list(chunk_ids)):
            query = f"SELECT id, vector FROM chunks WHERE id IN ({placeholders(len(part))})"
            found.update(self.conn.execute(query, part).fetchall())
        blobs = [found[i] for i in chunk_ids]
        if not blobs or len(set(map(len, blobs))) != 1:
            raise ValueError("vectors_for needs chunk ids whose stored vectors share one size")
        # one buffer for all rows: far cheaper than an array per row stacked
        return np.frombuffer(bytearray().join(blobs), dtype=np.float32).reshape(len(blobs), -1)

    def document_vectors(
        self, collection_id: int, doc_ids: Sequence[str], dim: int
    ) -> dict[str, Matrix]:
        """The chunk vectors of each of ``doc_ids`` that exists, one row per chunk in
        text order."""
        blobs: dict[str, list[bytes]] = {}
        for part in batched(doc_ids):
            rows = self.conn.execute(
                "SELECT d.doc_id, c.vector FROM documents d JOIN chunks c ON c.document_id = d.id"
                f" WHERE d.collection_id = ? AND d.doc_id IN ({placeholders(len(part))})"
                " ORDER BY d.doc_id, c.ordinal",
                (collection_id, *part),
            )
            for doc_id, vector in rows:
                blobs.setdefault(doc_id, []).append(vector)
        return {
            doc_id: np.frombuffer(b"".join(parts), dtype=np.float32).reshape(-1, dim)
            for doc_id, parts in blobs.items()
        }

    def get_documents(self, collection_id: int, doc_ids: Sequence[str]) -> list[StoredDocument]:
        """Stored documents for ``doc_ids``, in that order; unknown ids are left out."""
        found: dict[str, StoredDocument] = {}
        for part in batched(doc_ids):
            for row in self.conn.execute(
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

    # -- beyond the documents and chunks tables

    def change_stamp(self) -> Hashable:
        return self._db.change_stamp(self.conn)

    def find_collection(self, name: str) -> CollectionRow | None:
        row = self.conn.execute(
            "SELECT id, name, config FROM collections WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else CollectionRow(int(row[0]), row[1], row[2])

    def list_collections(self) -> list[tuple[CollectionRow, int, int]]:
        found = self.conn.execute(
            "SELECT c.id, c.name, c.config, "
            "(SELECT count(*) FROM documents d WHERE d.collection_id = c.id), "
            "(SELECT count(*) FROM chunks k WHERE k.collection_id = c.id) "
            "FROM collections c ORDER BY c.name"
        ).fetchall()
        return [
            (CollectionRow(int(i), name, config), docs, chunks)
            for i, name, config, docs, chunks in found
        ]

    def chunk_count(self, collection_id: int) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE collection_id = ?", (collection_id,)
        ).fetchone()
        return int(row[0])

    def find_alias(self, name: str) -> AliasRow | None:
        found = self._aliases("WHERE a.name = ?", (name,))
        return found[0] if found else None

    def list_aliases(self) -> list[AliasRow]:
        return self._aliases("ORDER BY a.name", ())

    def _aliases(self, clause: str, params: tuple[object, ...]) -> list[AliasRow]:
        rows = self.conn.execute(
            "SELECT a.name, c.name, p.name FROM aliases a "
            "JOIN collections c ON c.id = a.collection_id "
            f"LEFT JOIN collections p ON p.id = a.previous_id {clause}",
            params,
        ).fetchall()
        return [AliasRow(*row) for row in rows]

    def page_of_doc_ids(
        self, collection_id: int, after: str, limit: int, where: Filter | None = None
    ) -> list[str]:
        sql, params = _document_filter(collection_id, where)
        rows = self.conn.execute(
            f"SELECT d.doc_id FROM documents d WHERE {sql} AND d.doc_id > ? "
            "ORDER BY d.doc_id LIMIT ?",
            (*params, after, limit),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def chunk_metadata(
        self, collection_id: int, after: int, upto: int
    ) -> tuple[Ids, list[dict[str, object]]]:
        ids: list[Ids] = []
        metadata: list[dict[str, object]] = []
        parsed: dict[bytes, dict[str, object]] = {}
        for chunk_ids, documents, texts in packed.read_after(
            self.conn,
            "SELECT c.id AS c0, c.document_id AS c1, d.metadata AS c2 FROM chunks c "
            "JOIN documents d ON d.id = c.document_id "
            "WHERE c.collection_id = ? AND c.id <= ? AND c.id > ? ORDER BY c.id LIMIT ?",
            (collection_id, upto),
            3,
            after,
        ):
            ids.append(chunk_ids.ints())
            for document, text in zip(documents.values(), texts.values(), strict=True):
                value = parsed.get(document)
                if value is None:
                    value = parsed[document] = json.loads(text)
                metadata.append(value)
        return _concatenated(ids), metadata

    def removal_floor(self, collection_id: int) -> int:
        row = self.conn.execute(
            "SELECT tombstone_floor FROM collections WHERE id = ?", (collection_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def segments(self, collection_id: int) -> list[SegmentRecord]:
        return list(
            self.conn.execute(
                "SELECT id, kind, vectors, first_chunk, last_chunk, files FROM segments "
                "WHERE collection_id = ? ORDER BY first_chunk",
                (collection_id,),
            )
        )

    def clock(self, collection_id: int) -> Clock:
        row = self.conn.execute(
            "SELECT k.seq, k.writes, k.index_version, "
            "(SELECT value FROM cache_meta WHERE name = 'epoch') "
            "FROM (SELECT ? AS id) q LEFT JOIN cache_clock k ON k.collection_id = q.id",
            (collection_id,),
        ).fetchone()
        return Clock(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))

    def changed_since(self, collection_id: int, doc_ids: Sequence[str], seq: int) -> bool:
        for part in batched(list(doc_ids)):
            row = self.conn.execute(
                "SELECT 1 FROM cache_doc_changes WHERE collection_id = ? AND seq > ? "
                f"AND doc_id IN ({placeholders(len(part))}) LIMIT 1",
                (collection_id, seq, *part),
            ).fetchone()
            if row is not None:
                return True
        return False

    def changes_after(self, collection_id: int, seq: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT doc_id FROM cache_doc_changes WHERE collection_id = ? AND seq > ?",
            (collection_id, seq),
        )
        return [row[0] for row in rows]

    def youngest_update(self, collection_id: int, doc_ids: Sequence[str]) -> float | None:
        newest: float | None = None
        for part in batched(list(doc_ids)):
            row = self.conn.execute(
                "SELECT max(updated_at) FROM documents WHERE collection_id = ? "
                f"AND doc_id IN ({placeholders(len(part))})",
                (collection_id, *part),
            ).fetchone()
            if row[0] is not None:
                newest = row[0] if newest is None else max(newest, row[0])
        return newest

    def store_id(self) -> str:
        row = self.conn.execute("SELECT value FROM cache_meta WHERE name = 'store_id'").fetchone()
        return str(row[0])

    def create_collection(self, name: str, config: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO collections (name, config, created_at) VALUES (?, ?, ?)",
            (name, config, now),
        )

    def delete_collection(self, collection_id: int) -> None:
        for table in ("chunks", "documents", "tombstones", "segments"):
            self.conn.execute(f"DELETE FROM {table} WHERE collection_id = ?", (collection_id,))
        self.conn.execute(
            "UPDATE aliases SET previous_id = NULL WHERE previous_id = ?", (collection_id,)
        )
        self.conn.execute("DELETE FROM collections WHERE id = ?", (collection_id,))

    def set_alias(self, name: str, collection_id: int, now: float) -> None:
        self.conn.execute(
            "INSERT INTO aliases (name, collection_id, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET previous_id = collection_id, "
            "collection_id = excluded.collection_id, updated_at = excluded.updated_at "
            "WHERE collection_id != excluded.collection_id",
            (name, collection_id, now),
        )

    def delete_alias(self, name: str) -> bool:
        return self.conn.execute("DELETE FROM aliases WHERE name = ?", (name,)).rowcount > 0

    def rollback_alias(self, name: str, now: float) -> bool:
        swapped = self.conn.execute(
            "UPDATE aliases SET collection_id = previous_id, previous_id = collection_id, "
            "updated_at = ? WHERE name = ? AND previous_id IS NOT NULL",
            (now, name),
        )
        return swapped.rowcount > 0

    def set_config(self, collection_id: int, config: str) -> None:
        self.conn.execute("UPDATE collections SET config = ? WHERE id = ?", (config, collection_id))

    def bump_epoch(self) -> None:
        self.conn.execute(
            "UPDATE cache_meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'epoch'"
        )

    def anomalies(self, collection_id: int, dim: int) -> dict[str, Anomaly]:
        found = {
            name: self._column(f"{sql} ORDER BY 1", (collection_id, *params))
            for name, (sql, params) in {
                "documents_without_chunks": (_DOCUMENTS_WITHOUT_CHUNKS, ()),
                "chunks_without_document": (_CHUNKS_WITHOUT_DOCUMENT, ()),
                "vectors_of_wrong_size": (_VECTORS_OF_WRONG_SIZE, (4 * dim,)),
            }.items()
        }
        missing = missing_terms(
            self.conn.execute(_CHUNKS_WITHOUT_TERMS, (collection_id,)).fetchall()
        )
        return {name: Anomaly.of(rows) for name, rows in found.items()} | {
            "chunks_without_terms": Anomaly.of([chunk_id for chunk_id, _ in missing])
        }

    def _column(self, sql: str, params: Sequence[object]) -> list[object]:
        return [row[0] for row in self.conn.execute(sql, params)]

    def delete_orphan_chunks(self, collection_id: int) -> int:
        return self.conn.execute(
            f"DELETE FROM chunks WHERE id IN ({_CHUNKS_WITHOUT_DOCUMENT})", (collection_id,)
        ).rowcount

    def restore_terms(self, collection_id: int) -> int:
        missing = missing_terms(
            self.conn.execute(_CHUNKS_WITHOUT_TERMS, (collection_id,)).fetchall()
        )
        self.conn.executemany(
            "UPDATE chunks SET terms = ? WHERE id = ?", [(value, i) for i, value in missing]
        )
        return len(missing)


_DOCUMENTS_WITHOUT_CHUNKS = (
    "SELECT d.doc_id FROM documents d WHERE d.collection_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)"
)
_CHUNKS_WITHOUT_DOCUMENT = (
    "SELECT c.id FROM chunks c WHERE c.collection_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = c.document_id)"
)
_VECTORS_OF_WRONG_SIZE = "SELECT id FROM chunks WHERE collection_id = ? AND length(vector) != ?"
_CHUNKS_WITHOUT_TERMS = (
    "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
    "WHERE c.collection_id = ? AND length(c.terms) = 0 ORDER BY c.id"
)

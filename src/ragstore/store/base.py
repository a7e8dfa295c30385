"""The storage interface: what the index, search, cache and ingest layers ask of a store.

A backend (``store/sqlite``, ``store/postgres``) is the source of truth for collections,
documents, chunks with their vectors and keyword terms, and a change feed. Everything
else (vector segments, BM25 postings, metadata columns, cached answers) is derived from
it and kept in step by reading the feed:

- chunk ids only grow, so "new chunks" are the ids past the last one seen;
- every removed chunk leaves a *removal* with a growing sequence number, so "removed
  chunks" are the removals past the last sequence applied; the oldest removals are
  forgotten past :data:`REMOVALS_KEPT`, and :meth:`Reader.removal_floor` says how far,
  so a reader that fell further behind reloads instead;
- every update or delete of a document bumps its collection's clock and records the
  change against the document, in the writer's own transaction (:class:`Clock`,
  :meth:`Reader.changes_after`), which the query cache checks before it serves an entry.

All reads of one :meth:`StorageBackend.read` block see one committed snapshot; a
:meth:`StorageBackend.write` block is one transaction, committed at its end or rolled
back on an error. A third backend implements these two Protocols and
:class:`StorageBackend`, and passes ``tests/`` run with ``--backend`` set to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ragstore import terms
from ragstore.config import IndexConfig
from ragstore.filters import Filter
from ragstore.types import Hit, Ids, Matrix, Scores, StoredDocument

REMOVALS_KEPT = 50_000
"""Removals kept per collection for other processes' indexes to catch up from."""

SegmentValues = tuple[str, int, int, int, dict[str, Any]]
"""A new segment manifest row: kind, vectors, first chunk, last chunk, files."""

SegmentRecord = tuple[int, str, int, int, int, str]
"""A segment manifest row as stored: id, kind, vectors, first chunk, last chunk, files
(JSON text)."""

HitBody = tuple[str, str, str, str | None, dict[str, Any], int, int]
"""What a hit shows of its chunk, in :class:`~ragstore.types.Hit`'s field order less the
score: document id, chunk id (``doc_id#ordinal``), text, source, metadata (parsed
afresh for each call), start, end."""


ANOMALY_EXAMPLES = 5
"""Rows named per kind of anomaly."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Rows of one kind that the store's own writers never leave behind (raw SQL, a
    restored file or a disk fault can): how many, and the first few of them."""

    count: int
    examples: list[str]
    """Document ids, or chunk ids as text."""

    @classmethod
    def of(cls, found: Sequence[object]) -> Anomaly:
        """The anomaly made of the rows ``found``."""
        return cls(len(found), [str(row) for row in found[:ANOMALY_EXAMPLES]])


def unscored_hits(bodies: dict[int, HitBody]) -> dict[int, Hit]:
    """:meth:`Reader.hits_by_chunk` from :meth:`Reader.hit_bodies`: hits scored 0."""
    return {
        chunk_id: Hit(
            doc_id=doc_id,
            chunk_id=chunk,
            score=0.0,
            text=text,
            source=source,
            metadata=metadata,
            start=start,
            end=end,
        )
        for chunk_id, (doc_id, chunk, text, source, metadata, start, end) in bodies.items()
    }


def missing_terms(rows: Sequence[tuple[int, str, str]]) -> list[tuple[int, bytes]]:
    """Of chunks stored without keyword terms, as ``(chunk id, title, text)``, those
    whose title and text have terms, with the terms they should have."""
    encoded = ((chunk_id, terms.encode_terms(title, text)) for chunk_id, title, text in rows)
    return [(chunk_id, value) for chunk_id, value in encoded if value]


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


@dataclass(frozen=True, slots=True)
class Clock:
    """A collection's change counters and the store's cache epoch, read at one moment.

    ``seq`` counts updates and deletes of documents, ``writes`` every document write,
    ``index_version`` changes of the collection's index (config or segments); ``epoch``
    counts clears of the query cache.
    """

    seq: int
    writes: int
    index_version: int
    epoch: int


@dataclass(frozen=True, slots=True)
class CollectionRow:
    """A collection as stored: its id, its name and its config as JSON text."""

    id: int
    name: str
    config: str


@dataclass(frozen=True, slots=True)
class AliasRow:
    """An alias: its name, the collection it names and the one it named before (by
    collection name; ``previous`` is ``None`` when there is none to roll back to)."""

    name: str
    collection: str
    previous: str | None

    def to_dict(self) -> dict[str, str | None]:
        """Plain-JSON form."""
        return {"name": self.name, "collection": self.collection, "previous": self.previous}


class Reader(Protocol):
    """Reads inside one snapshot of the store."""

    def change_stamp(self) -> Hashable:
        """A value that is the same for two snapshots that see the same commits."""
        ...

    # -- collections

    def find_collection(self, name: str) -> CollectionRow | None:
        """The collection called ``name``."""
        ...

    def list_collections(self) -> list[tuple[CollectionRow, int, int]]:
        """Every collection, by name, with its document and chunk counts."""
        ...

    def chunk_count(self, collection_id: int) -> int:
        """Number of chunks in the collection."""
        ...

    def find_alias(self, name: str) -> AliasRow | None:
        """The alias called ``name``. In a write transaction, the aliases and collections
        a writer looked up by name stay as it saw them until it ends (a backend whose
        writers do not run one at a time locks them)."""
        ...

    def list_aliases(self) -> list[AliasRow]:
        """Every alias, by name."""
        ...

    # -- documents

    def content_hashes(self, collection_id: int, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored content hash of each of ``doc_ids`` that exists."""
        ...

    def vectors_by_hash(
        self, model: tuple[str, str | None], hashes: Sequence[str]
    ) -> dict[str, bytes]:
        """Stored vectors (raw float32 bytes) of chunks whose embedded-text hash is in
        ``hashes``, from any collection built with the same model ``(name, version)``."""
        ...

    def matching_doc_ids(self, collection_id: int, where: Filter | None) -> list[str]:
        """Ids of the documents that match a filter (every one when ``where`` is None)."""
        ...

    def count_documents(self, collection_id: int, where: Filter | None) -> int:
        """Number of documents that match a filter."""
        ...

    def page_of_doc_ids(
        self, collection_id: int, after: str, limit: int, where: Filter | None = None
    ) -> list[str]:
        """Up to ``limit`` ids of documents matching ``where`` (every one when it is None)
        greater than ``after``, ascending."""
        ...

    def docs_from_origins(self, collection_id: int, roots: Sequence[str]) -> list[tuple[str, str]]:
        """``(doc_id, origin)`` of documents loaded from a file at or under any of
        ``roots``."""
        ...

    def get_documents(self, collection_id: int, doc_ids: Sequence[str]) -> list[StoredDocument]:
        """Stored documents for ``doc_ids``, in that order; unknown ids are left out."""
        ...

    def document_vectors(
        self, collection_id: int, doc_ids: Sequence[str], dim: int
    ) -> dict[str, Matrix]:
        """The chunk vectors of each of ``doc_ids`` that exists, one row per chunk in
        text order."""
        ...

    # -- chunks

    def allowed_chunk_ids(self, collection_id: int, where: Filter) -> Ids:
        """Ids of every chunk whose document matches the filter."""
        ...

    def chunk_ids_between(self, collection_id: int, first: int, last: int) -> Ids:
        """Ids of the collection's chunks in ``[first, last]``, ascending."""
        ...

    def chunk_vectors(
        self, collection_id: int, first: int, last: int, dim: int
    ) -> tuple[Ids, Matrix, list[str]]:
        """Ids (ascending), vectors and document ids of the chunks in ``[first, last]``."""
        ...

    def chunk_terms(self, collection_id: int, first: int) -> tuple[Ids, list[bytes]]:
        """Ids (ascending) and stored keyword terms of the chunks from ``first``."""
        ...

    def chunk_metadata(
        self, collection_id: int, after: int, upto: int
    ) -> tuple[Ids, list[dict[str, object]]]:
        """Ids (ascending) and document metadata of the chunks with ``after < id <=
        upto``; chunks of one document share one parsed object."""
        ...

    def sample_vectors(self, collection_id: int, count: int, dim: int, seed: int) -> Matrix:
        """Up to ``count`` of the collection's vectors, chosen at random (seeded)."""
        ...

    def hits_by_chunk(self, chunk_ids: Sequence[int]) -> dict[int, Hit]:
        """Hits (score 0, to be set by the caller) for the chunk ids that still exist."""
        ...

    def hit_bodies(self, chunk_ids: Sequence[int]) -> dict[int, HitBody]:
        """chunk id -> what its hit shows, for the chunk ids that still exist: the
        search builds each hit once, with its scores, from these."""
        ...

    def documents_of(self, chunk_ids: Sequence[int]) -> dict[int, int]:
        """chunk id -> row id of its document, for the chunks that still exist."""
        ...

    def vectors_for(self, chunk_ids: Sequence[int]) -> Matrix:
        """The stored vectors of chunks, one row per id, in the order given."""
        ...

    # -- the change feed

    def removed_after(self, collection_id: int, seq: int) -> tuple[Ids, int]:
        """Chunk ids removed since removal ``seq``, and the newest seq seen."""
        ...

    def last_removal(self) -> int:
        """Newest removal seq in the whole store (0 when none)."""
        ...

    def removal_floor(self, collection_id: int) -> int:
        """Newest removal seq of the collection that was forgotten (0 when none)."""
        ...

    def segments(self, collection_id: int) -> list[SegmentRecord]:
        """The collection's sealed index segments, by first chunk."""
        ...

    def clock(self, collection_id: int) -> Clock:
        """The collection's change counters (zeros before its first write)."""
        ...

    def changed_since(self, collection_id: int, doc_ids: Sequence[str], seq: int) -> bool:
        """Whether any of ``doc_ids`` was updated or deleted after change ``seq``."""
        ...

    def changes_after(self, collection_id: int, seq: int) -> list[str]:
        """Ids of the documents updated or deleted after change ``seq``."""
        ...

    def youngest_update(self, collection_id: int, doc_ids: Sequence[str]) -> float | None:
        """The newest ``updated_at`` among ``doc_ids`` (``None`` when none exists)."""
        ...

    def store_id(self) -> str:
        """A random id made when the store was created."""
        ...

    def anomalies(self, collection_id: int, dim: int) -> dict[str, Anomaly]:
        """What the collection holds that its writers never leave behind:
        ``documents_without_chunks``, ``chunks_without_document``,
        ``vectors_of_wrong_size`` (not ``dim`` floats) and ``chunks_without_terms``
        (text with keyword terms, none stored)."""
        ...


class Writer(Reader, Protocol):
    """Reads and writes inside one transaction."""

    def create_collection(self, name: str, config: str, now: float) -> None:
        """Add a collection (the caller checked the name is free)."""
        ...

    def delete_collection(self, collection_id: int) -> None:
        """Remove a collection with all its documents, chunks and segments, and forget
        it as any alias's previous collection (the caller checked that no alias names
        it now)."""
        ...

    def set_config(self, collection_id: int, config: str) -> None:
        """Replace a collection's config."""
        ...

    def set_alias(self, name: str, collection_id: int, now: float) -> None:
        """Point alias ``name`` at a collection, creating it, or keeping the collection it
        named as the one to roll back to (nothing changes when it names that one
        already). The caller checked that no collection is called ``name``."""
        ...

    def delete_alias(self, name: str) -> bool:
        """Remove an alias; ``False`` when there is none."""
        ...

    def rollback_alias(self, name: str, now: float) -> bool:
        """Swap an alias's collection with the one it named before; ``False`` when it
        has no previous one (or does not exist)."""
        ...

    def write_documents(self, collection_id: int, docs: Sequence[DocumentRow], now: float) -> None:
        """Insert or replace documents with all their chunks. A batch must not name a
        document twice."""
        ...

    def delete_documents(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Delete documents and their chunks; returns how many documents existed."""
        ...

    def trim_removals(self, collection_id: int, keep: int) -> None:
        """Forget all but the newest ``keep`` removals of a collection."""
        ...

    def replace_segments(
        self, collection_id: int, replaced: Sequence[int], new: SegmentValues
    ) -> int | None:
        """Replace manifest rows ``replaced`` by ``new``; ``None`` if they changed
        meanwhile (one is gone, or another segment overlaps the new one's range)."""
        ...

    def delete_segments(self, segment_ids: Sequence[int]) -> bool:
        """Remove manifest rows; ``False`` (and nothing removed) unless all exist."""
        ...

    def update_segment(self, segment_id: int, new: SegmentValues) -> bool:
        """Point a manifest row at rebuilt files; ``False`` if it is gone."""
        ...

    def bump_epoch(self) -> None:
        """Tell every process that the query cache was cleared."""
        ...

    def delete_orphan_chunks(self, collection_id: int) -> int:
        """Delete the collection's chunks whose document is gone; returns how many."""
        ...

    def restore_terms(self, collection_id: int) -> int:
        """Store again the keyword terms of chunks stored without them; returns how
        many chunks got theirs back."""
        ...


class DatabaseSearch(Protocol):
    """Searches a backend runs itself, for collections of index kind ``pgvector``: no
    index is held in the process. Only a database server implements this."""

    def dense_search(
        self,
        collection_id: int,
        dim: int,
        vector: Matrix,
        k: int,
        where: Filter | None,
        ef_search: int,
    ) -> tuple[Ids, Scores]:
        """The ``k`` chunks nearest ``vector`` by inner product, best first, among those
        whose documents match ``where``; k of them whenever k match."""
        ...

    def text_search(
        self, collection_id: int, text: str, k: int, where: Filter | None
    ) -> tuple[Ids, Scores]:
        """The ``k`` chunks that best match the words of ``text``, best first."""
        ...

    def search_index_bytes(self, collection_id: int) -> int:
        """Size on disk of the collection's in-database search indexes."""
        ...


class DatabaseIndexes(Protocol):
    """Creates and drops a collection's in-database search indexes (in a write)."""

    def create_search_indexes(self, collection_id: int, dim: int, index: IndexConfig) -> None:
        """Build the indexes :class:`DatabaseSearch` uses, replacing older ones."""
        ...

    def drop_search_indexes(self, collection_id: int) -> None:
        """Drop them (nothing when there are none)."""
        ...


class StorageBackend(Protocol):
    """A store's source of truth: one SQLite file, or one PostgreSQL database."""

    location: str
    """Where the store is, as the user named it (a directory, or a URL without its
    password)."""
    index_root: Path
    """The directory this process keeps derived index files in."""
    cache_dir: Path
    """The directory of the local query cache's SQLite file: the store's own for the
    embedded backend, one beside the index files for a server."""
    searches_in_database: bool
    """Whether its sessions implement :class:`DatabaseSearch` and
    :class:`DatabaseIndexes` (index kind ``pgvector``)."""

    def read(self) -> AbstractContextManager[Reader]:
        """A read-only snapshot."""
        ...

    def write(self) -> AbstractContextManager[Writer]:
        """A write transaction: waits its turn, commits on success, rolls back on error."""
        ...

    def peek(self) -> AbstractContextManager[Reader]:
        """Reads without a snapshot, each one on its own: for single lookups on hot
        paths, where opening a transaction would cost more than the read."""
        ...

    def change_stamp(self) -> Hashable | None:
        """Without opening a transaction: a value that stays the same while nothing is
        committed (``None`` when that cannot be told cheaply; read a snapshot's)."""
        ...

    def commit_marker(self) -> bytes | None:
        """Bytes that stay the same while nothing is committed to the store by any
        process, read without a statement (``None`` where there is no such thing). Read
        it *before* what it should vouch for."""
        ...

    def close(self) -> None:
        """Release connections and background threads."""
        ...

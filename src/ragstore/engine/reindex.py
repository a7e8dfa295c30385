"""Blue-green re-indexing: build a collection from another one's documents while that
one keeps serving and taking writes, then point an alias at the new one.

The copy follows the source's change feed rather than locking it:

1. note the feed's position (the newest chunk id, the clock's change seq);
2. copy every document (a text collection is chunked and embedded again; vectors whose
   chunk text is unchanged are reused by hash; a vector collection's vectors are copied);
3. replay what changed since the noted position (new chunks name new and replaced
   documents; the change seq names updated and deleted ones) until little is left;
4. with ``switch``, one write transaction points the alias at the target first, then
   replays the last changes and checks the counts. Writes made through the alias
   check it inside their own transactions (see ``AliasMoved``), so each lands either
   before the switch (and is replayed) or after it, in the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragstore.config import CollectionConfig
from ragstore.embed import Embedder
from ragstore.engine import pipeline
from ragstore.engine.background import at_low_priority
from ragstore.errors import Conflict, StoreError
from ragstore.store.base import (
    REMOVALS_KEPT,
    ChunkRow,
    DocumentRow,
    Reader,
    StorageBackend,
    Writer,
)
from ragstore.types import Document, IngestReport, StoredDocument

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(documents copied, documents in the source)``."""
PAGE = 256
"""Documents of a text collection copied per step (each is chunked and embedded)."""
VECTOR_PAGE = 4096
"""Vectors of a vector collection copied per step (one transaction each)."""
SETTLED = 64
"""Replay rounds stop once a round finds at most this many changed documents."""
MAX_ROUNDS = 50
_LAST_CHUNK = 2**62


@dataclass
class ReindexReport:
    """What a re-index did."""

    source: str
    target: str
    documents: int = 0
    """Documents in the target when it finished."""
    copied: int = 0
    replayed: int = 0
    """Documents written or deleted again because the source changed meanwhile."""
    rounds: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    switched: str | None = None
    """The alias that now names the target."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass
class _Feed:
    """A position in the source's change feed."""

    chunk: int = 0
    seq: int = 0


@dataclass
class _Copy:
    backend: StorageBackend
    source_id: int
    dim: int
    """The source's vector dimension."""
    target_id: int
    target: pipeline.Target | None
    """How the target chunks and embeds (``None`` for a vector collection)."""
    report: ReindexReport
    ingest: IngestReport = field(default_factory=IngestReport)
    feed: _Feed = field(default_factory=_Feed)
    origins: dict[str, str] = field(default_factory=dict)
    """Document id -> the file it was loaded from (kept for ``ingest --sync``)."""


def run(
    backend: StorageBackend,
    source: tuple[int, str, CollectionConfig],
    target: tuple[int, str, CollectionConfig],
    embedder: Embedder | None,
    *,
    switch: str | None = None,
    progress: ProgressFn | None = None,
    build_index: Callable[[], None] | None = None,
    gate: Callable[[], None] | None = None,
) -> ReindexReport:
    """Fill the (new, empty) ``target`` collection from ``source`` while the source stays
    live; with ``switch``, then point that alias at the target. ``source`` and
    ``target`` are ``(id, name, config)``. ``build_index`` builds the target's index
    once the copy has caught up, so the first search after the switch finds it built;
    ``gate`` runs then, before the switch, and stops it by raising."""
    started = time.perf_counter()
    target_id, target_name, config = target
    plan = None
    if embedder is not None:
        plan = pipeline.Target(backend, target_id, embedder, config.chunking)
    report = ReindexReport(source[1], target_name)
    copy = _Copy(backend, source[0], source[2].dim, target_id, plan, report)
    at_low_priority(lambda: _build(copy, progress, build_index))
    if gate is not None:
        gate()
    if switch is not None:
        _switch(copy, switch)
    with backend.read() as reader:
        copy.report.documents = reader.count_documents(target_id, None)
    copy.report.chunks_embedded = copy.ingest.chunks_embedded
    copy.report.chunks_reused = copy.ingest.chunks_reused
    copy.report.seconds = round(time.perf_counter() - started, 3)
    return copy.report


def _build(
    copy: _Copy, progress: ProgressFn | None, build_index: Callable[[], None] | None
) -> None:
    """Copy, build the index, catch up: the long part, which yields to searches. The
    switch runs at normal priority: its write transaction makes other writers wait."""
    _copy_all(copy, progress)
    _catch_up(copy)
    if build_index is not None:
        build_index()
        _catch_up(copy)


def _catch_up(copy: _Copy) -> None:
    """Replay rounds until one finds little left to do."""
    for _ in range(MAX_ROUNDS):
        copy.report.rounds += 1
        if _replay_round(copy) <= SETTLED:
            return


def _copy_all(copy: _Copy, progress: ProgressFn | None) -> None:
    with copy.backend.read() as reader:
        copy.feed = _position(reader, copy.source_id, _Feed())
        copy.origins = dict(reader.docs_from_origins(copy.source_id, ["/"]))
        total = reader.count_documents(copy.source_id, None)
    done = 0
    for rows in _pages(copy):
        pipeline.write_rows(copy.backend, copy.target_id, rows)
        done += len(rows)
        copy.report.copied += len(rows)
        if progress is not None:
            progress(min(done, total), total)


def _pages(copy: _Copy) -> Iterator[list[DocumentRow]]:
    """The source's documents as rows for the target, a page at a time, each page read
    in a snapshot of its own (later changes are replayed)."""
    if copy.target is None:
        first = 1
        while first <= copy.feed.chunk:
            last = min(first + VECTOR_PAGE - 1, copy.feed.chunk)
            with copy.backend.read() as reader:
                rows = _vector_rows(reader, copy, first, last)
            yield rows  # outside the read: the caller writes them
            first = last + 1
        return
    after = ""
    while True:
        with copy.backend.read() as reader:
            ids = reader.page_of_doc_ids(copy.source_id, after, PAGE)
            rows = _text_rows(copy, reader, ids) if ids else []
        if not ids:
            return
        after = ids[-1]
        yield rows


def _replay_round(copy: _Copy) -> int:
    """Replay the source's changes since the feed position into the target; returns
    how many documents changed."""
    with copy.backend.read() as reader:
        changed, gone, rows = _changes(copy, reader)
    if changed:
        with copy.backend.write() as writer:
            _apply(copy, writer, gone, rows)
    return changed


def _switch(copy: _Copy, alias: str) -> None:
    with copy.backend.write() as writer:
        if writer.find_collection(alias) is not None:
            raise Conflict(f"{alias!r} is a collection, not an alias")
        # The alias first: from here on a write through it waits for this transaction,
        # then finds the target.
        writer.set_alias(alias, copy.target_id, time.time())
        copy.report.rounds += 1
        _, gone, rows = _changes(copy, writer)
        _apply(copy, writer, gone, rows)
        source = writer.count_documents(copy.source_id, None)
        target = writer.count_documents(copy.target_id, None)
        if source != target:
            raise StoreError(
                f"the target holds {target} documents and the source {source} after the "
                "last replay; nothing was switched"
            )
    copy.report.switched = alias


def _changes(copy: _Copy, reader: Reader) -> tuple[int, list[str], list[DocumentRow]]:
    """Since the feed position: how many documents changed, those deleted, and rows
    for the others; moves the position."""
    now = _position(reader, copy.source_id, copy.feed)
    touched = set(reader.changes_after(copy.source_id, copy.feed.seq))
    first = copy.feed.chunk + 1
    if copy.target is None:
        rows = _vector_rows(reader, copy, first, now.chunk)
        touched.update(r.doc_id for r in rows)
    elif now.chunk >= first:
        _, _, docs = reader.chunk_vectors(copy.source_id, first, now.chunk, copy.dim)
        touched.update(docs)
        copy.origins = dict(reader.docs_from_origins(copy.source_id, ["/"]))
    wanted = sorted(touched)
    if copy.target is not None:
        rows = _text_rows(copy, reader, wanted)
    present = {d.id for d in reader.get_documents(copy.source_id, wanted)}
    copy.feed = now
    return len(wanted), [d for d in wanted if d not in present], rows


def _apply(copy: _Copy, writer: Writer, gone: list[str], rows: list[DocumentRow]) -> None:
    writer.write_documents(copy.target_id, rows, time.time())
    writer.delete_documents(copy.target_id, gone)
    writer.trim_removals(copy.target_id, REMOVALS_KEPT)
    copy.report.replayed += len(rows) + len(gone)


def _position(reader: Reader, collection_id: int, after: _Feed) -> _Feed:
    """The feed's position now: its newest chunk id (read from ``after``'s on) and
    the collection's change seq."""
    ids = reader.chunk_ids_between(collection_id, after.chunk + 1, _LAST_CHUNK)
    newest = int(ids[-1]) if len(ids) else after.chunk
    return _Feed(newest, reader.clock(collection_id).seq)


def _text_rows(copy: _Copy, reader: Reader, doc_ids: Sequence[str]) -> list[DocumentRow]:
    assert copy.target is not None
    stored = reader.get_documents(copy.source_id, doc_ids)
    batch = [(_document(d), copy.origins.get(d.id)) for d in stored]
    return pipeline.prepare_rows(copy.target, batch, copy.ingest, reader) if batch else []


def _vector_rows(reader: Reader, copy: _Copy, first: int, last: int) -> list[DocumentRow]:
    """Rows of the vector documents whose chunks have ids in ``[first, last]``."""
    if last < first:
        return []
    _, vectors, doc_ids = reader.chunk_vectors(copy.source_id, first, last, copy.dim)
    stored = {d.id: d for d in reader.get_documents(copy.source_id, doc_ids)}
    rows = []
    for doc_id, vector in zip(doc_ids, vectors, strict=True):
        doc = _document(stored[doc_id])
        chunk = ChunkRow(0, doc.text, 0, len(doc.text), "", vector)
        rows.append(
            DocumentRow(doc.id, doc.source, None, doc.title, doc.text, doc.metadata,
                        stored[doc_id].content_hash, [chunk])
        )  # fmt: skip
    return rows


def _document(stored: StoredDocument) -> Document:
    """A stored document as one to write again (the store returns every field)."""
    assert stored.text is not None and stored.metadata is not None
    return Document(stored.id, stored.text, stored.title, stored.metadata, stored.source)

"""Stores and collections: the public engine over a storage backend (a directory with a
SQLite file, or a PostgreSQL database)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, Unpack, cast, overload

import numpy as np
import numpy.typing as npt

from ragstore.answer import service as answering
from ragstore.answer.llm import ChatModel
from ragstore.answer.service import AnswerStream
from ragstore.answer.types import Answer
from ragstore.cache import (
    CacheKey,
    CacheSettings,
    QueryCache,
    cache_for,
    cached_for,
    close_cache,
    open_cache,
)
from ragstore.cache import configure as use_cache
from ragstore.cache.keys import check_tenant
from ragstore.config import (
    DEFAULT_EMBEDDER,
    MAX_PAYLOAD_INDEXES,
    CollectionConfig,
    IndexConfig,
    check_payload_path,
)
from ragstore.embed import Embedder, get_embedder, is_known
from ragstore.engine import doctor, pipeline
from ragstore.engine import reindex as reindexing
from ragstore.engine import snapshot as snapshots
from ragstore.engine.pipeline import ProgressFn
from ragstore.engine.snapshot import Snapshot
from ragstore.errors import (
    AliasMoved,
    Conflict,
    InvalidConfig,
    InvalidInput,
    ModelMismatch,
    NotFound,
    QualityGate,
)
from ragstore.filters import Filter, matches, parse_filter
from ragstore.index.ann import Knobs
from ragstore.index.base import Ids, Matrix
from ragstore.index.database import DatabaseIndex
from ragstore.index.vectors import SegmentedIndex
from ragstore.ingest.loaders import DEFAULT_MAX_FILE_BYTES
from ragstore.inputs import check_text, decode_cursor, encode_cursor, included
from ragstore.records import (
    VectorRecord,
    check_delete_target,
    doc_ids,
    text_records,
    unit_vector,
    vector_batch,
    vector_records,
)
from ragstore.search import hybrid
from ragstore.search.hybrid import Fusion, Mode, Reranker, SearchOptions, SearchResults
from ragstore.store import is_url, open_backend
from ragstore.store.base import (
    AliasRow,
    ChunkRow,
    CollectionRow,
    DatabaseIndexes,
    DocumentRow,
    Reader,
    StorageBackend,
    Writer,
)
from ragstore.types import DEFAULT_INCLUDE, Document, DocumentPage, IngestReport, StoredDocument

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_PAGE = 100
"""Documents a listing ``get`` returns at a time, unless told."""
MAX_PAGE = 10_000

VECTOR_BATCH = 4096
"""Vector documents written per transaction (one chunk each)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection's name, resolved config and size, as ``ragstore collections`` shows."""

    name: str
    config: CollectionConfig
    documents: int
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "name": self.name,
            "config": self.config.model_dump(),
            "documents": self.documents,
            "chunks": self.chunks,
        }


class Store:
    """Collections in a directory or a PostgreSQL database. Open it with
    :func:`ragstore.open`."""

    def __init__(self, location: str | Path, *, create: bool = True) -> None:
        self._db: StorageBackend = open_backend(location, create=create)
        self.location = self._db.location
        """The directory, or the database URL without its password."""
        self.path = None if is_url(location) else Path(location).expanduser()
        """The store's directory (``None`` for a database server)."""
        self._open: dict[str, Collection] = {}
        self._verified: dict[str, tuple[bytes | None, Collection]] = {}
        """Per collection name, the last collection looked up and the commit marker read
        before its row was."""

    def collection(self, name: str, *, embedder: Embedder | None = None) -> Collection:
        """Get a collection, creating it with the default config if it does not exist."""
        try:
            return self.get_collection(name, embedder=embedder)
        except NotFound:
            pass
        try:
            return self.create_collection(name, embedder=embedder or DEFAULT_EMBEDDER)
        except Conflict:  # another process created it in between
            return self.get_collection(name, embedder=embedder)

    def create_collection(
        self,
        name: str,
        *,
        embedder: Embedder | str | None = DEFAULT_EMBEDDER,
        dim: int | None = None,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        index: Mapping[str, Any] | IndexConfig | None = None,
    ) -> Collection:
        """Create a collection; ``embedder=None`` with ``dim`` takes caller-supplied vectors.

        ``index`` chooses the vector index kind and its settings (see :class:`IndexConfig`).
        """
        model = get_embedder(embedder) if isinstance(embedder, str) else embedder
        config = _new_config(model, dim, chunk_size, chunk_overlap, index)
        self._create(name, config)
        return self.get_collection(name, embedder=model)

    def _create(self, name: str, config: CollectionConfig) -> int:
        """Add an empty collection; its id."""
        _check_name(name)
        _check_index_kind(self._db, config.index)
        with self._db.write() as writer:
            if writer.find_collection(name) is not None:
                raise Conflict(f"collection {name!r} already exists")
            if writer.find_alias(name) is not None:
                raise Conflict(f"{name!r} is an alias: a collection cannot take its name")
            writer.create_collection(name, config.to_json(), time.time())
            created = writer.find_collection(name)
            assert created is not None
            _update_database_indexes(self._db, writer, created.id, config)
        return created.id

    def get_collection(self, name: str, *, embedder: Embedder | None = None) -> Collection:
        """An existing collection; refuses an embedder other than the one it was built with.

        The same object is returned while the collection is unchanged, so its vector
        index is loaded once; a new one once another process deleted and re-created it
        or changed its config. ``name`` may be an alias: then the object returned
        follows the alias at every call (see :class:`AliasedCollection`).
        """
        _check_name(name)
        marker = self._db.commit_marker()
        with self._db.read() as reader:
            found = reader.find_collection(name)
            alias = None if found is not None else reader.find_alias(name)
            target = None if alias is None else reader.find_collection(alias.collection)
        collection: Collection
        if found is not None:
            collection = self._opened(name, found.id, found.config, embedder)
        elif target is not None:
            opened = self._alias_target(target, embedder)
            collection = AliasedCollection(self, name, embedder, (marker, opened))
        else:
            raise NotFound(f"no collection named {name!r}")
        self._verified[name] = marker, collection
        return collection

    def known_collection(self, name: str) -> Collection | None:
        """The collection :meth:`get_collection` last returned, if nothing at all was
        committed to the store since it looked (so it is surely still current);
        otherwise ``None``. Reads no table: cheap enough for an event loop."""
        verified = self._verified.get(name)
        marker = self._db.commit_marker()
        if verified is None or marker is None or verified[0] != marker:
            return None
        return verified[1]

    def _alias_target(self, row: CollectionRow, embedder: Embedder | None) -> Collection:
        """The collection an alias names, with ``embedder`` if it embeds text (an alias
        may move between text and vector collections)."""
        text = json.loads(row.config).get("embedder") is not None
        return self._opened(row.name, row.id, row.config, embedder if text else None)

    def _resolve_alias(self, alias: str, embedder: Embedder | None) -> Collection:
        """The collection ``alias`` names now."""
        with self._db.read() as reader:
            found = reader.find_alias(alias)
            row = None if found is None else reader.find_collection(found.collection)
        if row is None:
            raise NotFound(f"no alias named {alias!r}")
        return self._alias_target(row, embedder)

    def _opened(
        self, name: str, collection_id: int, stored_config: str, embedder: Embedder | None
    ) -> Collection:
        cached = self._open.get(name)
        if (
            cached is not None
            and (cached.id, cached._stored_config) == (collection_id, stored_config)
            and (embedder is None or embedder is cached._embedder)
        ):
            return cached
        config = CollectionConfig.parse(json.loads(stored_config))
        if embedder is not None:
            _check_embedder(config, embedder)
        collection = Collection(self._db, name, collection_id, config, embedder, stored_config)
        self._open[name] = collection
        return collection

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection with its config and counts."""
        with self._db.read() as reader:
            found = reader.list_collections()
        return [
            CollectionInfo(row.name, CollectionConfig.parse(json.loads(row.config)), docs, chunks)
            for row, docs, chunks in found
        ]

    def delete_collection(self, name: str) -> None:
        """Delete a collection with all its documents. Refused while an alias names it
        (delete or move the alias first), and for an alias (see :meth:`delete_alias`)."""
        with self._db.write() as writer:
            row = writer.find_collection(name)
            if row is None:
                if writer.find_alias(name) is not None:
                    raise Conflict(f"{name!r} is an alias: delete it with delete_alias")
                raise NotFound(f"no collection named {name!r}")
            naming = [a.name for a in writer.list_aliases() if a.collection == name]
            if naming:
                raise Conflict(
                    f"collection {name!r} is named by alias {naming[0]!r}: "
                    "delete or move the alias first"
                )
            writer.delete_collection(row.id)
        self._open.pop(name, None)
        self._verified.pop(name, None)
        shutil.rmtree(self._db.index_root / str(row.id), ignore_errors=True)

    def set_alias(self, alias: str, collection: str) -> AliasRow:
        """Point ``alias`` at ``collection`` in one transaction: create the alias, or
        switch it, remembering the collection it named for :meth:`rollback_alias`.
        Aliases share the collections' names: an alias cannot take a collection's name.
        Every object opened by the alias, in any process, follows at its next call."""
        _check_name(alias, "alias")
        _check_name(collection)
        with self._db.write() as writer:
            if writer.find_collection(alias) is not None:
                raise Conflict(f"{alias!r} is a collection: an alias cannot take its name")
            target = writer.find_collection(collection)
            if target is None:
                raise NotFound(f"no collection named {collection!r}")
            writer.set_alias(alias, target.id, time.time())
            return _found_alias(writer, alias)

    def rollback_alias(self, alias: str) -> AliasRow:
        """Point ``alias`` back at the collection it named before its last switch; the
        two swap, so a second rollback undoes the first."""
        _check_name(alias, "alias")
        with self._db.write() as writer:
            _found_alias(writer, alias)
            if not writer.rollback_alias(alias, time.time()):
                raise Conflict(f"alias {alias!r} has no previous collection to roll back to")
            return _found_alias(writer, alias)

    def delete_alias(self, alias: str) -> None:
        """Remove an alias (its collection stays)."""
        _check_name(alias, "alias")
        with self._db.write() as writer:
            if not writer.delete_alias(alias):
                raise NotFound(f"no alias named {alias!r}")
        self._verified.pop(alias, None)

    def list_aliases(self) -> list[AliasRow]:
        """Every alias, by name, with the collection it names and the one before."""
        with self._db.read() as reader:
            return reader.list_aliases()

    def alias_target(self, alias: str) -> str | None:
        """The name of the collection ``alias`` names (``None`` when there is no such
        alias)."""
        with self._db.read() as reader:
            found = reader.find_alias(alias)
        return None if found is None else found.collection

    def reindex(
        self,
        source: str,
        target: str,
        *,
        embedder: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        index: Mapping[str, Any] | IndexConfig | None = None,
        switch: str | None = None,
        drop_old: bool = False,
        progress: reindexing.ProgressFn | None = None,
        gate: Callable[[Collection], None] | None = None,
    ) -> reindexing.ReindexReport:
        """Build the new collection ``target`` from ``source``'s documents (``source``
        may be an alias) while ``source`` keeps serving and taking writes, with another
        ``embedder``, chunking or ``index``; what is not given is kept. Writes that land
        in ``source`` meanwhile are replayed. With ``switch``, the alias then names
        ``target`` (:meth:`rollback_alias` points it back); ``drop_old`` then deletes
        ``source``. ``gate(target)`` runs before the switch: a :class:`QualityGate` it
        raises refuses the switch and keeps ``target`` for a look; a target that fails
        otherwise to fill or switch is deleted again.
        See :mod:`ragstore.engine.reindex`."""
        _check_name(target)
        if switch is not None:
            _check_name(switch, "switch")
        with self._db.read() as reader:
            row = reader.find_collection(source)
            alias = None if row is not None else reader.find_alias(source)
            if alias is not None:
                row = reader.find_collection(alias.collection)
        if row is None:
            raise NotFound(f"no collection or alias named {source!r}")
        old = CollectionConfig.parse(json.loads(row.config))
        new = self._reindex_target(old, target, embedder, chunk_size, chunk_overlap, index)
        try:
            report = reindexing.run(
                self._db, (row.id, row.name, old), (new.id, new.name, new.config),
                new.embedder, switch=switch, progress=progress, build_index=new.optimize,
                gate=None if gate is None else functools.partial(gate, new),
            )  # fmt: skip
        except QualityGate:
            raise
        except BaseException:
            self.delete_collection(target)
            raise
        if drop_old and switch is not None:
            self.delete_collection(row.name)
        return report

    def _reindex_target(
        self,
        old: CollectionConfig,
        name: str,
        embedder: str | None,
        chunk_size: int | None,
        chunk_overlap: int | None,
        index: Mapping[str, Any] | IndexConfig | None,
    ) -> Collection:
        """The empty collection a re-index fills: ``old``'s config (payload indexes
        included) with what changes."""
        if old.embedder is None and embedder is not None:
            raise InvalidInput("a vector collection has no embedder to change", field="embedder")
        size = old.chunking.chunk_size if chunk_size is None else chunk_size
        if chunk_overlap is None:  # the old overlap, unless the new size is too small for it
            kept = old.chunking.chunk_overlap
            chunk_overlap = kept if 2 * kept < size else size // 8
        created = self.create_collection(
            name,
            embedder=embedder or old.embedder,
            dim=old.dim if old.embedder is None else None,
            chunk_size=size,
            chunk_overlap=chunk_overlap,
            index=old.index if index is None else index,
        )
        if old.payload_indexes:
            created._declare_payloads(lambda _: old.payload_indexes)
        return created

    @property
    def cache(self) -> QueryCache:
        """The query cache that ``search(..., cache=True)`` uses: by default in-process,
        persisted in this store."""
        return cache_for(self._db)

    def configure_cache(
        self,
        backend: str = "local",
        *,
        url: str | None = None,
        settings: CacheSettings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> QueryCache:
        """Choose the query cache: ``"local"`` (in-process, persisted in the store) or
        ``"redis"`` with ``url``; ``clock`` replaces ``time.time`` for TTLs."""
        query_cache = open_cache(self._db, backend, url=url, settings=settings, clock=clock)
        return use_cache(self._db, query_cache)

    def snapshot(
        self,
        folder: str | Path,
        *,
        collections: Sequence[str] | None = None,
        keep: int | None = None,
    ) -> Snapshot:
        """Take an online snapshot of the store (or of ``collections``) into a new
        directory in ``folder``, while searches and writes go on; with ``keep``, then
        remove all but the newest ``keep`` snapshots there. See :mod:`ragstore.engine.snapshot`."""
        return snapshots.create(
            self._db, Path(folder).expanduser(), collections=collections, keep=keep
        )

    def doctor(
        self, *, collections: Sequence[str] | None = None, repair: bool = False
    ) -> doctor.Diagnosis:
        """Examine every collection (or ``collections``; an alias means the collection it
        names) and the store: each check's status, figures and advice; with ``repair``,
        first fix what is safe to fix. See :mod:`ragstore.engine.doctor`."""
        if collections is None:
            collections = [info.name for info in self.list_collections()]
        for name in collections:  # before any reaches the database (PostgreSQL refuses NUL)
            _check_name(name)
        opened = [self.get_collection(self.alias_target(name) or name) for name in collections]
        return doctor.diagnose(self, opened, repair=repair)

    def restore_collection(self, snapshot: str | Path, collection: str, *, name: str) -> Collection:
        """Copy ``collection`` of a verified snapshot into this store as a new collection
        ``name``, with its config and vectors (nothing is embedded again); on failure the
        new collection is deleted again."""
        _check_name(name)
        taken = snapshots.verify(Path(snapshot).expanduser())
        config = CollectionConfig.parse(snapshots.collection_config(taken, collection))
        created = self._create(name, config)
        try:
            for rows in snapshots.collection_rows(taken.path, collection):
                pipeline.write_rows(self._db, created, rows)
        except BaseException:
            self.delete_collection(name)  # never leave half a collection
            raise
        return self.get_collection(name)

    def close(self) -> None:
        """Wait for background index work; close the query cache and the database."""
        for collection in self._open.values():
            collection.wait_for_index()
        close_cache(self._db)
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Collection:
    """Documents that share one embedder and one index: upsert, search, get, delete."""

    def __init__(
        self,
        db: StorageBackend,
        name: str,
        collection_id: int,
        config: CollectionConfig,
        embedder: Embedder | None,
        stored_config: str,
    ) -> None:
        self._db = db
        self.name = name
        self.id = collection_id
        self.config = config
        self._stored_config = stored_config  # the row's text, to tell when it changes
        self._embedder = embedder
        self._index = _index_for(db, collection_id, config)
        self._guard: pipeline.Guard | None = None

    @property
    def backend(self) -> StorageBackend:
        """The store's storage backend, for the engine's own modules."""
        return self._db

    @property
    def vector_index(self) -> SegmentedIndex | DatabaseIndex:
        """The collection's vector index in this process, for the engine's own modules."""
        return self._index

    @property
    def embedder(self) -> Embedder | None:
        """The collection's embedder, loaded on first use; ``None`` for vector collections."""
        recorded = self.config.embedder
        if self._embedder is None and recorded is not None:
            if not is_known(recorded):
                raise ModelMismatch(
                    f"collection {self.name!r} was built with embedder {recorded!r}, which "
                    "is not registered in this process (see register_embedder)"
                )
            self._embedder = get_embedder(recorded)
            _check_embedder(self.config, self._embedder)
        return self._embedder

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> IngestReport:
        """Insert or replace documents.

        Text collections take ``{"id", "text", "title"?, "metadata"?, "source"?}``;
        vector collections take ``{"id", "vector", "text"?, "metadata"?, "source"?}``.
        Every record is validated before anything is written.
        """
        started = time.perf_counter()
        report = IngestReport()
        if self.config.embedder is None:
            self._write_vectors(vector_records(records, self.config.dim), report)
        else:
            docs = text_records(records)
            pipeline.write_batches(self._target(), ((d, None) for d in docs), report)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def upsert_vectors(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> IngestReport:
        """Bulk :meth:`upsert` for a vector collection: ids, an ``(n, dim)`` array and
        optional metadata per row."""
        if self.config.embedder is not None:
            raise InvalidInput(
                f"collection {self.name!r} embeds its own text: upsert text records",
                field="vectors",
            )
        started = time.perf_counter()
        report = IngestReport()
        self._write_vectors(vector_batch(ids, vectors, metadata, self.config.dim), report)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        sync: bool = False,
        progress: ProgressFn | None = None,
        follow_symlinks: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> IngestReport:
        """Load files and folders; only new or changed documents are embedded.

        Files over ``max_file_bytes`` are skipped and reported; symbolic links leading
        outside ``paths`` are followed only with ``follow_symlinks``. With ``sync``,
        documents whose files are gone are deleted, never those a problem kept from
        being read this run.
        """
        if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int):
            raise InvalidInput("max_file_bytes must be a whole number", field="max_file_bytes")
        if max_file_bytes < 1:
            raise InvalidInput("max_file_bytes must be at least 1", field="max_file_bytes")
        return pipeline.ingest_paths(
            self._target(),
            [paths] if isinstance(paths, str | Path) else paths,
            sync=sync,
            progress=progress,
            follow_symlinks=follow_symlinks,
            max_file_bytes=max_file_bytes,
        )

    def search(
        self,
        query: str | None = None,
        *,
        vector: Any = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        candidates: int | None = None,
        fusion: Fusion = hybrid.DEFAULT_FUSION,
        rrf_k: int = hybrid.RRF_K,
        alpha: float = hybrid.DEFAULT_ALPHA,
        group_by_doc: bool = False,
        mmr_lambda: float | None = None,
        reranker: Reranker | None = None,
        highlight: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
        min_score: float | None = None,
        explain: bool = False,
        cache: bool = False,
        tenant: str | None = None,
    ) -> SearchResults:
        """The ``k`` best chunks for a text query or a vector, best first.

        ``mode`` is ``hybrid`` (the default for text: BM25 and dense results fused by a
        weighted sum of the clipped cosine and the saturated BM25 score, in [0, 1] and
        comparable across queries, or by reciprocal rank fusion with ``fusion="rrf"``;
        ``alpha`` weighs the dense side), ``dense`` (the default for a vector; the score
        is the cosine) or ``keyword`` (BM25). ``min_score`` drops the hits scoring below
        it, after fusion and reranking, so fewer than ``k`` may come back (see
        ``ragstore.search.scores``). ``candidates`` is how many chunks each side retrieves.
        ``group_by_doc`` keeps one hit per document; ``mmr_lambda`` reorders for
        diversity; ``reranker`` reorders the candidates last; ``highlight`` marks the
        query's words in each hit's ``highlight``. ``where`` restricts hits to
        documents whose metadata match the filter, on both sides, without losing recall.
        ``ef_search`` (HNSW) and ``nprobe`` (IVF) override the index's search breadth
        for this query. With ``explain``, the result's ``plan`` says how each side ran.
        With ``cache``, a text query is answered from the store's query cache when it
        holds a fresh answer for the same key (``tenant`` partitions the cache); such
        hits say ``cached="exact"`` or ``"semantic"``. Explained or reranked searches and
        vector queries always run.
        """
        if isinstance(query, str):
            check_text(query, "query")
        params = hybrid.search_params(
            vector is not None,
            k=k,
            where=where,
            mode=mode,
            candidates=candidates,
            fusion=fusion,
            rrf_k=rrf_k,
            alpha=alpha,
            group_by_doc=group_by_doc,
            mmr_lambda=mmr_lambda,
            highlight=highlight,
            ef_search=ef_search,
            nprobe=nprobe,
            min_score=min_score,
            explain=explain,
        )
        tenant = check_tenant(tenant)
        if cache and vector is None and reranker is None and not explain and _has_text(query):
            return self._cached_search(str(query), params, tenant)
        with _SEARCHES.running() as alone:
            if params.mode == "hybrid" and vector is None and alone:
                self._check_query(query, vector, params.mode)  # bad input raises here
                # the keyword side runs while another thread embeds the query
                pending = _query_embedding_pool().submit(
                    self._query_vector, query, vector, params.mode
                )
                return self._run(query, pending, params, reranker)
            query_vector = self._query_vector(query, vector, params.mode)
            return self._run(query, query_vector, params, reranker)

    def search_batch(
        self,
        queries: Sequence[str] | None = None,
        *,
        vectors: Any = None,
        cache: bool = False,
        tenant: str | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[SearchResults]:
        """Several searches in one call: one result list per text of ``queries``, or per
        row of ``vectors`` (a 2-D array), in order, each exactly what :meth:`search`
        answers for it with the same ``options``."""
        inputs = hybrid.batch_inputs(queries, vectors)
        if isinstance(inputs, list):
            return [self.search(q, cache=cache, tenant=tenant, **options) for q in inputs]
        return [self.search(vector=row, cache=cache, tenant=tenant, **options) for row in inputs]

    def cached_answer(
        self, query: str, *, tenant: str | None = None, **options: Unpack[SearchOptions]
    ) -> SearchResults | None:
        """What ``search(query, cache=True, tenant=tenant, **options)`` would answer from
        the query cache's exact level, if this process holds that answer in memory and
        nothing was committed to the store since it was last checked fresh; otherwise
        ``None`` (then call :meth:`search`). Runs no statement, embeds nothing and
        searches nothing, so an event loop may call it."""
        if not _has_text(query):
            return None
        check_text(query, "query")
        cache = cached_for(self._db)
        if cache is None:
            return None
        params = hybrid.search_params(False, **options)
        key = CacheKey(self.id, self.name, self.config, query, params, check_tenant(tenant))
        hits = cache.peek(key)
        return None if hits is None else SearchResults(hits)

    @overload
    def answer(
        self,
        question: str,
        *,
        k: int = ...,
        where: Mapping[str, Any] | None = ...,
        mode: Mode | None = ...,
        min_score: float | None = ...,
        stream: Literal[False] = ...,
        cache: bool = ...,
        tenant: str | None = ...,
        extractive: bool = ...,
        llm: ChatModel | None = ...,
    ) -> Answer: ...

    @overload
    def answer(
        self,
        question: str,
        *,
        k: int = ...,
        where: Mapping[str, Any] | None = ...,
        mode: Mode | None = ...,
        min_score: float | None = ...,
        stream: Literal[True],
        cache: bool = ...,
        tenant: str | None = ...,
        extractive: bool = ...,
        llm: ChatModel | None = ...,
    ) -> AnswerStream: ...

    @overload
    def answer(
        self,
        question: str,
        *,
        k: int = ...,
        where: Mapping[str, Any] | None = ...,
        mode: Mode | None = ...,
        min_score: float | None = ...,
        stream: bool,
        cache: bool = ...,
        tenant: str | None = ...,
        extractive: bool = ...,
        llm: ChatModel | None = ...,
    ) -> Answer | AnswerStream: ...

    def answer(
        self,
        question: str,
        *,
        k: int = answering.DEFAULT_K,
        where: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        min_score: float | None = None,
        stream: bool = False,
        cache: bool = True,
        tenant: str | None = None,
        extractive: bool = False,
        llm: ChatModel | None = None,
    ) -> Answer | AnswerStream:
        """An answer to ``question`` from the ``k`` best chunks, with citations.

        ``llm`` writes it (by default the model that ``RAGSTORE_LLM_URL`` and
        ``RAGSTORE_LLM_MODEL`` configure); with none configured, or with ``extractive``,
        the answer is the sentences of the passages that best answer the question. When
        the model fails, the extractive answer comes back with ``degraded=True`` and the
        ``reason``. ``where``, ``mode`` and ``min_score`` shape the search as in
        :meth:`search`. With ``cache``, an answer to the same (or, judged close enough,
        a paraphrased) question is reused while no document it was built from has
        changed; ``tenant`` partitions the cache. With ``stream``, an
        :class:`~ragstore.answer.AnswerStream` yields the text as it is written.
        """
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string", field="question")
        check_text(question, "question")
        params = hybrid.search_params(False, k=k, where=where, mode=mode, min_score=min_score)
        tenant = check_tenant(tenant)
        embedder = self.embedder
        if embedder is None:
            raise InvalidInput(
                f"collection {self.name!r} holds vectors, not text: it cannot answer questions",
                field="collection",
            )
        asked = answering.Question(
            text=question,
            embedder=embedder,
            embed=lambda: self._query_vector(question, None, params.mode),
            search=lambda vector: self._run(question, vector, params, None),
            key=CacheKey(self.id, self.name, self.config, question, params, tenant),
            cache=cache_for(self._db) if cache else None,
        )
        chat = None if extractive else (llm or answering.default_llm())
        return answering.stream(asked, chat) if stream else answering.answer(asked, chat)

    def _run(
        self,
        query: str | None,
        query_vector: hybrid.QueryVector,
        params: hybrid.SearchParams,
        reranker: Reranker | None,
    ) -> SearchResults:
        with self._db.read() as reader:
            return hybrid.run(
                reader,
                self._index,
                params,
                text=query,
                vector=query_vector,
                reranker=reranker,
            )

    def _cached_search(
        self, query: str, params: hybrid.SearchParams, tenant: str | None
    ) -> SearchResults:
        """Serve the search from the store's query cache, or run it and remember it."""
        key = CacheKey(self.id, self.name, self.config, query, params, tenant)
        hits = cache_for(self._db).search(
            key,
            embed=lambda: self._query_vector(query, None, params.mode),
            run=lambda query_vector: self._run(query, query_vector, params, None),
        )
        return hits if isinstance(hits, SearchResults) else SearchResults(hits)

    def search_vectors(
        self,
        vector: Any,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Dense search returning only chunk-level document ids and scores, best first.

        The lean path under :meth:`search`: no fusion, no hit bodies. A document with
        several matching chunks appears once per chunk.
        """
        hybrid.check_dense(k, ef_search, nprobe)
        flt = parse_filter(where)
        knobs = Knobs(ef_search=ef_search, nprobe=nprobe)
        query = unit_vector(vector, self.config.dim, "vector")
        if isinstance(self._index, DatabaseIndex):
            with self._db.read() as reader:
                found = self._index.dense(reader, query, k, flt, knobs)
            return found.docs, found.scores
        with self._index.lock:
            if flt is None:
                self._index.refresh()
                found = self._index.search(query, k, None, knobs)
            else:
                with self._db.read() as reader:
                    self._index.catch_up(reader)
                    allowed = self._index.allowed(reader, flt)
                    found = self._index.search(query, k, allowed, knobs)
        return found.docs, found.scores

    def wait_for_index(self) -> None:
        """Wait until background sealing and merging have finished."""
        if isinstance(self._index, SegmentedIndex):
            self._index.wait()

    def optimize(self) -> None:
        """Seal the growing segment, merge segments and rebuild stale ones now; blocks.
        (An in-database index is kept current by the database: nothing to do.)"""
        if isinstance(self._index, SegmentedIndex):
            self._index.optimize()

    def rebuild_index(self, index: Mapping[str, Any] | IndexConfig) -> None:
        """Switch to another index kind or settings and rebuild every segment now."""
        settings = index.model_dump() if isinstance(index, IndexConfig) else dict(index)
        merged = self.config.index.model_dump() | settings
        config = CollectionConfig.parse(self.config.model_dump() | {"index": merged})
        _check_index_kind(self._db, config.index)
        stored_config = config.to_json()
        with self._db.write() as writer:
            writer.set_config(self.id, stored_config)
            _update_database_indexes(self._db, writer, self.id, config)
        self.config = config
        self._stored_config = stored_config
        if isinstance(self._index, SegmentedIndex) and config.index.kind != "pgvector":
            self._index.config = config.index
            self._index.optimize()
        else:
            self._index = _index_for(self._db, self.id, config)

    def check_recall(
        self,
        sample: int = 100,
        k: int = 10,
        seed: int = 0,
        *,
        ef_search: Sequence[int] = (),
        nprobe: Sequence[int] = (),
    ) -> dict[str, Any]:
        """Recall@k of the index against exact search, with ``sample`` stored vectors
        (drawn at random) as the queries; with ``ef_search`` or ``nprobe`` values, also
        the recall at each of them (``by_ef_search``, ``by_nprobe``), on the same
        queries."""
        if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= 100_000:
            raise InvalidInput("sample must be an integer from 1 to 100000", field="sample")
        sweeps = {
            "ef_search": _breadths(ef_search, "ef_search"),
            "nprobe": _breadths(nprobe, "nprobe"),
        }
        settings = [Knobs()] + [Knobs(**{knob: v}) for knob, vs in sweeps.items() for v in vs]
        with self._db.read() as reader:
            queries = reader.sample_vectors(self.id, sample, self.config.dim, seed)
            if not len(queries):
                return {"k": k, "queries": 0, "recall": None}
            truth, found = self._recall_pairs(reader, queries, k, settings)
        recalls = iter(_mean_recall(each, truth) for each in found)
        measured: dict[str, Any] = {"k": k, "queries": len(queries), "recall": next(recalls)}
        for knob, values in sweeps.items():
            if values:
                measured[f"by_{knob}"] = {value: next(recalls) for value in values}
        return measured

    def _recall_pairs(
        self, reader: Reader, queries: Matrix, k: int, settings: Sequence[Knobs]
    ) -> tuple[Ids, list[list[Ids]]]:
        """Exact top-``k`` ids of each query, and what the index finds at each setting."""
        index = self._index
        if isinstance(index, DatabaseIndex):
            found = [[index.dense(reader, q, k, None, s).ids for q in queries] for s in settings]
            return index.exact(reader, queries, k), found
        with index.lock:
            index.catch_up(reader)
            found = [[index.search(q, k, None, s).ids for q in queries] for s in settings]
            return index.exact(queries, k), found

    def index_stats(self) -> dict[str, Any]:
        """The index's segments: kind, vectors, deleted, bytes and bytes per vector."""
        with self._db.read() as reader:
            if isinstance(self._index, DatabaseIndex):
                return self._index.stats(reader)
            with self._index.lock:
                self._index.catch_up(reader)
                return self._index.stats()

    def create_payload_index(self, path: str) -> None:
        """Index the metadata field ``path`` (a filter field name, such as
        ``author.name``) explicitly: built now, kept whatever filters use, recorded in
        the collection's config so that every process opening it builds it too. Asking
        again changes nothing. Where filters run inside PostgreSQL (index kind
        ``pgvector``) the path is recorded and listed, and the database serves it."""
        check_payload_path(path, "path")
        self._declare_payloads(lambda paths: paths if path in paths else (*paths, path))

    def drop_payload_index(self, path: str) -> None:
        """Stop indexing ``path`` explicitly (a filter using it may still build it for a
        while, as for any path); :class:`InvalidInput` when no index was made on it."""
        check_payload_path(path, "path")

        def without(paths: tuple[str, ...]) -> tuple[str, ...]:
            if path not in paths:
                raise InvalidInput(
                    f"collection {self.name!r} has no payload index on {path!r}", field="path"
                )
            return tuple(p for p in paths if p != path)

        self._declare_payloads(without)

    def payload_indexes(self) -> list[dict[str, Any]]:
        """The metadata paths indexed for filters, by path: those made with
        :meth:`create_payload_index` (``pinned``) and those built for the filters that
        used them lately. Each has its distinct ``values``, whether it is ``too_varied``
        to index (the store then filters on it), the ``bytes`` it holds, and
        ``served_by``: ``"payload_index"``, or ``"sql"`` where filters run inside
        PostgreSQL (those list only the declared paths, with ``values`` ``None``)."""
        declared = self.config.payload_indexes
        built: list[dict[str, Any]] = []
        if isinstance(self._index, SegmentedIndex):
            with self._index.lock, self._db.read() as reader:
                self._index.catch_up(reader)
                built = [s | {"served_by": "payload_index"} for s in self._index.payload_stats()]
        served_by = "sql" if isinstance(self._index, DatabaseIndex) else "payload_index"
        listed = {str(entry["path"]) for entry in built}
        built += [
            {"path": path, "pinned": True, "values": None, "too_varied": None, "bytes": 0,
             "served_by": served_by}
            for path in declared
            if path not in listed
        ]  # fmt: skip
        return sorted(built, key=lambda entry: str(entry["path"]))

    def _declare_payloads(self, change: Callable[[tuple[str, ...]], tuple[str, ...]]) -> None:
        """Store the config with its payload index paths changed by ``change`` (read and
        written in one transaction), then index those paths in this process."""
        with self._db.write() as writer:
            row = writer.find_collection(self.name)
            if row is None or row.id != self.id:
                raise NotFound(f"no collection named {self.name!r}")
            config = CollectionConfig.parse(json.loads(row.config))
            paths = change(config.payload_indexes)
            stored_config = row.config
            if paths != config.payload_indexes:
                if len(paths) > MAX_PAYLOAD_INDEXES:
                    raise InvalidInput(
                        f"a collection has at most {MAX_PAYLOAD_INDEXES} payload indexes",
                        field="path",
                    )
                config = CollectionConfig.parse(config.model_dump() | {"payload_indexes": paths})
                stored_config = config.to_json()
                writer.set_config(self.id, stored_config)
        # Had another process changed the config, the store opens the collection afresh.
        if row.config == self._stored_config:
            self.config = config
            self._stored_config = stored_config
            self._pin_payloads()

    def _pin_payloads(self) -> None:
        """Index the declared payload paths now (where this process holds the index)."""
        index = self._index
        if isinstance(index, SegmentedIndex):
            paths = _payload_paths(self.config)
            with index.lock, self._db.read() as reader:
                index.catch_up(reader)
                index.pin_payload(reader, paths)

    def get(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> DocumentPage:
        """Stored documents.

        With ``ids`` (a string is one id): those documents in the order asked, unknown
        ids left out (and, with ``where``, those not matching it). Without: a listing in
        id order of the documents matching ``where`` (all without it), ``limit`` at a
        time; pass the page's ``next_cursor`` back as ``cursor`` for the next one.
        ``include`` names what each document carries beyond its id: any of ``"text"``,
        ``"metadata"`` and ``"vectors"`` (its chunk vectors); the others are ``None``.
        """
        wanted = included(include)
        flt = None if where is None else parse_filter(where)
        if ids is not None:
            return self._by_ids(doc_ids(ids), flt, wanted)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
        after = "" if cursor is None else decode_cursor(cursor)
        with self._db.read() as reader:
            page = reader.page_of_doc_ids(self.id, after, limit, flt)
            found = self._trimmed(reader, reader.get_documents(self.id, page), wanted)
        more = len(page) == limit
        return DocumentPage(found, encode_cursor(page[-1]) if more else None)

    def _by_ids(
        self, wanted: list[str], flt: Filter | None, include: frozenset[str]
    ) -> DocumentPage:
        with self._db.read() as reader:
            found = reader.get_documents(self.id, wanted)
            if flt is not None:
                found = [d for d in found if matches(flt, d.metadata or {})]
            return DocumentPage(self._trimmed(reader, found, include))

    def _trimmed(
        self, reader: Reader, found: list[StoredDocument], include: frozenset[str]
    ) -> list[StoredDocument]:
        """``found`` with only the fields ``include`` names."""
        vectors = {}
        if "vectors" in include and found:
            vectors = reader.document_vectors(self.id, [d.id for d in found], self.config.dim)
        return [
            dataclasses.replace(
                d,
                text=d.text if "text" in include else None,
                metadata=d.metadata if "metadata" in include else None,
                vectors=vectors.get(d.id) if "vectors" in include else None,
            )
            for d in found
        ]

    def peek(self, n: int = 10) -> DocumentPage:
        """The first ``n`` documents in id order."""
        return self.get(limit=n)

    def page_of_ids(self, after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` document ids greater than ``after``, ascending: a listing
        page; pass the last id of one page as ``after`` for the next."""
        with self._db.read() as reader:
            return reader.page_of_doc_ids(self.id, after, limit)

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Number of documents (that match ``where``, if given)."""
        flt = parse_filter(where)
        with self._db.read() as reader:
            return reader.count_documents(self.id, flt)

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        all: bool = False,
    ) -> int:
        """Delete documents by id (a string is one id), by filter, or every one with
        ``all=True``; returns how many were deleted.

        A filter that matches everything (``{}``) is refused: a match-all delete must
        say ``all=True``, so an empty filter built by mistake never empties a collection.
        """
        check_delete_target(ids, where, all)
        doomed = doc_ids(ids) if ids is not None else None
        flt = _narrowing_filter(where) if where is not None else None
        with self._db.write() as writer:
            if self._guard is not None:
                self._guard(writer)
            if doomed is None:
                doomed = writer.matching_doc_ids(self.id, flt)
            return writer.delete_documents(self.id, doomed)

    def info(self) -> CollectionInfo:
        """Config and counts of this collection."""
        with self._db.read() as reader:
            chunks = reader.chunk_count(self.id)
            documents = reader.count_documents(self.id, None)
        return CollectionInfo(self.name, self.config, documents, chunks)

    def _target(self) -> pipeline.Target:
        if self.embedder is None:
            raise InvalidInput(
                f"collection {self.name!r} has no embedder: upsert records with vectors",
                field="text",
            )
        return pipeline.Target(self._db, self.id, self.embedder, self.config.chunking, self._guard)

    def _guarded(self, guard: pipeline.Guard) -> Collection:
        """This collection for one write call, whose every transaction first runs
        ``guard`` (:class:`AliasedCollection`'s check); it shares the index."""
        guarded = copy.copy(self)
        guarded._guard = guard
        return guarded

    def _query_vector(self, query: str | None, vector: Any, mode: Mode) -> Matrix | None:
        """The search's query vector: the one given, or the text embedded (``None`` for
        a keyword search)."""
        self._check_query(query, vector, mode)
        if vector is not None:
            return unit_vector(vector, self.config.dim, "vector")
        if mode == "keyword" or self.embedder is None:
            return None
        return self.embedder.embed_query(str(query))

    def _check_query(self, query: str | None, vector: Any, mode: Mode) -> None:
        if (query is None) == (vector is None):
            raise InvalidInput("give exactly one of query text or vector", field="query")
        if vector is not None:
            if mode != "dense":
                raise InvalidInput("a vector query can only run in dense mode", field="mode")
            return
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query text must be a non-empty string", field="query")
        if mode != "keyword" and self.embedder is None:
            raise InvalidInput(
                f"collection {self.name!r} has no embedder: search it with a vector, "
                "or with mode='keyword'",
                field="mode",
            )

    def _write_vectors(self, parsed: list[VectorRecord], report: IngestReport) -> None:
        with self._db.read() as reader:
            stored = reader.content_hashes(self.id, [r.document.id for r in parsed])
        changed: dict[str, DocumentRow] = {}
        for record in parsed:
            doc = record.document
            digest = _vector_document_hash(doc, record.metadata_json, record.vector)
            if stored.get(doc.id) == digest:
                report.documents_unchanged += 1
                continue
            if doc.id in stored or doc.id in changed:
                report.documents_updated += 1
            else:
                report.documents_added += 1
            # No text was embedded: the chunk's hash stays empty, out of the hash index.
            chunk = ChunkRow(0, doc.text, 0, len(doc.text), "", record.vector)
            changed[doc.id] = DocumentRow(
                doc.id, doc.source, None, doc.title, doc.text, doc.metadata, digest, [chunk],
                record.metadata_json,
            )  # fmt: skip
        documents = list(changed.values())
        for start in range(0, len(documents), VECTOR_BATCH):
            batch = documents[start : start + VECTOR_BATCH]
            pipeline.write_rows(self._db, self.id, batch, self._guard)


def _follow(
    method: Callable[Concatenate[Collection, P], R],
) -> Callable[Concatenate[AliasedCollection, P], R]:
    """``method`` run on the collection an alias names at the time of the call."""

    def call(self: AliasedCollection, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self._current(), *args, **kwargs)

    functools.update_wrapper(call, method)
    return call


def _follow_write(
    method: Callable[Concatenate[Collection, P], R],
) -> Callable[Concatenate[AliasedCollection, P], R]:
    """``method``, a write, run through :meth:`AliasedCollection._write`."""

    def call(self: AliasedCollection, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._write(lambda target: method(target, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


ALIAS_RETRIES = 5
"""How many times a write through an alias runs again after the alias moved under it."""


class AliasedCollection(Collection):
    """A collection reached through an alias: each call looks the alias up again and runs
    on the collection the alias names at that moment, so a switch made by another object,
    process or server worker is seen at the next call. The look-up costs nothing while
    nothing was committed to the store (the commit marker :meth:`Store.known_collection`
    reads); after a commit it is one short read.

    A write commits only while the alias still names the collection it resolved: each of
    its transactions checks that first, and when the alias has moved, the whole call runs
    again on the new collection (records are materialised first; documents it already
    wrote unchanged are skipped by their content hash), up to :data:`ALIAS_RETRIES`
    times. A call that spans several transactions (a large ingest) leaves what it
    committed before the switch where it went. :meth:`rebuild_index` and
    :meth:`optimize` act on the collection named when they are called.

    It is a :class:`Collection`, so it goes wherever one does, but it holds no index of
    its own: every public member is overridden to delegate, one line each (a test pins
    that none is left out). That keeps each signature and docstring where mypy and
    readers see them, as ``__getattr__`` would not. ``name`` is the alias;
    ``info().name`` is the collection's own.
    """

    def __init__(
        self,
        store: Store,
        alias: str,
        embedder: Embedder | None,
        resolved: tuple[bytes | None, Collection],
    ) -> None:
        # Collection.__init__ is not called: the collections it resolves hold the state.
        self._store = store
        self.name = alias
        self._given = embedder
        self._last = resolved
        """The collection last resolved, with the commit marker read before the look-up."""

    # Collection's id and config are plain attributes; an alias's follow the alias.
    @property
    def id(self) -> int:  # type: ignore[override]
        """The id of the collection the alias names now."""
        return self._current().id

    @property
    def config(self) -> CollectionConfig:  # type: ignore[override]
        """The config of the collection the alias names now."""
        return self._current().config

    @property
    def embedder(self) -> Embedder | None:
        """The embedder of the collection the alias names now."""
        return self._current().embedder

    @property
    def backend(self) -> StorageBackend:
        """The storage backend (the alias's and its collection's store's)."""
        return self._current().backend

    @property
    def vector_index(self) -> SegmentedIndex | DatabaseIndex:
        """The vector index of the collection the alias names now."""
        return self._current().vector_index

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> IngestReport:
        """:meth:`Collection.upsert` on the collection the alias names."""
        batch = list(records)  # a retry writes them again
        return self._write(lambda target: target.upsert(batch))

    def cached_answer(
        self, query: str, *, tenant: str | None = None, **options: Unpack[SearchOptions]
    ) -> SearchResults | None:
        """:meth:`Collection.cached_answer` on the collection the alias names, when that
        is known without a read (nothing was committed since the last look-up)."""
        known = self._known()
        return None if known is None else known.cached_answer(query, tenant=tenant, **options)

    def _known(self) -> Collection | None:
        marker, target = self._last
        return target if marker is not None and marker == self._store._db.commit_marker() else None

    def _current(self) -> Collection:
        """The collection the alias names now."""
        known = self._known()
        if known is not None:
            return known
        marker = self._store._db.commit_marker()  # before the read it vouches for
        target = self._store._resolve_alias(self.name, self._given)
        self._last = marker, target
        return target

    def _write(self, call: Callable[[Collection], R]) -> R:
        """``call`` on the collection the alias names, its writes guarded; run again on
        the new one when the alias moved meanwhile."""
        for _ in range(ALIAS_RETRIES):
            target = self._current()
            try:
                return call(target._guarded(self._still_names(target)))
            except AliasMoved:
                self._last = None, target  # look the alias up again
        raise AliasMoved(f"alias {self.name!r} moved {ALIAS_RETRIES} times during one write")

    def _still_names(self, target: Collection) -> pipeline.Guard:
        """A check, inside a write transaction, that the alias still names ``target``."""

        def guard(writer: Writer) -> None:
            alias = writer.find_alias(self.name)
            found = None if alias is None else writer.find_collection(alias.collection)
            if found is None or found.id != target.id:
                raise AliasMoved(f"alias {self.name!r} no longer names {target.name!r}")

        return guard

    upsert_vectors = _follow_write(Collection.upsert_vectors)
    ingest = _follow_write(Collection.ingest)
    delete = _follow_write(Collection.delete)
    search = _follow(Collection.search)
    search_batch = _follow(Collection.search_batch)
    search_vectors = _follow(Collection.search_vectors)
    answer = _follow(Collection.answer)  # type: ignore[assignment]  # keeps its overloads
    get = _follow(Collection.get)
    peek = _follow(Collection.peek)
    page_of_ids = _follow(Collection.page_of_ids)
    count = _follow(Collection.count)
    info = _follow(Collection.info)
    index_stats = _follow(Collection.index_stats)
    check_recall = _follow(Collection.check_recall)
    create_payload_index = _follow(Collection.create_payload_index)
    drop_payload_index = _follow(Collection.drop_payload_index)
    payload_indexes = _follow(Collection.payload_indexes)
    wait_for_index = _follow(Collection.wait_for_index)
    optimize = _follow(Collection.optimize)
    rebuild_index = _follow(Collection.rebuild_index)


class _InFlight:
    """Counts the searches running in this process. A hybrid search running alone
    embeds its query on another thread while its keyword side runs; beside other
    searches the cores are busy anyway, and the hand-off would only cost time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @contextmanager
    def running(self) -> Iterator[bool]:
        """Counts one search while the block runs; yields whether it is the only one."""
        with self._lock:
            self._count += 1
            alone = self._count == 1
        try:
            yield alone
        finally:
            with self._lock:
                self._count -= 1


_SEARCHES = _InFlight()


@functools.cache
def _query_embedding_pool() -> ThreadPoolExecutor:
    """Threads that embed hybrid searches' queries while their keyword sides run."""
    return ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="ragstore-query")


def _vector_document_hash(doc: Document, metadata_json: str, vector: np.ndarray) -> str:
    digest = hashlib.sha256(pipeline.document_hash(doc, metadata_json).encode())
    digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _narrowing_filter(where: Mapping[str, Any]) -> Filter:
    """The filter of a delete, which must narrow: ``{}`` would match every document."""
    flt = parse_filter(where)
    if flt is None:
        raise InvalidInput(
            "an empty filter matches every document: delete them with all=True", field="where"
        )
    return flt


def _breadths(values: Sequence[int], field: str) -> list[int]:
    """Search breadths to measure: positive integers."""
    checked = list(values)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20 for v in checked
    ):
        raise InvalidInput(f"{field} values must be integers from 1 to {1 << 20}", field=field)
    return checked


def _mean_recall(found: Sequence[Ids], truth: Ids) -> float:
    """Mean share of each query's exact top ids (``-1`` padding aside) that were found."""
    recalls = [
        len(set(f.tolist()) & set(t[t >= 0].tolist())) / max(int((t >= 0).sum()), 1)
        for f, t in zip(found, truth, strict=True)
    ]
    return round(float(np.mean(recalls)), 4)


def _has_text(query: object) -> bool:
    return isinstance(query, str) and bool(query.strip())


def _check_name(name: str, kind: str = "collection") -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.'",
            field="name",
        )


def _found_alias(reader: Reader, alias: str) -> AliasRow:
    found = reader.find_alias(alias)
    if found is None:
        raise NotFound(f"no alias named {alias!r}")
    return found


def _new_config(
    model: Embedder | None,
    dim: int | None,
    chunk_size: int,
    chunk_overlap: int,
    index: Mapping[str, Any] | IndexConfig | None,
) -> CollectionConfig:
    if model is None and dim is None:
        raise InvalidInput("a collection without an embedder needs dim", field="dim")
    if model is not None and dim is not None and dim != model.dim:
        raise InvalidInput(f"dim {dim} differs from the embedder's {model.dim}", field="dim")
    return CollectionConfig.parse(
        {
            "embedder": model.name if model else None,
            "embedder_version": model.version if model else None,
            "dim": model.dim if model else dim,
            "chunking": {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
            "index": index.model_dump() if isinstance(index, IndexConfig) else dict(index or {}),
        }
    )


def _index_for(
    backend: StorageBackend, collection_id: int, config: CollectionConfig
) -> SegmentedIndex | DatabaseIndex:
    """The index that serves a collection: in the database for kind ``pgvector``,
    else segments in memory derived from the store."""
    if config.index.kind == "pgvector":
        return DatabaseIndex(collection_id, config.dim, config.index)
    paths = _payload_paths(config)
    return SegmentedIndex(backend, collection_id, config.dim, config.index, paths)


def _payload_paths(config: CollectionConfig) -> list[tuple[str, ...]]:
    """The metadata paths the collection declares payload indexes on."""
    return [check_payload_path(path) for path in config.payload_indexes]


def _check_index_kind(backend: StorageBackend, index: IndexConfig) -> None:
    if index.kind == "pgvector" and not backend.searches_in_database:
        raise InvalidConfig(
            "index kind 'pgvector' searches inside PostgreSQL: open a postgresql:// store",
            field="index.kind",
        )


def _update_database_indexes(
    backend: StorageBackend, writer: Writer, collection_id: int, config: CollectionConfig
) -> None:
    """Build the in-database indexes of a ``pgvector`` collection; drop them otherwise."""
    if not backend.searches_in_database:
        return
    indexes = cast(DatabaseIndexes, writer)
    if config.index.kind == "pgvector":
        indexes.create_search_indexes(collection_id, config.dim, config.index)
    else:
        indexes.drop_search_indexes(collection_id)


def _check_embedder(config: CollectionConfig, embedder: Embedder) -> None:
    if config.embedder is None:
        raise ModelMismatch("this collection takes caller-supplied vectors, not an embedder")
    recorded = (config.embedder, config.embedder_version, config.dim)
    actual = (embedder.name, embedder.version, embedder.dim)
    if recorded != actual:
        raise ModelMismatch(
            f"collection was built with {recorded[0]} ({recorded[1]}, dim {recorded[2]}); "
            f"refusing {actual[0]} ({actual[1]}, dim {actual[2]})"
        )

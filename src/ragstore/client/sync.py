"""The blocking remote client: a store on a ragstore server, with the embedded
:class:`~ragstore.Store`'s and :class:`~ragstore.Collection`'s methods."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx
import numpy as np
import numpy.typing as npt

from ragstore.answer.service import DEFAULT_K as DEFAULT_ANSWER_K
from ragstore.answer.types import Answer
from ragstore.client import calls
from ragstore.client.transport import DEFAULT_TENANT, Settings, answer_of, transport_error
from ragstore.config import DEFAULT_EMBEDDER, CollectionConfig, IndexConfig
from ragstore.engine.store import CollectionInfo
from ragstore.search.hybrid import Mode, SearchOptions, SearchResults
from ragstore.store.base import AliasRow
from ragstore.types import DEFAULT_INCLUDE, DocumentPage, IngestReport

T = TypeVar("T")


class RemoteStore:
    """A tenant's collections on a ragstore server. Open it with :func:`ragstore.connect`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        tenant: str = DEFAULT_TENANT,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = Settings.of(url, api_key, tenant, timeout)
        self.tenant = tenant
        self.location = self.settings.url
        """The server's URL."""
        self._http = httpx.Client(
            base_url=self.settings.url, headers=self.settings.headers(),
            timeout=self.settings.timeout, transport=transport or httpx.HTTPTransport(retries=2),
        )  # fmt: skip

    def run(self, steps: calls.Steps[T]) -> T:
        """Drive one operation of :mod:`ragstore.client.calls` to its result."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, calls.Wait):
                    time.sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: calls.Call) -> calls.Answer:
        try:
            response = self._http.request(call.method, call.path, json=call.body)
        except httpx.HTTPError as error:
            raise transport_error(self.settings.url, error) from None
        return answer_of(response)

    def collection(self, name: str) -> RemoteCollection:
        """Get a collection, creating it with the default config if it does not exist."""
        return RemoteCollection(self, self.run(calls.get_or_create(self.tenant, name)))

    def create_collection(
        self,
        name: str,
        *,
        embedder: str | None = DEFAULT_EMBEDDER,
        dim: int | None = None,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        index: Mapping[str, Any] | IndexConfig | None = None,
    ) -> RemoteCollection:
        """Create a collection; ``embedder=None`` with ``dim`` takes caller-supplied
        vectors (the server embeds text with its own model)."""
        steps = calls.create_collection(
            self.tenant, name, embedder=embedder, dim=dim, chunk_size=chunk_size,
            chunk_overlap=chunk_overlap, index=index,
        )  # fmt: skip
        return RemoteCollection(self, self.run(steps))

    def get_collection(self, name: str) -> RemoteCollection:
        """An existing collection (:class:`~ragstore.NotFound` otherwise)."""
        info, _ = self.run(calls.get_collection(self.tenant, name))
        return RemoteCollection(self, info)

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection with its config and counts."""
        return self.run(calls.list_collections(self.tenant))

    def delete_collection(self, name: str) -> None:
        """Delete a collection with all its documents."""
        self.run(calls.delete_collection(self.tenant, name))

    def set_alias(self, alias: str, collection: str) -> AliasRow:
        """Point ``alias`` at ``collection``, creating the alias if needed."""
        return self.run(calls.set_alias(self.tenant, alias, collection))

    def rollback_alias(self, alias: str) -> AliasRow:
        """Point ``alias`` back at the collection it named before its last switch."""
        return self.run(calls.rollback_alias(self.tenant, alias))

    def delete_alias(self, alias: str) -> None:
        """Remove an alias; the collection it names stays."""
        self.run(calls.delete_alias(self.tenant, alias))

    def list_aliases(self) -> list[AliasRow]:
        """Every alias."""
        return self.run(calls.list_aliases(self.tenant))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteCollection:
    """A collection on a ragstore server, with the embedded collection's methods,
    arguments, results and errors."""

    def __init__(self, store: RemoteStore, info: CollectionInfo) -> None:
        self.store = store
        self.name = info.name
        self.config: CollectionConfig = info.config
        self._path = calls.collection_path(store.tenant, info.name)

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> IngestReport:
        """Insert or replace documents (see :meth:`ragstore.Collection.upsert`)."""
        return self.store.run(calls.upsert(self._path, self.config, records))

    def upsert_vectors(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> IngestReport:
        """Bulk upsert for a vector collection: ids, an ``(n, dim)`` array, metadata."""
        steps = calls.upsert_vectors(self._path, self.config, ids, vectors, metadata)
        return self.store.run(steps)

    def search(
        self,
        query: str | None = None,
        *,
        vector: Any = None,
        explain: bool = False,
        cache: bool = False,
        **options: Unpack[SearchOptions],
    ) -> SearchResults:
        """The ``k`` best chunks for a text query or a vector (see
        :meth:`ragstore.Collection.search`)."""
        body = calls.search_body(query, vector, explain, cache, options)
        return self.store.run(calls.search(self._path, body))

    def search_batch(
        self,
        queries: Sequence[str] | None = None,
        *,
        vectors: Any = None,
        cache: bool = False,
        **options: Unpack[SearchOptions],
    ) -> list[SearchResults]:
        """One result list per text of ``queries`` or row of ``vectors``."""
        bodies = calls.batch_bodies(queries, vectors, cache, options)
        return self.store.run(calls.search_batch(self._path, bodies))

    def answer(
        self,
        question: str,
        *,
        k: int = DEFAULT_ANSWER_K,
        where: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        min_score: float | None = None,
        cache: bool = True,
        extractive: bool = False,
    ) -> Answer:
        """An answer to ``question`` with citations, written by the server's language
        model or extractive (see :meth:`ragstore.Collection.answer`; not streamed)."""
        body = calls.answer_body(question, k, where, mode, min_score, cache, extractive)
        return self.store.run(calls.answer(self._path, body))

    def search_vectors(
        self,
        vector: Any,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Dense search returning only chunk-level document ids and scores."""
        hits = self.search(
            vector=vector, mode="dense", k=k, where=where, ef_search=ef_search, nprobe=nprobe
        )
        return calls.ids_and_scores(hits)

    def get(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> DocumentPage:
        """Stored documents by id, or a listing page (see :meth:`ragstore.Collection.get`)."""
        return self.store.run(calls.get(self._path, ids, where, limit, cursor, include))

    def peek(self, n: int = 10) -> DocumentPage:
        """The first ``n`` documents in id order."""
        return self.get(limit=n)

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Number of documents (that match ``where``, if given)."""
        return self.store.run(calls.count(self._path, where))

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        all: bool = False,
    ) -> int:
        """Delete by id, by filter, or every document with ``all=True``; how many."""
        return self.store.run(calls.delete(self._path, ids, where, all))

    def info(self) -> CollectionInfo:
        """Config and counts of this collection."""
        return self.store.run(calls.get_collection(self.store.tenant, self.name))[0]

    def create_payload_index(self, path: str) -> None:
        """Index the metadata field ``path`` explicitly (see
        :meth:`ragstore.Collection.create_payload_index`)."""
        self.store.run(calls.create_payload_index(self._path, path))

    def drop_payload_index(self, path: str) -> None:
        """Stop indexing ``path`` explicitly (see
        :meth:`ragstore.Collection.drop_payload_index`)."""
        self.store.run(calls.drop_payload_index(self._path, path))

    def payload_indexes(self) -> list[dict[str, Any]]:
        """The metadata fields indexed for filters (see
        :meth:`ragstore.Collection.payload_indexes`)."""
        return self.store.run(calls.payload_indexes(self._path))

    def index_stats(self) -> dict[str, Any]:
        """The index's segments: kind, vectors, deleted, bytes and bytes per vector."""
        return self.store.run(calls.get_collection(self.store.tenant, self.name))[1]

"""The asyncio remote client: :mod:`ragstore.client.sync`'s classes with every call
awaited (a test holds the two to the same methods and signatures)."""

from __future__ import annotations

import asyncio
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


class AsyncRemoteStore:
    """A tenant's collections on a ragstore server, for asyncio. Open it with
    :func:`ragstore.connect_async`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        tenant: str = DEFAULT_TENANT,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = Settings.of(url, api_key, tenant, timeout)
        self.tenant = tenant
        self.location = self.settings.url
        """The server's URL."""
        self._http = httpx.AsyncClient(
            base_url=self.settings.url, headers=self.settings.headers(),
            timeout=self.settings.timeout,
            transport=transport or httpx.AsyncHTTPTransport(retries=2),
        )  # fmt: skip

    async def run(self, steps: calls.Steps[T]) -> T:
        """Drive one operation of :mod:`ragstore.client.calls` to its result."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, calls.Wait):
                    await asyncio.sleep(step.seconds)
                    step = steps.send(None)
                else:
                    step = steps.send(await self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, call: calls.Call) -> calls.Answer:
        try:
            response = await self._http.request(call.method, call.path, json=call.body)
        except httpx.HTTPError as error:
            raise transport_error(self.settings.url, error) from None
        return answer_of(response)

    async def collection(self, name: str) -> AsyncRemoteCollection:
        """Get a collection, creating it with the default config if it does not exist."""
        return AsyncRemoteCollection(self, await self.run(calls.get_or_create(self.tenant, name)))

    async def create_collection(
        self,
        name: str,
        *,
        embedder: str | None = DEFAULT_EMBEDDER,
        dim: int | None = None,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        index: Mapping[str, Any] | IndexConfig | None = None,
    ) -> AsyncRemoteCollection:
        """Create a collection; ``embedder=None`` with ``dim`` takes caller-supplied
        vectors (the server embeds text with its own model)."""
        steps = calls.create_collection(
            self.tenant, name, embedder=embedder, dim=dim, chunk_size=chunk_size,
            chunk_overlap=chunk_overlap, index=index,
        )  # fmt: skip
        return AsyncRemoteCollection(self, await self.run(steps))

    async def get_collection(self, name: str) -> AsyncRemoteCollection:
        """An existing collection (:class:`~ragstore.NotFound` otherwise)."""
        info, _ = await self.run(calls.get_collection(self.tenant, name))
        return AsyncRemoteCollection(self, info)

    async def list_collections(self) -> list[CollectionInfo]:
        """Every collection with its config and counts."""
        return await self.run(calls.list_collections(self.tenant))

    async def delete_collection(self, name: str) -> None:
        """Delete a collection with all its documents."""
        await self.run(calls.delete_collection(self.tenant, name))

    async def set_alias(self, alias: str, collection: str) -> AliasRow:
        """Point ``alias`` at ``collection``, creating the alias if needed."""
        return await self.run(calls.set_alias(self.tenant, alias, collection))

    async def rollback_alias(self, alias: str) -> AliasRow:
        """Point ``alias`` back at the collection it named before its last switch."""
        return await self.run(calls.rollback_alias(self.tenant, alias))

    async def delete_alias(self, alias: str) -> None:
        """Remove an alias; the collection it names stays."""
        await self.run(calls.delete_alias(self.tenant, alias))

    async def list_aliases(self) -> list[AliasRow]:
        """Every alias."""
        return await self.run(calls.list_aliases(self.tenant))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRemoteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncRemoteCollection:
    """A collection on a ragstore server, with the embedded collection's methods,
    arguments, results and errors."""

    def __init__(self, store: AsyncRemoteStore, info: CollectionInfo) -> None:
        self.store = store
        self.name = info.name
        self.config: CollectionConfig = info.config
        self._path = calls.collection_path(store.tenant, info.name)

    async def upsert(self, records: Iterable[Mapping[str, Any]]) -> IngestReport:
        """Insert or replace documents (see :meth:`ragstore.Collection.upsert`)."""
        return await self.store.run(calls.upsert(self._path, self.config, records))

    async def upsert_vectors(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> IngestReport:
        """Bulk upsert for a vector collection: ids, an ``(n, dim)`` array, metadata."""
        steps = calls.upsert_vectors(self._path, self.config, ids, vectors, metadata)
        return await self.store.run(steps)

    async def search(
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
        return await self.store.run(calls.search(self._path, body))

    async def search_batch(
        self,
        queries: Sequence[str] | None = None,
        *,
        vectors: Any = None,
        cache: bool = False,
        **options: Unpack[SearchOptions],
    ) -> list[SearchResults]:
        """One result list per text of ``queries`` or row of ``vectors``."""
        bodies = calls.batch_bodies(queries, vectors, cache, options)
        return await self.store.run(calls.search_batch(self._path, bodies))

    async def answer(
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
        return await self.store.run(calls.answer(self._path, body))

    async def search_vectors(
        self,
        vector: Any,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Dense search returning only chunk-level document ids and scores."""
        hits = await self.search(
            vector=vector, mode="dense", k=k, where=where, ef_search=ef_search, nprobe=nprobe
        )
        return calls.ids_and_scores(hits)

    async def get(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        include: Sequence[str] = DEFAULT_INCLUDE,
    ) -> DocumentPage:
        """Stored documents by id, or a listing page (see :meth:`ragstore.Collection.get`)."""
        return await self.store.run(calls.get(self._path, ids, where, limit, cursor, include))

    async def peek(self, n: int = 10) -> DocumentPage:
        """The first ``n`` documents in id order."""
        return await self.get(limit=n)

    async def count(self, where: Mapping[str, Any] | None = None) -> int:
        """Number of documents (that match ``where``, if given)."""
        return await self.store.run(calls.count(self._path, where))

    async def delete(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        all: bool = False,
    ) -> int:
        """Delete by id, by filter, or every document with ``all=True``; how many."""
        return await self.store.run(calls.delete(self._path, ids, where, all))

    async def info(self) -> CollectionInfo:
        """Config and counts of this collection."""
        found = await self.store.run(calls.get_collection(self.store.tenant, self.name))
        return found[0]

    async def create_payload_index(self, path: str) -> None:
        """Index the metadata field ``path`` explicitly (see
        :meth:`ragstore.Collection.create_payload_index`)."""
        await self.store.run(calls.create_payload_index(self._path, path))

    async def drop_payload_index(self, path: str) -> None:
        """Stop indexing ``path`` explicitly (see
        :meth:`ragstore.Collection.drop_payload_index`)."""
        await self.store.run(calls.drop_payload_index(self._path, path))

    async def payload_indexes(self) -> list[dict[str, Any]]:
        """The metadata fields indexed for filters (see
        :meth:`ragstore.Collection.payload_indexes`)."""
        return await self.store.run(calls.payload_indexes(self._path))

    async def index_stats(self) -> dict[str, Any]:
        """The index's segments: kind, vectors, deleted, bytes and bytes per vector."""
        found = await self.store.run(calls.get_collection(self.store.tenant, self.name))
        return found[1]

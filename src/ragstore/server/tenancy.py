"""Tenants own namespaces of collections.

Collection ``docs`` of tenant ``acme`` is the store collection ``acme.docs``. Tenant
and collection names over HTTP cannot contain a dot, so the mapping is one-to-one and
a tenant can only ever name its own collections: there is no query-time filter to
forget. Collections whose store name has no dot (made with the CLI or Python API) are
not reachable over HTTP. Aliases share the namespace: alias ``docs`` of tenant ``acme``
is the store alias ``acme.docs``, and over HTTP it can only name a collection of
``acme``; every collection route takes an alias in place of a collection's name.

The store keeps one :class:`Collection` per collection it has opened, so its vector
index is loaded once; the server gives text collections of its default model the
server's embedder, and any other text collection the embedder its recorded name resolves
to (through the registry, as the CLI and Python API do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ragstore.config import IndexConfig
from ragstore.embed.base import Embedder, Vectors
from ragstore.engine.reindex import ProgressFn
from ragstore.engine.store import Collection, CollectionInfo, Store
from ragstore.errors import NotFound
from ragstore.search.hybrid import SearchOptions, SearchResults
from ragstore.server.auth import DEFAULT_TENANT
from ragstore.store.base import AliasRow

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
"""A collection name over HTTP: no dot, so ``tenant.name`` is unambiguous."""

Observe = Callable[[str, float], None]


def store_name(tenant: str, name: str) -> str:
    """The store collection that holds ``tenant``'s collection ``name``: ``acme.docs``,
    or plain ``docs`` for :data:`DEFAULT_TENANT`, whose collections are the store's own."""
    return name if tenant == DEFAULT_TENANT else f"{tenant}.{name}"


def split_name(stored: str) -> tuple[str, str] | None:
    """``"acme.docs"`` -> ``("acme", "docs")``, ``"docs"`` -> ``("default", "docs")``;
    ``None`` for names no tenant can reach (``default.docs``, or more than one dot)."""
    tenant, dot, name = stored.partition(".")
    if not dot:
        return DEFAULT_TENANT, stored
    return (tenant, name) if "." not in name and tenant != DEFAULT_TENANT else None


def in_tenant(stored: str, tenant: str) -> bool:
    """Whether the store name ``stored`` belongs to ``tenant``."""
    names = split_name(stored)
    return names is not None and names[0] == tenant


class ServerEmbedder:
    """The default model for the server: one instance for queries and one for
    passages, so a large ingest never holds up query embedding (each instance is
    thread-safe: queries on ONNX Runtime run concurrently on the search workers)."""

    def __init__(self, load: Callable[[], Embedder], observe: Observe) -> None:
        self._query = load()
        self._passages = load()
        self._observe = observe

    @property
    def name(self) -> str:
        """The model's registered name."""
        return self._query.name

    @property
    def version(self) -> str:
        """The model's version."""
        return self._query.version

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._query.dim

    @property
    def max_tokens(self) -> int:
        """Content tokens per input."""
        return self._query.max_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Token spans, from the passage model's tokenizer."""
        return self._passages.token_offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages on the passage model."""
        return _timed(lambda: self._passages.embed_documents(texts), "passages", self._observe)

    def embed_query(self, text: str) -> Vectors:
        """Embed a query on the query model."""
        return _timed(lambda: self._query.embed_query(text), "query", self._observe)

    def warm_up(self) -> None:
        """Set the query encoder up now (the first query may otherwise export it)."""
        self._query.embed_query("warm up")


def _timed(fn: Callable[[], Vectors], kind: str, observe: Observe) -> Vectors:
    started = time.perf_counter()
    try:
        return fn()
    finally:
        observe(kind, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a new collection is made of."""

    text: bool
    dim: int | None
    chunk_size: int
    chunk_overlap: int
    index: IndexConfig


class Collections:
    """The server's open collections, by store name."""

    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self._lock = threading.Lock()

    def get(self, tenant: str, name: str) -> Collection:
        """An existing collection; 404 when there is none, 409 on a model mismatch.

        Looked up in the store unless nothing was committed since the last lookup (the
        store keeps the open object), so a collection another worker process deleted or
        re-created is seen at once.
        """
        stored = store_name(tenant, name)
        known = self._known(stored)
        if known is not None:
            return known
        with self._lock:
            return self._load(stored)

    def cached_answer(
        self, tenant: str, name: str, query: str, options: SearchOptions
    ) -> SearchResults | None:
        """The query cache's answer to a text search if it can be given from memory
        alone (see :meth:`Collection.cached_answer`), else ``None``; reads no table."""
        found = self._known(store_name(tenant, name))
        return None if found is None else found.cached_answer(query, tenant=tenant, **options)

    def _known(self, stored: str) -> Collection | None:
        """The collection as last looked up, if nothing was committed since and, when
        it was built with the server's model, it was opened with the server's embedder."""
        found = self.store.known_collection(stored)
        if found is None or not self._default_model(found):
            return found
        if found.embedder is not self.embedder:
            return None  # the server's model, looked up without the server's instance
        return found

    def create(self, tenant: str, name: str, spec: CollectionSpec) -> Collection:
        """A new collection: text (the server's model) or caller-supplied vectors."""
        stored = store_name(tenant, name)
        with self._lock:
            created = self.store.create_collection(
                stored,
                embedder=self.embedder if spec.text else None,
                dim=spec.dim,
                chunk_size=spec.chunk_size,
                chunk_overlap=spec.chunk_overlap,
                index=spec.index,
            )
            return created

    def reindex(
        self, tenant: str, source: str, target: str, progress: ProgressFn, **changes: Any
    ) -> dict[str, Any]:
        """Re-index the tenant's ``source`` (a collection or alias) into ``target``; the
        report, with names within the tenant. ``changes``: chunk size and overlap, index,
        ``switch`` alias, ``drop_old``."""
        switch = changes.pop("switch", None)
        report = self.store.reindex(
            store_name(tenant, source), store_name(tenant, target), progress=progress,
            switch=None if switch is None else store_name(tenant, switch), **changes,
        ).to_dict()  # fmt: skip
        for name in ("source", "target", "switched"):
            if report[name] is not None:
                report[name] = short_name(report[name])
        return report

    def delete(self, tenant: str, name: str) -> None:
        """Delete a collection and forget it."""
        stored = store_name(tenant, name)
        with self._lock:
            self.store.delete_collection(stored)

    def aliases(self, tenant: str) -> list[AliasRow]:
        """The tenant's aliases, by their names within the tenant."""
        found = [a for a in self.store.list_aliases() if in_tenant(a.name, tenant)]
        return [_short_alias(a) for a in found]

    def alias(self, tenant: str, alias: str) -> AliasRow:
        """The tenant's ``alias``; 404 when there is none."""
        found = [a for a in self.aliases(tenant) if a.name == alias]
        if not found:
            raise NotFound(f"no alias named {alias!r}")
        return found[0]

    def set_alias(self, tenant: str, alias: str, collection: str) -> AliasRow:
        """Point the tenant's ``alias`` at its ``collection``."""
        stored = self.store.set_alias(store_name(tenant, alias), store_name(tenant, collection))
        return _short_alias(stored)

    def rollback_alias(self, tenant: str, alias: str) -> AliasRow:
        """Point the tenant's ``alias`` back at the collection it named before."""
        return _short_alias(self.store.rollback_alias(store_name(tenant, alias)))

    def delete_alias(self, tenant: str, alias: str) -> None:
        """Remove the tenant's ``alias``."""
        self.store.delete_alias(store_name(tenant, alias))

    def list(self, tenant: str) -> list[CollectionInfo]:
        """The tenant's collections, with their configs and counts."""
        return [c for c in self.store.list_collections() if in_tenant(c.name, tenant)]

    def _load(self, stored: str) -> Collection:
        """``stored`` opened with the server's embedder when it was built with the
        server's model, else with the embedder its recorded name resolves to (or none)."""
        plain = self.store.get_collection(stored)
        if not self._default_model(plain):
            return plain
        # refuses (409) a collection built with another version of the model
        return self.store.get_collection(stored, embedder=self.embedder)

    def _default_model(self, collection: Collection) -> bool:
        """Whether ``collection`` was built with the model the server's embedder names."""
        return collection.config.embedder == self.embedder.name


def _short_alias(row: AliasRow) -> AliasRow:
    """An alias with its own and its collections' names within the tenant."""
    previous = None if row.previous is None else short_name(row.previous)
    return AliasRow(short_name(row.name), short_name(row.collection), previous)


def short_name(stored: str) -> str:
    """A store name as its tenant calls it: ``acme.docs`` -> ``docs``."""
    return stored.split(".", 1)[-1]


def require_document_found(count: int, doc_id: str) -> None:
    """404 when nothing was found for ``doc_id``."""
    if count == 0:
        raise NotFound(f"no document {doc_id!r}")

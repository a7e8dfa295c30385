"""ragstore: an embedded retrieval engine for RAG.

Point it at documents, search them by meaning, offline::

    import ragstore
    store = ragstore.open("./ragstore-data")
    docs = store.collection("docs")
    docs.upsert([{"id": "a", "text": "Refunds are accepted within 30 days."}])
    hits = docs.search("how long do I have to return an item?", k=5)
"""

from __future__ import annotations

import logging
from pathlib import Path

from ragstore.answer.types import Answer, Citation
from ragstore.client import (
    DEFAULT_TENANT,
    AsyncRemoteCollection,
    AsyncRemoteStore,
    RemoteCollection,
    RemoteStore,
)
from ragstore.config import ChunkingConfig, CollectionConfig, IndexConfig
from ragstore.embed import Embedder, register_embedder, register_embedder_scheme
from ragstore.engine.store import Collection, CollectionInfo, Store
from ragstore.errors import (
    AccessDenied,
    Conflict,
    DimensionMismatch,
    InvalidConfig,
    InvalidFilter,
    InvalidInput,
    LLMError,
    ModelMismatch,
    NotFound,
    RagstoreError,
    RemoteError,
    SchemaTooNew,
    StoreError,
)
from ragstore.types import Document, Hit, IngestReport, StoredDocument

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def connect(
    url: str, *, api_key: str | None = None, tenant: str = DEFAULT_TENANT, timeout: float = 60.0
) -> RemoteStore:
    """The collections of ``tenant`` on the ragstore server at ``url``, with the methods,
    arguments, results and errors of :func:`open`'s store. The ``default`` tenant holds
    the server's store's own collections (an admin key is needed for it)."""
    return RemoteStore(url, api_key=api_key, tenant=tenant, timeout=timeout)


def connect_async(
    url: str, *, api_key: str | None = None, tenant: str = DEFAULT_TENANT, timeout: float = 60.0
) -> AsyncRemoteStore:
    """:func:`connect` for asyncio: every method is a coroutine."""
    return AsyncRemoteStore(url, api_key=api_key, tenant=tenant, timeout=timeout)


def open(path: str | Path = "./ragstore-data", *, create: bool = True) -> Store:
    """Open the store in directory ``path`` (or a ``postgresql://`` URL), creating it if
    needed; with ``create=False`` a location that holds no store raises :class:`NotFound`
    instead."""
    return Store(path, create=create)


__all__ = [
    "AccessDenied",
    "Answer",
    "AsyncRemoteCollection",
    "AsyncRemoteStore",
    "ChunkingConfig",
    "Citation",
    "Collection",
    "CollectionConfig",
    "CollectionInfo",
    "Conflict",
    "DimensionMismatch",
    "Document",
    "Embedder",
    "Hit",
    "IndexConfig",
    "IngestReport",
    "InvalidConfig",
    "InvalidFilter",
    "InvalidInput",
    "LLMError",
    "ModelMismatch",
    "NotFound",
    "RagstoreError",
    "RemoteCollection",
    "RemoteError",
    "RemoteStore",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoredDocument",
    "__version__",
    "connect",
    "connect_async",
    "open",
    "register_embedder",
    "register_embedder_scheme",
]

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

from ragstore.config import ChunkingConfig, CollectionConfig, IndexConfig
from ragstore.embed import Embedder, register_embedder
from ragstore.engine.store import Collection, CollectionInfo, Store
from ragstore.errors import (
    Conflict,
    DimensionMismatch,
    InvalidConfig,
    InvalidFilter,
    InvalidInput,
    ModelMismatch,
    NotFound,
    RagstoreError,
    SchemaTooNew,
    StoreError,
)
from ragstore.types import Document, Hit, IngestReport, StoredDocument

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def open(path: str | Path = "./ragstore-data", *, create: bool = True) -> Store:
    """Open the store in directory ``path`` (or a ``postgresql://`` URL), creating it if
    needed; with ``create=False`` a location that holds no store raises :class:`NotFound`
    instead."""
    return Store(path, create=create)


__all__ = [
    "ChunkingConfig",
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
    "ModelMismatch",
    "NotFound",
    "RagstoreError",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoredDocument",
    "__version__",
    "open",
    "register_embedder",
]

"""Adapters that put a ragstore collection behind other RAG frameworks' interfaces:

* :mod:`ragstore.integrations.langchain`: a LangChain ``VectorStore``
  (``pip install 'ragstore[langchain]'``);
* :mod:`ragstore.integrations.llamaindex`: a LlamaIndex vector store
  (``pip install 'ragstore[llamaindex]'``).

Each takes an embedded collection (:func:`ragstore.open`) or a remote one
(:func:`ragstore.connect`): they share the methods the adapters call. ``import ragstore``
imports neither framework; each adapter imports its framework when it is imported
itself, and says which extra to install when the framework is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ragstore.client import RemoteCollection
from ragstore.engine.store import Collection, Store
from ragstore.errors import Conflict, NotFound

AnyCollection = Collection | RemoteCollection
"""What an adapter works over: a collection of an embedded or a remote store."""


def missing_extra(extra: str, error: ImportError) -> ImportError:
    """The error to raise when an adapter's framework is not installed."""
    return ImportError(
        f"{error.name or 'a package'} is not installed; the {extra} integration needs it: "
        f"pip install 'ragstore[{extra}]'"
    )


def open_collection(
    path: str | Path, name: str, measure_dim: Callable[[], int] | None = None
) -> Collection:
    """Collection ``name`` of the store at ``path`` (a directory or a ``postgresql://``
    URL), created if it does not exist: without ``measure_dim``, one that embeds its own
    text; with it, one that holds caller-supplied vectors of the length it returns (called
    only to create the collection)."""
    store = Store(path)
    if measure_dim is None:
        return store.collection(name)
    try:
        return store.get_collection(name)
    except NotFound:
        pass
    try:
        return store.create_collection(name, embedder=None, dim=measure_dim())
    except Conflict:  # created by another process in between
        return store.get_collection(name)


__all__ = ["AnyCollection", "missing_extra", "open_collection"]

"""The embedder seam: anything that turns text into unit-length vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    ``name`` and ``version`` are recorded with each collection; a collection refuses an
    embedder whose name, version or dimension differs from the one it was built with.
    """

    @property
    def name(self) -> str:
        """Registered name, e.g. ``sentence-transformers/all-MiniLM-L6-v2``."""
        ...

    @property
    def version(self) -> str:
        """Version of the weights, so a changed model is never mixed with the old one."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    @property
    def max_tokens(self) -> int:
        """Most content tokens one input may hold before the model truncates it."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Char span of each model token of ``text`` (no special tokens)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages; returns an array of shape ``(len(texts), dim)``."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """Embed one query; returns an array of shape ``(dim,)``."""
        ...


EmbedderFactory = Callable[[], Embedder]

_REGISTRY: dict[str, EmbedderFactory] = {}
_LOADED: dict[str, Embedder] = {}


def register_embedder(name: str, factory: EmbedderFactory) -> None:
    """Make ``name`` resolvable by :func:`get_embedder` (collections store only the name)."""
    _REGISTRY[name] = factory
    _LOADED.pop(name, None)


def get_embedder(name: str) -> Embedder:
    """Return the process-wide instance of the embedder registered as ``name``."""
    from ragstore.errors import InvalidConfig

    if name not in _LOADED:
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY)) or "none"
            raise InvalidConfig(f"unknown embedder {name!r} (known: {known})", field="embedder")
        _LOADED[name] = _REGISTRY[name]()
    return _LOADED[name]

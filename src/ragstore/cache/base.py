"""The cache backend seam: what one stored answer is, and what a backend must do."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ragstore.errors import StoreError

Vector = npt.NDArray[np.float32]
ENTRY_OVERHEAD = 256
"""Bytes counted per entry on top of its hits and vector (keys, numbers, bookkeeping)."""


class CacheUnavailable(StoreError):
    """The cache backend cannot be reached; the caller searches uncached."""


@dataclass(slots=True)
class Entry:
    """One cached answer.

    ``scope`` hashes everything that changes the result except the query text;
    ``text_key`` is the normalised query text. ``hits`` is the JSON of the hits and
    ``cites`` the ids of the documents they come from. ``seq`` and ``writes`` are the
    collection's change counters read before the search ran (see ``freshness``).
    """

    collection_id: int
    scope: str
    text_key: str
    hits: str
    cites: tuple[str, ...]
    vector: bytes | None
    seq: int
    writes: int
    created_at: float
    expires_at: float

    @property
    def key(self) -> tuple[str, str]:
        """The exact-level key."""
        return self.scope, self.text_key

    @property
    def nbytes(self) -> int:
        """Bytes this entry counts against the cache's bound."""
        vector = len(self.vector) if self.vector else 0
        cites = sum(len(doc) for doc in self.cites)
        return len(self.hits) + vector + cites + len(self.text_key) + ENTRY_OVERHEAD


class CacheBackend(Protocol):
    """Where entries live. Every method may raise one of ``errors`` when the backend
    fails; the cache then answers uncached."""

    errors: tuple[type[Exception], ...]

    def get(self, scope: str, text_key: str) -> Entry | None:
        """The entry stored under exactly this key, if any."""
        ...

    def peek(self, scope: str, text_key: str) -> Entry | None:
        """The entry under exactly this key if this process holds it in memory; never
        reads storage or the network (``None`` for a backend without a memory copy)."""
        ...

    def nearest(self, scope: str, vector: Vector) -> tuple[Entry, float] | None:
        """The entry of ``scope`` whose query vector is closest (by cosine) to ``vector``."""
        ...

    def put(self, entry: Entry, now: float) -> int:
        """Store ``entry`` (replacing one with the same key); returns how many entries
        were evicted to stay within bounds."""
        ...

    def touch(self, entry: Entry, now: float) -> None:
        """Mark ``entry`` as used now (LRU order) and keep its ``seq``."""
        ...

    def remove(self, entry: Entry) -> None:
        """Drop one entry."""
        ...

    def invalidate(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Drop every entry citing any of ``doc_ids``; returns how many it newly dropped."""
        ...

    def entries(self, collection_id: int) -> Iterator[Entry]:
        """Every stored entry of one collection, read a batch at a time (entries removed
        while it runs may or may not be given)."""
        ...

    def reset(self) -> None:
        """Forget in-process state (the store's cache was cleared by another process)."""
        ...

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        ...

    def add_stats(self, deltas: Mapping[str, float]) -> None:
        """Add counters to the persisted statistics."""
        ...

    def read_stats(self) -> dict[str, float]:
        """The persisted statistics."""
        ...

    def size(self) -> tuple[int, int]:
        """Number of entries and bytes they count."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

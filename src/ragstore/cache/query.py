"""The query cache in front of search: exact and semantic levels, freshness checks,
TTLs, statistics, and the rule that a failing backend never fails a search."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic_core import from_json

from ragstore import terms
from ragstore.cache import keys
from ragstore.cache.base import CacheBackend, Entry, Vector
from ragstore.cache.judge import Judge, default_judge
from ragstore.cache.settings import CacheSettings
from ragstore.config import CollectionConfig
from ragstore.errors import StoreError
from ragstore.store.base import Clock, StorageBackend
from ragstore.types import Hit

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
Level = Literal["exact", "semantic"]
ClockFn = Callable[[], float]
STATS_FLUSH_S = 5.0
"""Counters are saved with every stored entry, and at least this often while serving."""
LATENCIES_KEPT = 10_000
COUNTERS = (
    "exact_hits",
    "semantic_hits",
    "misses",
    "evictions",
    "invalidations",
    "expirations",
    "hit_seconds",
)


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What a cached search is asked with (``params`` is a ``SearchParams``).

    ``extra`` keys a payload other than a search's hits under a scope of its own: an
    answer names its kind, model and prompt version there (scalars only).
    """

    collection_id: int
    collection_name: str
    config: CollectionConfig
    text: str
    params: Any
    tenant: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the store's cache was created, plus the current size.

    ``hit_ms_mean`` is over every hit recorded; ``hit_ms_p50``/``hit_ms_p99`` over this
    process's recent hits (``None`` before the first).
    """

    backend: str
    entries: int
    bytes: int
    exact_hits: int
    semantic_hits: int
    misses: int
    evictions: int
    invalidations: int
    expirations: int
    hit_ms_mean: float | None
    hit_ms_p50: float | None
    hit_ms_p99: float | None

    @property
    def hit_rate(self) -> float:
        """Share of cached lookups answered from the cache."""
        hits = self.exact_hits + self.semantic_hits
        return hits / (hits + self.misses) if hits + self.misses else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["hit_rate"] = round(self.hit_rate, 4)
        return out


@dataclass(slots=True)
class _Lookup:
    """A search on its way through the cache."""

    key: CacheKey
    collection_id: int
    scope: str
    text_key: str
    clock: Clock
    semantic: bool
    started: float
    served: str | None = None
    """The payload served, for a lookup of something other than hits (``key.extra``)."""


class QueryCache:
    """Answers repeated and paraphrased searches from earlier results, never stale ones.

    An entry is served only when it is unexpired, computed under the same scope (see
    ``keys``) and no document it cites was updated or deleted after it was computed (see
    :mod:`ragstore.store.base`). When the backend fails, the search runs uncached and a warning is
    logged once per outage.
    """

    def __init__(
        self,
        store: StorageBackend,
        backend: CacheBackend,
        settings: CacheSettings,
        *,
        backend_name: str,
        clock: ClockFn = time.time,
        judge: Judge | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.judge = judge if judge is not None else default_judge()
        """Asked about every semantic match (unless ``settings.judge`` is off)."""
        self.backend_name = backend_name
        self._source = store
        self._clock = clock
        self._lock = threading.Lock()
        self._synced: dict[int, int] = {}
        self._verified: dict[int, tuple[bytes | None, Clock]] = {}
        """Per collection, the clock last read and the commit marker read before it."""
        self._epoch: int | None = None
        self._configs: dict[int, tuple[CollectionConfig, str]] = {}
        self._pending: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self._flushed_at = time.monotonic()
        self._failing = False
        self._at_exit = functools.partial(_flush_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def search(
        self,
        key: CacheKey,
        *,
        embed: Callable[[], Vector | None],
        run: Callable[[Vector | None], list[Hit]],
    ) -> list[Hit]:
        """The hits for ``key``: from the cache when it holds a fresh answer, otherwise
        from ``run`` (given the query vector from ``embed``), then remembered."""
        lookup = self._guard(lambda: self._begin(key), backend=False)
        if lookup is None:
            return run(embed())
        hits = self._guard(lambda: self._exact(lookup))
        if hits is not None:
            return hits
        vector = embed()
        if vector is not None and lookup.semantic:
            lookup.started = time.perf_counter()
            hits = self._guard(lambda: self._semantic(lookup, vector))
            if hits is not None:
                return hits
        self._count("misses")
        hits = run(vector)
        self._guard(lambda: self._store(lookup, vector, hits))
        return hits

    def recall(self, key: CacheKey) -> Recall:
        """A lookup of a payload other than hits (an answer) for ``key``, whose ``extra``
        names what it is: the same levels, freshness, TTLs and bounds as a search."""
        if not key.extra:
            raise ValueError("recall() is for keys with extra scope; search() takes hits")
        return Recall(self, self._guard(lambda: self._begin(key), backend=False))

    def peek(self, key: CacheKey) -> list[Hit] | None:
        """The exact-level answer for ``key`` if it can be given from memory alone, else
        ``None`` (then :meth:`search` decides). Given only while nothing was committed
        to the store since a lookup of the same collection read its clock, and only an
        entry already checked fresh at that clock, unexpired, and not while counters
        are due to be saved: no statement runs, so an event loop may call it."""
        verified = self._verified.get(key.collection_id)
        marker = self._source.commit_marker()
        if verified is None or marker is None or verified[0] != marker:
            return None
        clock = verified[1]
        if clock.epoch != self._epoch or self._synced.get(key.collection_id) != clock.seq:
            return None
        if time.monotonic() - self._flushed_at > STATS_FLUSH_S:
            return None
        params = keys.params_json(key.params)
        if params is None:
            return None
        lookup = self._lookup(key, clock, params)
        entry = self.backend.peek(lookup.scope, lookup.text_key)
        if entry is None or entry.expires_at <= self._clock() or entry.seq < clock.seq:
            return None
        if self.settings.strict and entry.writes < clock.writes:
            return None
        return self._serve(entry, lookup, "exact", may_flush=False)

    def stats(self) -> CacheStats:
        """Counters, size and hit latency (:class:`StoreError` when the backend cannot
        be reached)."""
        return self._required(self._stats)

    def _stats(self) -> CacheStats:
        self.flush()
        saved = self.backend.read_stats()
        entries, size = self.backend.size()
        hits = saved.get("exact_hits", 0) + saved.get("semantic_hits", 0)
        seconds = saved.get("hit_seconds", 0.0)
        recent = sorted(self._latencies)
        return CacheStats(
            backend=self.backend_name,
            entries=entries,
            bytes=size,
            exact_hits=int(saved.get("exact_hits", 0)),
            semantic_hits=int(saved.get("semantic_hits", 0)),
            misses=int(saved.get("misses", 0)),
            evictions=int(saved.get("evictions", 0)),
            invalidations=int(saved.get("invalidations", 0)),
            expirations=int(saved.get("expirations", 0)),
            hit_ms_mean=round(seconds / hits * 1000, 4) if hits else None,
            hit_ms_p50=_percentile(recent, 50),
            hit_ms_p99=_percentile(recent, 99),
        )

    def clear(self) -> int:
        """Drop every entry; returns how many there were (:class:`StoreError` when the
        backend cannot be reached)."""
        with self._lock:
            self._synced.clear()
        count = self._required(self.backend.clear)
        with self._source.write() as writer:
            writer.bump_epoch()  # other processes drop what they hold
        return count

    def flush(self) -> None:
        """Save the counters gathered in this process."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed_at = time.monotonic()
        if pending:
            self.backend.add_stats(pending)

    def close(self) -> None:
        """Save counters and release the backend's connections."""
        atexit.unregister(self._at_exit)
        self._guard(self.flush)
        self.backend.close()

    # ------------------------------------------------------------------ lookup steps

    def _begin(self, key: CacheKey) -> _Lookup | None:
        params = keys.params_json(key.params)
        if params is None:
            return None
        marker = self._source.commit_marker()
        with self._source.peek() as reader:
            clock = reader.clock(key.collection_id)
        self._sync(key.collection_id, clock)
        self._verified[key.collection_id] = marker, clock
        return self._lookup(key, clock, params)

    def _lookup(self, key: CacheKey, clock: Clock, params: dict[str, Any]) -> _Lookup:
        scope = keys.scope_key(
            (key.collection_id, key.collection_name),
            self._config_json(key.collection_id, key.config),
            clock.index_version,
            key.tenant,
            {**params, **key.extra},
        )
        semantic = self.settings.semantic and params.get("mode") != "keyword"
        text_key = keys.normalize(key.text)
        return _Lookup(
            key, key.collection_id, scope, text_key, clock, semantic, time.perf_counter()
        )

    def _exact(self, lookup: _Lookup) -> list[Hit] | None:
        entry = self.backend.get(lookup.scope, lookup.text_key)
        if entry is None or not self._usable(entry, lookup):
            return None
        return self._serve(entry, lookup, "exact")

    def _semantic(self, lookup: _Lookup, vector: Vector) -> list[Hit] | None:
        found = self.backend.nearest(lookup.scope, np.ascontiguousarray(vector, np.float32))
        if found is None or found[1] < self.settings.threshold:
            return None
        entry, cosine = found
        if self.settings.judge and not self.judge.accepts(lookup.text_key, entry.text_key, cosine):
            return None
        if not self._usable(entry, lookup):
            return None
        return self._serve(entry, lookup, "semantic")

    def _store(self, lookup: _Lookup, vector: Vector | None, hits: list[Hit]) -> None:
        payload = json.dumps([_stored(hit) for hit in hits], ensure_ascii=False)
        self._keep(lookup, vector, payload, [hit.doc_id for hit in hits])

    def _keep(
        self, lookup: _Lookup, vector: Vector | None, payload: str, doc_ids: Sequence[str]
    ) -> None:
        cites = tuple(sorted(set(doc_ids)))
        with self._source.peek() as reader:
            if reader.changed_since(lookup.collection_id, cites, lookup.clock.seq):
                return  # a cited document changed while the search ran
            youngest = reader.youngest_update(lookup.collection_id, cites)
        now = self._clock()
        ttl = self.settings.ttl.seconds(None if youngest is None else now - youngest)
        entry = Entry(
            collection_id=lookup.collection_id,
            scope=lookup.scope,
            text_key=lookup.text_key,
            hits=payload,
            cites=cites,
            vector=None if vector is None else _vector_bytes(vector),
            seq=lookup.clock.seq,
            writes=lookup.clock.writes,
            created_at=now,
            expires_at=now + ttl,
        )
        evicted = self.backend.put(entry, now)
        self._count("evictions", evicted)
        self.flush()

    def _usable(self, entry: Entry, lookup: _Lookup) -> bool:
        """Unexpired and fresh; drops the entry (and counts why) when it is not."""
        if entry.expires_at <= self._clock():
            self.backend.remove(entry)
            self._count("expirations")
            return False
        if self.settings.strict and entry.writes < lookup.clock.writes:
            self.backend.remove(entry)
            self._count("invalidations")
            return False
        if entry.seq < lookup.clock.seq:
            with self._source.peek() as reader:
                changed = reader.changed_since(lookup.collection_id, entry.cites, entry.seq)
            if changed:
                self.backend.remove(entry)
                self._count("invalidations")
                return False
            entry.seq = lookup.clock.seq  # verified up to now: skip the check next time
        return True

    def _serve(
        self, entry: Entry, lookup: _Lookup, level: Level, *, may_flush: bool = True
    ) -> list[Hit]:
        self.backend.touch(entry, self._clock())
        hits: list[Hit] = []
        if lookup.key.extra:
            lookup.served = entry.hits  # not hits: the caller (a Recall) reads it
        else:
            hits = [Hit(**{**data, "cached": level}) for data in from_json(entry.hits)]
        if hits and level == "semantic" and lookup.key.params.highlight:
            text = lookup.key.text
            hits = [replace(hit, highlight=terms.highlight(hit.text, text)) for hit in hits]
        self._count_hit(lookup, level, may_flush)
        return hits

    def _count_hit(self, lookup: _Lookup, level: Level, may_flush: bool) -> None:
        elapsed = time.perf_counter() - lookup.started
        self._count(f"{level}_hits")
        self._count("hit_seconds", elapsed)
        self._latencies.append(elapsed * 1000)
        if may_flush and time.monotonic() - self._flushed_at > STATS_FLUSH_S:
            self.flush()

    # ------------------------------------------------------------------ bookkeeping

    def _sync(self, collection_id: int, clock: Clock) -> None:
        """Drop entries citing documents changed since this process last looked."""
        if clock.epoch != self._epoch:
            if self._epoch is not None:
                self.backend.reset()
            self._epoch = clock.epoch
        seen = self._synced.get(collection_id)
        if seen is None or clock.seq <= seen:
            self._synced.setdefault(collection_id, clock.seq)
            return
        with self._source.peek() as reader:
            changed = reader.changes_after(collection_id, seen)
        self._count("invalidations", self.backend.invalidate(collection_id, changed))
        self._synced[collection_id] = clock.seq

    def _config_json(self, collection_id: int, config: CollectionConfig) -> str:
        known = self._configs.get(collection_id)
        if known is None or known[0] is not config:
            known = config, keys.config_json(config)
            self._configs[collection_id] = known
        return known[1]

    def _count(self, name: str, amount: float = 1) -> None:
        if amount:
            with self._lock:
                self._pending[name] += amount  # type: ignore[assignment]

    def _required(self, action: Callable[[], _T]) -> _T:
        """Run a step the caller asked for: a backend failure is a :class:`StoreError`."""
        try:
            return action()
        except self.backend.errors as exc:
            raise StoreError(f"the query cache cannot be reached: {exc}") from exc

    def _guard(self, action: Callable[[], _T], *, backend: bool = True) -> _T | None:
        """Run a cache step; on a failure log once per outage, and answer ``None``.

        Only a step that reached the backend (``backend``) ends an outage."""
        errors: tuple[type[Exception], ...] = (*self.backend.errors, StoreError)
        try:
            result = action()
        except errors as exc:
            if not self._failing:
                logger.warning("query cache unavailable, searching uncached: %s", exc)
            self._failing = True
            return None
        if self._failing and backend:
            logger.info("query cache available again")
            self._failing = False
        return result


class Recall:
    """One cached computation other than a search (an answer), step by step: look it up
    with :meth:`exact`, then with :meth:`semantic` once the query vector is known; on a
    miss, :meth:`keep` the payload computed. Each step is guarded like a search's: when
    the backend fails, it misses and keeps nothing."""

    def __init__(self, cache: QueryCache, lookup: _Lookup | None) -> None:
        self._cache = cache
        self._lookup = lookup

    def exact(self) -> str | None:
        """The payload stored under exactly this key, if fresh."""
        lookup = self._lookup
        if lookup is None:
            return None
        found = self._cache._guard(lambda: self._cache._exact(lookup))
        return None if found is None else lookup.served

    def semantic(self, vector: Vector | None) -> str | None:
        """The payload of the nearest earlier query of this scope, if close enough (and
        the judge accepts it) and fresh."""
        lookup = self._lookup
        if lookup is None or vector is None or not lookup.semantic:
            return None
        lookup.started = time.perf_counter()
        found = self._cache._guard(lambda: self._cache._semantic(lookup, vector))
        return None if found is None else lookup.served

    def keep(self, vector: Vector | None, payload: str, doc_ids: Sequence[str]) -> None:
        """Count a miss and store ``payload``, which rests on the documents ``doc_ids``
        (unless one of them changed since the lookup began)."""
        lookup = self._lookup
        if lookup is None:
            return
        self._cache._count("misses")
        self._cache._guard(lambda: self._cache._keep(lookup, vector, payload, doc_ids))


def _stored(hit: Hit) -> dict[str, Any]:
    data = hit.to_dict()
    data.pop("cached", None)
    return data


def _vector_bytes(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).reshape(-1).tobytes()


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return round(float(np.percentile(sorted_ms, q)), 4)


def _flush_at_exit(ref: weakref.ref[QueryCache]) -> None:
    cache = ref()
    if cache is not None:
        cache._guard(cache.flush)

"""The query cache: exact and semantic levels in front of search.

``Collection.search(..., cache=True)`` goes through the store's :class:`QueryCache`: the
in-process backend (persisted in the store) unless :meth:`Store.configure_cache` chose
another. Backends sit behind the :class:`CacheBackend` protocol, one module each, named
in the registry below.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from ragstore.cache.base import CacheBackend, CacheUnavailable, Entry
from ragstore.cache.local import LocalBackend
from ragstore.cache.query import CacheKey, CacheStats, ClockFn, QueryCache
from ragstore.cache.settings import CacheSettings, TtlRule
from ragstore.errors import InvalidInput
from ragstore.store.base import StorageBackend

BackendFactory = Callable[[StorageBackend, CacheSettings, str | None], CacheBackend]


def _local(store: StorageBackend, settings: CacheSettings, url: str | None) -> CacheBackend:
    if url is not None:
        raise InvalidInput("the local cache takes no url", field="url")
    return LocalBackend(store.cache_dir, settings)


def _redis(store: StorageBackend, settings: CacheSettings, url: str | None) -> CacheBackend:
    from ragstore.cache.redis import RedisBackend

    if url is None:
        raise InvalidInput(
            "the redis cache needs a url, e.g. redis://127.0.0.1:6379/0", field="url"
        )
    with store.peek() as reader:
        store_id = reader.store_id()
    return RedisBackend(url, store_id, settings)


BACKENDS: dict[str, BackendFactory] = {"local": _local, "redis": _redis}
"""Cache backends by name."""

_CACHES: weakref.WeakKeyDictionary[StorageBackend, QueryCache] = weakref.WeakKeyDictionary()


def open_cache(
    store: StorageBackend,
    backend: str = "local",
    *,
    url: str | None = None,
    settings: CacheSettings | None = None,
    clock: ClockFn | None = None,
) -> QueryCache:
    """A query cache for the store behind ``store``."""
    factory = BACKENDS.get(backend)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise InvalidInput(f"unknown cache backend {backend!r} (known: {known})", field="backend")
    settings = settings if settings is not None else CacheSettings()
    if not isinstance(settings, CacheSettings):
        raise InvalidInput("settings must be a CacheSettings", field="settings")
    return QueryCache(
        store,
        factory(store, settings, url),
        settings,
        backend_name=backend,
        clock=clock or time.time,
    )


def cache_for(store: StorageBackend) -> QueryCache:
    """The cache the store behind ``store`` uses (the local one unless configured)."""
    cache = _CACHES.get(store)
    if cache is None:
        cache = _CACHES[store] = open_cache(store)
    return cache


def cached_for(store: StorageBackend) -> QueryCache | None:
    """The cache of the store behind ``store`` if it is open already (opens nothing)."""
    return _CACHES.get(store)


def configure(store: StorageBackend, cache: QueryCache) -> QueryCache:
    """Make ``cache`` the one the store behind ``store`` uses, closing the previous one."""
    previous = _CACHES.get(store)
    _CACHES[store] = cache
    if previous is not None and previous is not cache:
        previous.close()
    return cache


def close_cache(store: StorageBackend) -> None:
    """Close the store's cache, if one was opened."""
    cache = _CACHES.pop(store, None)
    if cache is not None:
        cache.close()


__all__ = [
    "BACKENDS",
    "CacheBackend",
    "CacheKey",
    "CacheSettings",
    "CacheStats",
    "CacheUnavailable",
    "Entry",
    "LocalBackend",
    "QueryCache",
    "TtlRule",
    "cache_for",
    "cached_for",
    "close_cache",
    "configure",
    "open_cache",
]

"""The Redis backend: one cache shared by several processes (``pip install 'ragstore[redis]'``).

Layout, under ``ragstore:<store id>:`` so stores never share entries:
``e:<scope>:<text hash>`` a hash per entry; ``s:<scope>`` the query vectors of a scope
(semantic level); ``d:<collection>:<doc id>`` the entries citing a document (reverse
index); ``lru`` a sorted set by last use; ``sizes``/``bytes`` the byte accounting;
``stats`` the counters. Puts, removals and invalidations run as Lua scripts, so each is
atomic. Redis keeps no expiry of its own: the cache's clock decides, and the LRU bounds
keep the memory in check.

Writers to the store need not know this server: every hit is checked against the
store's change log (see ``freshness``) and the reverse index is swept from it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ragstore.cache.base import CacheUnavailable, Entry, Vector
from ragstore.cache.settings import CacheSettings
from ragstore.errors import InvalidInput, StoreError

logger = logging.getLogger(__name__)

TIMEOUT_S = 0.25
"""Socket timeout: a slow or dead server costs a search at most this much."""
RETRY_AFTER_S = 1.0
"""After a failure, the server is not tried again for this long (searches run uncached)."""
SCAN_COUNT = 500
"""Keys asked for per SCAN step (and entries read per round trip) by ``entries``."""
_SCHEMES = ("redis://", "rediss://", "unix://")

_REMOVE = """
local function remove(prefix, key)
  local info = redis.call('HMGET', key, 'scope', 'cites', 'coll')
  redis.call('DEL', key)
  redis.call('ZREM', prefix .. 'lru', key)
  local size = redis.call('HGET', prefix .. 'sizes', key)
  if size then
    redis.call('DECRBY', prefix .. 'bytes', size)
    redis.call('HDEL', prefix .. 'sizes', key)
  end
  if info[1] then redis.call('HDEL', prefix .. 's:' .. info[1], key) end
  if info[2] then
    for _, doc in ipairs(cjson.decode(info[2])) do
      redis.call('SREM', prefix .. 'd:' .. info[3] .. ':' .. doc, key)
    end
  end
  if size then return 1 end
  return 0
end
"""

_PUT = (
    _REMOVE
    + """
local prefix, key = ARGV[1], ARGV[2]
local max_entries, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local now, size = ARGV[5], ARGV[6]
local scope, cites, coll, vec = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
remove(prefix, key)
redis.call('HSET', key, 'scope', scope, 'cites', cites, 'coll', coll, 'hits', ARGV[11],
  'seq', ARGV[12], 'writes', ARGV[13], 'created', ARGV[14], 'expires', ARGV[15],
  'text', ARGV[16], 'vec', vec)
if vec ~= '' then redis.call('HSET', prefix .. 's:' .. scope, key, vec) end
for _, doc in ipairs(cjson.decode(cites)) do
  redis.call('SADD', prefix .. 'd:' .. coll .. ':' .. doc, key)
end
redis.call('ZADD', prefix .. 'lru', now, key)
redis.call('HSET', prefix .. 'sizes', key, size)
local total = redis.call('INCRBY', prefix .. 'bytes', size)
local evicted = 0
while redis.call('ZCARD', prefix .. 'lru') > max_entries or total > max_bytes do
  local oldest = redis.call('ZRANGE', prefix .. 'lru', 0, 0)[1]
  if not oldest then break end
  evicted = evicted + remove(prefix, oldest)
  total = tonumber(redis.call('GET', prefix .. 'bytes') or '0')
end
return evicted
"""
)

_DROP = (
    _REMOVE
    + """
local count = 0
for i = 2, #ARGV do
  count = count + remove(ARGV[1], ARGV[i])
end
return count
"""
)

_INVALIDATE = (
    _REMOVE
    + """
local prefix, coll = ARGV[1], ARGV[2]
local count = 0
for i = 3, #ARGV do
  local docs = prefix .. 'd:' .. coll .. ':' .. ARGV[i]
  for _, key in ipairs(redis.call('SMEMBERS', docs)) do
    count = count + remove(prefix, key)
  end
  redis.call('DEL', docs)
end
return count
"""
)


class RedisBackend:
    """Entries in a Redis server, shared by every process that uses the same store."""

    def __init__(self, url: str, namespace: str, settings: CacheSettings) -> None:
        redis = _import_redis()
        if not isinstance(url, str) or not url.startswith(_SCHEMES):
            raise InvalidInput(
                "redis_url must start with redis://, rediss:// or unix://", field="redis_url"
            )
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._prefix = f"ragstore:{namespace}:"
        self._settings = settings
        self._put = self._client.register_script(_PUT)
        self._drop = self._client.register_script(_DROP)
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._down_until = 0.0

    def get(self, scope: str, text_key: str) -> Entry | None:
        """The entry under this key, marking it used."""
        return self._read(self._entry_key(scope, text_key))

    def peek(self, scope: str, text_key: str) -> Entry | None:
        """Always ``None``: entries live in Redis only, one network round trip away."""
        return None

    def nearest(self, scope: str, vector: Vector) -> tuple[Entry, float] | None:
        """The entry of ``scope`` with the most similar query vector."""
        vectors = self._call(lambda: self._client.hgetall(self._prefix + "s:" + scope))
        if not vectors:
            return None
        names = list(vectors)
        matrix = np.stack([np.frombuffer(vectors[name], dtype=np.float32) for name in names])
        sims = matrix @ vector
        best = int(np.argmax(sims))
        entry = self._read(names[best].decode())
        return None if entry is None else (entry, float(sims[best]))

    def put(self, entry: Entry, now: float) -> int:
        """Store ``entry``; returns how many entries were evicted."""
        args = [
            self._prefix,
            self._entry_key(entry.scope, entry.text_key),
            self._settings.max_entries,
            self._settings.max_bytes,
            repr(now),
            entry.nbytes,
            entry.scope,
            json.dumps(list(entry.cites)),
            entry.collection_id,
            entry.vector or b"",
            entry.hits,
            entry.seq,
            entry.writes,
            repr(entry.created_at),
            repr(entry.expires_at),
            entry.text_key,
        ]
        return int(self._call(lambda: self._put(args=args)))

    def touch(self, entry: Entry, now: float) -> None:
        """Mark ``entry`` used now and keep its verified ``seq``."""
        key = self._entry_key(entry.scope, entry.text_key)

        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.zadd(self._prefix + "lru", {key: now}, xx=True)
            pipe.hset(key, "seq", entry.seq)
            pipe.execute()

        self._call(run)

    def remove(self, entry: Entry) -> None:
        """Drop one entry."""
        key = self._entry_key(entry.scope, entry.text_key)
        self._call(lambda: self._drop(args=[self._prefix, key]))

    def invalidate(self, collection_id: int, doc_ids: Sequence[str]) -> int:
        """Drop every entry citing ``doc_ids`` (through the reverse index)."""
        if not doc_ids:
            return 0
        args = [self._prefix, collection_id, *doc_ids]
        return int(self._call(lambda: self._invalidate(args=args)))

    def entries(self, collection_id: int) -> Iterator[Entry]:
        """The collection's entries, found with SCAN (never KEYS) a step at a time."""
        match, cursor = self._prefix + "e:*", 0
        while True:
            scan = functools.partial(self._client.scan, cursor, match=match, count=SCAN_COUNT)
            cursor, names = self._call(scan)
            for fields in self._call(functools.partial(self._read_all, names)):
                if fields and int(fields[b"coll"]) == collection_id:
                    yield _entry(fields)
            if not cursor:
                return

    def reset(self) -> None:
        """Nothing is held in this process."""

    def clear(self) -> int:
        """Delete every key of this store."""

        def run() -> int:
            count = int(self._client.zcard(self._prefix + "lru"))
            names = list(self._client.scan_iter(match=self._prefix + "*", count=500))
            for start in range(0, len(names), 500):
                self._client.delete(*names[start : start + 500])
            return count

        return int(self._call(run))

    def add_stats(self, deltas: Mapping[str, float]) -> None:
        """Add to the shared counters."""

        def run() -> None:
            pipe = self._client.pipeline(transaction=False)
            for name, value in deltas.items():
                pipe.hincrbyfloat(self._prefix + "stats", name, value)
            pipe.execute()

        self._call(run)

    def read_stats(self) -> dict[str, float]:
        """The shared counters."""
        raw = self._call(lambda: self._client.hgetall(self._prefix + "stats"))
        return {name.decode(): float(value) for name, value in raw.items()}

    def size(self) -> tuple[int, int]:
        """Entries and bytes held."""

        def run() -> tuple[int, int]:
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(self._prefix + "lru")
            pipe.get(self._prefix + "bytes")
            count, size = pipe.execute()
            return int(count), int(size or 0)

        result: tuple[int, int] = self._call(run)
        return result

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _read(self, key: str) -> Entry | None:
        fields: dict[bytes, bytes] = self._call(lambda: self._client.hgetall(key))
        return _entry(fields) if fields else None

    def _read_all(self, names: Sequence[bytes]) -> list[dict[bytes, bytes]]:
        """The fields of each entry in ``names`` (empty for one removed meanwhile)."""
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        found: list[dict[bytes, bytes]] = pipe.execute()
        return found

    def _entry_key(self, scope: str, text_key: str) -> str:
        digest = hashlib.sha256(text_key.encode()).hexdigest()[:32]
        return f"{self._prefix}e:{scope}:{digest}"

    def _call(self, action: Any) -> Any:
        """Run one exchange with the server, failing fast while it is known to be down."""
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis cache is down; retrying shortly")
        try:
            return action()
        except self.errors:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            raise


def _entry(fields: Mapping[bytes, bytes]) -> Entry:
    vec = fields.get(b"vec", b"")
    return Entry(
        collection_id=int(fields[b"coll"]),
        scope=fields[b"scope"].decode(),
        text_key=fields[b"text"].decode(),
        hits=fields[b"hits"].decode(),
        cites=tuple(json.loads(fields[b"cites"])),
        vector=vec or None,
        seq=int(fields[b"seq"]),
        writes=int(fields[b"writes"]),
        created_at=float(fields[b"created"]),
        expires_at=float(fields[b"expires"]),
    )


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise StoreError(
            "the Redis cache needs the redis package: pip install 'ragstore[redis]'"
        ) from None
    return redis

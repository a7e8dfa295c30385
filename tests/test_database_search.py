"""Index kind ``pgvector``: searches that run inside PostgreSQL, on a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import BACKENDS, unit_vectors
from pg_server import PgServer

import ragstore
from ragstore.errors import InvalidConfig

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="postgres not selected")

POLICIES = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days of delivery.",
     "metadata": {"topic": "returns", "year": 2024}},
    {"id": "shipping", "text": "Standard shipping takes three to five business days.",
     "metadata": {"topic": "shipping", "year": 2023}},
    {"id": "warranty", "text": "Electronics carry a two year warranty against defects.",
     "metadata": {"topic": "warranty", "year": 2024}},
]  # fmt: skip


@pytest.fixture
def pg_store(pg_server: PgServer) -> ragstore.Store:
    with ragstore.open(pg_server.create_database()) as store:
        yield store  # type: ignore[misc]


def test_every_mode_runs_in_the_database(pg_store: ragstore.Store) -> None:
    col = pg_store.create_collection("docs", index={"kind": "pgvector"})
    col.upsert(POLICIES)
    for mode in ("hybrid", "dense", "keyword"):
        hits = col.search("how many days until my refund?", k=2, mode=mode, explain=True)
        assert hits[0].doc_id == "refunds", mode
    plan = col.search("refund days", k=2, explain=True).plan
    assert (
        plan["dense"] == [{"segment": "database", "plan": "pgvector hnsw", "ef_search": 64}]
        and plan["keyword"] == "postgresql full-text"
    )
    filtered = col.search("refund", k=3, where={"year": 2023})
    assert [hit.doc_id for hit in filtered] == ["shipping"]
    stats = col.index_stats()
    assert stats["kind"] == "pgvector" and stats["vectors"] == 3 and stats["index_bytes"] > 0


def test_a_selective_filter_still_returns_k_hits(pg_store: ragstore.Store) -> None:
    """Iterative index scans: 1 vector in 50 matches, far fewer than ef_search finds."""
    vectors = unit_vectors(5000, 16, seed=4)
    col = pg_store.create_collection("vecs", embedder=None, dim=16, index={"kind": "pgvector"})
    metadata = [{"group": i % 50} for i in range(len(vectors))]
    col.upsert_vectors([str(i) for i in range(len(vectors))], vectors, metadata)
    ids, _ = col.search_vectors(vectors[7], k=20, where={"group": 7}, ef_search=10)
    assert len(ids) == 20 and ids[0] == "7"
    assert all(int(doc) % 50 == 7 for doc in ids)
    assert col.check_recall(sample=20, k=10)["recall"] >= 0.9


def test_switching_between_memory_and_database_keeps_the_answers(
    pg_store: ragstore.Store,
) -> None:
    vectors = unit_vectors(300, 8, seed=5)
    col = pg_store.create_collection("vecs", embedder=None, dim=8)
    col.upsert_vectors([str(i) for i in range(300)], vectors)
    in_memory = col.search_vectors(vectors[3], k=5)[0]
    col.rebuild_index({"kind": "pgvector"})
    assert col.search_vectors(vectors[3], k=5)[0] == in_memory
    assert pg_store.get_collection("vecs").index_stats()["kind"] == "pgvector"
    col.rebuild_index({"kind": "hnsw"})
    assert col.search_vectors(vectors[3], k=5)[0] == in_memory
    assert col.index_stats()["kind"] == "hnsw"


def test_the_embedded_store_refuses_the_database_kind(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "s") as store:
        with pytest.raises(InvalidConfig) as refused:
            store.create_collection("docs", index={"kind": "pgvector"})
        assert refused.value.field == "index.kind"
        col = store.create_collection("vecs", embedder=None, dim=4)
        with pytest.raises(InvalidConfig):
            col.rebuild_index({"kind": "pgvector"})
        assert store.get_collection("vecs").config.index.kind == "flat"
        assert np.isfinite(col.check_recall(sample=1)["queries"])

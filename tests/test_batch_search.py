"""Several searches in one call: each answer is exactly what the single search gives,
in order, in Python (every backend) and over HTTP (a real server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import unit_vectors
from server_helpers import serving

import ragstore
from ragstore.embed import Embedder
from ragstore.engine.store import Store

TEXTS = {
    "refunds": "Refunds are paid within thirty days of the return.",
    "shipping": "Parcels ship within two working days by courier.",
    "gift": "Gift cards never expire and cannot be refunded.",
}
QUESTIONS = ["how long does a refund take", "when will my parcel ship", "do gift cards expire"]


def ids(results: list[ragstore.Hit]) -> list[tuple[str, float]]:
    return [(hit.chunk_id, round(hit.score, 5)) for hit in results]


def test_a_batch_of_texts_answers_like_single_searches(store: Store, embedder: Embedder) -> None:
    col = store.create_collection("docs", embedder=embedder)
    col.upsert([{"id": k, "text": t, "metadata": {"topic": k}} for k, t in TEXTS.items()])
    for mode in ("hybrid", "dense", "keyword"):
        batch = col.search_batch(QUESTIONS, k=2, mode=mode)
        assert [ids(r) for r in batch] == [ids(col.search(q, k=2, mode=mode)) for q in QUESTIONS]
    assert [r[0].doc_id for r in col.search_batch(QUESTIONS, k=1)] == list(TEXTS)
    filtered = col.search_batch(QUESTIONS, k=3, where={"topic": "gift"})
    assert [[hit.doc_id for hit in r] for r in filtered] == [["gift"]] * 3


def test_a_batch_of_vectors_answers_like_single_searches(store: Store) -> None:
    col = store.create_collection("v", embedder=None, dim=8)
    vectors = unit_vectors(50, 8)
    col.upsert_vectors([f"d{i}" for i in range(50)], vectors)
    batch = col.search_batch(vectors=vectors[:5], k=3)
    assert [r[0].doc_id for r in batch] == [f"d{i}" for i in range(5)]
    assert [ids(r) for r in batch] == [ids(col.search(vector=v, k=3)) for v in vectors[:5]]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "queries"),
        ({"queries": ["a"], "vectors": [[1.0] * 8]}, "queries"),
        ({"queries": "one text"}, "queries"),
        ({"vectors": [1.0] * 8}, "vectors"),
        ({"vectors": [["a"] * 8]}, "vectors"),
        ({"vectors": [[1.0] * 8, [1.0] * 7]}, "vectors"),
    ],
)
def test_bad_batches_name_the_field(store: Store, arguments: dict[str, object], field: str) -> None:
    col = store.create_collection("v", embedder=None, dim=8)
    with pytest.raises(ragstore.InvalidInput) as raised:
        col.search_batch(**arguments)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_http_batch_search(tmp_path: Path) -> None:
    keys = {"k-read": {"id": "reader", "role": "read", "tenants": ["acme"]}}
    admin = {"k-admin": {"id": "ops", "role": "admin", "tenants": ["*"]}}
    base = "/v1/tenants/acme/collections"
    with serving(tmp_path, keys | admin) as server:
        with server.client("k-admin") as client:
            assert client.post(base, json={"name": "docs"}).status_code == 201
            docs = [{"id": key, "text": text} for key, text in TEXTS.items()]
            assert client.post(f"{base}/docs/documents", json={"documents": docs}).status_code in (
                200,
                202,
            )
        with server.client("k-read") as client:
            searches = [{"query": q, "k": 1, "cache": False} for q in QUESTIONS]
            batch = client.post(f"{base}/docs/search/batch", json={"searches": searches})
            singles = [client.post(f"{base}/docs/search", json=s).json() for s in searches]
            empty = client.post(f"{base}/docs/search/batch", json={"searches": []})
            too_many = client.post(
                f"{base}/docs/search/batch", json={"searches": [{"query": "x"}] * 101}
            )
            bad_k = client.post(
                f"{base}/docs/search/batch", json={"searches": [{"query": "x", "k": 0}]}
            )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["hits"][0]["doc_id"] for r in results] == list(TEXTS)
    assert [r["hits"] for r in results] == [s["hits"] for s in singles]
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "searches"
    assert too_many.status_code == 422
    assert bad_k.status_code == 422 and "k" in str(bad_k.json()["error"]["field"])
    assert np.all([r["took_ms"] >= 0 for r in results])

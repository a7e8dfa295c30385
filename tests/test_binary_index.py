"""Index kind ``binary``: recall after re-ranking on real embedded text, its code size, its
re-rank depth, and dimensions that are not a multiple of eight. The battery every kind
runs (filters, deletes, sealing, reopening, damaged files) is in ``test_segments.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ragstore
from ragstore.config import BINARY_RERANK, DEFAULT_RERANK, IndexConfig
from ragstore.embed import Embedder
from ragstore.engine.store import Collection, Store

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
K = 10


@pytest.fixture(scope="module")
def scifact_vectors(embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """SciFact's document titles and 200 of its claims, embedded by the real model."""
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip("shared/datasets is not beside this checkout")
    titles = [json.loads(line)["title"] for line in read_lines(SCIFACT / "corpus.jsonl")]
    claims = [json.loads(line)["text"] for line in read_lines(SCIFACT / "queries.jsonl")][:200]
    return embedder.embed_documents(titles), embedder.embed_documents(claims)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def vector_store(store_location: str | Path) -> Iterator[Store]:
    with ragstore.open(store_location) as store:
        yield store


def sealed(store: Store, name: str, vectors: np.ndarray, **index: object) -> Collection:
    col = store.create_collection(name, embedder=None, dim=vectors.shape[1], index=index)
    col.upsert_vectors([str(i) for i in range(len(vectors))], vectors)
    col.optimize()
    return col


def exact_ids(vectors: np.ndarray, query: np.ndarray) -> list[str]:
    return [str(i) for i in np.argsort(-(vectors @ query), kind="stable")[:K]]


def mean_recall(col: Collection, vectors: np.ndarray, queries: np.ndarray) -> float:
    hits = [len(set(col.search_vectors(q, K)[0]) & set(exact_ids(vectors, q))) for q in queries]
    return float(np.mean(hits)) / K


def test_binary_recall_comes_from_reranking_real_text(
    vector_store: Store, scifact_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = scifact_vectors
    default = sealed(vector_store, "deep", vectors, kind="binary")
    hamming_only = sealed(vector_store, "shallow", vectors, kind="binary", rerank=1)
    assert mean_recall(default, vectors, queries) >= 0.97
    assert mean_recall(hamming_only, vectors, queries) <= 0.85
    ids, scores = default.search_vectors(queries[0], K)
    exact = vectors[[int(i) for i in ids]] @ queries[0]
    np.testing.assert_allclose(scores, exact, rtol=1e-5)  # exact cosines, best first
    assert list(scores) == sorted(scores, reverse=True)


def test_binary_codes_are_32_times_smaller_than_flat(
    vector_store: Store, scifact_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, _ = scifact_vectors
    per_vector = {
        kind: sealed(vector_store, kind, vectors, kind=kind).index_stats()["bytes_per_vector"]
        for kind in ("flat", "binary")
    }
    assert per_vector["binary"] == pytest.approx(384 / 8, abs=0.1)
    assert per_vector["flat"] / per_vector["binary"] >= 30


def test_binary_reranks_its_own_default_depth_unless_told(vector_store: Store) -> None:
    vectors = np.random.default_rng(1).standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    default = sealed(vector_store, "default", vectors, kind="binary")
    told = sealed(vector_store, "told", vectors, kind="binary", rerank=4)
    switched = sealed(vector_store, "switched", vectors, kind="flat")
    switched.rebuild_index({"kind": "binary"})
    assert IndexConfig().rerank_for("sq8") == DEFAULT_RERANK
    for col, depth in ((default, BINARY_RERANK), (told, 4), (switched, BINARY_RERANK)):
        hits = col.search(vector=vectors[0], k=K, explain=True)
        assert hits.plan is not None
        dense = hits.plan["dense"][0]
        assert (dense["kind"], dense["reranked"]) == ("binary", K * depth)
        assert hits[0].doc_id == "0"


def test_binary_pads_a_dimension_that_is_not_a_multiple_of_eight(vector_store: Store) -> None:
    vectors = np.random.default_rng(2).standard_normal((2000, 30)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    col = sealed(vector_store, "odd", vectors, kind="binary")
    assert col.index_stats()["segments"][0]["bytes_per_vector"] == pytest.approx(4, abs=0.1)
    for i in range(0, 2000, 101):
        assert col.search_vectors(vectors[i], 1)[0] == [str(i)]

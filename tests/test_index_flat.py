"""The exact index against a brute-force reference, through adds, replaces and removes."""

from __future__ import annotations

import numpy as np
from conftest import unit_vectors

from ragstore.index.flat import FlatIndex, top_k
from ragstore.index.payload import IdSet


def reference_top_k(
    vectors: dict[int, np.ndarray], query: np.ndarray, k: int, allowed: set[int] | None = None
) -> list[int]:
    scored = [(-float(v @ query), i) for i, v in vectors.items() if allowed is None or i in allowed]
    return [i for _, i in sorted(scored)[:k]]


def test_matches_brute_force_through_updates() -> None:
    dim = 16
    index = FlatIndex(dim)
    live: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(7)
    for step in range(30):
        ids = rng.choice(3000, size=100, replace=False).astype(np.int64)
        vectors = unit_vectors(100, dim, seed=step)
        index.add(ids, vectors)
        live.update(zip(ids.tolist(), vectors, strict=True))
        gone = rng.choice(3000, size=40, replace=False).astype(np.int64)
        index.remove(gone)
        for i in gone.tolist():
            live.pop(i, None)
    query = unit_vectors(1, dim, seed=99)[0]

    ids, scores = index.search(query, 25)

    assert len(index) == len(live)
    assert ids.tolist() == reference_top_k(live, query, 25)
    assert np.all(np.diff(scores) <= 0)


def test_allowed_ids_are_searched_exactly() -> None:
    dim = 8
    index = FlatIndex(dim)
    vectors = unit_vectors(500, dim, seed=1)
    index.add(np.arange(500, dtype=np.int64), vectors)
    allowed = np.array([3, 77, 140, 141, 499, 10_000], dtype=np.int64)  # 10_000 is not indexed
    query = vectors[0]

    ids, _ = index.search(query, 10, IdSet(allowed))
    assert index.search(query, 10, IdSet(np.array([3, 77])))[0].tolist() in ([3, 77], [77, 3])

    live = dict(enumerate(vectors))
    assert ids.tolist() == reference_top_k(live, query, 10, {3, 77, 140, 141, 499})


def test_empty_index_and_k_larger_than_size() -> None:
    index = FlatIndex(4)
    query = np.ones(4, dtype=np.float32) / 2

    assert index.search(query, 5)[0].size == 0
    index.add(np.array([1, 2], dtype=np.int64), unit_vectors(2, 4))
    assert sorted(index.search(query, 5)[0].tolist()) == [1, 2]


def test_top_k_breaks_ties_by_position_also_at_the_cut() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        scores = rng.integers(0, 4, size=int(rng.integers(1, 60))).astype(np.float32)
        k = int(rng.integers(1, len(scores) + 1))
        expected = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        assert top_k(scores, k).tolist() == expected

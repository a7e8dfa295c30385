"""Ranked-list fusion (RRF, weighted) and MMR: hand-computed values and properties."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragstore.errors import InvalidInput
from ragstore.search.fusion import mmr, rrf, weighted

KEYS = [f"d{i}" for i in range(12)]


@st.composite
def ranked_st(draw: st.DrawFn, min_size: int = 0) -> list[tuple[str, float]]:
    """A best-first list of distinct keys with non-increasing scores (ties allowed)."""
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=min_size))
    scores = draw(
        st.lists(
            st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]) | st.floats(-10, 10),
            min_size=len(keys),
            max_size=len(keys),
        )
    )
    return list(zip(keys, sorted(scores, reverse=True), strict=True))


lists_st = st.lists(ranked_st(), min_size=1, max_size=5)


# --- RRF -------------------------------------------------------------------------------


def test_rrf_matches_hand_computed_scores() -> None:
    a = [("x", 9.0), ("y", 8.0), ("z", 7.0)]
    b = [("y", 0.9), ("w", 0.8)]
    fused = dict(rrf([a, b], k=60))
    assert fused == pytest.approx(
        {"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62}, abs=1e-15
    )
    assert [key for key, _ in rrf([a, b], k=60)] == ["y", "x", "w", "z"]


def test_rrf_weights_scale_each_list() -> None:
    a = [("x", 1.0), ("y", 0.5)]
    b = [("y", 1.0), ("x", 0.5)]
    fused = rrf([a, b], k=1, weights=[3.0, 1.0])
    assert fused == [("x", pytest.approx(3 / 2 + 1 / 3)), ("y", pytest.approx(3 / 3 + 1 / 2))]


def test_rrf_ignores_input_scores() -> None:
    a = [("x", -5.0), ("y", 100.0)]
    assert [key for key, _ in rrf([a])] == ["x", "y"]


def test_rrf_ties_break_by_best_rank_then_key() -> None:
    # "p" and "q" both score 1/2 + 1/4 with k=1: equal fused scores.
    a = [("p", 1.0), ("r", 0.9), ("q", 0.8)]
    b = [("q", 1.0), ("s", 0.9), ("p", 0.8)]
    fused = rrf([a, b], k=1)
    assert fused[0][1] == fused[1][1]
    assert [key for key, _ in fused][:2] == ["p", "q"]  # same best rank (1): str order
    c = [("m", 1.0)]
    d = [("n", 1.0)]
    # "z" and "m" tie on score and on best rank (1): str order.
    assert [key for key, _ in rrf([[("z", 1.0), ("n", 0.5)], c, d])] == ["n", "m", "z"]


def test_rrf_zero_weight_list_only_breaks_ties() -> None:
    a = [("x", 1.0)]
    b = [("y", 1.0), ("x", 0.5)]
    assert rrf([a, b], weights=[1.0, 0.0]) == [("x", 1 / 61), ("y", 0.0)]


def test_rrf_accepts_any_hashable_keys() -> None:
    fused = rrf([[(1, 1.0), ((2, "b"), 0.5)], [((2, "b"), 1.0)]])
    assert [key for key, _ in fused] == [(2, "b"), 1]


def test_rrf_of_nothing() -> None:
    assert rrf([]) == []
    assert rrf([[], []]) == []


@settings(max_examples=200, deadline=None)
@given(lists=lists_st, data=st.data())
def test_rrf_is_invariant_to_list_order(lists: list[list[tuple[str, float]]], data: Any) -> None:
    permuted = data.draw(st.permutations(lists))
    assert rrf(permuted) == rrf(lists)


@settings(max_examples=200, deadline=None)
@given(lists=lists_st, data=st.data())
def test_weighted_rrf_is_invariant_to_list_order(
    lists: list[list[tuple[str, float]]], data: Any
) -> None:
    weights = data.draw(st.lists(st.floats(0.1, 5.0), min_size=len(lists), max_size=len(lists)))
    order = data.draw(st.permutations(range(len(lists))))
    permuted = rrf([lists[i] for i in order], weights=[weights[i] for i in order])
    assert permuted == rrf(lists, weights=weights)


@settings(max_examples=200, deadline=None)
@given(lists=lists_st)
def test_rrf_keeps_every_key_once(lists: list[list[tuple[str, float]]]) -> None:
    fused = rrf(lists)
    keys = [key for key, _ in fused]
    assert len(keys) == len(set(keys))
    assert set(keys) == {key for ranked in lists for key, _ in ranked}
    assert all(a[1] >= b[1] for a, b in pairwise(fused))


@settings(max_examples=200, deadline=None)
@given(lists=lists_st, k=st.integers(1, 100))
def test_rrf_scores_match_the_formula(lists: list[list[tuple[str, float]]], k: int) -> None:
    expected: dict[str, float] = {}
    for ranked in lists:
        for rank, (key, _) in enumerate(ranked, start=1):
            expected[key] = expected.get(key, 0.0) + 1 / (k + rank)
    assert dict(rrf(lists, k=k)) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(lists=lists_st, data=st.data())
def test_key_first_everywhere_wins(lists: list[list[tuple[str, float]]], data: Any) -> None:
    lists = [[("top", 99.0), *ranked] for ranked in lists]
    assert rrf(lists)[0][0] == "top"
    weights = data.draw(st.lists(st.floats(0.1, 5.0), min_size=len(lists), max_size=len(lists)))
    assert rrf(lists, weights=weights)[0][0] == "top"
    assert weighted(lists, weights)[0][0] == "top"


@settings(max_examples=100, deadline=None)
@given(only=ranked_st(min_size=1), others=lists_st)
def test_key_in_one_list_still_appears(
    only: list[tuple[str, float]], others: list[list[tuple[str, float]]]
) -> None:
    lists = [*others, [("lonely", 1e9), *only]]
    assert "lonely" in dict(rrf(lists))
    assert "lonely" in dict(weighted(lists, [1.0] * len(lists)))


# --- weighted ------------------------------------------------------------------------------


def test_weighted_matches_hand_computed_scores() -> None:
    a = [("x", 10.0), ("y", 6.0), ("z", 2.0)]  # normalised: 1, 0.5, 0
    b = [("y", 0.9), ("w", 0.3)]  # normalised: 1, 0
    fused = weighted([a, b], [0.75, 0.25])
    assert fused == [
        ("x", pytest.approx(0.75)),
        ("y", pytest.approx(0.75 * 0.5 + 0.25)),
        ("w", 0.0),  # ties with "z" at 0; best rank 2 beats "z"'s 3
        ("z", 0.0),
    ]


def test_weighted_normalises_weights_and_constant_lists() -> None:
    a = [("x", 5.0), ("y", 5.0)]  # one distinct score: both 1.0
    b = [("y", 2.0)]
    assert weighted([a, b], [2.0, 2.0]) == [("y", 1.0), ("x", 0.5)]


@settings(max_examples=200, deadline=None)
@given(lists=st.lists(ranked_st(), min_size=2, max_size=4), data=st.data())
def test_weight_one_on_a_list_reproduces_it(
    lists: list[list[tuple[str, float]]], data: Any
) -> None:
    chosen = data.draw(st.integers(0, len(lists) - 1))
    weights = [1.0 if i == chosen else 0.0 for i in range(len(lists))]
    fused = [key for key, _ in weighted(lists, weights)]
    own = [key for key, _ in lists[chosen]]
    assert fused[: len(own)] == own
    assert set(fused) == {key for ranked in lists for key, _ in ranked}


def test_weighted_rejects_unsorted_or_non_finite_scores() -> None:
    with pytest.raises(InvalidInput, match="non-increasing") as info:
        weighted([[("x", 1.0)], [("a", 0.1), ("b", 0.2)]], [1.0, 1.0])
    assert info.value.field == "lists[1]"
    with pytest.raises(InvalidInput, match="finite") as info:
        weighted([[("x", math.inf)]], [1.0])
    assert info.value.field == "lists[0]"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_rrf_k_must_be_positive_int(k: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        rrf([[("x", 1.0)]], k=k)
    assert info.value.field == "k"


@pytest.mark.parametrize(
    "weights", [[1.0], [1.0, 2.0, 3.0], [1.0, -1.0], [1.0, math.nan], [math.inf, 1.0], [0, 0]]
)
def test_bad_weights(weights: list[float]) -> None:
    lists = [[("x", 1.0)], [("y", 1.0)]]
    for fuse in (lambda: rrf(lists, weights=weights), lambda: weighted(lists, weights)):
        with pytest.raises(InvalidInput) as info:
            fuse()
        assert info.value.field == "weights"


def test_repeated_key_in_a_list() -> None:
    with pytest.raises(InvalidInput, match="twice") as info:
        rrf([[("x", 1.0)], [("y", 1.0), ("y", 0.5)]])
    assert info.value.field == "lists[1]"


# --- MMR ---------------------------------------------------------------------------------------


def unit(*rows: list[float]) -> npt.NDArray[np.float64]:
    array = np.array(rows, dtype=np.float64)
    normalised: npt.NDArray[np.float64] = array / np.linalg.norm(array, axis=1, keepdims=True)
    return normalised


def test_mmr_lambda_one_is_relevance_order() -> None:
    vectors = unit([1, 0], [1, 0.01], [0, 1], [1, 1])
    assert mmr(["a", "b", "c", "d"], [0.5, 0.9, 0.1, 0.9], vectors, k=4, lambda_=1.0) == [
        1,
        3,
        0,
        2,
    ]


@settings(max_examples=100, deadline=None)
@given(
    relevance=st.lists(st.floats(-1, 1), min_size=1, max_size=15),
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 20),
)
def test_mmr_lambda_one_matches_stable_sort(relevance: list[float], seed: int, k: int) -> None:
    vectors = np.random.default_rng(seed).normal(size=(len(relevance), 4))
    picked = mmr(list(range(len(relevance))), relevance, vectors, k=k, lambda_=1.0)
    expected = sorted(range(len(relevance)), key=lambda i: -relevance[i])[:k]
    assert picked == expected


def test_mmr_avoids_near_duplicates() -> None:
    # "a" and "a2" are near-duplicates; "b" is less relevant but different.
    vectors = unit([1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0, 1])
    relevance = [0.9, 0.88, 0.7, 0.2]
    assert mmr(["a", "a2", "b", "c"], relevance, vectors, k=2, lambda_=1.0) == [0, 1]
    assert mmr(["a", "a2", "b", "c"], relevance, vectors, k=2, lambda_=0.5) == [0, 2]
    assert mmr(["a", "a2", "b", "c"], relevance, vectors, k=3, lambda_=0.5) == [0, 2, 3]


def test_mmr_lambda_zero_starts_with_the_most_relevant_then_maximises_novelty() -> None:
    vectors = unit([1, 0.1], [1, 0], [-1, 0])
    assert mmr(["a", "b", "c"], [0.9, 1.0, 0.0], vectors, k=3, lambda_=0.0) == [1, 2, 0]


def test_mmr_normalises_vectors_and_caps_k() -> None:
    vectors = np.array([[10.0, 0.0], [0.0, 0.1]], dtype=np.float32)
    assert mmr(["a", "b"], [0.2, 0.1], vectors, k=5) == [0, 1]
    assert mmr([], [], np.zeros((0, 3)), k=3) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 2, "lambda_": 1.5}, "lambda_"),
        ({"k": 2, "lambda_": math.nan}, "lambda_"),
        ({"k": 2, "relevance": [1.0]}, "relevance"),
        ({"k": 2, "relevance": [1.0, math.nan]}, "relevance"),
        ({"k": 2, "vectors": np.ones((3, 2))}, "vectors"),
        ({"k": 2, "vectors": np.ones(2)}, "vectors"),
        ({"k": 2, "vectors": np.array([[1.0, 0.0], [0.0, 0.0]])}, "vectors"),
    ],
)
def test_mmr_validation(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"relevance": [1.0, 0.5], "vectors": np.eye(2)}
    args.update(kwargs)
    with pytest.raises(InvalidInput) as info:
        mmr(["a", "b"], **args)
    assert info.value.field == field

"""What a hit's score means, and ``min_score``: in Python, over HTTP and in the CLI, with
the real model on a real store on disk."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import serving

import ragstore
from ragstore.cli import cli
from ragstore.search import fusion, hybrid, scores
from ragstore.types import Hit

DOCS = [
    {"id": "owls", "text": "Owls hunt at night and fly silently over fields."},
    {"id": "bats", "text": "Bats hunt insects at night using echolocation."},
    {"id": "cats", "text": "Cats sleep most of the day and hunt at dawn."},
    {"id": "salmon", "text": "Salmon swim upstream to spawn in the river where they hatched."},
    {"id": "bread", "text": "Knead the dough for ten minutes, then let it rise for an hour."},
    {"id": "tax", "text": "A small business files its tax return by the end of April."},
    {"id": "rust", "text": "Rust's borrow checker rejects two mutable references at once."},
    {"id": "rain", "text": "Clouds release rain when their droplets grow too heavy."},
]
RELATED = "which animals hunt at night?"
UNRELATED = "what is the exchange rate of the Swiss franc to the yen"
MODES = ("hybrid", "dense", "keyword")
BAD_MIN_SCORES = [math.nan, math.inf, -math.inf, "0.5", True, [0.5]]


@pytest.fixture
def col(sqlite_store: ragstore.Store) -> ragstore.Collection:
    collection = sqlite_store.collection("docs")
    collection.upsert(DOCS)
    return collection


def scores_of(hits: Sequence[Hit]) -> list[float]:
    return [hit.score for hit in hits]


@pytest.mark.parametrize("mode", MODES)
def test_min_score_drops_the_hits_below_it(col: ragstore.Collection, mode: str) -> None:
    every = col.search(RELATED, k=8, mode=mode)  # type: ignore[arg-type]
    assert len(every) >= 3
    cut = every[2].score
    kept = col.search(RELATED, k=8, mode=mode, min_score=cut)  # type: ignore[arg-type]
    assert [h.chunk_id for h in kept] == [h.chunk_id for h in every if h.score >= cut]
    assert len(kept) >= 3 and all(hit.score >= cut for hit in kept)
    above_all = col.search(RELATED, k=8, mode=mode, min_score=every[0].score + 1)  # type: ignore[arg-type]
    assert list(above_all) == []


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_hybrid_scores_fall_with_rank(col: ragstore.Collection, fusion: str) -> None:
    for query in (RELATED, UNRELATED, "bread dough"):
        hits = col.search(query, k=8, fusion=fusion)  # type: ignore[arg-type]
        assert all(a >= b for a, b in pairwise(scores_of(hits)))


@pytest.mark.parametrize("mode", ["dense", "keyword"])
def test_single_mode_scores_fall_with_rank(col: ragstore.Collection, mode: str) -> None:
    hits = col.search(RELATED, k=8, mode=mode)  # type: ignore[arg-type]
    assert all(a >= b for a, b in pairwise(scores_of(hits)))


def test_hybrid_score_is_bounded_and_keeps_both_sides(col: ragstore.Collection) -> None:
    for hit in col.search(RELATED, k=8):
        assert 0.0 <= hit.score <= 1.0
        assert hit.dense_score is not None or hit.keyword_score is not None
    top = col.search(RELATED, k=1)[0]
    dense = col.search(RELATED, k=8, mode="dense")
    keyword = col.search(RELATED, k=8, mode="keyword")
    assert top.dense_score == pytest.approx(next(h.score for h in dense if h.doc_id == top.doc_id))
    assert top.keyword_score == pytest.approx(
        next(h.score for h in keyword if h.doc_id == top.doc_id)
    )


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_a_related_query_scores_above_an_unrelated_one(col: ragstore.Collection, mode: str) -> None:
    related = col.search(RELATED, k=1, mode=mode)[0]  # type: ignore[arg-type]
    unrelated = col.search(UNRELATED, k=1, mode=mode)  # type: ignore[arg-type]
    assert related.doc_id in {"owls", "bats", "cats"}  # hunters
    assert not unrelated or related.score > unrelated[0].score + 0.1


def test_a_threshold_between_them_keeps_only_the_related_answer(
    col: ragstore.Collection,
) -> None:
    related = col.search(RELATED, k=1)[0].score
    unrelated = col.search(UNRELATED, k=1)[0].score
    threshold = (related + unrelated) / 2
    assert col.search(RELATED, k=8, min_score=threshold)
    assert list(col.search(UNRELATED, k=8, min_score=threshold)) == []


@pytest.mark.parametrize("bad", BAD_MIN_SCORES)
def test_a_bad_min_score_is_invalid_input_naming_it(col: ragstore.Collection, bad: Any) -> None:
    with pytest.raises(ragstore.InvalidInput) as raised:
        col.search(RELATED, min_score=bad)
    assert raised.value.field == "min_score"
    with pytest.raises(ragstore.InvalidInput) as raised:
        col.search_batch([RELATED], min_score=bad)
    assert raised.value.field == "min_score"


def test_search_batch_applies_min_score(col: ragstore.Collection) -> None:
    cut = col.search(RELATED, k=8)[1].score
    [kept, dropped] = col.search_batch([RELATED, UNRELATED], k=8, min_score=cut)
    assert scores_of(kept) == [s for s in scores_of(col.search(RELATED, k=8)) if s >= cut]
    assert all(hit.score >= cut for hit in dropped)


def test_the_query_cache_keys_min_score(col: ragstore.Collection) -> None:
    every = col.search(RELATED, k=8, cache=True)
    cut = every[1].score
    kept = col.search(RELATED, k=8, cache=True, min_score=cut)
    assert len(kept) < len(every)
    assert len(col.search(RELATED, k=8, cache=True)) == len(every)


def test_cosines_leave_out_chunks_the_transaction_cannot_see(col: ragstore.Collection) -> None:
    dim = col.config.dim
    with col._db.read() as reader:
        ids, _, _ = reader.chunk_vectors(col.id, 0, 2**62, dim)
        seen, vectors = hybrid._visible_vectors(reader, [int(ids[0]), 10**12])
    assert seen == [int(ids[0])]
    assert vectors.shape == (1, dim)


def test_explain_shows_min_score(col: ragstore.Collection) -> None:
    assert col.search(RELATED, min_score=0.25, explain=True).plan["min_score"] == 0.25  # type: ignore[index]


# --- HTTP ---------------------------------------------------------------------------------

KEYS = {"k-admin": {"id": "ops", "role": "admin", "tenants": ["*"]}}
BASE = "/v1/tenants/acme/collections"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serving(tmp_path_factory.mktemp("http"), KEYS) as running:
        with running.client("k-admin") as client:
            assert client.post(BASE, json={"name": "docs"}).status_code == 201
            added = client.post(f"{BASE}/docs/documents", json={"documents": DOCS})
            assert added.status_code in (200, 202), added.text
        yield running


def test_http_min_score_filters_in_each_mode(server: Any) -> None:
    with server.client("k-admin") as client:
        for mode in MODES:
            body = {"query": RELATED, "k": 8, "mode": mode, "cache": False}
            every = client.post(f"{BASE}/docs/search", json=body).json()["hits"]
            cut = every[2]["score"]
            kept = client.post(f"{BASE}/docs/search", json=body | {"min_score": cut})
            assert kept.status_code == 200, kept.text
            assert [h["chunk_id"] for h in kept.json()["hits"]] == [
                h["chunk_id"] for h in every if h["score"] >= cut
            ]
        batch = client.post(
            f"{BASE}/docs/search/batch",
            json={"searches": [{"query": RELATED, "k": 8, "min_score": 2.0}]},
        )
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["hits"] == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"query": "owls", "min_score": "high"}',
        '{"query": "owls", "min_score": true}',
        '{"query": "owls", "min_score": NaN}',
        '{"query": "owls", "min_score": Infinity}',
        '{"query": "owls", "min_score": 1e999}',
        '{"query": "owls", "min_score": [0.5]}',
    ],
)
def test_http_bad_min_score_is_a_client_error(server: Any, raw: str) -> None:
    with server.client("k-admin") as client:
        answer = client.post(
            f"{BASE}/docs/search", content=raw, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code in (400, 422), answer.text
    if answer.status_code == 422:
        assert "min_score" in str(answer.json()["error"]["field"])


# --- CLI ----------------------------------------------------------------------------------


def test_cli_query_min_score(col: ragstore.Collection, sqlite_store: ragstore.Store) -> None:
    every = col.search(RELATED, k=8, mode="dense")
    cut = every[2].score
    location = str(sqlite_store.location)
    runner = CliRunner()
    args = ["--store", location, "query", RELATED, "--collection", "docs", "--mode", "dense"]
    result = runner.invoke(cli, [*args, "-k", "8", "--min-score", str(cut), "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert [h["chunk_id"] for h in hits] == [h.chunk_id for h in every if h.score >= cut]
    bad = runner.invoke(cli, [*args, "--min-score", "nan"])
    assert bad.exit_code == 2
    assert "min_score" in bad.output


# --- the scales and the fusion, as pure functions --------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(a=finite, b=finite)
def test_saturated_is_a_rising_map_into_the_unit_interval(a: float, b: float) -> None:
    low, high = sorted((a, b))
    mapped_low, mapped_high = scores.saturated([low, high]).tolist()
    assert 0.0 <= mapped_low <= mapped_high < 1.0
    if 0 <= low < high:
        assert mapped_low < mapped_high


def test_saturated_fixed_points() -> None:
    assert scores.saturated([0.0, -3.0, scores.BM25_HALF]).tolist() == [0.0, 0.0, 0.5]
    assert scores.saturated([3.0], half=1.0).tolist() == [0.75]


@given(a=st.floats(-1, 1), b=st.floats(-1, 1))
def test_unit_cosine_clips_and_keeps_order(a: float, b: float) -> None:
    low, high = sorted((a, b))
    mapped = scores.unit_cosine([low, high]).tolist()
    assert 0.0 <= mapped[0] <= mapped[1] <= 1.0
    assert mapped == [min(max(v, 0.0), 1.0) for v in (low, high)]


@st.composite
def side_st(draw: st.DrawFn, low: float, high: float) -> list[tuple[str, float]]:
    keys = draw(st.lists(st.sampled_from([f"c{i}" for i in range(10)]), unique=True))
    values = draw(st.lists(st.floats(low, high), min_size=len(keys), max_size=len(keys)))
    return list(zip(keys, sorted(values, reverse=True), strict=True))


SCALES = [scores.unit_cosine, scores.saturated]


@settings(max_examples=200, deadline=None)
@given(dense=side_st(-1, 1), keyword=side_st(0, 60), alpha=st.floats(0.01, 0.99))
def test_absolute_fusion_is_the_formula_bounded_and_sorted(
    dense: list[tuple[str, float]], keyword: list[tuple[str, float]], alpha: float
) -> None:
    fused = fusion.absolute([dense, keyword], [alpha, 1 - alpha], SCALES)
    cos, bm25 = dict(dense), dict(keyword)
    for key, score in fused:
        dense_part = scores.unit_cosine([cos.get(key, 0.0)])[0]
        keyword_part = scores.saturated([bm25.get(key, 0.0)])[0]
        assert score == pytest.approx(alpha * dense_part + (1 - alpha) * keyword_part)
        assert 0.0 <= score <= 1.0
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)
    assert {key for key, _ in fused} == set(cos) | set(bm25)


@settings(max_examples=200, deadline=None)
@given(dense=side_st(-1, 1), keyword=side_st(0, 60), extra=st.floats(-1, 1))
def test_a_hits_absolute_score_ignores_the_other_hits(
    dense: list[tuple[str, float]], keyword: list[tuple[str, float]], extra: float
) -> None:
    """What else a query retrieves does not move a hit's score (min-max would)."""
    before = dict(fusion.absolute([dense, keyword], [0.5, 0.5], SCALES))
    more = sorted([*dense, ("other", extra)], key=lambda pair: -pair[1])
    after = dict(fusion.absolute([more, keyword], [0.5, 0.5], SCALES))
    assert {key: after[key] for key in before} == before


@given(values=st.lists(st.floats(-5, 5)), cut=st.floats(-5, 5) | st.none())
def test_at_least_keeps_the_items_at_or_above_the_cut_in_order(
    values: list[float], cut: float | None
) -> None:
    items = [f"i{n}" for n in range(len(values))]
    kept = scores.at_least(items, values, cut)
    assert kept == [i for i, v in zip(items, values, strict=True) if cut is None or v >= cut]

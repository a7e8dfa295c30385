"""Dense, keyword and hybrid search on a real store with the real model."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import ragstore
from ragstore.filters import matches, parse_filter
from ragstore.search.scores import BM25_HALF
from ragstore.terms import analyze
from ragstore.types import Hit

CODE_DOCS = [
    {"id": "open", "text": "Pass O_CREAT to open() to create the file if it does not exist."},
    {"id": "creat", "text": "The creat system call is an old way to create files."},
    {"id": "thread", "text": "Start a thread with pthread_create and wait for it with join."},
    {"id": "release-1", "text": "Release v2.3.1 fixes a crash when the cache is full."},
    {"id": "release-2", "text": "Release v2.3.2 adds metrics for cache evictions."},
    {"id": "threads", "text": "Threads share memory; create them sparingly."},
]

ANIMALS = [
    {"id": f"doc-{i}", "text": text, "metadata": {"kind": kind, "n": i}}
    for i, (text, kind) in enumerate(
        [
            ("Cats sleep most of the day and hunt at dawn.", "mammal"),
            ("Dogs were domesticated from wolves thousands of years ago.", "mammal"),
            ("Eagles hunt from great heights with sharp eyes.", "bird"),
            ("Penguins cannot fly but swim fast in cold water.", "bird"),
            ("Salmon swim upstream to spawn in the river where they hatched.", "fish"),
            ("Sharks hunt by sensing electric fields of their prey.", "fish"),
            ("Owls hunt at night and fly silently.", "bird"),
            ("Bats hunt insects at night using echolocation.", "mammal"),
        ]
    )
]


@pytest.fixture
def code(store: ragstore.Store) -> ragstore.Collection:
    col = store.collection("code")
    col.upsert(CODE_DOCS)
    return col


@pytest.fixture
def animals(store: ragstore.Store) -> ragstore.Collection:
    col = store.collection("animals")
    col.upsert(ANIMALS)
    return col


def doc_ids(hits: Sequence[Hit]) -> list[str]:
    return [hit.doc_id for hit in hits]


def test_analyzer_keeps_code_like_tokens_whole_and_split() -> None:
    assert analyze("Use O_CREAT, then pthread_create() in v2.3.1.") == [
        "use",
        "o_creat",
        "o",
        "creat",
        "pthread_create",
        "pthread",
        "create",
        "v2.3.1",
        "v2",
        "3",
        "1",
    ]
    assert analyze("the end. And a well-known fact") == [
        "end",
        "well-known",
        "well",
        "known",
        "fact",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("O_CREAT", "open"),
        ("pthread_create", "thread"),
        ("v2.3.1", "release-1"),
        ("v2.3.2", "release-2"),
    ],
)
def test_code_like_tokens_match_exactly(
    code: ragstore.Collection, query: str, expected: str
) -> None:
    assert doc_ids(code.search(query, k=3, mode="keyword"))[0] == expected
    assert expected in doc_ids(code.search(query, k=2, mode="hybrid"))


def test_hybrid_hits_explain_both_sides_and_fuse_by_rrf(animals: ragstore.Collection) -> None:
    dense = animals.search("which animals hunt at night?", k=8, mode="dense")
    keyword = animals.search("which animals hunt at night?", k=8, mode="keyword")
    hybrid = animals.search("which animals hunt at night?", k=8, fusion="rrf")

    dense_rank = {h.doc_id: r for r, h in enumerate(dense, start=1)}
    keyword_rank = {h.doc_id: r for r, h in enumerate(keyword, start=1)}
    for hit in hybrid:
        assert hit.dense_rank == dense_rank.get(hit.doc_id)
        assert hit.keyword_rank == keyword_rank.get(hit.doc_id)
        expected = sum(
            0.5 / (60 + rank) for rank in (hit.dense_rank, hit.keyword_rank) if rank is not None
        )
        assert hit.score == pytest.approx(expected)
    assert all(h.keyword_score is None and h.dense_rank is not None for h in dense)
    assert hybrid[0].doc_id == "doc-6"  # owls: first on both sides
    assert "doc-7" in doc_ids(hybrid[:3])  # bats: the other night hunter


def test_default_hybrid_is_a_weighted_sum_of_absolute_scores(
    animals: ragstore.Collection,
) -> None:
    query = "which animals hunt at night?"
    dense = {h.doc_id: h.score for h in animals.search(query, k=8, mode="dense")}
    keyword = {h.doc_id: h.score for h in animals.search(query, k=8, mode="keyword")}

    hybrid = animals.search(query, k=8)

    assert len(hybrid) == 8
    for hit in hybrid:
        cosine = min(max(dense.get(hit.doc_id, 0.0), 0.0), 1.0)
        bm25 = keyword.get(hit.doc_id, 0.0)
        expected = 0.5 * cosine + 0.5 * bm25 / (bm25 + BM25_HALF)
        assert hit.score == pytest.approx(expected)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_weighted_fusion_with_alpha_one_is_the_dense_order(animals: ragstore.Collection) -> None:
    dense = animals.search("fast swimmers", k=8, mode="dense")
    weighted = animals.search("fast swimmers", k=8, fusion="weighted", alpha=1.0)

    assert doc_ids(weighted)[: len(dense)] == doc_ids(dense)


@pytest.mark.parametrize(
    "where",
    [
        {"kind": "bird"},
        {"kind": {"$ne": "bird"}},
        {"n": {"$gte": 5}},
        {"$or": [{"kind": "fish"}, {"n": {"$lt": 1}}]},
        {"$not": {"kind": {"$in": ["mammal", "fish"]}}},
    ],
)
def test_both_sides_honour_the_same_filter(
    animals: ragstore.Collection, where: dict[str, object]
) -> None:
    flt = parse_filter(where)
    assert flt is not None
    expected = {d["id"] for d in ANIMALS if matches(flt, d["metadata"])}

    for mode in ("dense", "hybrid"):
        assert set(doc_ids(animals.search("animals", k=20, mode=mode, where=where))) == expected
    keyword = animals.search("hunt swim fly night day", k=20, mode="keyword", where=where)
    unfiltered = animals.search("hunt swim fly night day", k=20, mode="keyword")
    assert doc_ids(keyword) == [h for h in doc_ids(unfiltered) if h in expected]


def test_deleted_and_updated_chunks_leave_both_sides(animals: ragstore.Collection) -> None:
    animals.delete(["doc-6"])
    animals.upsert(
        [{"id": "doc-7", "text": "Bats pollinate agave plants.", "metadata": {"kind": "mammal"}}]
    )

    for mode in ("dense", "keyword", "hybrid"):
        hits = animals.search("owls hunt at night", k=20, mode=mode)
        assert "doc-6" not in doc_ids(hits)
        assert all("echolocation" not in h.text for h in hits)
    assert doc_ids(animals.search("agave pollination", k=1, mode="keyword")) == ["doc-7"]


def test_group_by_doc_keeps_one_hit_per_document(store: ragstore.Store) -> None:
    col = store.create_collection("long", chunk_size=32, chunk_overlap=4)
    text = "\n\n".join(
        f"Tea note {i}: green tea is steeped at eighty degrees for two minutes." for i in range(8)
    )
    col.upsert(
        [
            {"id": "tea", "text": text},
            {"id": "coffee", "text": "Coffee is brewed at ninety degrees."},
        ]
    )

    grouped = col.search("steeping tea", k=5, group_by_doc=True)
    ungrouped = col.search("steeping tea", k=5)

    assert doc_ids(grouped) == ["tea", "coffee"]
    assert doc_ids(ungrouped).count("tea") > 1


def test_mmr_moves_a_near_duplicate_down(store: ragstore.Store) -> None:
    col = store.collection("dups")
    col.upsert(
        [
            {"id": "a", "text": "The museum opens at nine in the morning."},
            {"id": "a-copy", "text": "The museum opens at nine in the morning!"},
            {"id": "b", "text": "Museum tickets cost twelve euros for adults."},
        ]
    )

    plain = col.search("museum opening time", k=3, mode="dense")
    diverse = col.search("museum opening time", k=3, mode="dense", mmr_lambda=0.3)

    assert set(doc_ids(plain[:2])) == {"a", "a-copy"}
    assert "b" in doc_ids(diverse[:2])


class LengthReranker:
    """A real (if simple) reranker: prefers shorter chunks."""

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return sorted(hits, key=lambda h: len(h.text))


def test_reranker_seam_reorders_candidates(animals: ragstore.Collection) -> None:
    hits = animals.search("hunting", k=3, reranker=LengthReranker())

    lengths = [len(h.text) for h in hits]
    assert lengths == sorted(lengths)
    assert min(len(d["text"]) for d in ANIMALS) == lengths[0]


def test_bad_search_options_are_invalid_input(animals: ragstore.Collection) -> None:
    cases = [
        ({"mode": "fuzzy"}, "mode"),
        ({"fusion": "max"}, "fusion"),
        ({"alpha": 1.5}, "alpha"),
        ({"candidates": 0}, "candidates"),
        ({"mmr_lambda": -1}, "mmr_lambda"),
    ]
    for options, field in cases:
        with pytest.raises(ragstore.InvalidInput) as caught:
            animals.search("x", **options)  # type: ignore[arg-type]
        assert caught.value.field == field
    with pytest.raises(ragstore.InvalidInput, match="dense mode"):
        animals.search(vector=[0.1] * 384, mode="hybrid")


def test_vector_collection_supports_keyword_mode(store: ragstore.Store) -> None:
    col = store.create_collection("vecs", embedder=None, dim=4)
    col.upsert([{"id": "x", "vector": [1, 0, 0, 0], "text": "error code E_TIMEOUT"}])

    assert doc_ids(col.search("E_TIMEOUT", mode="keyword")) == ["x"]
    with pytest.raises(ragstore.InvalidInput, match="no embedder"):
        col.search("E_TIMEOUT")


def test_highlight_marks_query_words_in_the_original_text(animals: ragstore.Collection) -> None:
    [hit] = animals.search("hunting at night", k=1, mode="keyword", highlight=True)

    assert hit.highlight is not None
    assert hit.highlight.replace("**", "") == hit.text
    assert "**night**" in hit.highlight
    assert "**hunt**" in hit.highlight  # "hunting" in the query matches "hunt" in the text
    assert "**at**" not in hit.highlight  # stop words are not marked
    assert animals.search("hunting", k=1)[0].highlight is None


def test_keyword_statistics_belong_to_each_collection(store: ragstore.Store) -> None:
    first = store.create_collection("first", embedder=None, dim=2)
    second = store.create_collection("second", embedder=None, dim=2)
    first.upsert([{"id": "a", "vector": [1, 0], "text": "kiwi bread"}])
    before = first.search("kiwi", mode="keyword")[0].score

    second.upsert([{"id": f"b{i}", "vector": [0, 1], "text": f"kiwi {i}"} for i in range(50)])

    assert first.search("kiwi", mode="keyword")[0].score == before
    assert [h.doc_id for h in first.search("kiwi", k=100, mode="keyword")] == ["a"]
    store.delete_collection("second")
    assert first.search("kiwi", mode="keyword")[0].score == before

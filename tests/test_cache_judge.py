"""The semantic cache judge: its guards refuse each kind of near-miss, it accepts clear
paraphrases, and through a real store a paraphrase is a semantic hit while a near-miss
runs its own search."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ragstore
from ragstore.cache import CacheSettings
from ragstore.cache.judge import MODEL, SAME_WORDS, Judge, default_judge
from ragstore.cache.keys import normalize
from ragstore.embed import Embedder


def cosine(embedder: Embedder, a: str, b: str) -> float:
    return float(embedder.embed_query(normalize(a)) @ embedder.embed_query(normalize(b)))


@pytest.mark.parametrize(
    ("query", "cached", "guard"),
    [
        (
            "which medicines are covered by my plan?",
            "which medicines are not covered by my plan?",
            "negation",
        ),
        ("recipes with nuts", "recipes without nuts", "negation"),
        ("is the pool heated?", "is the pool unheated?", "negation"),
        ("a table for 4 people", "a table for 6 people", "number"),
        ("tickets for six adults", "tickets for seven adults", "number"),
        ("the 2nd floor of the library", "the 3rd floor of the library", "number"),
        ("trains arriving before midnight", "trains arriving after midnight", "opposite"),
        ("increase the font size", "decrease the font size", "opposite"),
        ("buy shares in an index fund", "sell shares in an index fund", "opposite"),
        ("import contacts from a spreadsheet", "export contacts to a spreadsheet", "opposite"),
        ("send the parcel to Lisbon", "send the parcel from Lisbon", "opposite"),
        ("exchange rate from yen to pounds", "exchange rate from pounds to yen", "order"),
        ("does the buyer pay the seller's fees?", "does the seller pay the buyer's fees?", "order"),
        ("why is my laptop fan loud?", "how do I make my laptop fan loud?", "cause"),
    ],
)
def test_guards_refuse_near_misses_whatever_the_cosine(query: str, cached: str, guard: str) -> None:
    verdict = default_judge().verdict(normalize(query), normalize(cached), 0.999)
    assert (verdict.accepted, verdict.reason) == (False, guard)


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("how do I water an orchid?", "how do I water a cactus?"),
        ("opening hours of the museum in Oslo", "opening hours of the museum in Bergen"),
        ("how do I renew my library card?", "how do I replace my library card?"),
    ],
)
def test_the_model_refuses_a_swapped_content_word(
    embedder: Embedder, query: str, cached: str
) -> None:
    verdict = default_judge().verdict(
        normalize(query), normalize(cached), cosine(embedder, query, cached)
    )
    assert (verdict.accepted, verdict.reason) == (False, MODEL)


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        ("How do I reset the thermostat?", "how can I reset my thermostat", SAME_WORDS),
        ("tickets for six adults", "Tickets for 6 adults?", SAME_WORDS),
        ("is the museum wheelchair accessible?", "can wheelchair users visit the museum?", MODEL),
    ],
)
def test_accepts_clear_paraphrases(
    embedder: Embedder, query: str, cached: str, reason: str
) -> None:
    verdict = default_judge().verdict(
        normalize(query), normalize(cached), cosine(embedder, query, cached)
    )
    assert (verdict.accepted, verdict.reason) == (True, reason)


def test_a_stricter_judge_accepts_less() -> None:
    query, cached = "what is the refund policy for concert tickets?", "concert ticket refund policy"
    probability = default_judge().verdict(query, cached, 0.9).probability
    assert Judge(min_probability=probability).accepts(query, cached, 0.9)
    assert not Judge(min_probability=min(probability + 0.01, 1.0)).accepts(query, cached, 0.9)


# ---------------------------------------------------------------------------- through a store

DOCS = [
    {"id": "to-account", "text": "Transfers to your account arrive within one business day."},
    {"id": "from-account", "text": "Transfers from your account to another bank take 3 days."},
    {"id": "fees", "text": "Orders over 50 euros ship free; below that shipping costs 4.90 euros."},
    {"id": "returns", "text": "You can return any item within 30 days for a full refund."},
    {"id": "2fa", "text": "Turn on two-factor authentication under Settings, then Security."},
]


@pytest.fixture
def opened(tmp_path: Path, embedder: Embedder) -> Iterator[ragstore.Store]:
    """A store with a few documents, its cache at the default settings."""
    with ragstore.open(tmp_path / "store") as store:
        store.create_collection("docs", embedder=embedder).upsert(DOCS)
        store.configure_cache(settings=CacheSettings())
        yield store


def level(hits: list[ragstore.Hit]) -> str | None:
    assert hits
    return hits[0].cached


def test_a_paraphrase_is_a_semantic_hit(opened: ragstore.Store, embedder: Embedder) -> None:
    docs = opened.collection("docs", embedder=embedder)
    first = docs.search("how long do I have to return an item?", k=2, cache=True)
    again = docs.search("How long do I have to return an item", k=2, cache=True)
    assert level(first) is None and level(again) == "semantic"
    assert [h.chunk_id for h in again] == [h.chunk_id for h in first]
    assert opened.cache.stats().semantic_hits == 1


def test_near_misses_are_misses(opened: ragstore.Store, embedder: Embedder) -> None:
    docs = opened.collection("docs", embedder=embedder)
    docs.search("how do I transfer money to my account?", k=2, cache=True)
    direction = docs.search("how do I transfer money from my account?", k=2, cache=True)
    docs.search("shipping cost for orders over 50 euros", k=2, cache=True)
    number = docs.search("shipping cost for orders over 40 euros", k=2, cache=True)
    assert level(direction) is None and level(number) is None
    stats = opened.cache.stats()
    assert (stats.semantic_hits, stats.misses) == (0, 4)


def test_without_the_judge_cosine_alone_serves_the_near_miss(
    opened: ragstore.Store, embedder: Embedder
) -> None:
    opened.configure_cache(settings=CacheSettings(judge=False, threshold=0.95))
    docs = opened.collection("docs", embedder=embedder)
    docs.search("how do I transfer money to my account?", k=2, cache=True)
    near_miss = docs.search("how do I transfer money from my account?", k=2, cache=True)
    assert level(near_miss) == "semantic"

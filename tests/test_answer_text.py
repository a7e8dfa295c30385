"""Context packing, prompts, citation mapping and extractive answers, on real hits from a
real store of ``examples/sample-docs`` and the real embedding model."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ragstore
from ragstore.answer.context import (
    PROMPT_VERSION,
    Passage,
    cite,
    format_passage,
    normalize,
    pack,
    prompt,
)
from ragstore.answer.extractive import extract, sentence_spans
from ragstore.answer.types import Citation
from ragstore.errors import InvalidInput
from ragstore.types import Hit

SAMPLE_DOCS = Path(__file__).resolve().parent.parent / "examples" / "sample-docs"
REFUNDS = "policies/refunds.md"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ragstore.Store]:
    """One store for the module: ``docs`` (default chunking) and ``small`` (chunks of 40
    tokens that overlap by 16), both holding the sample documents."""
    with ragstore.open(tmp_path_factory.mktemp("answer-text") / "store") as opened:
        opened.collection("docs").ingest([SAMPLE_DOCS])
        opened.create_collection("small", chunk_size=40, chunk_overlap=16).ingest([SAMPLE_DOCS])
        yield opened


@pytest.fixture(scope="module")
def col(store: ragstore.Store) -> ragstore.Collection:
    return store.collection("docs")


@pytest.fixture(scope="module")
def texts(col: ragstore.Collection) -> dict[str, str]:
    """Each sample document's text, by id."""
    return {doc.id: doc.text or "" for doc in col.get(limit=100)}


@pytest.fixture(scope="module")
def count_tokens(col: ragstore.Collection) -> Callable[[str], int]:
    """Tokens of a text by the embedding model's own tokenizer."""
    embedder = col.embedder
    assert embedder is not None
    return lambda text: len(embedder.token_offsets(text))


def cost(passage: Passage, count_tokens: Callable[[str], int]) -> int:
    return count_tokens(format_passage(passage.marker, passage.hit))


def by_doc(hits: list[Hit], doc_id: str) -> Hit:
    return next(hit for hit in hits if hit.doc_id == doc_id)


# --- pack ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 30, 90, 200, 10_000])
def test_pack_stays_within_budget_best_first(
    col: ragstore.Collection, count_tokens: Callable[[str], int], budget: int
) -> None:
    hits = col.search("refunds, shipping and passwords", k=10)
    passages = pack(hits, budget_tokens=budget, count_tokens=count_tokens)
    assert sum(cost(p, count_tokens) for p in passages) <= budget
    assert [p.marker for p in passages] == list(range(1, len(passages) + 1))
    ranks = [hits.index(p.hit) for p in passages]
    assert ranks == sorted(ranks)
    if budget == 10_000:
        assert [p.hit for p in passages] == hits


def test_pack_skips_a_passage_too_big_and_packs_a_smaller_one_after_it(
    col: ragstore.Collection, count_tokens: Callable[[str], int]
) -> None:
    hits = col.search("how long do I have to return headphones?", k=5)
    big, small = by_doc(hits, REFUNDS), by_doc(hits, "p-100")
    budget = count_tokens(format_passage(1, small))
    assert count_tokens(format_passage(1, big)) > budget
    passages = pack([big, small], budget_tokens=budget, count_tokens=count_tokens)
    assert passages == [Passage(1, small)]


def test_pack_drops_the_same_chunk_and_near_identical_text(
    col: ragstore.Collection, count_tokens: Callable[[str], int]
) -> None:
    hits = col.search("refund policy for electronics", k=6)
    first = hits[0]
    shouted = replace(first, doc_id="copy", chunk_id="copy#0", text=f"  {first.text.upper()}!! ")
    sentence = first.text.split("\n\n")[1]
    part = replace(first, doc_id="quote", chunk_id="quote#0", text=sentence, start=0)
    repeated = [*hits, first, shouted, part]
    passages = pack(repeated, budget_tokens=10_000, count_tokens=count_tokens)
    assert [p.hit for p in passages] == hits


def test_pack_merges_overlapping_chunks_of_a_document(
    store: ragstore.Store, texts: dict[str, str], count_tokens: Callable[[str], int]
) -> None:
    small = store.collection("small")
    hits = small.search("refund window for electronics", k=20, where={"source": REFUNDS})
    assert len(hits) >= 3 and any(a.end > b.start > a.start for a in hits for b in hits)
    passages = pack(hits, budget_tokens=10_000, count_tokens=count_tokens)
    assert len(passages) < len(hits)
    for passage in passages:
        hit = passage.hit
        assert hit.text == texts[REFUNDS][hit.start : hit.end]
    spans = sorted((p.hit.start, p.hit.end) for p in passages)
    assert all(end <= start for (_, end), (start, _) in pairwise(spans))
    covered = {i for p in passages for i in range(p.hit.start, p.hit.end)}
    assert covered == {i for h in hits for i in range(h.start, h.end)}
    assert passages[0].hit.chunk_id == hits[0].chunk_id


def test_pack_refuses_a_negative_budget(col: ragstore.Collection) -> None:
    with pytest.raises(InvalidInput) as raised:
        pack(col.search("refunds", k=2), budget_tokens=-1, count_tokens=len)
    assert raised.value.field == "budget_tokens"


# --- prompt -------------------------------------------------------------------------


def test_prompt_holds_each_passage_under_its_marker_and_the_question(
    col: ragstore.Collection,
) -> None:
    passages = pack(col.search("refunds and shipping", k=4), budget_tokens=10_000, count_tokens=len)
    system, user = prompt("How long do refunds take?", passages)
    assert system["role"] == "system" and user["role"] == "user"
    assert "[n]" in system["content"] and "only" in system["content"]
    content = user["content"]
    places = [content.index(f"[{p.marker}] ") for p in passages]
    assert places == sorted(places)
    for passage in passages:
        assert passage.hit.text.strip() in content
        assert passage.hit.source is not None and passage.hit.source in content
    assert content.rstrip().endswith("How long do refunds take?")
    assert PROMPT_VERSION


# --- cite ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passages(col: ragstore.Collection) -> list[Passage]:
    hits = col.search("refunds, shipping and headphones", k=3)
    return pack(hits, budget_tokens=10_000, count_tokens=len)


def test_cite_maps_markers_to_their_chunks(passages: list[Passage]) -> None:
    answer = "Returns take 30 days [2]. Shipping is free [1, 3]. Refunds come later [^2]."
    text, citations, dropped = cite(answer, passages)
    assert text == "Returns take 30 days [2]. Shipping is free [1][3]. Refunds come later [2]."
    assert [c.marker for c in citations] == [2, 1, 3]
    assert dropped == 0
    for citation in citations:
        hit = passages[citation.marker - 1].hit
        assert (citation.doc_id, citation.chunk_id) == (hit.doc_id, hit.chunk_id)
        assert (citation.start, citation.end, citation.source) == (hit.start, hit.end, hit.source)
        assert hit.source is not None and citation.title == hit.source.rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("written", "markers"),
    [
        ("[1][3]", [1, 3]),
        ("[1] [3]", [1, 3]),
        ("[1, 3]", [1, 3]),
        ("[1;3]", [1, 3]),
        ("[^1][^3]", [1, 3]),
        ("[1-3]", [1, 2, 3]),
        ("[1\u20133]", [1, 2, 3]),
        ("[Passage 3]", [3]),
        ("[source 1, 3]", [1, 3]),
        ("[3, 3]", [3]),
    ],
)
def test_cite_reads_the_usual_marker_forms(
    passages: list[Passage], written: str, markers: list[int]
) -> None:
    text, citations, dropped = cite(f"It is so {written}.", passages)
    assert text == "It is so " + "".join(f"[{m}]" for m in markers) + "."
    assert [c.marker for c in citations] == markers
    assert dropped == 0


@pytest.mark.parametrize(
    ("written", "clean", "dropped"),
    [
        ("Free [9]. Fast [2][7].", "Free. Fast [2].", 2),
        (
            "[8] Free shipping [9] over 50 euros [4, 5].\nNext line [1]",
            "Free shipping over 50 euros.\nNext line [1]",
            4,
        ),
        ("Free [1, 12] shipping", "Free [1] shipping", 1),
        ("A [0] b", "A b", 1),
    ],
)
def test_cite_removes_and_counts_markers_that_name_no_passage(
    passages: list[Passage], written: str, clean: str, dropped: int
) -> None:
    assert len(passages) == 3
    text, _, count = cite(written, passages)
    assert (text, count) == (clean, dropped)


def test_cite_leaves_code_and_links_alone(passages: list[Passage]) -> None:
    written = "Use `items[1]` and\n```\nx = y[9]\n```\nsee [2](https://example.com) [1]"
    text, citations, dropped = cite(written, passages)
    assert text == written
    assert [c.marker for c in citations] == [1]
    assert dropped == 0


def test_cite_titles(passages: list[Passage]) -> None:
    hit = passages[0].hit
    titled = Passage(1, replace(hit, metadata={**hit.metadata, "title": "Refund policy"}))
    untitled = Passage(2, replace(hit, source=None, metadata={}))
    _, citations, _ = cite("A [1]. B [2].", [titled, untitled])
    assert [c.title for c in citations] == ["Refund policy", None]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(alphabet="ab .,\n", max_size=8), st.integers(0, 6), st.booleans()),
        max_size=8,
    )
)
def test_cite_keeps_the_known_markers_and_drops_the_rest(
    passages: list[Passage], pieces: list[tuple[str, int, bool]]
) -> None:
    written = "".join(f"{words} [{'^' if caret else ''}{n}] x" for words, n, caret in pieces)
    text, citations, dropped = cite(written, passages)
    numbers = [n for _, n, _ in pieces]
    assert dropped == sum(1 for n in numbers if not 1 <= n <= 3)
    assert [c.marker for c in citations] == list(dict.fromkeys(n for n in numbers if 1 <= n <= 3))
    assert sorted(map(int, re.findall(r"\[(\d+)\]", text))) == sorted(
        n for n in numbers if 1 <= n <= 3
    )
    assert text == text.strip()


# --- sentences ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One here. Two there! Three? Four", ["One here.", "Two there!", "Three?", "Four"]),
        ("Bring e.g. a receipt. Dr. Lee signs.", ["Bring e.g. a receipt.", "Dr. Lee signs."]),
        (
            "It costs 3.5 euros. Done at 2 p.m. today.",
            ["It costs 3.5 euros.", "Done at 2 p.m. today."],
        ),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        (
            "# Title\n\nA line\nwrapped here.\n- item one\n- item two",
            ["# Title", "A line\nwrapped here.", "item one", "item two"],
        ),
        ("\u7b2c\u4e00\u3002\u7b2c\u4e8c\uff01", ["\u7b2c\u4e00\u3002", "\u7b2c\u4e8c\uff01"]),
        ("  \n\n ", []),
    ],
)
def test_sentence_spans(text: str, sentences: list[str]) -> None:
    assert [text[s:e] for s, e in sentence_spans(text)] == sentences


@given(st.text(alphabet=st.sampled_from("ab A.!?\n -#\u3002\"')"), max_size=60))
def test_sentence_spans_are_ordered_trimmed_slices(text: str) -> None:
    spans = sentence_spans(text)
    assert all(0 <= s < e <= len(text) for s, e in spans)
    assert all(e <= s2 for (_, e), (s2, _) in pairwise(spans))
    assert all(text[s:e] == text[s:e].strip() for s, e in spans)
    inside = {i for s, e in spans for i in range(s, e)}
    outside = {text[i] for i in range(len(text)) if i not in inside}
    assert outside <= {" ", "\n", "-"}  # blanks, and the bullets of list items


# --- extract ------------------------------------------------------------------------


def spaced(text: str) -> str:
    return " ".join(text.split())


def check_answer(
    text: str, citations: list[Citation], texts: dict[str, str], hits: list[Hit]
) -> None:
    """Each citation's slice of its document is a whole sentence, written in the text
    before its marker; markers run 1..n; each document's sentences are in offset order."""
    expected = " ".join(
        f"{spaced(texts[c.doc_id][c.start : c.end])} [{c.marker}]" for c in citations
    )
    assert text == expected
    assert [c.marker for c in citations] == list(range(1, len(citations) + 1))
    for citation in citations:
        sentence = texts[citation.doc_id][citation.start : citation.end]
        assert (citation.start, citation.end) in {
            (s, e) for s, e in sentence_spans(texts[citation.doc_id])
        }, sentence
        chunk = next(h for h in hits if h.chunk_id == citation.chunk_id)
        assert chunk.start <= citation.start < chunk.end
    docs = [c.doc_id for c in citations]
    assert docs == sorted(docs, key=docs.index)  # each document's sentences together
    for doc in set(docs):
        starts = [c.start for c in citations if c.doc_id == doc]
        assert starts == sorted(starts)


def test_extract_answers_the_return_window_from_the_refund_policy(
    col: ragstore.Collection, texts: dict[str, str]
) -> None:
    question = "how long do I have to return headphones?"
    hits = col.search(question, k=5)
    assert col.embedder is not None
    text, citations = extract(question, hits, embedder=col.embedder)
    refunds = texts[REFUNDS]
    start = refunds.index("Electronics have a shorter window")
    end = refunds.index("restocking fee.") + len("restocking fee.")
    window = next(c for c in citations if c.doc_id == REFUNDS and c.start == start)
    assert refunds[window.start : window.end] == refunds[start:end]
    assert window.end == end and window.source == REFUNDS and window.title == "refunds.md"
    assert f"{spaced(refunds[start:end])} [{window.marker}]" in text
    assert citations[0].doc_id == REFUNDS
    check_answer(text, citations, texts, hits)


@pytest.mark.parametrize(
    "question",
    [
        "what happens after too many failed password attempts?",
        "how many requests per minute can I send?",
        "do gift cards expire?",
        "how long does shipping take?",
    ],
)
def test_extract_cites_whole_sentences_in_reading_order(
    col: ragstore.Collection, texts: dict[str, str], question: str
) -> None:
    assert col.embedder is not None
    hits = col.search(question, k=5)
    text, citations = extract(question, hits, embedder=col.embedder)
    assert citations
    check_answer(text, citations, texts, hits)


def test_extract_over_overlapping_chunks_cites_whole_sentences(
    store: ragstore.Store, texts: dict[str, str]
) -> None:
    small = store.collection("small")
    assert small.embedder is not None
    question = "when are refunds paid back?"
    hits = small.search(question, k=20, where={"source": REFUNDS})
    text, citations = extract(question, hits, embedder=small.embedder, max_sentences=4)
    assert citations
    check_answer(text, citations, texts, hits)
    assert any("5 business days" in texts[REFUNDS][c.start : c.end] for c in citations)


def test_extract_picks_the_best_and_skips_repeats(
    col: ragstore.Collection, texts: dict[str, str]
) -> None:
    assert col.embedder is not None
    question = "how long do I have to return headphones?"
    hits = col.search(question, k=5)
    best_text, best = extract(question, hits, embedder=col.embedder, max_sentences=1)
    assert len(best) == 1 and best_text.endswith(" [1]") and "[2]" not in best_text
    _, three = extract(question, hits, embedder=col.embedder, max_sentences=3)
    assert (best[0].doc_id, best[0].start) in {(c.doc_id, c.start) for c in three}
    assert hits[0].doc_id == REFUNDS and hits[0].start == 0
    copy = replace(hits[0], doc_id="copy", chunk_id="copy#0")
    _, again = extract(question, [hits[0], copy], embedder=col.embedder, max_sentences=3)
    said = [normalize(texts[REFUNDS][c.start : c.end]) for c in again]
    assert len(said) >= 2 and len(said) == len(set(said))


def test_extract_with_nothing_to_answer_from(col: ragstore.Collection) -> None:
    assert col.embedder is not None
    assert extract("how long do returns take?", [], embedder=col.embedder) == ("", [])
    question = "what is the capital of France?"
    hits = col.search(question, k=5)
    assert extract(question, hits, embedder=col.embedder) == ("", [])
    with pytest.raises(InvalidInput) as raised:
        extract(question, hits, embedder=col.embedder, max_sentences=0)
    assert raised.value.field == "max_sentences"

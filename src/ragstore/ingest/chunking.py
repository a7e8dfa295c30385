"""Split a document's text into token-sized spans that keep their char offsets.

The text is tokenized once; chunks are then chosen in token index space. Each chunk
ends at the strongest boundary in the last half of its window: a paragraph break, else
a sentence end, else a word boundary, else a hard cut at the token limit.

Among boundaries of the same strength the cut is content-defined: the one whose
surrounding text hashes highest wins, not simply the last one. A greedy "last
boundary" rule makes every later cut depend on where the previous one fell, so an
edit near the start shifts chunks all the way to the end; with content-defined cuts,
chunking falls back into step shortly after an edit, paragraphs far from it keep
their chunk texts, and re-ingesting the document re-embeds only the chunks near it.

A text longer than :data:`SECTION_CHARS` is chunked section by section, so memory is
bounded by the section, not the document: tokenizing 10 MB of text at once took 1.1 GB
here (about 850 bytes per token: the tokenizer's own buffers and the Python lists of its
output). Sections end at the strongest boundary in the last half of their window,
content-defined the same way, so an edit moves at most the section it falls in; chunks
do not overlap across a section's end, which is a paragraph break wherever the window
holds one. A text that fits in one section is chunked exactly as a whole.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from ragstore.errors import InvalidInput
from ragstore.types import Span

TokenOffsets = Callable[[str], list[tuple[int, int]]]
"""Maps a text to the char ``(start, end)`` of each model token, no special tokens."""

MIN_CHUNK_SIZE = 8
SECTION_CHARS = 1 << 20
"""Longest text tokenized at once; a longer one is chunked section by section."""

# Boundary strength of the cut just before a token, best last.
_NONE, _WORD, _SENTENCE, _PARAGRAPH = 0, 1, 2, 3
# Tokens before a cut whose text, with the token after it, is hashed to rank the cut.
_CONTEXT_TOKENS = 4

# Full-width stops (ideographic full stop, exclamation and question marks) end a
# sentence even without whitespace after them.
_CJK_STOPS = "\u3002\uff01\uff1f"
# Sentence punctuation, optionally followed by closing quotes (also curly) or brackets.
_SENTENCE_END = re.compile(f"[.!?{_CJK_STOPS}][\"')\\]\u201d\u2019]*$")
# Where a section may end, strongest first: just after a paragraph break, a sentence
# end or any whitespace. Chars either side of a candidate hashed to rank it.
_SECTION_CUTS = (
    re.compile(r"\n[^\S\n]*\n\s*"),
    re.compile(f"[.!?][\"')\\]\u201d\u2019]*\\s+|[{_CJK_STOPS}]\\s*|\\n\\s*"),
    re.compile(r"\s+"),
)
_SECTION_CONTEXT = 64


def chunk_text(
    text: str, token_offsets: TokenOffsets, *, chunk_size: int = 256, overlap: int = 32
) -> list[Span]:
    """Split ``text`` into spans of at most ``chunk_size`` tokens.

    Consecutive spans share about ``overlap`` tokens (starting at a word start when
    there is one), except across the end of a :data:`SECTION_CHARS` section. Each span
    is stripped of surrounding whitespace and satisfies
    ``span.text == text[span.start:span.end]``. Whitespace-only text gives ``[]``;
    text that fits in ``chunk_size`` tokens gives exactly one span.

    Raises:
        InvalidInput: ``chunk_size`` below 8, or ``overlap`` outside
            ``[0, chunk_size // 2)``.
    """
    _validate(chunk_size, overlap)
    spans: list[Span] = []
    for start, end in _sections(text, SECTION_CHARS):
        section = _chunk_section(text[start:end], token_offsets, chunk_size, overlap)
        spans.extend(Span(start + s.start, start + s.end, s.text) for s in section)
    return spans


def _chunk_section(
    text: str, token_offsets: TokenOffsets, chunk_size: int, overlap: int
) -> list[Span]:
    """:func:`chunk_text` of a text tokenized whole."""
    if not text.strip():
        return []
    offsets = token_offsets(text)
    if len(offsets) <= chunk_size:
        return _spans(text, [(0, len(text))])
    ranks = _boundary_ranks(text, offsets)
    ranges = _token_ranges(ranks, chunk_size, overlap)
    return _spans(text, [_char_range(offsets, start, end, len(text)) for start, end in ranges])


def hf_token_offsets(tokenizer: Any) -> TokenOffsets:
    """Adapt a Hugging Face *fast* tokenizer into a :data:`TokenOffsets` function.

    No special tokens and no truncation, so texts of any length are covered; the
    "sequence longer than the model maximum" warning is not emitted, since the text is
    only measured here, never fed to the model whole.

    Raises:
        InvalidInput: the tokenizer is not a fast tokenizer (no offset mapping).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInput("offsets need a fast (Rust-backed) tokenizer", field="tokenizer")

    def offsets(text: str) -> list[tuple[int, int]]:
        encoding = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            truncation=False,
            verbose=False,
        )
        mapping: list[tuple[int, int]] = encoding["offset_mapping"]
        return mapping

    return offsets


def _validate(chunk_size: int, overlap: int) -> None:
    """Reject sizes that could not make progress or would make tiny chunks."""
    if chunk_size < MIN_CHUNK_SIZE:
        raise InvalidInput(
            f"chunk_size must be at least {MIN_CHUNK_SIZE}, got {chunk_size}", field="chunk_size"
        )
    if not 0 <= overlap < chunk_size // 2:
        raise InvalidInput(
            f"chunk_overlap must be in [0, {chunk_size // 2}) for chunk_size {chunk_size},"
            f" got {overlap}",
            field="chunk_overlap",
        )


def _sections(text: str, size: int) -> Iterator[tuple[int, int]]:
    """Char ``[start, end)`` of consecutive sections of at most ``size`` chars."""
    start = 0
    while len(text) - start > size:
        end = _section_end(text, start + size // 2, start + size)
        yield start, end
        start = end
    yield start, len(text)


def _section_end(text: str, low: int, high: int) -> int:
    """Where a section ending in ``[low, high]`` ends: just after the best-ranked cut of
    the strongest kind there is, else (no whitespace at all) at ``high``."""
    for pattern in _SECTION_CUTS:
        cuts = [match.span() for match in pattern.finditer(text, low, high)]
        if cuts:
            return max(cuts, key=lambda cut: (_section_rank(text, *cut), cut))[1]
    return high


def _section_rank(text: str, start: int, end: int) -> int:
    """Hash of the text around the cut ``text[start:end]``."""
    context = text[max(0, start - _SECTION_CONTEXT) : end + _SECTION_CONTEXT]
    return zlib.crc32(context.encode("utf-8", "surrogatepass"))


def _boundary_ranks(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Rank ``(strength, content hash)`` of the cut before each token; higher is better.

    Index 0 and ``len(offsets)`` are never ranked (they are not cuts inside the text).
    """
    ranks = [(_NONE, 0)] * (len(offsets) + 1)
    for index in range(1, len(offsets)):
        level = _level(text, offsets[index - 1][1], offsets[index][0])
        if level > _NONE:
            context = text[offsets[max(0, index - _CONTEXT_TOKENS)][0] : offsets[index][1]]
            ranks[index] = (level, zlib.crc32(context.encode("utf-8", "surrogatepass")))
    return ranks


def _level(text: str, prev_end: int, next_start: int) -> int:
    """Classify the gap ``text[prev_end:next_start]`` between two tokens."""
    gap = text[prev_end:next_start]
    if not any(char.isspace() for char in gap):
        stop = text[prev_end - 1 : prev_end]
        return _SENTENCE if stop and stop in _CJK_STOPS else _NONE
    newlines = gap.count("\n")
    if newlines >= 2:
        return _PARAGRAPH
    if newlines == 1 or _SENTENCE_END.search(text, max(0, prev_end - 4), prev_end):
        return _SENTENCE
    return _WORD


def _token_ranges(
    ranks: list[tuple[int, int]], chunk_size: int, overlap: int
) -> list[tuple[int, int]]:
    """Token ``[start, end)`` of each chunk, in order, covering every token."""
    total = len(ranks) - 1
    ranges: list[tuple[int, int]] = []
    start = 0
    while True:
        end = _chunk_end(ranks, start, total, chunk_size)
        ranges.append((start, end))
        if end == total:
            return ranges
        start = _next_start(ranks, start, end, overlap)


def _chunk_end(ranks: list[tuple[int, int]], start: int, total: int, chunk_size: int) -> int:
    """End of the chunk at ``start``: the best-ranked cut in the last half of its window.

    With no boundary there at all, every rank ties and the latest cut (the limit) wins.
    """
    limit = start + chunk_size
    if limit >= total:
        return total
    window = range(start + chunk_size // 2, limit + 1)
    return max(window, key=lambda index: (ranks[index], index))


def _next_start(ranks: list[tuple[int, int]], start: int, end: int, overlap: int) -> int:
    """Start of the next chunk: ``overlap`` tokens back from ``end``, moved to a word start."""
    earliest = max(end - overlap, start + 1)
    for index in range(earliest, end + 1):
        if ranks[index][0] >= _WORD:
            return index
    return earliest


def _char_range(
    offsets: list[tuple[int, int]], start: int, end: int, length: int
) -> tuple[int, int]:
    """Char range of tokens ``[start, end)``, running up to the next token's start.

    Reaching to the next token (rather than stopping at this one's last char) keeps
    chars the tokenizer drops (control chars, zero-width spaces) inside some chunk.
    """
    char_start = 0 if start == 0 else offsets[start][0]
    char_end = length if end == len(offsets) else offsets[end][0]
    return char_start, char_end


def _spans(text: str, char_ranges: list[tuple[int, int]]) -> list[Span]:
    """Spans for ``char_ranges`` with surrounding whitespace trimmed; empty ones dropped."""
    spans = []
    for start, end in char_ranges:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            spans.append(Span(start + lead, start + lead + len(stripped), stripped))
    return spans

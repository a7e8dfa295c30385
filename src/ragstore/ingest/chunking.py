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
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Any

from ragstore.errors import InvalidInput
from ragstore.types import Span

TokenOffsets = Callable[[str], list[tuple[int, int]]]
"""Maps a text to the char ``(start, end)`` of each model token, no special tokens."""

MIN_CHUNK_SIZE = 8

# Boundary strength of the cut just before a token, best last.
_NONE, _WORD, _SENTENCE, _PARAGRAPH = 0, 1, 2, 3
# Tokens before a cut whose text, with the token after it, is hashed to rank the cut.
_CONTEXT_TOKENS = 4

# Full-width stops (ideographic full stop, exclamation and question marks) end a
# sentence even without whitespace after them.
_CJK_STOPS = "\u3002\uff01\uff1f"
# Sentence punctuation, optionally followed by closing quotes (also curly) or brackets.
_SENTENCE_END = re.compile(f"[.!?{_CJK_STOPS}][\"')\\]\u201d\u2019]*$")


def chunk_text(
    text: str, token_offsets: TokenOffsets, *, chunk_size: int = 256, overlap: int = 32
) -> list[Span]:
    """Split ``text`` into spans of at most ``chunk_size`` tokens.

    Consecutive spans share about ``overlap`` tokens (starting at a word start when
    there is one). Each span is stripped of surrounding whitespace and satisfies
    ``span.text == text[span.start:span.end]``. Whitespace-only text gives ``[]``;
    text that fits in ``chunk_size`` tokens gives exactly one span.

    Raises:
        InvalidInput: ``chunk_size`` below 8, or ``overlap`` outside
            ``[0, chunk_size // 2)``.
    """
    _validate(chunk_size, overlap)
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
            truncation=False,
            verbose=False,
        )
        return [(int(start), int(end)) for start, end in encoding["offset_mapping"]]

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

"""Answers without a language model: the sentences of the best hits that answer best.

The top hits (overlapping chunks of one document merged first, so a sentence cut by a
chunk's end is whole again) are split into sentences. Each sentence is scored against
the question on two fixed scales, both in [0, 1] for sentences that could answer:

- ``dense``: cosine between the question (the query encoder) and the sentence (the
  passage encoder, all sentences in one batched call);
- ``lexical``: BM25 term overlap with the question (:func:`ragstore.terms.stems`, the
  keyword index's analysis), each question term weighted by its IDF over the candidate
  sentences and its count saturated as in BM25, divided by the score of a sentence of
  average length holding each question term once (capped at 1): 0 means no question
  term, 1 all of them.

``score = 0.7 * dense + 0.3 * lexical``: the encoder judges meaning (``headphones``
against ``electronics``), the overlap breaks ties toward sentences that use the
question's own words (numbers, names, codes the encoder blurs).

The best sentences are picked greedily, skipping one that nearly repeats a picked one
(cosine above 0.9, or the same words), and none scoring under 60 % of the best, so a
clear answer is not padded with weak ones, nor under ``min_score`` (0.15 by default):
with all-MiniLM-L6-v2 over ``examples/sample-docs``, the best sentence for a question
the documents answer scored 0.40 to 0.77, for one they do not (the capital of France,
baking bread) 0.07 to 0.11. They are returned in reading order: the
document of the best sentence first, each document's sentences by offset.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragstore.answer.context import citation, merge_spans, normalize
from ragstore.answer.types import Citation
from ragstore.embed.base import Embedder, Vectors
from ragstore.errors import InvalidInput
from ragstore.terms import stems
from ragstore.types import Hit

EXTRACTIVE_VERSION = "1"
"""Version of the sentence choice; an answer cache key for extractive answers may hold it."""
TOP_HITS = 5
"""Hits whose sentences are candidates; the rest rarely hold a better one."""
DENSE_WEIGHT = 0.7
LEXICAL_WEIGHT = 0.3
DUPLICATE_COSINE = 0.9
RELATIVE_FLOOR = 0.6
"""A sentence scoring under this share of the best one is not picked."""
MIN_SCORE = 0.15
"""A sentence scoring under this is not picked, however it ranks."""
BM25_K1 = 1.2
BM25_B = 0.75
EMBED_CHARS = 400
"""Longest start of a sentence embedded: a longer one (a list or table run together)
would cost as much as several sentences."""
MIN_WORDS = 6
"""An unpunctuated line needs this many words to count as a sentence (not a heading)."""

# A sentence ends at . ! ? (with closing quotes or brackets) before whitespace, or at a
# full-width stop; blocks end at blank lines and before list items and headings.
_SENTENCE_END = re.compile(
    "[.!?]+[\"')\\]\u201d\u2019]*\\s+|[\u3002\uff01\uff1f][\"')\\]\u201d\u2019]*\\s*"
)
_BLOCK_BREAK = re.compile(r"\n[^\S\n]*\n\s*|\n(?=[^\S\n]*(?:[-*+\u2022]\s|\d{1,3}[.)]\s|[#|]))")
_BULLET = re.compile(r"(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_WORD = re.compile(r"\w+")
_ABBREVIATIONS = frozenset(
    {"e.g", "i.e", "vs", "cf", "al", "fig", "mr", "mrs", "ms", "dr", "prof", "st"}
)
_CLOSERS = "\"')]\u201d\u2019"


@dataclass(frozen=True, slots=True)
class _Sentence:
    hit: Hit  # the chunk, or merged chunks, it comes from
    start: int  # in the document's text
    end: int
    text: str


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Char ``(start, end)`` of each sentence of ``text``, blanks and bullets trimmed."""
    spans: list[tuple[int, int]] = []
    block_start = 0
    for brk in [*_BLOCK_BREAK.finditer(text), None]:
        block_end = len(text) if brk is None else brk.start()
        spans += _split_block(text, block_start, block_end)
        block_start = block_end if brk is None else brk.end()
    return spans


def _split_block(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentences of ``text[start:end]``, a block with no blank line in it."""
    spans: list[tuple[int, int]] = []
    for match in _SENTENCE_END.finditer(text, start, end):
        if _ends_sentence(text, match):
            spans.append((start, match.start() + len(match.group().rstrip())))
            start = match.end()
    spans.append((start, end))
    return [trimmed for s, e in spans if (trimmed := _trim(text, s, e))[0] < trimmed[1]]


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    """Whether the stop ``match`` ends a sentence: not after an abbreviation or an
    initial, not before a lower-case letter."""
    after = text[match.end() : match.end() + 1]
    if after.islower():
        return False
    mark = match.group().rstrip().rstrip(_CLOSERS)
    if not mark.endswith(".") or len(mark) > 1:
        return True
    begin = match.start()
    while begin > 0 and (text[begin - 1].isalnum() or text[begin - 1] in "._"):
        begin -= 1
    before = text[begin : match.start()]
    return not (len(before) == 1 and before.isalpha()) and before.lower() not in _ABBREVIATIONS


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without surrounding whitespace or a leading list bullet."""
    piece = text[start:end]
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    bullet = _BULLET.match(text, start, end)
    return (bullet.end(), end) if bullet else (start, end)


def is_sentence(text: str) -> bool:
    """Whether a piece can stand as an answer: punctuated, or long enough not to be a
    heading; never a Markdown heading or table row."""
    if text.startswith(("#", "|")):
        return False
    ends = text.rstrip(_CLOSERS)[-1:] in ".!?:;\u3002\uff01\uff1f"
    return ends or len(_WORD.findall(text)) >= MIN_WORDS


def _embed_sentences(embedder: Embedder, texts: list[str]) -> Vectors:
    """The sentences' vectors: with the query encoder where the embedder has a fast one
    (``embed_queries``: short texts, as queries are), else as one batch of documents
    (one request to a remote embedder)."""
    embed_queries = getattr(embedder, "embed_queries", None)
    if callable(embed_queries):
        vectors: Vectors = embed_queries(texts)
        return vectors
    return embedder.embed_documents(texts)


def extract(
    question: str,
    hits: Sequence[Hit],
    *,
    embedder: Embedder,
    max_sentences: int = 3,
    min_score: float = MIN_SCORE,
    query_vector: Vectors | None = None,
) -> tuple[str, list[Citation]]:
    """The sentences of ``hits`` that best answer ``question``, and their citations.

    The text is the sentences in reading order, each followed by its ``[n]`` marker;
    each citation's ``start``/``end`` locate its sentence in the document's text. No
    hits, or no sentence in them scoring ``min_score``, give ``("", [])``.
    ``query_vector``, the question's ``embedder.embed_query`` when the caller has it,
    saves embedding it again.

    Raises:
        InvalidInput: ``max_sentences`` below 1.
    """
    if max_sentences < 1:
        raise InvalidInput(
            f"max_sentences must be at least 1, got {max_sentences}", field="max_sentences"
        )
    candidates = _candidates(hits[:TOP_HITS])
    if not candidates:
        return "", []
    vectors = _embed_sentences(embedder, [s.text[:EMBED_CHARS] for s in candidates])
    if query_vector is None:
        query_vector = embedder.embed_query(question)
    dense = vectors @ query_vector
    scores = DENSE_WEIGHT * dense + LEXICAL_WEIGHT * lexical_scores(
        question, [s.text for s in candidates]
    )
    chosen = _pick(candidates, scores, vectors, max_sentences, min_score)
    return _render(chosen, candidates, hits)


def _candidates(hits: Sequence[Hit]) -> list[_Sentence]:
    """The distinct sentences of ``hits``, overlapping chunks merged."""
    found: list[_Sentence] = []
    seen: set[tuple[str, int]] = set()
    for hit in _merged(hits):
        spans = sentence_spans(hit.text)
        for index, (start, end) in enumerate(spans):
            text = hit.text[start:end]
            key = (hit.doc_id, hit.start + start)
            if key in seen or not is_sentence(text):
                continue
            if index == 0 and hit.start > 0 and text[:1].islower():
                continue  # the tail of a sentence cut by the chunk's start
            seen.add(key)
            found.append(_Sentence(hit, hit.start + start, hit.start + end, text))
    return found


def _merged(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` with each group of overlapping chunks of one document made one hit."""
    merged: list[Hit] = []
    for hit in hits:
        group = [m for m in merged if m.doc_id == hit.doc_id and _touch(m, hit)]
        if group:
            merged = [m for m in merged if m not in group]
        merged.append(merge_spans([*group, hit]) if group else hit)
    return merged


def _touch(a: Hit, b: Hit) -> bool:
    return a.start < b.end and b.start < a.end


def lexical_scores(question: str, sentences: Sequence[str]) -> npt.NDArray[np.float64]:
    """BM25 of each sentence for the question's terms (IDF over ``sentences``), over that
    of an average-length sentence holding each question term once; capped at 1."""
    terms = set(stems(question))
    counts = [Counter(stems(text)) for text in sentences]
    if not terms or not counts:
        return np.zeros(len(counts))
    lengths = np.array([max(sum(c.values()), 1) for c in counts], dtype=np.float64)
    norm = 1 - BM25_B + BM25_B * lengths / lengths.mean()
    raw = np.zeros(len(counts))
    total_idf = 0.0
    for term in terms:
        tf = np.array([c[term] for c in counts], dtype=np.float64)
        df = int(np.count_nonzero(tf))
        idf = math.log(1 + (len(counts) - df + 0.5) / (df + 0.5))
        raw += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * norm)
        total_idf += idf
    return np.minimum(raw / total_idf, 1.0)


def _pick(
    candidates: Sequence[_Sentence],
    scores: npt.NDArray[np.float64],
    vectors: Vectors,
    limit: int,
    min_score: float,
) -> list[int]:
    """Indices of the best sentences, best first, without near-repeats or weak ones."""
    chosen: list[int] = []
    floor = max(min_score, RELATIVE_FLOOR * float(scores.max()))
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) == limit or scores[i] < floor:
            break
        if any(_repeats(candidates, vectors, i, j) for j in chosen):
            continue
        chosen.append(int(i))
    return chosen


def _repeats(candidates: Sequence[_Sentence], vectors: Vectors, i: int, j: int) -> bool:
    if float(vectors[i] @ vectors[j]) > DUPLICATE_COSINE:
        return True
    return normalize(candidates[i].text) == normalize(candidates[j].text)


def _render(
    chosen: list[int], candidates: Sequence[_Sentence], hits: Sequence[Hit]
) -> tuple[str, list[Citation]]:
    """The answer text and citations of the chosen sentences, in reading order."""
    doc_rank: dict[str, int] = {}
    for i in chosen:  # best first: a document ranks by its best sentence
        doc_rank.setdefault(candidates[i].hit.doc_id, len(doc_rank))
    ordered = sorted(
        chosen, key=lambda i: (doc_rank[candidates[i].hit.doc_id], candidates[i].start)
    )
    pieces: list[str] = []
    citations: list[Citation] = []
    for marker, i in enumerate(ordered, start=1):
        sentence = candidates[i]
        pieces.append(f"{' '.join(sentence.text.split())} [{marker}]")
        chunk = _chunk_of(sentence, hits)
        citations.append(citation(marker, chunk, sentence.start, sentence.end))
    return " ".join(pieces), citations


def _chunk_of(sentence: _Sentence, hits: Sequence[Hit]) -> Hit:
    """The best-ranked hit holding the sentence whole, else its start."""
    same_doc = [h for h in hits if h.doc_id == sentence.hit.doc_id]
    for hit in same_doc:
        if hit.start <= sentence.start and sentence.end <= hit.end:
            return hit
    for hit in same_doc:
        if hit.start <= sentence.start < hit.end:
            return hit
    return sentence.hit

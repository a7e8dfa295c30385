"""Text analysis for BM25 keyword search: what a chunk is indexed under, and a query.

Code-like tokens survive: ``O_CREAT``, ``pthread_create`` and ``v2.3.1`` are indexed whole
*and* as their parts (``o``, ``creat``; ``pthread``, ``create``; ``v2``, ``3``, ``1``), so a
query for the exact identifier ranks it first while a query for one of its words still
finds it. Words are lower-cased and stripped of diacritics; common English stop words are
dropped (Lucene's English set); the Porter stemmer folds inflections. Each distinct term
is kept as a 64-bit hash of its text, with its count in the chunk: a chunk's terms are
stored with it in the store (:func:`encode_terms`, in the same transaction as its text) and
the in-memory postings of :mod:`ragstore.index.bm25` are built from them.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np
import Stemmer

from ragstore.types import Ids

TERM_DTYPE = np.dtype([("term", "<i8"), ("count", "<u2")])
"""A chunk's stored terms: each distinct term's hash and its count in the chunk."""

# The stop words of Lucene's EnglishAnalyzer (ENGLISH_STOP_WORDS_SET).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_TOKEN = re.compile(r"\w+(?:[.\-]\w+)*")
_PARTS = re.compile(r"[._\-]+")
_MAX_COUNT = np.iinfo(np.uint16).max
_stemmers = threading.local()  # a Stemmer object must not be shared between threads


def analyze(text: str) -> list[str]:
    """Index terms of ``text`` before stemming: lower-cased words without diacritics,
    compounds whole and split, no stop words."""
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    terms: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        parts = [p for p in _PARTS.split(token) if p]
        if len(parts) > 1:
            terms.append(token.strip("._-"))
        terms.extend(p for p in parts if p not in STOP_WORDS)
    return terms


def stems(text: str) -> list[str]:
    """The Porter stems of :func:`analyze`'s terms, in order."""
    stemmer = getattr(_stemmers, "porter", None)
    if stemmer is None:
        stemmer = _stemmers.porter = Stemmer.Stemmer("porter")
    words: list[str] = stemmer.stemWords(analyze(text))
    return words


@lru_cache(maxsize=1 << 18)
def term_hash(stem: str) -> int:
    """A stable 64-bit id of a stem (BLAKE2b; a collision among a billion distinct terms
    has odds of about 1 in 40)."""
    return int.from_bytes(
        hashlib.blake2b(stem.encode(), digest_size=8).digest(), "little", signed=True
    )


def encode_terms(title: str, text: str) -> bytes:
    """A chunk's terms as stored: each distinct term's hash and its count (title and
    text together, as one field), ascending by hash; empty when it has no words."""
    if not title and not text:  # a bare vector record
        return b""
    counts = Counter(stems(title))
    counts.update(stems(text))
    if not counts:
        return b""
    pairs = np.array(
        [(term_hash(term), min(count, _MAX_COUNT)) for term, count in counts.items()],
        dtype=TERM_DTYPE,
    )
    pairs.sort(order="term")
    return pairs.tobytes()


def query_terms(query: str) -> Ids:
    """The distinct term hashes of a query (a query term counts once)."""
    hashes = {term_hash(term) for term in stems(query)}
    return np.array(sorted(hashes), dtype=np.int64)


def highlight(text: str, query: str, *, mark: tuple[str, str] = ("**", "**")) -> str:
    """``text`` with every word that matches a query term wrapped in ``mark``.

    A word matches when it, or one of its parts, equals a query term after light suffix
    stripping (``hunting`` matches ``hunts``); offsets are the original text's.
    """
    wanted = {_light_stem(term) for term in analyze(query)}
    pieces: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        token = match.group().lower()
        forms = [token, *_PARTS.split(token)]
        if any(_light_stem(form) in wanted for form in forms if form):
            pieces += [text[last : match.start()], mark[0], match.group(), mark[1]]
            last = match.end()
    pieces.append(text[last:])
    return "".join(pieces)


_SUFFIXES = ("ing", "ed", "es", "s")


def _light_stem(term: str) -> str:
    for suffix in _SUFFIXES:
        if len(term) > len(suffix) + 2 and term.endswith(suffix):
            return term[: -len(suffix)]
    return term

"""BM25 keyword search over chunk text and titles, on SQLite FTS5.

Text is analysed here, in Python, before FTS5 sees it, so code-like tokens survive:
``O_CREAT``, ``pthread_create`` and ``v2.3.1`` are indexed whole *and* as their parts
(``o``, ``creat``; ``pthread``, ``create``; ``v2``, ``3``, ``1``), so a query for the exact
identifier ranks it first while a query for one of its words still finds it. Common
English stop words are dropped (Lucene's English set); FTS5's Porter stemmer folds
inflections. Scores are FTS5's ``bm25()`` (Robertson et al., Okapi BM25, k1 = 1.2,
b = 0.75), negated so that higher is better.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence

from ragstore.index.base import AllowedMask

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
TITLE_WEIGHT = 1.0
TEXT_WEIGHT = 1.0

# FTS5 must keep our compound tokens whole: '.', '_' and '-' are token characters there.
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2 tokenchars '._-'"


def table_name(collection_id: int) -> str:
    """The FTS5 table of one collection (each has its own, so BM25 statistics and
    query cost are the collection's, not the whole store's)."""
    return f"chunk_fts_{int(collection_id)}"


def create_table(conn: sqlite3.Connection, collection_id: int) -> None:
    """Create a collection's FTS5 table and the trigger that drops a chunk's row with it."""
    table = table_name(collection_id)
    conn.execute(
        f'CREATE VIRTUAL TABLE {table} USING fts5(title, text, tokenize = "{FTS_TOKENIZE}")'
    )
    conn.execute(
        f"CREATE TRIGGER {table}_removed AFTER DELETE ON chunks "
        f"WHEN old.collection_id = {int(collection_id)} BEGIN "
        f"DELETE FROM {table} WHERE rowid = old.id; END"
    )


def drop_table(conn: sqlite3.Connection, collection_id: int) -> None:
    """Drop a collection's FTS5 table and its trigger."""
    table = table_name(collection_id)
    conn.execute(f"DROP TRIGGER IF EXISTS {table}_removed")
    conn.execute(f"DROP TABLE IF EXISTS {table}")


def add_chunk(
    conn: sqlite3.Connection, collection_id: int, chunk_id: int, title_terms: str, text: str
) -> None:
    """Index one chunk (``title_terms`` is the document title's :func:`indexed_text`).

    A chunk with no words at all (a bare vector record) gets no row.
    """
    terms = indexed_text(text)
    if not terms and not title_terms:
        return
    conn.execute(
        f"INSERT INTO {table_name(collection_id)} (rowid, title, text) VALUES (?, ?, ?)",
        (chunk_id, title_terms, terms),
    )


def analyze(text: str) -> list[str]:
    """Index terms of ``text``: lower-cased words, compounds whole and split, no stop words."""
    terms: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        parts = [p for p in _PARTS.split(token) if p]
        if len(parts) > 1:
            terms.append(token.strip("._-"))
        terms.extend(p for p in parts if p not in STOP_WORDS)
    return terms


def indexed_text(text: str) -> str:
    """The analysed form of ``text`` that is stored in the FTS5 table."""
    return " ".join(analyze(text))


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression: any of the query's distinct terms (None if it has none)."""
    terms = list(dict.fromkeys(analyze(query)))
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


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


def search(
    conn: sqlite3.Connection,
    collection_id: int,
    query: str,
    k: int,
    allowed: AllowedMask | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` best ``(chunk id, bm25 score)`` pairs, best first, among the allowed chunks.

    ``allowed`` (a filter already evaluated) is checked per matching row inside the same
    query, so the ``k`` returned are the best allowed ones.
    """
    expression = match_expression(query)
    if expression is None:
        return []
    table = table_name(collection_id)
    restrict = ""
    if allowed is not None:
        conn.create_function(_ALLOWED_FUNCTION, 1, _allowed_check(allowed), deterministic=True)
        restrict = f"AND {_ALLOWED_FUNCTION}(f.rowid) "
    rows: Sequence[tuple[int, float]] = conn.execute(
        f"SELECT f.rowid, -bm25({table}, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS score "
        f"FROM {table} f WHERE {table} MATCH ? {restrict}"
        "ORDER BY score DESC, f.rowid LIMIT ?",
        (expression, k),
    ).fetchall()
    return [(int(chunk_id), float(score)) for chunk_id, score in rows]


_ALLOWED_FUNCTION = "ragstore_allowed"


def _allowed_check(allowed: AllowedMask) -> Callable[[int], bool]:
    size = len(allowed)
    flags = allowed.tobytes()  # one byte per chunk id: the fastest per-row lookup here
    return lambda rowid: rowid < size and flags[rowid] == 1

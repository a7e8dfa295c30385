"""BM25 postings against SQLite FTS5's own bm25(), the reference they replace.

The reference is a real FTS5 table with the tokenizer and column weights ragstore used
before: same analysed text, Porter stemming, k1 = 1.2, b = 0.75. Scores must agree to
floating-point precision, after deletes too, however the postings are split into runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import ragstore
from ragstore import terms
from ragstore.index import bm25
from ragstore.index.bm25 import BM25Index
from ragstore.index.payload import IdSet
from ragstore.store.sqlite.db import DB_FILENAME

FTS_TOKENIZE = "porter unicode61 remove_diacritics 2 tokenchars '._-'"
VOCABULARY = (
    "protein cell cells binding gene genes expression tumour tumor mice mouse insulin "
    "resistance obesity receptor signalling pathway kinase inhibitor clinical trial patients "
    "dose response O_CREAT pthread_create v2.3.1 café naïve running runs ran"
)
WORDS = VOCABULARY.split()


def corpus(size: int, seed: int) -> list[tuple[str, str]]:
    """(title, text) pairs with Zipf-like word frequencies and varied lengths."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    docs = []
    for i in range(size):
        title = " ".join(rng.choice(WORDS, size=int(rng.integers(0, 4)), p=weights))
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(0, 60)), p=weights))
        docs.append((title if i % 7 else "", text if i % 11 else ""))
    return docs


class Fts5Reference:
    """FTS5 as ragstore's keyword index used to run it."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.execute(
            f'CREATE VIRTUAL TABLE f USING fts5(title, text, tokenize="{FTS_TOKENIZE}")'
        )

    def add(self, chunk_id: int, title: str, text: str) -> None:
        title_terms, text_terms = " ".join(terms.analyze(title)), " ".join(terms.analyze(text))
        if title_terms or text_terms:
            self.conn.execute(
                "INSERT INTO f (rowid, title, text) VALUES (?, ?, ?)",
                (chunk_id, title_terms, text_terms),
            )

    def delete(self, chunk_id: int) -> None:
        self.conn.execute("DELETE FROM f WHERE rowid = ?", (chunk_id,))

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        stems = dict.fromkeys(terms.analyze(query))
        expression = " OR ".join(f'"{term}"' for term in stems)
        return self.conn.execute(
            "SELECT rowid, -bm25(f, 1.0, 1.0) AS s FROM f WHERE f MATCH ? "
            "ORDER BY s DESC, rowid LIMIT ?",
            (expression, k),
        ).fetchall()


QUERIES = [
    "insulin resistance in obese mice",
    "protein kinase inhibitor",
    "O_CREAT",
    "pthread_create",
    "v2.3.1 clinical",
    "cafe naive",
    "cell",
    "tumour tumor receptor signalling pathway dose response patients",
]


def assert_same(index: BM25Index, reference: Fts5Reference, k: int = 25) -> None:
    """The same top-``k`` scores, each id scored as FTS5 scores it (chunks whose scores tie
    to rounding may trade places)."""
    for query in QUERIES:
        ids, scores = index.search(terms.query_terms(query), k)
        everything = dict(reference.search(query, 1_000_000))
        best = sorted(everything.values(), reverse=True)[:k]
        np.testing.assert_allclose(scores, best, rtol=1e-9, err_msg=query)
        found = [everything.get(chunk_id, -1.0) for chunk_id in ids.tolist()]
        np.testing.assert_allclose(found, scores, rtol=1e-9, err_msg=query)


def build(docs: list[tuple[str, str]], batch: int) -> tuple[BM25Index, Fts5Reference]:
    index, reference = BM25Index(), Fts5Reference()
    for start in range(0, len(docs), batch):
        part = docs[start : start + batch]
        ids = np.arange(start + 1, start + 1 + len(part), dtype=np.int64)
        index.add(ids, [terms.encode_terms(title, text) for title, text in part])
        for chunk_id, (title, text) in zip(ids.tolist(), part, strict=True):
            reference.add(chunk_id, title, text)
    return index, reference


@pytest.mark.parametrize("batch", [2000, 37, 1])
def test_scores_equal_fts5_bm25_however_the_chunks_arrive(batch: int) -> None:
    index, reference = build(corpus(2000 if batch > 1 else 300, seed=batch), batch)
    assert_same(index, reference)


def test_scores_equal_fts5_after_deletes_and_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25, "RUN_LIMIT", 256)  # many runs, merged and compacted
    index, reference = build(corpus(1500, seed=3), batch=50)
    rng = np.random.default_rng(4)
    for _ in range(3):
        gone = rng.choice(np.arange(1, 1501), size=300, replace=False)
        index.remove(gone)
        for chunk_id in gone.tolist():
            reference.delete(chunk_id)
        assert_same(index, reference)
    index.remove(np.arange(1, 1501))
    assert len(index) == 0 and index.search(terms.query_terms("cell"), 5)[0].size == 0


def test_a_mask_keeps_only_allowed_chunks_and_still_fills_k() -> None:
    index, _ = build(corpus(1000, seed=5), batch=100)
    allowed = np.zeros(1001, dtype=bool)
    allowed[::3] = True
    everything, _ = index.search(terms.query_terms("cell protein"), 1000)
    ids, _ = index.search(terms.query_terms("cell protein"), 10, IdSet(np.flatnonzero(allowed)))
    assert len(ids) == 10 and allowed[ids].all()
    assert ids.tolist() == [i for i in everything.tolist() if allowed[i]][:10]


def test_a_store_with_fts5_tables_is_upgraded_to_stored_terms(tmp_path: Path) -> None:
    """A schema-3 store (one FTS5 table per collection) gets each chunk's terms and
    loses the FTS5 tables; keyword search finds what it found before."""
    path = tmp_path / "store"
    with ragstore.open(path) as store:
        col = store.create_collection("old", embedder=None, dim=4)
        col.upsert_vectors(
            ["a", "b"],
            np.eye(2, 4, dtype=np.float32),
            [{"kind": "x"}, {"kind": "y"}],
        )
    conn = sqlite3.connect(path / DB_FILENAME)
    conn.execute(
        "INSERT INTO documents (collection_id, doc_id, title, text, metadata, content_hash, "
        "updated_at) VALUES (1, 'c', 'Errors', 'open() fails without O_CREAT', '{}', 'h', 0)"
    )
    conn.execute(
        "INSERT INTO chunks (collection_id, document_id, ordinal, text, start_char, end_char, "
        "hash, vector) VALUES (1, 3, 0, 'open() fails without O_CREAT', 0, 28, 'h', ?)",
        (np.ones(4, dtype=np.float32).tobytes(),),
    )
    conn.execute("ALTER TABLE chunks DROP COLUMN terms")
    conn.execute(
        f'CREATE VIRTUAL TABLE chunk_fts_1 USING fts5(title, text, tokenize="{FTS_TOKENIZE}")'
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with ragstore.open(path) as store:
        hits = store.get_collection("old").search("o_creat", mode="keyword", k=5)
        assert [h.doc_id for h in hits] == ["c"]
    conn = sqlite3.connect(path / DB_FILENAME)
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'chunk_fts%'")
    ]
    conn.close()
    assert tables == []

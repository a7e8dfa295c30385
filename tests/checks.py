"""Checks shared by the crash-safety tests of every backend."""

from __future__ import annotations

import sqlite3

import ragstore
from ragstore.engine.pipeline import chunk_document
from ragstore.store.sqlite.backend import SqliteBackend
from ragstore.store.sqlite.db import DB_FILENAME
from ragstore.types import Document


def assert_whole_documents(col: ragstore.Collection) -> None:
    """Every stored document has exactly the chunks its text splits into."""
    if isinstance(col._db, SqliteBackend):
        with sqlite3.connect(col._db.path / DB_FILENAME) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with col._db.read() as reader:
        doc_ids = reader.matching_doc_ids(col.id, None)
        docs = reader.get_documents(col.id, doc_ids)
        chunks = reader.hits_by_chunk(reader.chunk_ids_between(col.id, 0, 2**62).tolist())
    spans_of: dict[str, list[tuple[int, int, int]]] = {doc.id: [] for doc in docs}
    for hit in chunks.values():
        spans_of[hit.doc_id].append((int(hit.chunk_id.rsplit("#", 1)[1]), hit.start, hit.end))
    assert col.embedder is not None
    for doc in docs:
        spans = chunk_document(Document(doc.id, doc.text), col.embedder, col.config.chunking)
        expected = [(i, s.start, s.end) for i, s in enumerate(spans)]
        assert sorted(spans_of[doc.id]) == expected, doc.id

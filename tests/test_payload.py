"""The in-memory metadata columns select exactly the chunks the SQL filter selects."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filters import DOCUMENT_LISTS, filters, paths_and_values

import ragstore
from ragstore.engine.store import Collection
from ragstore.filters import parse_filter
from ragstore.index import payload

Metadata = dict[str, Any]
_names = itertools.count()


def column_and_sql_ids(col: Collection, raw: object) -> tuple[list[int], list[int]]:
    where = parse_filter(raw)
    assert where is not None
    with col._index.lock, col._db.read() as reader:
        from_columns = np.flatnonzero(col._index.allowed(reader, where)).tolist()
        from_sql = sorted(reader.allowed_chunk_ids(col.id, where).tolist())
    return from_columns, from_sql


@settings(max_examples=120, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_columns_agree_with_sql_on_random_filters(
    tmp_path_factory: Any, docs: list[Metadata], data: st.DataObject
) -> None:
    with ragstore.open(tmp_path_factory.getbasetemp() / "payload-store") as store:
        col = store.create_collection(f"p{next(_names)}", embedder=None, dim=2)
        records = [{"id": str(i), "vector": [1.0, i], "metadata": m} for i, m in enumerate(docs)]
        col.upsert(records)
        paths, scalars = paths_and_values(docs)
        for _ in range(3):
            raw = data.draw(filters(paths, scalars), label="filter")
            from_columns, from_sql = column_and_sql_ids(col, raw)
            assert from_columns == from_sql, raw


def test_columns_follow_updates_deletes_and_new_chunks(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("u", embedder=None, dim=2)
        col.upsert([{"id": str(i), "vector": [1.0, i], "metadata": {"n": i}} for i in range(10)])
        where = {"n": {"$lt": 5}}
        assert col.count(where) == 5
        ids, _ = col.search_vectors([1.0, 0.0], 10, where=where)
        assert sorted(ids) == ["0", "1", "2", "3", "4"]
        col.upsert([{"id": "7", "vector": [1.0, 7], "metadata": {"n": 1}}])  # moves in
        col.upsert([{"id": "2", "vector": [1.0, 2], "metadata": {"n": 9}}])  # moves out
        col.delete(["3"])
        col.upsert([{"id": "new", "vector": [1.0, 0.5], "metadata": {"n": -1}}])
        ids, _ = col.search_vectors([1.0, 0.0], 10, where=where)
        assert sorted(ids) == ["0", "1", "4", "7", "new"]


def test_a_path_with_too_many_values_is_filtered_in_sql(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(payload, "MAX_DISTINCT", 4)
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("v", embedder=None, dim=2)
        records = [{"id": str(i), "vector": [1.0, i], "metadata": {"n": i}} for i in range(10)]
        col.upsert(records)
        from_columns, from_sql = column_and_sql_ids(col, {"n": {"$gte": 6}})
        assert from_columns == from_sql and len(from_sql) == 4
        ids, _ = col.search_vectors(np.array([1.0, 0.0]), 10, where={"n": {"$gte": 6}})
        assert sorted(ids) == ["6", "7", "8", "9"]


def test_a_path_first_filtered_after_a_delete_lines_up_with_the_chunks(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("c", embedder=None, dim=2)
        col.upsert([{"id": i, "vector": [1, 0], "metadata": {"x": 1, "y": 1}} for i in "abc"])
        assert len(col.search(vector=[1, 0], where={"x": 1})) == 3  # columns built for x
        col.delete("a")
        found = col.search(vector=[1, 0], where={"y": 1})  # a new column, after the delete
        assert sorted(hit.doc_id for hit in found) == ["b", "c"]

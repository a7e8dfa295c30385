"""The payload indexes select exactly the chunks the SQL filter selects: asked per chunk
id (the growing segment and the keyword side) and per sealed segment (bitmaps)."""

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
    """The chunk ids the payload indexes let through, and those SQL lets through; where
    chunks are sealed, each sealed segment's matches must agree with the per-id answer."""
    where = parse_filter(raw)
    assert where is not None
    with col._index.lock, col._db.read() as reader:
        col._index.catch_up(reader)
        selection = col._index.allowed(reader, where)
        live, _ = reader.chunk_metadata(col.id, 0, 2**63 - 1)
        from_columns = live[selection.contains(live)].tolist()
        for segment in col._index._sealed.values():
            matching = selection.matching(segment)
            sealed = set(segment.ids[matching.positions()].tolist())
            assert sealed == set(from_columns) & set(segment.ids.tolist()), raw
            assert np.flatnonzero(np.unpackbits(matching.bits(), bitorder="little")).tolist() == (
                matching.positions().tolist()
            )
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
        for _ in range(2):
            raw = data.draw(filters(paths, scalars), label="filter")
            from_columns, from_sql = column_and_sql_ids(col, raw)
            assert from_columns == from_sql, raw
        col.optimize()  # every chunk sealed: filters now run on the segment's bitmaps
        col.delete([str(i) for i in range(0, len(docs), 3)])
        for _ in range(2):
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


def sealed_matching(col: Collection, raw: object) -> list[payload.Matching]:
    where = parse_filter(raw)
    assert where is not None
    with col._index.lock, col._db.read() as reader:
        col._index.catch_up(reader)
        selection = col._index.allowed(reader, where)
        return [selection.matching(segment) for segment in col._index._sealed.values()]


def test_a_sealed_segments_matches_are_kept_until_it_loses_chunks(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("k", embedder=None, dim=2)
        records = [{"id": str(i), "vector": [1, i], "metadata": {"n": i % 10}} for i in range(100)]
        col.upsert(records)
        col.optimize()
        where = {"n": {"$in": [1, 2]}}
        first = sealed_matching(col, where)
        assert [m.count for m in first] == [20]
        assert sealed_matching(col, where)[0] is first[0]  # kept: nothing changed
        col.upsert([{"id": "new", "vector": [1.0, 0.0], "metadata": {"n": 1}}])  # growing only
        assert sealed_matching(col, where)[0] is first[0]
        col.delete(["1"])  # the sealed segment loses a match: made again without it
        again = sealed_matching(col, where)[0]
        assert again is not first[0] and again.count == 19
        ids, _ = col.search_vectors([1.0, 0.0], 30, where=where)
        assert "1" not in ids and "new" in ids and len(ids) == 20


def test_automatic_columns_beyond_the_bound_are_dropped_least_recent_first(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(payload, "MAX_AUTOMATIC", 2)
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("a", embedder=None, dim=2)
        meta = {"a": 1, "b": 2, "c": 3}
        col.upsert([{"id": str(i), "vector": [1.0, i], "metadata": meta} for i in range(5)])
        for field in ["a", "b", "a", "c"]:
            assert col.count({field: meta[field]}) == 5
            assert len(col.search_vectors([1.0, 0.0], 5, where={field: meta[field]})[0]) == 5
        with col._index.lock:
            kept = [entry["path"] for entry in col._index.payload_stats()]
        assert kept == ["a", "c"]  # "b" was the least recently used


def test_a_selection_outlives_its_columns_being_dropped(tmp_path: Path, monkeypatch: Any) -> None:
    # A search evaluates its filter, lets go of the lock, and uses it again: another
    # search may drop a column in between.
    monkeypatch.setattr(payload, "MAX_AUTOMATIC", 1)
    with ragstore.open(tmp_path / "s") as store:
        col = store.create_collection("o", embedder=None, dim=2)
        meta = [{"a": i % 3, "b": i % 5} for i in range(30)]
        col.upsert([{"id": str(i), "vector": [1.0, i], "metadata": m} for i, m in enumerate(meta)])
        col.optimize()
        index = col._index
        with index.lock, col._db.read() as reader:
            index.catch_up(reader)
            on_a = index.allowed(reader, parse_filter({"a": 2}))
            index.allowed(reader, parse_filter({"b": 1}))  # drops the column of "a"
            (segment,) = index._sealed.values()
            live, _ = reader.chunk_metadata(col.id, 0, 2**63 - 1)
            assert sorted(segment.ids[on_a.matching(segment).positions()].tolist()) == sorted(
                live[on_a.contains(live)].tolist()
            )
            assert len(on_a.matching(segment).positions()) == 10

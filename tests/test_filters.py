"""Tests for the metadata filter language: parsing, SQL over real SQLite, and matches()."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragstore.errors import InvalidFilter
from ragstore.filters import (
    MAX_DEPTH,
    And,
    Compare,
    Filter,
    Not,
    Or,
    compile_sql,
    matches,
    parse_filter,
    to_json,
)

Metadata = Mapping[str, object]

DOCS: dict[int, Metadata] = {
    1: {
        "lang": "en",
        "year": 1999,
        "tags": ["ai", "db"],
        "author": {"name": "Ada", "born": 1815},
        "draft": False,
        "score": 0.5,
    },
    2: {
        "lang": "de",
        "year": 2005,
        "tags": ["db"],
        "author": {"name": "Alan"},
        "draft": True,
        "score": 2,
    },
    3: {"lang": "en", "year": 2010, "tags": [], "author": "Grace", "draft": 1, "score": None},
    4: {"lang": "fr", "year": "2001", "tags": "ai", "rating": [1, 5, 9]},
    5: {},
    6: {"lang": None, "year": 2005.0, "tags": [["ai"], {"x": "ai"}], "author": {"name": None}},
}
ALL = sorted(DOCS)


def make_table(docs: Mapping[int, Metadata]) -> sqlite3.Connection:
    """An in-memory table of metadata stored as the store stores it."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, metadata TEXT NOT NULL)")
    conn.executemany(
        "INSERT INTO docs VALUES (?, ?)",
        [(i, json.dumps(m, ensure_ascii=False, sort_keys=True)) for i, m in docs.items()],
    )
    return conn


def sql_ids(conn: sqlite3.Connection, raw: object, *, negate: bool = False) -> list[int]:
    """Ids the compiled filter selects (or rejects, with ``negate``)."""
    flt = parse_filter(raw)
    sql, params = ("1", []) if flt is None else compile_sql(flt, "docs.metadata")
    where = f"NOT ({sql})" if negate else sql
    return [
        row[0] for row in conn.execute(f"SELECT id FROM docs WHERE {where} ORDER BY id", params)
    ]


def parse(raw: object) -> Filter:
    """Parse a filter that must not be "match everything"."""
    flt = parse_filter(raw)
    assert flt is not None
    return flt


def python_ids(docs: Mapping[int, Metadata], raw: object) -> list[int]:
    """Ids whose metadata matches() accepts."""
    flt = parse_filter(raw)
    return sorted(i for i, m in docs.items() if flt is None or matches(flt, m))


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    with closing(make_table(DOCS)) as connection:
        yield connection


CASES: list[tuple[object, list[int]]] = [
    # match everything
    (None, ALL),
    ({}, ALL),
    # equality shorthand, implicit AND, null
    ({"lang": "en"}, [1, 3]),
    ({"lang": {"$eq": "en"}, "year": 1999}, [1]),
    ({"lang": None}, [6]),
    ({"lang": {"$ne": "en"}}, [2, 4, 5, 6]),
    ({"lang": {"$in": ["de", "fr"]}}, [2, 4]),
    ({"lang": {"$nin": ["de", "fr"]}}, [1, 3, 5, 6]),
    ({"lang": {"$in": [None, "de"]}}, [2, 6]),
    # numbers: int and float are one kind, strings another
    ({"year": 2005}, [2, 6]),
    ({"year": 2005.0}, [2, 6]),
    ({"year": "2001"}, [4]),
    ({"year": 2001}, []),
    ({"year": {"$gte": 2000, "$lt": 2010}}, [2, 6]),
    ({"year": {"$gt": 2005}}, [3]),
    ({"year": {"$gte": 2005}}, [2, 3, 6]),
    ({"year": {"$lte": 2005}}, [1, 2, 6]),
    ({"year": {"$gt": "2000"}}, [4]),
    ({"score": {"$gte": 0.5}}, [1, 2]),
    ({"score": None}, [3]),
    ({"score": {"$exists": True}}, [1, 2, 3]),
    # booleans equal only booleans
    ({"draft": True}, [2]),
    ({"draft": False}, [1]),
    ({"draft": 1}, [3]),
    ({"draft": {"$ne": True}}, [1, 3, 4, 5, 6]),
    ({"draft": {"$in": [True, 1]}}, [2, 3]),
    # arrays: any scalar element; $ne/$nin are exact negations
    ({"tags": "ai"}, [1, 4]),
    ({"tags": {"$ne": "ai"}}, [2, 3, 5, 6]),
    ({"tags": {"$in": ["db", "zz"]}}, [1, 2]),
    ({"tags": {"$nin": ["db"]}}, [3, 4, 5, 6]),
    ({"tags": {"$exists": True}}, [1, 2, 3, 4, 6]),
    ({"tags": {"$gt": "b"}}, [1, 2]),
    ({"tags.x": "ai"}, []),
    ({"tags.0": "ai"}, []),
    ({"rating": 5}, [4]),
    ({"rating": {"$gt": 5, "$lt": 9}}, [4]),
    ({"rating": {"$gt": 9}}, []),
    # dotted paths; an object never matches a comparison
    ({"author.name": "Ada"}, [1]),
    ({"author.name": {"$exists": True}}, [1, 2, 6]),
    ({"author.name": {"$exists": False}}, [3, 4, 5]),
    ({"author.name": None}, [6]),
    ({"author.name": {"$gte": "Alan"}}, [2]),
    ({"author.born": {"$lt": 1900}}, [1]),
    ({"author.born.x": 1815}, []),
    ({"author": "Ada"}, []),
    ({"author": {"$ne": "Ada"}}, ALL),
    ({"author": "Grace"}, [3]),
    ({"author": {"$exists": True}}, [1, 2, 3, 6]),
    # missing fields
    ({"missing": {"$gt": 0}}, []),
    ({"missing": {"$exists": False}}, ALL),
    ({"missing": {"$nin": [1]}}, ALL),
    ({"missing": {"$ne": None}}, ALL),
    # combinators
    ({"$or": [{"lang": "de"}, {"year": {"$lt": 2000}}]}, [1, 2]),
    ({"$and": [{"lang": "en"}, {"tags": "db"}]}, [1]),
    ({"$not": {"lang": "en"}}, [2, 4, 5, 6]),
    ({"$not": {"$or": [{"lang": "en"}, {"lang": "de"}]}}, [4, 5, 6]),
    ({"lang": "en", "$or": [{"year": 2010}, {"draft": False}]}, [1, 3]),
    ({"$and": [{"$not": {"tags": {"$exists": False}}}, {"tags": {"$nin": ["ai", "db"]}}]}, [3, 6]),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[json.dumps(c[0]) for c in CASES])
def test_filter_selects_expected_rows(
    conn: sqlite3.Connection, raw: object, expected: list[int]
) -> None:
    assert sql_ids(conn, raw) == expected
    assert python_ids(DOCS, raw) == expected
    if raw:
        assert sql_ids(conn, raw, negate=True) == [i for i in ALL if i not in expected]


def check_agreement(docs: Mapping[int, Metadata], raw: object, expected: list[int]) -> None:
    """Both SQL and matches() select exactly ``expected`` from ``docs``."""
    with closing(make_table(docs)) as connection:
        assert sql_ids(connection, raw) == expected
    assert python_ids(docs, raw) == expected


def test_strings_order_by_code_point() -> None:
    docs: dict[int, Metadata] = {1: {"s": "Z"}, 2: {"s": "a"}, 3: {"s": "ab"}, 4: {"s": "é"}}
    check_agreement(docs, {"s": {"$gt": "a"}}, [3, 4])
    check_agreement(docs, {"s": {"$lt": "a"}}, [1])


def test_int_float_comparison_is_exact() -> None:
    docs: dict[int, Metadata] = {1: {"n": 2**53 + 1}, 2: {"n": 2**53}}
    check_agreement(docs, {"n": {"$gt": 2.0**53}}, [1])
    check_agreement(docs, {"n": 2.0**53}, [2])


def test_integers_beyond_64_bits_compare_as_sqlite_reals() -> None:
    docs: dict[int, Metadata] = {1: {"n": 2**64 + 1}, 2: {"n": 10**400}, 3: {"n": -(10**400)}}
    check_agreement(docs, {"n": {"$lte": 1.8446744073709552e19}}, [1, 3])
    check_agreement(docs, {"n": {"$gt": 1.7e308}}, [2])


def test_strings_stop_at_nul_as_sqlite_reads_them() -> None:
    check_agreement({1: {"s": "a\x00b"}, 2: {"s": "a"}}, {"s": "a"}, [1, 2])


def test_non_ascii_keys_and_values() -> None:
    docs: dict[int, Metadata] = {1: {"é": {"ü": "😀"}}, 2: {"é": "😀"}}
    check_agreement(docs, {"é.ü": "😀"}, [1])
    check_agreement(docs, {"é": {"$exists": True}}, [1, 2])


def test_long_combinators_and_lists_stay_within_sqlite_limits() -> None:
    docs: dict[int, Metadata] = {1: {"n": 1999}, 2: {"n": -1}}
    check_agreement(docs, {"$or": [{"n": i} for i in range(2000)]}, [1])
    check_agreement(docs, {"$and": [{"n": {"$ne": i}} for i in range(2000)]}, [2])
    check_agreement(docs, {"n": {"$in": list(range(5000))}}, [1])


def test_user_values_and_paths_are_bound_not_interpolated() -> None:
    hostile = "x'); DROP TABLE docs; --"
    raw = {hostile: hostile, "a.b'c": {"$in": [hostile, "y"]}}
    sql, params = compile_sql(parse(raw), "docs.metadata")
    assert "DROP" not in sql
    assert "b'c" not in sql
    assert hostile in params
    check_agreement({1: {hostile: hostile, "a": {"b'c": "y"}}, 2: {hostile: "z"}}, raw, [1])


# --------------------------------------------------------------------------- validation

INVALID: list[tuple[object, str, str | None]] = [
    ("lang", "JSON object", None),
    ([{"lang": "en"}], "JSON object", None),
    ({"$regex": "a.*"}, "$regex", "$regex"),
    ({"year": {"$foo": 1}}, "$foo", "$foo"),
    ({"year": {"$gt": 1, "$regex": "x"}}, "$regex", "$regex"),
    ({"a": {"$and": [{"b": 1}]}}, "$and", "$and"),
    ({"$and": []}, "$and", "$and"),
    ({"$and": {"a": 1}}, "$and", "$and"),
    ({"$or": [1]}, "$or", "$or"),
    ({"$or": [{"a": 1}, {}]}, "$or", "$or"),
    ({"$not": [{"a": 1}]}, "$not", "$not"),
    ({"$not": {}}, "$not", "$not"),
    ({"$and": [{"a": {"$bad": 1}}]}, "$bad", "$bad"),
    ({"tags": {"$in": []}}, "$in", "tags"),
    ({"tags": {"$in": "ai"}}, "$in", "tags"),
    ({"tags": {"$in": [["ai"]]}}, "$in", "tags"),
    ({"tags": {"$nin": [{"a": 1}]}}, "$nin", "tags"),
    ({"year": {"$gt": True}}, "$gt", "year"),
    ({"year": {"$gte": None}}, "$gte", "year"),
    ({"year": {"$lt": [1]}}, "$lt", "year"),
    ({"year": {"$lte": {"a": 1}}}, "$lte", "year"),
    ({"year": {"$eq": [1]}}, "$eq", "year"),
    ({"year": {"$ne": {"a": 1}}}, "$ne", "year"),
    ({"year": {"$exists": 1}}, "$exists", "year"),
    ({"year": {"$exists": "yes"}}, "$exists", "year"),
    ({"year": {"b": 1}}, "year", "year"),
    ({"year": [1, 2]}, "$in", "year"),
    ({"year": {}}, "year", "year"),
    ({"year": float("nan")}, "finite", "year"),
    ({"year": {"$gt": float("inf")}}, "finite", "year"),
    ({"year": {"$in": [1, float("-inf")]}}, "finite", "year"),
    ({"year": 2**63}, "64 bits", "year"),
    ({"year": {1, 2}}, "set", "year"),
    ({"s": "\ud800"}, "surrogate", "s"),
    ({"": 1}, "empty", ""),
    ({"a..b": 1}, "a..b", "a..b"),
    ({"a.": 1}, "empty", "a."),
    ({".a": 1}, "empty", ".a"),
    ({'a"b': 1}, 'a"b', 'a"b'),
    ({"a\\b": 1}, "path", "a\\b"),
    ({"a\x00b": 1}, "path", "a\x00b"),
    ({1: "a"}, "strings", "1"),
]


@pytest.mark.parametrize(("raw", "needle", "field"), INVALID, ids=[repr(c[0]) for c in INVALID])
def test_invalid_filters_are_rejected_naming_the_culprit(
    raw: object, needle: str, field: str | None
) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(raw)
    assert needle in str(info.value)
    assert info.value.field == field


def nested(depth: int) -> dict[str, Any]:
    """A filter ``depth`` objects deep."""
    flt: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        flt = {"$not": flt}
    return flt


def test_nesting_is_capped() -> None:
    assert parse_filter(nested(MAX_DEPTH)) is not None
    with pytest.raises(InvalidFilter, match=str(MAX_DEPTH)):
        parse_filter(nested(MAX_DEPTH + 1))


# --------------------------------------------------------------------------- AST and JSON


def test_parse_builds_the_ast() -> None:
    flt = parse_filter({"year": {"$lt": 2010, "$gte": 2000}, "$not": {"author.name": "Ada"}})
    assert flt == And(
        (
            Not(Compare(("author", "name"), "$eq", "Ada")),
            Compare(("year",), "$gte", 2000),
            Compare(("year",), "$lt", 2010),
        )
    )
    assert parse_filter({"$or": [{"t": {"$in": ["a", 1]}}]}) == Or(
        (Compare(("t",), "$in", ("a", 1)),)
    )


def test_to_json_is_canonical() -> None:
    flt = parse({"b": True, "a": {"$gt": 2, "$lt": 5}})
    assert to_json(flt) == {"$and": [{"a": {"$gt": 2}}, {"a": {"$lt": 5}}, {"b": {"$eq": True}}]}
    assert parse_filter({"a": {"$lt": 5, "$gt": 2}, "b": True}) == flt


def test_equality_is_typed_like_json() -> None:
    assert parse_filter({"a": True}) != parse_filter({"a": 1})
    assert parse_filter({"a": 1}) != parse_filter({"a": 1.0})
    assert parse_filter({"a": {"$in": [1]}}) != parse_filter({"a": {"$in": [True]}})
    assert hash(parse_filter({"a": "x"})) == hash(parse_filter({"a": {"$eq": "x"}}))


ROUND_TRIP = [
    {"a": 1},
    {"a.b.c": {"$in": [1, "x", None, False, 2.5]}},
    {"$and": [{"a": 1}]},
    {"$or": [{"a": {"$exists": False}}, {"$not": {"b": {"$nin": ["q"]}}}]},
    {"x": None, "y": {"$gte": -0.5, "$ne": True}},
]


@pytest.mark.parametrize("raw", ROUND_TRIP, ids=[json.dumps(r) for r in ROUND_TRIP])
def test_to_json_round_trips(raw: object) -> None:
    flt = parse(raw)
    rendered = to_json(flt)
    assert parse(json.loads(json.dumps(rendered))) == flt
    assert to_json(parse(rendered)) == rendered


# --------------------------------------------------------------------------- properties

KEYS = ["a", "b", "é"]
INT64 = range(-(2**63), 2**63)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Draw from ``common`` three times in four (``st.one_of`` weighs strategies alike)."""
    return st.sampled_from([common, common, common, rare]).flatmap(lambda chosen: chosen)


def pick(pool: list[Any], fallback: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly an element of ``pool``, sometimes (always, if it is empty) ``fallback``."""
    return mostly(st.sampled_from(pool), fallback) if pool else fallback


PATHS = mostly(
    st.sampled_from(KEYS),
    st.lists(st.sampled_from(KEYS), min_size=2, max_size=3).map(".".join),
)
# Values both sides share, then edge cases: integers at and past 64 bits (SQLite reads the
# latter as reals), a string with a NUL (SQLite's JSON reads stop there), extreme floats.
COMMON_SCALARS = [None, True, False, 0, 1, 1.0, -0.0, 0.5, "", "a", "é", "a\x00b", 2**63 - 1]
FILTER_EDGES = [-(2**63), 2.0**64, 1e300]
STORED_EDGES = [2**63, 2**64 + 1, -(10**400)]
WIDE_SCALARS = st.one_of(
    st.integers(INT64.start, INT64.stop - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="abZé\x00", max_size=3),
)
FILTER_SCALARS = pick(COMMON_SCALARS + FILTER_EDGES, WIDE_SCALARS)
STORED_SCALARS = pick(COMMON_SCALARS + STORED_EDGES, WIDE_SCALARS)

NESTED_VALUES = st.recursive(
    STORED_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=6,
)
METADATA_VALUES = mostly(STORED_SCALARS | st.lists(STORED_SCALARS, max_size=3), NESTED_VALUES)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), METADATA_VALUES, max_size=len(KEYS))


def operations(scalars: list[Any]) -> st.SearchStrategy[tuple[str, Any]]:
    """``(operator, operand)`` pairs, mostly with operands from ``scalars``."""
    values = pick(scalars, FILTER_SCALARS)
    orderables = pick(
        [v for v in scalars if v is not None and not isinstance(v, bool)],
        FILTER_SCALARS.filter(lambda v: v is not None and not isinstance(v, bool)),
    )
    operand: dict[str, st.SearchStrategy[Any]] = {
        "$eq": values,
        "$ne": values,
        "$in": st.lists(values, min_size=1, max_size=4),
        "$nin": st.lists(values, min_size=1, max_size=4),
        "$gt": orderables,
        "$gte": orderables,
        "$lt": orderables,
        "$lte": orderables,
        "$exists": st.booleans(),
    }
    return st.sampled_from(sorted(operand)).flatmap(
        lambda op: operand[op].map(lambda value: (op, value))
    )


def filters(paths: st.SearchStrategy[str], scalars: list[Any]) -> st.SearchStrategy[Any]:
    """Valid filters over ``paths``, mostly comparing with values from ``scalars``."""
    conditions = pick(scalars, FILTER_SCALARS) | st.lists(
        operations(scalars), min_size=1, max_size=2
    ).map(dict)
    leaves = st.dictionaries(paths, conditions, min_size=1, max_size=2)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda items: {"$and": items}),
            st.lists(inner, min_size=1, max_size=3).map(lambda items: {"$or": items}),
            inner.map(lambda item: {"$not": item}),
            st.tuples(inner, leaves).map(lambda pair: {**pair[1], "$or": [pair[0]]}),
        ),
        max_leaves=6,
    )


def paths_in(value: object, prefix: str = "") -> Iterator[str]:
    """Every dotted path to a member of the (nested) objects in ``value``."""
    if isinstance(value, Mapping):
        for key, member in value.items():
            yield prefix + key
            yield from paths_in(member, prefix + key + ".")


def scalars_in(value: object) -> Iterator[object]:
    """Every scalar inside ``value``, as a valid filter value (big integers as floats)."""
    if isinstance(value, Mapping | list):
        for member in value.values() if isinstance(value, Mapping) else value:
            yield from scalars_in(member)
    elif isinstance(value, int) and value not in INT64:
        yield from [float(value)] if abs(value) < 2**1000 else []
    else:
        yield value


DOCUMENT_LISTS = st.lists(DOCUMENTS, min_size=6, max_size=14)


def check_congruence(docs: list[Metadata], raw: object) -> None:
    """compile_sql over real SQLite selects exactly the documents matches() accepts."""
    table = dict(enumerate(docs))
    expected = python_ids(table, raw)
    with closing(make_table(table)) as connection:
        assert sql_ids(connection, raw) == expected
        assert sql_ids(connection, raw, negate=True) == [i for i in table if i not in expected]


def paths_and_values(docs: list[Metadata]) -> tuple[st.SearchStrategy[str], list[Any]]:
    """Paths (mostly ones the documents have) and the scalars the documents hold."""
    paths = sorted({path for doc in docs for path in paths_in(doc)})
    return pick(paths, PATHS), list(scalars_in(docs))


@settings(max_examples=200, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_sql_and_matches_agree_on_single_comparisons(
    docs: list[Metadata], data: st.DataObject
) -> None:
    paths, scalars = paths_and_values(docs)
    path, (op, value) = data.draw(st.tuples(paths, operations(scalars)), label="comparison")
    check_congruence(docs, {path: {op: value}})


@settings(max_examples=200, deadline=None)
@given(docs=DOCUMENT_LISTS, data=st.data())
def test_sql_and_matches_agree_on_whole_filters(docs: list[Metadata], data: st.DataObject) -> None:
    paths, scalars = paths_and_values(docs)
    check_congruence(docs, data.draw(filters(paths, scalars), label="filter"))


@settings(max_examples=100, deadline=None)
@given(raw=filters(PATHS, COMMON_SCALARS + FILTER_EDGES))
def test_to_json_round_trip_property(raw: dict[str, object]) -> None:
    flt = parse(raw)
    assert parse(to_json(flt)) == flt
    assert to_json(parse(json.loads(json.dumps(to_json(flt))))) == to_json(flt)

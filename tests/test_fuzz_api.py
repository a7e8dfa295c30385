"""Property-based fuzzing of the Python API and the CLI with arbitrary Unicode (lone
surrogates included), arbitrary JSON, deep nesting and numbers of every kind.

Whatever comes in, the Python API answers or raises a ``RagstoreError`` whose message
can be printed; the CLI exits 0, 1 or 2 without a traceback; a rejected call changes
nothing; and every call returns within a bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ragstore
from ragstore import Embedder, InvalidInput, RagstoreError
from ragstore.cli import cli

CALL_SECONDS = 10.0
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any code point, lone surrogates (which hypothesis leaves out by default) included.
any_char = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from('.$"\\'))
any_text = st.lists(any_char, max_size=40).map("".join)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
scalars = st.one_of(st.none(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)
operators = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"])
filters = st.recursive(
    st.dictionaries(
        st.one_of(any_text, st.sampled_from(["lang", "n", "a.b"])),
        st.one_of(scalars, st.dictionaries(operators, json_values, max_size=2)),
        max_size=3,
    ),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=6,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = {"$not": value} if level % 2 else [value]
    return value


deep_values = st.integers(min_value=90, max_value=900).map(nested)
anything = st.one_of(json_values, deep_values, filters)

DOCUMENTS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days.", "metadata": {"lang": "en"}},
    {"id": "login", "text": "Turn on two-factor login in settings.", "metadata": {"n": 3}},
]


@pytest.fixture(scope="module")
def col(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[ragstore.Collection]:
    with ragstore.open(tmp_path_factory.mktemp("fuzz") / "store") as store:
        collection = store.create_collection("docs", embedder=embedder)
        collection.upsert(DOCUMENTS)
        yield collection


def state(col: ragstore.Collection) -> tuple[int, list[dict[str, Any]]]:
    return col.count(), [d.to_dict() for d in col.get([d["id"] for d in DOCUMENTS])]


def attempt(call: Callable[[], Any]) -> RagstoreError | None:
    """Run one call: it returns, or raises a ragstore error that can be printed, in time."""
    started = time.monotonic()
    try:
        call()
    except RagstoreError as error:
        str(error).encode("utf-8")
        return error
    finally:
        assert time.monotonic() - started < CALL_SECONDS
    return None


@FUZZ
@given(query=any_text, where=st.one_of(st.none(), filters, deep_values), k=anything)
def test_search_takes_anything(col: ragstore.Collection, query: str, where: Any, k: Any) -> None:
    before = state(col)
    for mode in ("keyword", "hybrid"):
        attempt(lambda: col.search(query, k=k, where=where, mode=mode))  # noqa: B023
        attempt(lambda: col.search(query, where=where, mode=mode, cache=True))  # noqa: B023
    assert state(col) == before


@FUZZ
@given(value=anything)
def test_reads_and_deletes_take_anything(col: ragstore.Collection, value: Any) -> None:
    before = state(col)
    attempt(lambda: col.get(value))
    attempt(lambda: col.count(value))
    if attempt(lambda: col.delete(value)) is not None:
        assert state(col) == before
    if attempt(lambda: col.delete(where=value)) is not None:
        assert state(col) == before
    col.upsert(DOCUMENTS)  # put back whatever a delete that was accepted removed


@FUZZ
@given(
    record=st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(any_text, numbers),
            "text": st.one_of(any_text, numbers),
            "title": any_text,
            "source": st.one_of(any_text, st.none()),
            "metadata": st.one_of(json_values, deep_values),
            "extra": any_text,
        },
    )
)
def test_upsert_takes_anything(col: ragstore.Collection, record: dict[str, Any]) -> None:
    before = state(col)
    error = attempt(lambda: col.upsert([record]))
    if error is not None:
        assert isinstance(error, InvalidInput) and error.field
        assert state(col) == before
        return
    [stored] = col.get([str(record["id"])])
    assert stored.text == record["text"]
    col.delete(stored.id)


json_texts = anything.map(json.dumps)
cli_args = st.one_of(
    st.tuples(st.just("query"), any_text, st.just("--mode"), st.just("keyword")),
    st.tuples(st.just("query"), any_text, st.just("-k"), any_text),
    st.tuples(st.just("query"), st.just("refund"), st.just("--filter"), any_text),
    st.tuples(
        st.just("query"),
        st.just("refund"),
        st.just("--filter"),
        st.one_of(filters, deep_values).map(json.dumps),
    ),
    st.tuples(st.just("get"), any_text),
    st.tuples(st.just("count"), st.just("--filter"), st.one_of(any_text, json_texts)),
    st.tuples(st.just("delete"), st.just("--filter"), st.one_of(any_text, json_texts)),
    st.tuples(st.just("--collection"), any_text, st.just("count")),
    st.tuples(st.just("index"), st.just("--rebuild"), any_text),
)  # fmt: skip


@FUZZ
@given(args=cli_args)
def test_the_cli_takes_anything(col: ragstore.Collection, args: tuple[str, ...]) -> None:
    store_path = Path(col._db.db.path).parent
    before = state(col)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--store", str(store_path), "--collection", "docs", *args])
    assert time.monotonic() - started < CALL_SECONDS
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert state(col) == before
    col.upsert(DOCUMENTS)

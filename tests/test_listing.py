"""Reading documents back the way Chroma and Qdrant users expect: ``get`` by ids or by
filter, listing pages with a cursor, ``peek``; and ``ragstore create`` on the command
line. On every backend, with real stores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import RAGSTORE_BIN, unit_vectors

import ragstore
from ragstore.engine.store import Store

DIM = 8


def filled(store: Store, count: int = 25) -> None:
    col = store.create_collection("docs", embedder=None, dim=DIM)
    vectors = unit_vectors(count, DIM)
    col.upsert(
        [
            {"id": f"d{i:02d}", "vector": vectors[i], "metadata": {"even": i % 2 == 0, "i": i}}
            for i in range(count)
        ]
    )


def test_get_by_ids_keeps_their_order_and_applies_a_filter(store: Store) -> None:
    filled(store)
    col = store.get_collection("docs")
    assert [d.id for d in col.get(["d05", "d02", "nope"])] == ["d05", "d02"]
    assert [d.id for d in col.get(["d05", "d02"], where={"even": True})] == ["d02"]
    assert col.get("d03")[0].metadata == {"even": False, "i": 3}
    assert col.get(["d05"]).next_cursor is None


def test_a_listing_pages_through_every_match_once(store: Store) -> None:
    filled(store)
    col = store.get_collection("docs")
    seen: list[str] = []
    page = col.get(where={"even": True}, limit=5)
    while True:
        seen += [d.id for d in page]
        if page.next_cursor is None:
            break
        page = col.get(where={"even": True}, limit=5, cursor=page.next_cursor)
    assert seen == [f"d{i:02d}" for i in range(0, 25, 2)]
    assert [d.id for d in col.get(limit=3)] == ["d00", "d01", "d02"]
    assert [d.id for d in col.peek(2)] == ["d00", "d01"]
    assert len(col.peek()) == 10
    assert [d.id for d in col.get(where={"i": {"$gte": 23}})] == ["d23", "d24"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"where": {"i": {"$nope": 1}}}, None),
    ],
)
def test_bad_listing_arguments_name_the_field(
    store: Store, arguments: dict[str, object], field: str | None
) -> None:
    filled(store, 3)
    with pytest.raises(ragstore.InvalidInput) as raised:
        store.get_collection("docs").get(**arguments)  # type: ignore[arg-type]
    if field is not None:
        assert raised.value.field == field


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAGSTORE_BIN, *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_cli_creates_lists_and_peeks(store_location: str | Path) -> None:
    where = str(store_location)
    made = run("create", "vecs", "--dim", str(DIM), "--index", '{"kind": "hnsw"}', "--store", where)
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["config"]["dim"] == DIM and info["config"]["index"]["kind"] == "hnsw"
    assert info["config"]["embedder"] is None
    again = run("--store", where, "create", "vecs", "--dim", str(DIM))
    assert again.returncode == 1 and "exists" in again.stderr
    both = run("--store", where, "create", "x", "--dim", "4", "--embedder", "m")
    assert both.returncode == 2 and "not both" in both.stderr

    with ragstore.open(store_location) as opened:
        col = opened.get_collection("vecs")
        col.upsert([{"id": f"v{i}", "vector": unit_vectors(5, DIM)[i]} for i in range(5)])

    listed = run("--store", where, "--collection", "vecs", "get", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["v0", "v1"]
    cursor = listed.stderr.split("--cursor ")[1].strip()
    rest = run("--store", where, "get", "--collection", "vecs", "--limit", "9", "--cursor", cursor)
    assert [json.loads(line)["id"] for line in rest.stdout.splitlines()] == ["v2", "v3", "v4"]
    assert "next page" not in rest.stderr
    peeked = run("peek", "-n", "1", "--store", where, "--collection", "vecs")
    assert [json.loads(line)["id"] for line in peeked.stdout.splitlines()] == ["v0"]

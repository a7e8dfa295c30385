"""Explicit payload indexes: declared on a metadata path, built at once, kept, stored with
the collection's config; the same verbs in Python, on the command line, over HTTP and
through the remote clients. Real stores on disk (and PostgreSQL), a real server."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, unit_vectors
from server_helpers import Server, check_error_body, write_keys

import ragstore
from ragstore import Collection, InvalidConfig, InvalidInput
from ragstore.cli import cli
from ragstore.config import MAX_PAYLOAD_INDEXES, CollectionConfig

DIM = 8
COUNT = 120
TEAMS = ("a", "b", "c")
IDS = [f"d{i:03d}" for i in range(COUNT)]
VECTORS = unit_vectors(COUNT, DIM, seed=3)
QUERY = unit_vectors(1, DIM, seed=4)[0]


def metadata(i: int) -> dict[str, Any]:
    """Every 10th document has no team: ``team`` holds a, b, c and absent (4 values)."""
    found: dict[str, Any] = {"author": {"name": f"n{i % 5}"}, "n": i}
    return found if i % 10 == 9 else found | {"team": TEAMS[i % 3]}


METADATA = [metadata(i) for i in range(COUNT)]


def exact_top(k: int, team: str) -> list[str]:
    """The ``k`` nearest documents of ``team`` by brute force."""
    allowed = [i for i, m in enumerate(METADATA) if m.get("team") == team]
    scores = VECTORS[allowed] @ QUERY
    return [IDS[allowed[j]] for j in np.argsort(-scores, kind="stable")[:k]]


def filled(store: ragstore.Store, name: str = "v") -> Collection:
    """A vector collection whose vectors mostly sit in sealed segments."""
    col = store.create_collection(
        name, embedder=None, dim=DIM, index={"kind": "flat", "seal_threshold": 40}
    )
    col.upsert_vectors(IDS[:100], VECTORS[:100], METADATA[:100])
    col.optimize()
    col.upsert_vectors(IDS[100:], VECTORS[100:], METADATA[100:])  # these stay growing
    return col


def entry(col: Any, path: str) -> dict[str, Any] | None:
    return next((e for e in col.payload_indexes() if e["path"] == path), None)


# ------------------------------------------------------------------ Python API


def test_create_search_drop_and_reopen(store_location: str | Path) -> None:
    with ragstore.open(store_location) as store:
        col = filled(store)
        assert col.payload_indexes() == []
        col.create_payload_index("team")
        team = entry(col, "team")
        assert team is not None
        assert (team["pinned"], team["values"], team["too_varied"]) == (True, 4, False)
        assert team["served_by"] == "payload_index" and team["bytes"] > 0
        assert col.config.payload_indexes == ("team",)

        hits = col.search(vector=QUERY, k=7, where={"team": "b"})
        assert [h.doc_id for h in hits] == exact_top(7, "b")
        ids, _ = col.search_vectors(QUERY, k=7, where={"team": "c"})
        assert ids == exact_top(7, "c")

        col.create_payload_index("team")  # again: nothing changes
        col.create_payload_index("author.name")
        assert col.config.payload_indexes == ("team", "author.name")
        assert [e["path"] for e in col.payload_indexes()] == ["author.name", "team"]

        col.drop_payload_index("team")
        assert col.config.payload_indexes == ("author.name",)
        dropped = entry(col, "team")
        assert dropped is None or dropped["pinned"] is False

    with ragstore.open(store_location) as store:
        col = store.get_collection("v")
        assert col.config.payload_indexes == ("author.name",)
        assert store.list_collections()[0].config.payload_indexes == ("author.name",)
        # listed before any filter ran: built when the index first loaded
        assert [(e["path"], e["pinned"], e["values"]) for e in col.payload_indexes()] == [
            ("author.name", True, 6)
        ]


def test_declared_paths_survive_the_index_starting_afresh(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = filled(store)
        col.create_payload_index("team")
        col.vector_index.reload()  # what doctor's repair does; payload columns start afresh
        team = entry(col, "team")
        assert team is not None and team["pinned"] and team["values"] == 4
        assert [h.doc_id for h in col.search(vector=QUERY, k=5, where={"team": "a"})] == (
            exact_top(5, "a")
        )


def test_a_search_that_loads_the_index_builds_the_declared_paths(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        filled(store).create_payload_index("team")
    with ragstore.open(tmp_path / "store") as store:
        col = store.get_collection("v")
        col.search(vector=QUERY, k=3, where={"n": {"$lt": 50}})  # another path
        listed = {e["path"]: (e["pinned"], e["values"]) for e in col.payload_indexes()}
        assert listed == {"n": (False, COUNT + 1), "team": (True, 4)}


def test_bad_paths_and_unknown_drops_name_the_path(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = filled(store)
        for bad, says in [("a..b", "empty path segment"), ("", "empty path segment"),
                          ('a"b', "cannot hold"), ("$or", "operator")]:  # fmt: skip
            with pytest.raises(InvalidInput, match=re.escape(says)) as caught:
                col.create_payload_index(bad)
            assert caught.value.field == "path"
        with pytest.raises(InvalidInput, match="not int"):
            col.create_payload_index(3)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="no payload index on 'team'") as unknown:
            col.drop_payload_index("team")
        assert unknown.value.field == "path"
        assert col.config.payload_indexes == ()


def test_at_most_so_many_paths(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("v", embedder=None, dim=DIM)
        for i in range(MAX_PAYLOAD_INDEXES):
            col.create_payload_index(f"f{i}")
        with pytest.raises(InvalidInput, match=f"at most {MAX_PAYLOAD_INDEXES}"):
            col.create_payload_index("one.more")
        assert len(col.config.payload_indexes) == MAX_PAYLOAD_INDEXES


def test_a_reindexed_collection_keeps_its_payload_indexes(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        filled(store).create_payload_index("team")
        store.reindex("v", "v2", index={"kind": "hnsw"})
        assert store.get_collection("v2").config.payload_indexes == ("team",)


def test_an_alias_reaches_the_collection_s_payload_indexes(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        filled(store)
        store.set_alias("current", "v")
        store.get_collection("current").create_payload_index("team")
        assert store.get_collection("v").config.payload_indexes == ("team",)
        assert entry(store.get_collection("current"), "team") is not None


def test_in_database_collections_record_the_paths_and_say_sql(
    pg_server: Any, tmp_path: Path
) -> None:
    with ragstore.open(pg_server.create_database()) as store:
        col = store.create_collection("p", embedder=None, dim=DIM, index={"kind": "pgvector"})
        col.upsert_vectors(IDS, VECTORS, METADATA)
        col.create_payload_index("team")
        assert col.payload_indexes() == [
            {"path": "team", "pinned": True, "values": None, "too_varied": None, "bytes": 0,
             "served_by": "sql"}
        ]  # fmt: skip
        hits = col.search(vector=QUERY, k=50, where={"team": "b"})
        assert {h.doc_id for h in hits} <= {IDS[i] for i, m in enumerate(METADATA)
                                            if m.get("team") == "b"}  # fmt: skip
        col.drop_payload_index("team")
        assert col.payload_indexes() == []


# ---------------------------------------------------------------------- config


def test_stored_configs_without_the_field_still_load() -> None:
    old = {"embedder": None, "dim": 4, "chunking": {"chunk_size": 256, "chunk_overlap": 32},
           "index": {"kind": "flat"}}  # fmt: skip
    config = CollectionConfig.parse(old)
    assert config.payload_indexes == ()
    assert "payload_indexes" not in json.loads(config.to_json())  # stored as before
    assert config.model_dump()["payload_indexes"] == ()  # shown
    declared = CollectionConfig.parse(old | {"payload_indexes": ["team", "author.name"]})
    assert json.loads(declared.to_json())["payload_indexes"] == ["team", "author.name"]
    assert CollectionConfig.parse(json.loads(declared.to_json())) == declared


@pytest.mark.parametrize(
    ("paths", "says"),
    [
        (["team", "team"], "listed twice"),
        (["a..b"], "empty path segment"),
        (["$and"], "operator"),
        ([f"f{i}" for i in range(MAX_PAYLOAD_INDEXES + 1)], f"at most {MAX_PAYLOAD_INDEXES}"),
    ],
)
def test_config_validation(paths: list[str], says: str) -> None:
    with pytest.raises(InvalidConfig, match=re.escape(says)) as caught:
        CollectionConfig.parse({"dim": 4, "payload_indexes": paths})
    assert caught.value.field == "payload_indexes"


# -------------------------------------------------------------------------- CLI


def invoke(store: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--store", str(store), "--collection", "v", *args])
    return result.exit_code, result.output


def test_cli_create_list_drop(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        filled(store)
    where = tmp_path / "store"
    assert invoke(where, "payload-index", "create", "team") == (0, "payload index on team\n")
    code, listed = invoke(where, "payload-index", "list", "--json")
    assert code == 0
    assert [(e["path"], e["pinned"], e["values"]) for e in json.loads(listed)] == [
        ("team", True, 4)
    ]
    code, text = invoke(where, "payload-index", "list")
    assert code == 0 and text.startswith("team: pinned, 4 values, ")
    code, shown = invoke(where, "collections", "--json")
    assert code == 0 and json.loads(shown)[0]["config"]["payload_indexes"] == ["team"]
    assert "payload indexes team" in invoke(where, "collections")[1]
    assert invoke(where, "payload-index", "drop", "team") == (0, "dropped payload index on team\n")
    assert invoke(where, "payload-index", "list", "--json")[1].strip() == "[]"


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        filled(store)
    where = tmp_path / "store"
    code, output = invoke(where, "payload-index", "create", "a..b")
    assert code == 2 and "'a..b'" in output
    code, output = invoke(where, "payload-index", "drop", "team")
    assert code == 2 and "no payload index on 'team'" in output
    assert invoke(where, "payload-index", "create")[0] == 2
    assert invoke(where, "payload-index", "rename", "team")[0] == 2


def test_every_payload_index_command_has_help_and_is_documented() -> None:
    group = cli.commands["payload-index"]
    assert group.help
    reference = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        result = CliRunner().invoke(cli, ["payload-index", name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
        assert f"`{name}" in reference or f"payload-index {name}" in reference, name


# ------------------------------------------------------------------------- HTTP

KEYS = {
    "k-admin": {"id": "admin", "role": "admin", "tenants": ["*"]},
    "k-write": {"id": "acme-write", "role": "write", "tenants": ["acme"]},
    "k-read": {"id": "acme-read", "role": "read", "tenants": ["acme"]},
}
ROUTE = "/v1/tenants/acme/collections/v/payload-indexes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("payload-server")
    with ragstore.open(root / "store") as store:
        filled(store, "acme.v")
    running = Server(root / "store", root / "server.log", keys=write_keys(root / "keys.json", KEYS))
    try:
        yield running.wait_ready()
    finally:
        running.terminate()


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    check_error_body(error)
    return error


def test_http_routes(server: Server) -> None:
    with server.client("k-write") as writer, server.client("k-read") as reader:
        assert error_of(reader.put(f"{ROUTE}/team"), 403)["type"] == "forbidden"
        created = writer.put(f"{ROUTE}/team")
        assert created.status_code == 200, created.text
        team = {e["path"]: e for e in created.json()["payload_indexes"]}["team"]
        assert (team["pinned"], team["values"]) == (True, 4)
        assert writer.put(f"{ROUTE}/team").status_code == 200  # again: the same

        listed = reader.get(ROUTE).json()["payload_indexes"]
        assert [(e["path"], e["pinned"], e["values"]) for e in listed] == [("team", True, 4)]
        body = {"vector": QUERY.tolist(), "k": 6, "filter": {"team": "b"}, "mode": "dense"}
        found = reader.post("/v1/tenants/acme/collections/v/search", json=body)
        assert [h["doc_id"] for h in found.json()["hits"]] == exact_top(6, "b")

        slashed = writer.put(f"{ROUTE}/{'a/b'.replace('/', '%2F')}")
        assert slashed.status_code == 200, slashed.text
        assert "a/b" in [e["path"] for e in slashed.json()["payload_indexes"]]

        assert writer.delete(f"{ROUTE}/team").json() == {"deleted": "team"}
        after = {e["path"]: e["pinned"] for e in reader.get(ROUTE).json()["payload_indexes"]}
        assert after.get("team") in (None, False) and after["a/b"] is True

    with ragstore.open(server.store) as store:  # stored with the collection
        assert store.get_collection("acme.v").config.payload_indexes == ("a/b",)


def test_http_bad_input_is_4xx_naming_the_path(server: Server) -> None:
    with server.client("k-write") as writer:
        for bad in ("a..b", "%24or", "a%22b"):
            error = error_of(writer.put(f"{ROUTE}/{bad}"), 422)
            assert error["field"] == "path" and error["class"] == "InvalidInput"
        error = error_of(writer.delete(f"{ROUTE}/never.made"), 422)
        assert error["field"] == "path" and "'never.made'" in error["message"]
        assert error_of(writer.put(f"{ROUTE}/"), 422)["field"] == "path"
        assert error_of(writer.put(f"{ROUTE}/{'x' * 1025}"), 422)["field"] == "path"
        missing = "/v1/tenants/acme/collections/nope/payload-indexes"
        assert error_of(writer.put(f"{missing}/team"), 404)["type"] == "not_found"
        assert error_of(writer.get(missing), 404)["type"] == "not_found"
    assert " 500" not in server.logs()


# ------------------------------------------------------------------ remote clients

METHODS = ("create_payload_index", "drop_payload_index", "payload_indexes")


@pytest.mark.parametrize("method", METHODS)
def test_the_remote_collections_have_the_same_methods(method: str) -> None:
    mine = inspect.signature(getattr(Collection, method))
    for remote in (ragstore.RemoteCollection, ragstore.AsyncRemoteCollection):
        theirs = inspect.signature(getattr(remote, method))
        assert list(theirs.parameters) == list(mine.parameters), remote
        assert [p.default for p in theirs.parameters.values()] == [
            p.default for p in mine.parameters.values()
        ]
    assert inspect.iscoroutinefunction(getattr(ragstore.AsyncRemoteCollection, method))


def test_the_remote_clients_do_what_the_embedded_collection_does(server: Server) -> None:
    with ragstore.connect(server.url, api_key="k-write", tenant="acme") as remote:
        col = remote.get_collection("v")
        col.create_payload_index("author.name")
        named = entry(col, "author.name")
        assert named is not None and (named["pinned"], named["values"]) == (True, 6)
        with pytest.raises(InvalidInput, match="empty path segment") as bad:
            col.create_payload_index("a..b")  # refused before anything is sent
        assert bad.value.field == "path"
        with pytest.raises(InvalidInput, match="no payload index on") as unknown:
            col.drop_payload_index("never.made")  # refused by the server
        assert unknown.value.field == "path"
        col.drop_payload_index("author.name")
        assert (entry(col, "author.name") or {}).get("pinned") in (None, False)

    async def scenario() -> list[dict[str, Any]]:
        async with ragstore.connect_async(server.url, api_key="k-write", tenant="acme") as store:
            col = await store.get_collection("v")
            await col.create_payload_index("n")
            listed = await col.payload_indexes()
            await col.drop_payload_index("n")
            return listed

    listed = asyncio.run(scenario())
    assert {e["path"]: e["pinned"] for e in listed}["n"] is True

"""Aliases: names that stand for a collection, switched in one step and followed at the
next call by every object, process and server that uses them; on every backend."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from server_helpers import Server, write_keys

import ragstore
from ragstore.cli import cli
from ragstore.embed import Embedder
from ragstore.embed.base import Vectors
from ragstore.engine.store import AliasedCollection, Collection
from ragstore.errors import AliasMoved
from ragstore.store.base import AliasRow
from ragstore.store.sqlite.db import DB_FILENAME, SCHEMA_VERSION

WORKERS = str(Path(__file__).with_name("workers.py"))
REFUNDS = {"id": "refunds", "text": "Items can be returned within 30 days for a full refund."}
SHIPPING = {"id": "shipping", "text": "Standard shipping takes three to five business days."}
QUERY = "how many days do I have to return an item for a refund?"
Write = Callable[[Collection], object]


@pytest.fixture
def two(store: ragstore.Store) -> ragstore.Store:
    """The store with ``v1`` (about refunds) and ``v2`` (about shipping)."""
    store.create_collection("v1").upsert([REFUNDS])
    store.create_collection("v2").upsert([SHIPPING])
    return store


@pytest.fixture
def other(store_location: str | Path, two: ragstore.Store) -> Iterator[ragstore.Store]:
    """A second Store object on the same store: another process, as far as the first
    one can tell."""
    with ragstore.open(store_location) as opened:
        yield opened


def ids(hits: Sequence[ragstore.Hit]) -> list[str]:
    return [hit.doc_id for hit in hits]


# ---------------------------------------------------------------- managing


def test_set_list_rollback_and_delete(two: ragstore.Store) -> None:
    assert two.set_alias("docs", "v1") == AliasRow("docs", "v1", None)
    assert two.set_alias("docs", "v1") == AliasRow("docs", "v1", None)  # no change
    assert two.set_alias("docs", "v2") == AliasRow("docs", "v2", "v1")
    two.set_alias("other", "v1")
    assert two.list_aliases() == [AliasRow("docs", "v2", "v1"), AliasRow("other", "v1", None)]
    assert two.list_aliases()[0].to_dict() == {"name": "docs", "collection": "v2", "previous": "v1"}
    assert two.alias_target("docs") == "v2"
    assert two.rollback_alias("docs") == AliasRow("docs", "v1", "v2")
    assert two.rollback_alias("docs") == AliasRow("docs", "v2", "v1")  # undoes the rollback
    with pytest.raises(ragstore.Conflict, match="no previous collection"):
        two.rollback_alias("other")
    two.delete_alias("docs")
    assert two.alias_target("docs") is None
    assert [a.name for a in two.list_aliases()] == ["other"]
    with pytest.raises(ragstore.NotFound):
        two.delete_alias("docs")
    with pytest.raises(ragstore.NotFound):
        two.rollback_alias("docs")
    assert two.get_collection("v2").count() == 1  # collections stay


def test_aliases_and_collections_share_one_namespace(two: ragstore.Store) -> None:
    two.set_alias("docs", "v1")
    with pytest.raises(ragstore.Conflict, match="is a collection"):
        two.set_alias("v2", "v1")
    with pytest.raises(ragstore.Conflict, match="is an alias"):
        two.create_collection("docs")
    with pytest.raises(ragstore.NotFound, match="missing"):
        two.set_alias("docs", "missing")
    with pytest.raises(ragstore.NotFound):
        two.set_alias("docs2", "docs")  # an alias names a collection, not an alias
    with pytest.raises(ragstore.InvalidInput, match="invalid alias name"):
        two.set_alias("no spaces", "v1")
    with pytest.raises(ragstore.InvalidInput, match="invalid collection name"):
        two.set_alias("docs", "")
    assert two.collection("docs").info().name == "v1"  # get-or-create finds the alias


def test_a_collection_an_alias_names_cannot_be_deleted(two: ragstore.Store) -> None:
    two.set_alias("docs", "v1")
    with pytest.raises(ragstore.Conflict, match="alias 'docs'"):
        two.delete_collection("v1")
    with pytest.raises(ragstore.Conflict, match="'docs' is an alias"):
        two.delete_collection("docs")
    two.set_alias("docs", "v2")
    two.delete_collection("v1")  # only the previous one: the rollback target goes
    assert two.list_aliases() == [AliasRow("docs", "v2", None)]
    with pytest.raises(ragstore.Conflict, match="no previous collection"):
        two.rollback_alias("docs")
    two.create_collection("v1")  # a new collection of the old name is not the previous
    assert two.list_aliases() == [AliasRow("docs", "v2", None)]


# ---------------------------------------------------------- calls through one


def test_reads_and_writes_go_through_an_alias(two: ragstore.Store) -> None:
    two.set_alias("docs", "v1")
    v1 = two.get_collection("v1")
    docs = two.get_collection("docs")
    assert isinstance(docs, Collection) and isinstance(docs, AliasedCollection)
    assert (docs.name, docs.id, docs.config) == ("docs", v1.id, v1.config)
    assert docs.embedder is v1.embedder
    assert ids(docs.search(QUERY, k=1)) == ["refunds"]
    assert docs.count() == 1 and docs.page_of_ids() == ["refunds"]
    assert docs.get("refunds")[0].text == REFUNDS["text"]
    assert docs.info().name == "v1" and docs.info().documents == 1
    assert docs.index_stats()["vectors"] == 1
    vector = v1.embedder.embed_query(QUERY)  # type: ignore[union-attr]
    assert docs.search_vectors(vector, 1)[0] == ["refunds"]
    assert docs.check_recall(sample=1, k=1)["queries"] == 1
    docs.optimize()
    docs.wait_for_index()

    report = docs.upsert([SHIPPING | {"id": "ship"}])
    assert report.documents_added == 1 and v1.count() == 2
    assert docs.delete(["ship"]) == 1 and v1.count() == 1
    assert two.collection("docs").count() == 1


def test_every_public_member_of_a_collection_follows_the_alias() -> None:
    public = {name for name in dir(Collection) if not name.startswith("_")}
    assert public - set(vars(AliasedCollection)) == set()


def test_a_switch_by_another_store_is_seen_at_the_next_call(
    two: ragstore.Store, other: ragstore.Store
) -> None:
    two.set_alias("docs", "v1")
    docs = two.get_collection("docs")
    assert ids(docs.search(QUERY, k=1)) == ["refunds"]

    other.set_alias("docs", "v2")

    assert ids(docs.search(QUERY, k=1)) == ["shipping"]
    assert docs.id == two.get_collection("v2").id
    docs.upsert([{"id": "late", "text": "Written after the switch."}])
    assert other.get_collection("v2").get("late") and not other.get_collection("v1").get("late")
    other.rollback_alias("docs")
    assert docs.count() == 1 and ids(docs.search(QUERY, k=1)) == ["refunds"]


class SwitchingModel:
    """The real model, which switches alias ``docs`` to ``v2`` (through another Store
    object) the first time it embeds passages: after the write resolved its target,
    before it commits."""

    def __init__(self, inner: Embedder, switch: Callable[[], object]) -> None:
        self._inner = inner
        self._switch: Callable[[], object] | None = switch
        self.name, self.version = inner.name, inner.version
        self.dim, self.max_tokens = inner.dim, inner.max_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._inner.token_offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if self._switch is not None:
            self._switch()
            self._switch = None
        return self._inner.embed_documents(texts)

    def embed_query(self, text: str) -> Vectors:
        return self._inner.embed_query(text)


def test_a_write_racing_a_switch_lands_on_the_new_collection(
    two: ragstore.Store, other: ragstore.Store, embedder: Embedder
) -> None:
    two.set_alias("docs", "v1")
    model = SwitchingModel(embedder, lambda: other.set_alias("docs", "v2"))
    docs = two.get_collection("docs", embedder=model)

    report = docs.upsert([{"id": "racer", "text": "Written while the alias moved."}])

    assert report.documents_added == 1
    assert other.get_collection("v2").get("racer")
    assert not other.get_collection("v1").get("racer")


def test_an_ingest_racing_a_switch_lands_on_the_new_collection(
    two: ragstore.Store, other: ragstore.Store, tmp_path: Path
) -> None:
    (tmp_path / "note.txt").write_text("Written by an ingest while the alias moved.")
    two.set_alias("docs", "v1")
    docs = two.get_collection("docs")

    docs.ingest([tmp_path], progress=lambda done, total: other.set_alias("docs", "v2"))

    assert other.get_collection("v2").get("note.txt")
    assert not other.get_collection("v1").get("note.txt")


def test_vector_writes_and_deletes_racing_a_switch_land_on_the_new_collection(
    store: ragstore.Store, store_location: str | Path
) -> None:
    basis = np.eye(4, dtype=np.float32)
    for name in ("a", "b"):
        store.create_collection(name, embedder=None, dim=4).upsert_vectors(["x"], basis[:1])
    store.set_alias("vecs", "a")
    vecs = store.get_collection("vecs")
    assert isinstance(vecs, AliasedCollection)

    with ragstore.open(store_location) as other:

        def switching_to(name: str, call: Write) -> Write:
            """``call``, after switching the alias to ``name`` the first time (once the
            write resolved its target)."""
            pending = [name]

            def run(target: Collection) -> object:
                if pending:
                    other.set_alias("vecs", pending.pop())
                return call(target)

            return run

        vecs._write(switching_to("b", lambda c: c.upsert_vectors(["y"], basis[1:2])))
        assert not other.get_collection("a").get("y") and other.get_collection("b").get("y")
        vecs._write(switching_to("a", lambda c: c.delete(["x"])))
        assert (other.get_collection("a").count(), other.get_collection("b").count()) == (0, 2)


def test_a_switch_waits_for_a_write_that_checked_the_alias(
    two: ragstore.Store, other: ragstore.Store
) -> None:
    """What a write's guard read stays true until it commits: on SQLite one writer runs
    at a time, on PostgreSQL the guard's look-up takes the store's name lock."""
    two.set_alias("docs", "v1")
    switch = threading.Thread(target=lambda: other.set_alias("docs", "v2"))
    with two._db.write() as writer:
        found = writer.find_alias("docs")
        assert found is not None and found.collection == "v1"
        switch.start()
        switch.join(0.5)
        assert switch.is_alive()  # the switch waits for this transaction
    switch.join(60)
    assert not switch.is_alive() and two.alias_target("docs") == "v2"


def test_a_write_gives_up_when_the_alias_never_stops_moving(
    two: ragstore.Store, other: ragstore.Store
) -> None:
    two.set_alias("docs", "v1")
    docs = two.get_collection("docs")
    assert isinstance(docs, AliasedCollection)
    targets = iter(["v2", "v1"] * 10)

    def always_moved(target: Collection) -> int:
        other.set_alias("docs", next(targets))
        return target.delete(["refunds"])

    with pytest.raises(AliasMoved, match="moved 5 times"):
        docs._write(always_moved)
    assert other.get_collection("v1").count() == 1 and other.get_collection("v2").count() == 1


def test_the_cache_never_answers_across_a_switch(
    two: ragstore.Store, other: ragstore.Store
) -> None:
    two.set_alias("docs", "v1")
    docs = two.get_collection("docs")
    first = docs.search(QUERY, k=1, cache=True)
    again = docs.search(QUERY, k=1, cache=True)
    assert ids(first) == ids(again) == ["refunds"] and again[0].cached == "exact"

    other.set_alias("docs", "v2")

    assert docs.cached_answer(QUERY, k=1) is None  # a commit since: not from memory
    after = docs.search(QUERY, k=1, cache=True)
    assert ids(after) == ["shipping"] and after[0].cached is None
    repeated = docs.search(QUERY, k=1, cache=True)
    assert ids(repeated) == ["shipping"] and repeated[0].cached == "exact"
    # v1's entry is still its own
    assert ids(two.get_collection("v1").search(QUERY, k=1, cache=True)) == ["refunds"]


def test_known_collection_serves_an_alias_until_a_commit(sqlite_store: ragstore.Store) -> None:
    """SQLite only: a PostgreSQL store has no commit marker, and always looks again."""
    sqlite_store.create_collection("v1", embedder=None, dim=4)
    sqlite_store.create_collection("v2", embedder=None, dim=4)
    sqlite_store.set_alias("vecs", "v1")
    vecs = sqlite_store.get_collection("vecs")
    assert sqlite_store.known_collection("vecs") is vecs
    sqlite_store.set_alias("vecs", "v2")
    assert sqlite_store.known_collection("vecs") is None
    assert sqlite_store.get_collection("vecs").info().name == "v2"


def test_an_older_sqlite_store_gains_the_aliases_table(tmp_path: Path) -> None:
    import sqlite3

    with ragstore.open(tmp_path / "store") as store:
        store.create_collection("v1", embedder=None, dim=4)
    conn = sqlite3.connect(tmp_path / "store" / DB_FILENAME)
    conn.execute("DROP TABLE aliases")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.commit()
    conn.close()
    with ragstore.open(tmp_path / "store") as store:
        assert store.set_alias("vecs", "v1") == AliasRow("vecs", "v1", None)


# --------------------------------------------------------------- processes


def test_a_switch_in_another_process_is_seen_while_this_one_searches_and_writes(
    store: ragstore.Store, store_location: str | Path
) -> None:
    basis = np.eye(16, dtype=np.float32)
    store.create_collection("v1", embedder=None, dim=16).upsert_vectors(["v1"], basis[:1])
    store.create_collection("v2", embedder=None, dim=16).upsert_vectors(["v2"], basis[:1])
    store.set_alias("docs", "v1")
    docs = store.get_collection("docs")
    flipper = subprocess.Popen(
        [sys.executable, WORKERS, "alias-flipper", str(store_location), "40"]
    )
    seen: set[str] = set()
    written = 0
    while flipper.poll() is None:
        found = docs.search_vectors(basis[0], 1)[0]
        seen.update(found)
        docs.upsert_vectors([f"w{written}"], basis[1:2])
        written += 1
    assert flipper.wait() == 0

    assert docs.search_vectors(basis[0], 1)[0] == ["v2"]
    assert seen == {"v1", "v2"}
    # each write landed once, on one of the two
    landed = store.get_collection("v1").count() + store.get_collection("v2").count() - 2
    assert landed == written


# --------------------------------------------------------------------- CLI


def invoke(store: str | Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--store", str(store), *args])
    return result.exit_code, result.output


def test_cli_alias_commands(two: ragstore.Store, store_location: str | Path) -> None:
    assert invoke(store_location, "alias", "set", "docs", "v1") == (0, "docs -> v1\n")
    assert invoke(store_location, "alias", "set", "docs", "v2") == (
        0,
        "docs -> v2 (previously v1)\n",
    )
    code, out = invoke(store_location, "alias", "list", "--json")
    assert code == 0 and json.loads(out) == [{"name": "docs", "collection": "v2", "previous": "v1"}]
    assert invoke(store_location, "alias", "list") == (0, "docs -> v2 (previously v1)\n")
    code, out = invoke(store_location, "--collection", "docs", "query", QUERY, "-k", "1", "--json")
    assert code == 0 and [h["doc_id"] for h in json.loads(out)["hits"]] == ["shipping"]
    assert invoke(store_location, "alias", "rollback", "docs") == (
        0,
        "docs -> v1 (previously v2)\n",
    )
    assert invoke(store_location, "--collection", "docs", "count") == (0, "1\n")

    code, out = invoke(store_location, "alias", "set", "docs", "missing")
    assert code == 1 and "no collection named 'missing'" in out
    code, out = invoke(store_location, "alias", "set", "v1", "v2")
    assert code == 1 and "is a collection" in out
    assert invoke(store_location, "alias", "set", "bad name", "v1")[0] == 2
    assert invoke(store_location, "alias", "set", "docs")[0] == 2
    assert invoke(store_location, "alias", "bogus")[0] == 2

    assert invoke(store_location, "alias", "delete", "docs") == (0, "deleted alias docs\n")
    assert invoke(store_location, "alias", "delete", "docs")[0] == 1
    assert invoke(store_location, "alias", "rollback", "docs")[0] == 1
    assert invoke(store_location, "alias", "list") == (0, "")


# -------------------------------------------------------------------- HTTP

KEYS = {
    "k-acme": {"id": "acme-admin", "role": "admin", "tenants": ["acme"]},
    "k-acme-read": {"id": "acme-read", "role": "read", "tenants": ["acme"]},
    "k-acme-docs": {
        "id": "acme-docs", "role": "read", "tenants": ["acme"], "collections": ["docs"]
    },
    "k-globex": {"id": "globex-admin", "role": "admin", "tenants": ["globex"]},
}  # fmt: skip
ACME = "/v1/tenants/acme"
GLOBEX = "/v1/tenants/globex"


@pytest.fixture
def server(store_location: str | Path, tmp_path: Path) -> Iterator[Server]:
    keys = write_keys(tmp_path / "keys.json", KEYS)
    running = Server(store_location, tmp_path / "server.log", keys=keys)
    try:
        yield running.wait_ready()
    finally:
        assert running.terminate() in (0, -signal.SIGTERM), running.logs()


def test_http_alias_routes(server: Server) -> None:
    with server.client("k-acme") as acme:
        for name, doc in (("v1", REFUNDS), ("v2", SHIPPING)):
            assert acme.post(f"{ACME}/collections", json={"name": name}).status_code == 201
            written = acme.post(f"{ACME}/collections/{name}/documents", json={"documents": [doc]})
            assert written.status_code == 200
        put = acme.put(f"{ACME}/aliases/docs", json={"collection": "v1"})
        assert put.json() == {
            "name": "docs",
            "collection": "v1",
            "previous": None,
            "tenant": "acme",
        }
        search = f"{ACME}/collections/docs/search"
        body = {"query": QUERY, "k": 1}
        assert [h["doc_id"] for h in acme.post(search, json=body).json()["hits"]] == ["refunds"]
        assert acme.post(search, json=body).json()["hits"][0]["cached"] == "exact"

        assert (
            acme.put(f"{ACME}/aliases/docs", json={"collection": "v2"}).json()["previous"] == "v1"
        )
        after = acme.post(search, json=body).json()["hits"]
        assert [h["doc_id"] for h in after] == ["shipping"] and after[0]["cached"] is None
        assert acme.get(f"{ACME}/collections/docs").json()["name"] == "v2"
        upsert = {"documents": [{"id": "late", "text": "Written through the alias."}]}
        assert acme.post(f"{ACME}/collections/docs/documents", json=upsert).status_code == 200
        assert acme.get(f"{ACME}/collections/v2/documents/late").status_code == 200
        assert acme.post(f"{ACME}/collections/docs/count", json={}).json() == {"count": 2}
        listed = acme.get(f"{ACME}/collections/docs/documents").json()["documents"]
        assert [d["id"] for d in listed] == ["late", "shipping"]
        assert acme.delete(f"{ACME}/collections/docs/documents/late").json() == {"deleted": 1}
        assert acme.get(f"{ACME}/aliases").json() == {
            "aliases": [{"name": "docs", "collection": "v2", "previous": "v1", "tenant": "acme"}]
        }

        rolled = acme.post(f"{ACME}/aliases/docs/rollback").json()
        assert (rolled["collection"], rolled["previous"]) == ("v1", "v2")
        assert [h["doc_id"] for h in acme.post(search, json=body).json()["hits"]] == ["refunds"]

        assert acme.delete(f"{ACME}/collections/v1").status_code == 409  # docs names it
        assert acme.delete(f"{ACME}/collections/docs").status_code == 409  # an alias
        assert acme.post(f"{ACME}/collections", json={"name": "docs"}).status_code == 409
        assert acme.put(f"{ACME}/aliases/v2", json={"collection": "v1"}).status_code == 409
        assert acme.put(f"{ACME}/aliases/x", json={"collection": "nope"}).status_code == 404
        assert acme.put(f"{ACME}/aliases/x", json={"collection": "globex.v1"}).status_code == 422
        assert acme.put(f"{ACME}/aliases/x.y", json={"collection": "v1"}).status_code == 422
        assert acme.put(f"{ACME}/aliases/x", json={}).status_code == 422
        assert acme.put(f"{ACME}/aliases/x", content=b"[").status_code == 422
        assert acme.post(f"{ACME}/aliases/nope/rollback").status_code == 404
        assert acme.delete(f"{ACME}/aliases/nope").status_code == 404

        with server.client("k-acme-read") as reader:
            assert reader.get(f"{ACME}/aliases").status_code == 200
            assert reader.put(f"{ACME}/aliases/docs", json={"collection": "v2"}).status_code == 403
            assert reader.delete(f"{ACME}/aliases/docs").status_code == 403
            assert reader.post(f"{ACME}/aliases/docs/rollback").status_code == 403
        with server.client("k-acme-docs") as narrow:  # scoped to the name "docs"
            assert narrow.post(search, json=body).status_code == 200
            assert narrow.get(f"{ACME}/collections/v1").status_code == 403

        with server.client("k-globex") as globex:
            assert globex.get(f"{ACME}/aliases").status_code == 403
            assert globex.post(search, json=body).status_code == 403
            assert globex.get(f"{GLOBEX}/aliases").json() == {"aliases": []}
            assert globex.post(f"{GLOBEX}/collections/docs/search", json=body).status_code == 404
            to_v1 = {"collection": "v1"}
            assert globex.put(f"{GLOBEX}/aliases/docs", json=to_v1).status_code == 404  # no v1
            assert globex.post(f"{GLOBEX}/collections", json={"name": "v1"}).status_code == 201
            assert globex.put(f"{GLOBEX}/aliases/docs", json=to_v1).status_code == 200
            count = globex.post(f"{GLOBEX}/collections/docs/count", json={})
            assert count.json() == {"count": 0}  # its own v1, not acme's

        assert acme.post(f"{ACME}/collections/docs/count", json={}).json() == {"count": 1}
        assert acme.delete(f"{ACME}/aliases/docs").json() == {"deleted": "docs"}
        assert acme.post(search, json=body).status_code == 404
        assert acme.delete(f"{ACME}/collections/v1").status_code == 200

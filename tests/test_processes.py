"""Several real processes on one store, and a real kill -9 in the middle of an ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from checks import assert_whole_documents
from conftest import RAGSTORE_BIN

import ragstore

WORKERS = str(Path(__file__).with_name("workers.py"))


def test_concurrent_writers_and_reader_never_see_locks_or_partial_batches(
    store_location: str | Path,
) -> None:
    store_path = store_location
    with ragstore.open(store_path) as store:
        store.create_collection("vecs", embedder=None, dim=16)
    commands = [
        [sys.executable, WORKERS, "writer", str(store_path), "a", "60"],
        [sys.executable, WORKERS, "writer", str(store_path), "b", "60"],
        [sys.executable, WORKERS, "reader", str(store_path), "8"],
    ]
    procs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=240)[1] for p in procs]

    for proc, stderr in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr
    with ragstore.open(store_path) as store:
        # each writer: 60 batches of 5, minus 6 deleted batches
        assert store.get_collection("vecs").count() == 2 * (60 - 6) * 5


def paragraphs(doc: int) -> str:
    return "\n\n".join(
        f"Record {doc}, part {part}: the station measured wind, rain and temperature every "
        f"hour and sent the readings to the archive, where analysts compared them with the "
        f"forecast for region {doc % 17} and wrote a short note about each difference."
        for part in range(4)
    )


def test_kill_9_during_ingest_leaves_only_whole_documents(
    tmp_path: Path, store_location: str | Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    total = 320
    for doc in range(total):
        (folder / f"doc{doc:04d}.txt").write_text(paragraphs(doc))
    store_path = store_location
    with ragstore.open(store_path) as store:
        store.create_collection("c", chunk_size=48, chunk_overlap=8)

    proc = subprocess.Popen(
        [RAGSTORE_BIN, "--store", str(store_path), "--collection", "c", "ingest", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    committed = wait_for_documents(store_path, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < committed < total

    with ragstore.open(store_path) as store:
        col = store.get_collection("c")
        survived = col.count()
        assert committed <= survived < total
        assert_whole_documents(col)
        assert col.search("wind and rain readings", k=5)

        report = col.ingest([folder])

        assert report.documents_unchanged == survived
        assert report.documents_added == total - survived
        assert col.count() == total


def test_kill_9_during_index_builds_leaves_a_working_index(store_location: str | Path) -> None:
    store_path = store_location
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(6000, 16)).astype(np.float32)
    with ragstore.open(store_path) as store:
        col = store.create_collection("ann", embedder=None, dim=16, index={"nlist": 16})
        col.upsert_vectors([str(i) for i in range(len(vectors))], vectors)
        col.optimize()
    proc = subprocess.Popen([sys.executable, WORKERS, "rebuilder", str(store_path)])
    time.sleep(3.0)  # several rebuilds: a kill lands mid-build or mid-swap
    assert proc.poll() is None, "the rebuilder stopped by itself"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    with ragstore.open(store_path) as store:
        col = store.get_collection("ann")
        assert col.index_stats()["vectors"] == len(vectors)
        for i in range(0, len(vectors), 250):
            assert col.search_vectors(vectors[i], 1, ef_search=128, nprobe=16)[0] == [str(i)]
        col.optimize()
        assert col.index_stats()["segments"][0]["kind"] == col.config.index.kind


def test_a_segment_sealed_by_another_process_is_adopted(store_location: str | Path) -> None:
    store_path = store_location
    vectors = np.random.default_rng(8).normal(size=(3000, 16)).astype(np.float32)
    with ragstore.open(store_path) as store:
        col = store.create_collection("ann", embedder=None, dim=16, index={"kind": "hnsw"})
        col.upsert_vectors([str(i) for i in range(3000)], vectors)
        assert col.search_vectors(vectors[5], 1)[0] == ["5"]  # all in the growing segment
        subprocess.run([sys.executable, WORKERS, "optimize", str(store_path)], check=True)
        col.delete(["6"])
        stats = col.index_stats()
        assert [(s["kind"], s["vectors"], s["deleted"]) for s in stats["segments"]] == [
            ("hnsw", 3000, 1),
            ("flat", 0, 0),
        ]
        assert col.search_vectors(vectors[5], 1)[0] == ["5"]
        assert "6" not in col.search_vectors(vectors[6], 10)[0]


def test_each_commit_of_another_process_is_seen_by_the_next_search(tmp_path: Path) -> None:
    """SQLite only: it counts SQLite's own change checks (a PostgreSQL store reads the
    snapshot's id with each search instead)."""
    store_path = tmp_path / "store"
    basis = np.eye(16, dtype=np.float32)
    with ragstore.open(store_path) as store:
        col = store.create_collection("vecs", embedder=None, dim=16)
        col.upsert_vectors(["0"], basis[:1])
        looks: list[str] = []
        col._db.db.connection().set_trace_callback(
            lambda sql: looks.append(sql) if "data_version" in sql else None
        )
        for i in range(1, 6):
            assert col.search_vectors(basis[i], 1)[0] != [str(i)]
            looks.clear()
            col.search_vectors(basis[i], 1)
            assert looks == []  # nothing committed since the last look: no statement
            upsert = [sys.executable, WORKERS, "upsert-basis", str(store_path), str(i)]
            subprocess.run(upsert, check=True)
            assert col.search_vectors(basis[i], 1)[0] == [str(i)]
            assert looks == ["PRAGMA data_version"]


def wait_for_documents(location: str | Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 240
    with ragstore.open(location) as store:
        col = store.get_collection("c")
        while time.monotonic() < deadline:
            assert proc.poll() is None, "ingest finished before it could be killed"
            if count := col.count():
                return count
            time.sleep(0.05)
    raise AssertionError("no document was committed in time")

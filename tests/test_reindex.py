"""Blue-green re-indexing: a new collection built from a live one, writes made meanwhile
replayed, an alias switched in one step and rolled back."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from checks import assert_whole_documents
from conftest import RAGSTORE_BIN, unit_vectors
from server_helpers import Server

import ragstore
from ragstore.errors import Conflict, InvalidInput, NotFound

WORDS = [
    "harbour", "lighthouse", "keeper", "logbook", "storm", "shipping", "lanes", "fog", "horn",
    "beacon", "tide", "chart", "granite", "cliff", "seabird", "colony", "ferry", "timetable",
    "salt", "marsh", "estuary", "dredging", "pier",
]  # fmt: skip


def _text(i: int, words: int = 90) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words)) + f" record {i}."


def _seed(col: ragstore.Collection, count: int = 60) -> None:
    col.upsert([{"id": f"d{i}", "text": _text(i), "metadata": {"n": i}} for i in range(count)])


class _Writer(threading.Thread):
    """Upserts one new document at a time through ``col`` and deletes every fifth seed
    document, until stopped; remembers every write that returned."""

    def __init__(self, col: ragstore.Collection) -> None:
        super().__init__(daemon=True)
        self.col = col
        self.written: list[str] = []
        self.deleted: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                self.col.upsert([{"id": f"w{i}", "text": f"written meanwhile {i} ferry pier"}])
                self.written.append(f"w{i}")
                if i % 5 == 0:
                    self.col.delete([f"d{i // 5}"])
                    self.deleted.append(f"d{i // 5}")
                i += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_reindex_while_writes_go_on_loses_none_and_switches(store: ragstore.Store) -> None:
    source = store.create_collection("docs_v1", chunk_size=32, chunk_overlap=4)
    _seed(source)
    store.set_alias("docs", "docs_v1")
    writer = _Writer(store.get_collection("docs"))
    writer.start()
    seen: list[tuple[int, int]] = []
    try:
        while len(writer.written) < 3:
            time.sleep(0.05)
        report = store.reindex(
            "docs",
            "docs_v2",
            chunk_size=128,
            switch="docs",
            progress=lambda d, t: seen.append((d, t)),
        )
        written_before_switch = len(writer.written)
        while len(writer.written) < written_before_switch + 3:
            time.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    assert report.switched == "docs" and report.source == "docs_v1"
    assert seen and seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)

    target = store.get_collection("docs_v2")
    stored = {d.id for d in target.get([*writer.written, *writer.deleted])}
    assert set(writer.written) <= stored, "a write made during the build is missing"
    assert not set(writer.deleted) & stored, "a delete made during the build came back"
    assert store.alias_target("docs") == "docs_v2"
    assert target.count() == 60 - len(writer.deleted) + len(writer.written)
    assert target.config.chunking.chunk_size == 128
    assert_whole_documents(target)
    # writes begun after the switch went to the target only
    old = store.get_collection("docs_v1")
    later = writer.written[written_before_switch + 1 :]
    assert later and not {d.id for d in old.get(later)}

    store.rollback_alias("docs")
    hits = store.get_collection("docs").search("lighthouse keeper logbook", k=5)
    assert [h.chunk_id for h in hits] == [
        h.chunk_id for h in old.search("lighthouse keeper logbook", k=5)
    ]


def test_same_model_and_chunking_reuse_every_vector(store: ragstore.Store) -> None:
    source = store.create_collection("a", chunk_size=32, chunk_overlap=4)
    _seed(source, 20)
    report = store.reindex("a", "b", index={"kind": "flat"})
    assert report.chunks_embedded == 0 and report.chunks_reused == source.info().chunks
    assert store.get_collection("b").count() == 20
    assert report.switched is None


def test_a_vector_collection_moves_to_another_index_kind(store: ragstore.Store) -> None:
    source = store.create_collection("vecs", embedder=None, dim=16, index={"kind": "flat"})
    vectors = unit_vectors(500, 16, seed=2)
    source.upsert_vectors([str(i) for i in range(500)], vectors, [{"i": i} for i in range(500)])
    store.set_alias("live", "vecs")
    report = store.reindex(
        "live", "vecs_hnsw", index={"kind": "hnsw"}, switch="live", drop_old=True
    )
    assert report.documents == 500
    with pytest.raises(NotFound):
        store.get_collection("vecs")
    live = store.get_collection("live")
    assert live.config.index.kind == "hnsw" and live.get("7")[0].metadata == {"i": 7}
    assert live.search(vector=vectors[7], k=1)[0].doc_id == "7"


def test_refusals_leave_nothing_behind(store: ragstore.Store) -> None:
    store.create_collection("v", embedder=None, dim=4).upsert_vectors(
        ["x"], np.eye(4, dtype=np.float32)[:1]
    )
    with pytest.raises(NotFound):
        store.reindex("nope", "t")
    with pytest.raises(Conflict):
        store.reindex("v", "v")
    with pytest.raises(InvalidInput):
        store.reindex("v", "t", embedder="all-MiniLM-L6-v2")
    store.create_collection("other", embedder=None, dim=4)
    with pytest.raises(Conflict):
        store.reindex("v", "t", switch="other")  # a collection's name, not an alias
    assert sorted(c.name for c in store.list_collections()) == ["other", "v"]


# ------------------------------------------------------------------ under HTTP load

BASE = "/v1/tenants/t"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "store", tmp_path / "server.log").wait_ready()
    try:
        yield running
    finally:
        running.terminate()


def _whole_text_hits(answer: dict[str, Any], texts: dict[str, str]) -> bool:
    """Whether every hit covers its whole document: one chunk per document, as the
    target's larger chunks give (the source cuts each seed document in several)."""
    return all(
        h["start"] == 0 and h["end"] == len(texts[h["doc_id"]])
        for h in answer["hits"]
        if h["doc_id"] in texts
    )


def test_reindex_switch_under_http_load(server: Server, tmp_path: Path) -> None:
    texts = {f"d{i}": _text(i) for i in range(80)}
    with server.client() as client:
        made = client.post(
            f"{BASE}/collections", json={"name": "docs_v1", "chunk_size": 32, "chunk_overlap": 4}
        )
        assert made.status_code == 201, made.text
        docs = [{"id": k, "text": v} for k, v in texts.items()]
        assert client.post(
            f"{BASE}/collections/docs_v1/documents", json={"documents": docs[:30]}
        ).is_success
        assert client.post(
            f"{BASE}/collections/docs_v1/documents", json={"documents": docs[30:]}
        ).is_success
        assert client.put(f"{BASE}/aliases/docs", json={"collection": "docs_v1"}).is_success
    searches: list[tuple[float, int, dict[str, Any]]] = []
    written: list[str] = []
    failed_writes: list[str] = []
    stop = threading.Event()

    def search_loop() -> None:
        with server.client() as client:
            while not stop.is_set():
                began = time.monotonic()
                answer = client.post(
                    f"{BASE}/collections/docs/search",
                    json={"query": "lighthouse keeper storm logbook", "k": 5},
                )
                searches.append((began, answer.status_code, answer.json()))

    def write_loop() -> None:
        with server.client() as client:
            i = 0
            while not stop.is_set():
                doc = {"id": f"w{i}", "text": f"written during the build {i} about ferry piers"}
                answer = client.post(
                    f"{BASE}/collections/docs/documents", json={"documents": [doc]}
                )
                (written if answer.is_success else failed_writes).append(f"w{i}")
                i += 1

    loops = [threading.Thread(target=search_loop), threading.Thread(target=write_loop)]
    for loop in loops:
        loop.start()
    try:
        time.sleep(1.0)
        command = [RAGSTORE_BIN, "--store", str(server.store), "reindex", "t.docs"]
        command += ["--to", "t.docs_v2", "--chunk-size", "128", "--switch", "t.docs"]
        subprocess.run(command, check=True, capture_output=True)
        switched = time.monotonic()
        time.sleep(2.0)
    finally:
        stop.set()
        for loop in loops:
            loop.join()

    assert len(searches) >= 20 and len(written) >= 5, "too little load to tell"
    assert [s for s in searches if s[1] != 200] == [], "a search failed during the re-index"
    assert failed_writes == []
    after = [s for s in searches if s[0] > switched]
    assert after, "no search ran after the switch"
    assert all(_whole_text_hits(s[2], texts) for s in after), (
        "a search after the switch used the source"
    )
    assert not all(_whole_text_hits(s[2], texts) for s in searches[:3])
    with server.client() as client:
        for doc_id in written:
            got = client.get(f"{BASE}/collections/docs_v2/documents/{doc_id}")
            assert got.status_code == 200, f"write {doc_id} is not in the target"
        rolled = client.post(f"{BASE}/aliases/docs/rollback")
        assert rolled.is_success, rolled.text
        query = {"query": "lighthouse keeper storm logbook", "k": 5}
        through_alias = client.post(f"{BASE}/collections/docs/search", json=query).json()
        direct = client.post(f"{BASE}/collections/docs_v1/search", json=query).json()
    assert [h["chunk_id"] for h in through_alias["hits"]] == [h["chunk_id"] for h in direct["hits"]]
    assert not _whole_text_hits(through_alias, texts)


def _tiny_beir(folder: Path, *, shift: int = 0) -> None:
    """Nine notes on three topics, a query per topic; with ``shift``, each query's
    judged notes are another topic's (so no collection scores well)."""
    folder.mkdir()
    topics = ["lighthouse keeper logbook", "salt marsh estuary", "ferry timetable pier"]
    corpus = [{"_id": f"c{i}", "title": "", "text": f"{topics[i % 3]} note {i}"} for i in range(9)]
    queries = [{"_id": f"q{i}", "text": topics[i]} for i in range(3)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels").mkdir()
    lines = [f"q{(i + shift) % 3}\tc{i}\t1" for i in range(9)]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines))


def test_quality_gate_refuses_a_switch_below_the_bar(tmp_path: Path) -> None:
    _tiny_beir(tmp_path / "right")
    _tiny_beir(tmp_path / "wrong", shift=1)
    with ragstore.open(tmp_path / "store") as store:
        corpus = (tmp_path / "right" / "corpus.jsonl").read_text().splitlines()
        records = [{"id": d["_id"], "text": d["text"]} for d in map(json.loads, corpus)]
        store.create_collection("v1").upsert(records)
        store.set_alias("docs", "v1")
    base = [RAGSTORE_BIN, "--store", str(tmp_path / "store"), "reindex", "docs"]
    switch = ["--chunk-size", "64", "--switch", "docs", "--min-ndcg"]
    usage = subprocess.run([*base, "--to", "v2", *switch, "right:1.5"], capture_output=True)
    assert usage.returncode == 2 and b"min-ndcg" in usage.stderr
    low = subprocess.run(
        [*base, "--to", "v2", *switch, f"{tmp_path / 'wrong'}:0.9"], capture_output=True, text=True
    )
    assert low.returncode == 1 and "below 0.9" in low.stderr
    good = subprocess.run(
        [*base, "--to", "v3", *switch, f"{tmp_path / 'right'}:0.9"], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    with ragstore.open(tmp_path / "store") as store:
        assert store.alias_target("docs") == "v3"
        assert store.get_collection("v2").count() == 9  # refused, kept for a look
        assert [a.previous for a in store.list_aliases()] == ["v1"]


def test_http_reindex_job_switches_and_reports(server: Server) -> None:
    with server.client() as client:
        assert client.post(f"{BASE}/collections", json={"name": "v1"}).status_code == 201
        docs = [{"id": f"d{i}", "text": _text(i, 40)} for i in range(12)]
        assert client.post(f"{BASE}/collections/v1/documents", json={"documents": docs}).is_success
        assert client.put(f"{BASE}/aliases/docs", json={"collection": "v1"}).is_success
        bad = client.post(
            f"{BASE}/collections/docs/reindex", json={"target": "v2", "chunk_size": 0}
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "chunk_size"
        missing = client.post(f"{BASE}/collections/nope/reindex", json={"target": "v2"})
        assert missing.status_code == 404
        taken = client.post(f"{BASE}/collections/docs/reindex", json={"target": "v1"})
        assert taken.status_code == 409
        body = {"target": "v2", "chunk_size": 64, "switch": "docs"}
        accepted = client.post(f"{BASE}/collections/docs/reindex", json=body)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["kind"] == "reindex" and job["status"] in ("queued", "running")
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", job
        assert job["result"]["switched"] == "docs" and job["result"]["documents"] == 12
        assert job["result"]["target"] == "v2" and job["progress"] == 1.0
        aliases = client.get(f"{BASE}/aliases").json()["aliases"]
        assert [(a["name"], a["collection"], a["previous"]) for a in aliases] == [
            ("docs", "v2", "v1")
        ]

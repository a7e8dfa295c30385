"""Running the server: start-up rules, saturation (429) and graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import RAGSTORE_BIN
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import Server

import ragstore
from ragstore.embed import Embedder

BASE = "/v1/tenants/ops/collections"
TEXT = (
    "retrieval augmented generation stores passages and vectors so that a question finds "
    "the paragraphs that answer it quickly and the model can cite its sources"
)
WORDS = TEXT.split()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keyless loopback server with one search worker and one queue slot."""
    root = tmp_path_factory.mktemp("ops")
    limits = {"search_workers": 1, "search_queue": 1, "write_queue": 2}
    running = Server(root / "store", root / "server.log", limits=limits)
    try:
        running.wait_ready()
        with running.client() as client:
            assert client.post(BASE, json={"name": "docs"}).status_code == 201
        yield running
    finally:
        running.kill()


def test_without_keys_only_loopback_is_allowed(tmp_path: Path) -> None:
    refused = subprocess.run(
        [RAGSTORE_BIN, "--store", str(tmp_path), "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in refused.stderr


def test_keyless_start_up_says_so(server: Server) -> None:
    assert "authentication is OFF" in server.logs()
    with server.client() as client:
        assert client.get(BASE).status_code == 200


def test_saturation_answers_429_with_retry_after(server: Server) -> None:
    with server.client() as client:
        docs = [{"id": f"d{i}", "text": " ".join(WORDS[i:] + WORDS[:i])} for i in range(4)]
        assert client.post(f"{BASE}/docs/documents", json={"documents": docs}).status_code == 200

        def search(i: int) -> httpx.Response:
            body = {"query": f"{WORDS[i % len(WORDS)]} question {i}", "cache": False, "k": 3}
            return client.post(f"{BASE}/docs/search", json=body)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(search, range(48)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and 200 in statuses
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["type"] == "saturated"
    with server.client() as client:
        families = text_string_to_metric_families(client.get("/metrics").text)
        rejected = {
            s.labels["pool"]: s.value
            for f in families
            if f.name == "ragstore_rejected"
            for s in f.samples
            if s.name.endswith("_total")
        }
    assert rejected["search"] == statuses.count(429)


def test_sigterm_during_a_batch_upsert_finishes_it(server: Server, embedder: Embedder) -> None:
    """The request in flight when SIGTERM arrives completes, and the store is whole."""
    docs = [
        {"id": f"long-{i}", "text": " ".join((WORDS * 10)[i : i + 220]), "metadata": {"i": i}}
        for i in range(30)
    ]
    result: dict[str, httpx.Response] = {}

    def upsert() -> None:
        with server.client(timeout=120) as client:
            result["response"] = client.post(f"{BASE}/docs/documents", json={"documents": docs})

    writer = threading.Thread(target=upsert)
    writer.start()
    wait_until_writing(server)
    server.process.send_signal(signal.SIGTERM)
    writer.join(120)
    assert server.process.wait(120) in (0, -signal.SIGTERM)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["report"]["documents_added"] == 30
    assert "Application shutdown complete" in server.logs()
    with ragstore.open(server_store(server)) as store:
        col = store.get_collection("ops.docs", embedder=embedder)
        stored = col.get([d["id"] for d in docs])
        assert len(stored) == 30 and all(d.chunk_count >= 1 for d in stored)
        assert col.search("retrieval passages", k=3)[0].doc_id.startswith(("long-", "d"))


def wait_until_writing(server: Server, timeout: float = 30.0) -> None:
    """Poll the metrics until the write pool has a call running."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while time.monotonic() < deadline:
            for family in text_string_to_metric_families(client.get("/metrics").text):
                if family.name == "ragstore_queue_depth" and any(
                    s.labels["pool"] == "write" and s.value >= 1 for s in family.samples
                ):
                    return
            time.sleep(0.02)
    raise TimeoutError("the upsert never started")


def server_store(server: Server) -> Path:
    """The store directory the server was started with."""
    args = list(server.process.args)  # type: ignore[arg-type]
    return Path(args[args.index("--store") + 1])

"""PostgreSQL going away under ragstore: a real server stopped mid-ingest and restarted
while ``ragstore serve`` runs. Each test owns its server, since it stops it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from checks import assert_whole_documents
from conftest import BACKENDS, RAGSTORE_BIN
from pg_server import PgServer
from server_helpers import Server
from test_processes import paragraphs

import ragstore
from ragstore.errors import StoreError

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="postgres not selected")

OUTAGE_ANSWER_S = 20.0
"""How long a request may take to fail while the database is down."""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[PgServer]:
    with PgServer(tmp_path / "pg") as server:
        yield server


def test_postgres_stopped_mid_ingest_is_one_clear_error_and_whole_documents(
    tmp_path: Path, own_server: PgServer
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    total = 240
    for doc in range(total):
        (folder / f"doc{doc:04d}.txt").write_text(paragraphs(doc))
    url = own_server.create_database()
    with ragstore.open(url) as store:
        col = store.create_collection("c", chunk_size=48, chunk_overlap=8)
        proc = subprocess.Popen(
            [RAGSTORE_BIN, "--store", url, "--collection", "c", "ingest", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 240
        while col.count() == 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        own_server.stop("immediate")  # a crash of the database, mid-transaction
        stopped = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr
        assert time.monotonic() - stopped < OUTAGE_ANSWER_S
        assert "Traceback" not in stderr and "PostgreSQL" in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        with pytest.raises(StoreError):
            col.count()

        own_server.start()
        survived = col.count()  # the same objects work again: no reopen
        assert 0 < survived < total
        assert_whole_documents(col)
        report = col.ingest([folder])
        assert report.documents_unchanged == survived
        assert col.count() == total


def test_postgres_restarted_under_the_server_is_503_then_200(
    tmp_path: Path, own_server: PgServer
) -> None:
    url = own_server.create_database()
    with ragstore.open(url) as store:
        store.collection("acme.docs").upsert(
            [{"id": "a", "text": "Refunds are accepted within 30 days of delivery."}]
        )
    server = Server(url, tmp_path / "server.log").wait_ready()
    try:
        search = f"{server.url}/v1/tenants/acme/collections/docs/search"
        body = {"query": "how long for a refund?", "k": 1}
        assert httpx.post(search, json=body, timeout=60).status_code == 200

        own_server.stop("fast")
        started = time.monotonic()
        down = httpx.post(search, json=body, timeout=60)
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < OUTAGE_ANSWER_S
        assert down.json()["error"]["type"] == "store_unavailable"

        own_server.start()
        up = httpx.post(search, json=body, timeout=60)
        assert up.status_code == 200, up.text
        assert [hit["doc_id"] for hit in up.json()["hits"]] == ["a"]
        write = httpx.post(
            f"{server.url}/v1/tenants/acme/collections/docs/documents",
            json={"documents": [{"id": "b", "text": "Shipping takes five days."}]},
            timeout=60,
        )
        assert write.status_code == 200, write.text
    finally:
        assert server.terminate() in (0, -15), server.logs()

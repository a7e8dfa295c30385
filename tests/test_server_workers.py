"""A server of two worker processes: one store, one job board, one set of metrics.

Most requests below go on a connection of their own (``Connection: close``) so that
both workers get some; the worker that served a request is read from the server's log
by request id.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import Server

import ragstore
from ragstore.server.jobs import JOB_BATCH, ORPHANED

BASE = "/v1/tenants/crew/collections"
WORKERS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keyless loopback server of two workers; batches over 4 documents become jobs."""
    root = tmp_path_factory.mktemp("workers")
    running = Server(
        root / "store", root / "server.log", workers=WORKERS, limits={"sync_max_documents": 4}
    )
    try:
        running.wait_ready()
        until_every_worker(running, lambda r: r.status_code == 200, "GET", "/readyz")
        yield running
    finally:
        running.kill()


def call(server: Server, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
    """One request on a new connection; the answer and the worker process that served it."""
    rid = uuid.uuid4().hex
    headers = {"X-Request-ID": rid, "Connection": "close"}
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        response = client.request(method, path, headers=headers, **kwargs)
    return response, wait_pid(server, rid)


def until_every_worker(
    server: Server,
    check: Callable[[httpx.Response], bool],
    method: str,
    path: str,
    **kwargs: Any,
) -> list[httpx.Response]:
    """Repeat a request until two worker processes answered it; every answer must pass
    ``check``. Returns the answers."""
    answers: list[httpx.Response] = []
    pids: set[int] = set()
    deadline = time.monotonic() + 120
    while len(pids) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {pids} ever answered {path}"
        response, pid = call(server, method, path, **kwargs)
        if path == "/readyz" and response.status_code == 503:
            time.sleep(0.1)
            continue  # this worker is still loading the model
        assert check(response), (pid, response.status_code, response.text)
        answers.append(response)
        pids.add(pid)
    return answers


def test_a_job_accepted_by_one_worker_is_seen_by_every_worker(server: Server) -> None:
    assert call(server, "POST", BASE, json={"name": "jobs"})[0].status_code == 201
    docs = [{"id": f"j{i}", "text": f"Job document {i} on refunds and returns."} for i in range(40)]
    docs[7] = {"id": "j7"}  # no text: an error of the job, the rest written
    accepted, _ = call(server, "POST", f"{BASE}/jobs/documents", json={"documents": docs})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job"]["id"]

    deadline = time.monotonic() + 120
    while True:
        answers = until_every_worker(
            server, lambda r: r.status_code == 200, "GET", f"/v1/jobs/{job_id}"
        )
        states = [a.json() for a in answers]
        if states[-1]["status"] == "succeeded":
            break
        assert all(s["status"] in ("queued", "running") for s in states), states
        assert time.monotonic() < deadline, states[-1]
    job = states[-1]
    assert job["done"] == job["total"] == 40 and job["report"]["documents_added"] == 39
    assert [e["index"] for e in job["errors"]] == [7]
    until_every_worker(
        server, lambda r: r.json() == {"count": 39}, "POST", f"{BASE}/jobs/count", json={}
    )


def test_a_burst_of_keep_alive_clients_is_spread_over_the_workers(server: Server) -> None:
    """Eight connections opened together, as eight clients starting at once open them:
    each worker gets some (racing accepts alone gave one worker all eight), and almost
    always half (a flat 1 ms pause after an accept left a quarter of bursts at 5:3)."""
    even = 0
    for _ in range(10):
        sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
        rids = [uuid.uuid4().hex for _ in sockets]
        try:
            for sock, rid in zip(sockets, rids, strict=True):
                request = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: {rid}\r\n\r\n"
                sock.sendall(request.encode())
            for sock in sockets:
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for sock in sockets:
                sock.close()
        per_worker = sorted(collections.Counter(wait_pid(server, rid) for rid in rids).values())
        assert len(per_worker) == WORKERS and per_worker[0] >= 2, per_worker
        even += per_worker == [4, 4]
    assert even >= 9


def wait_pid(server: Server, rid: str) -> int:
    """The worker that served request ``rid``, once its log line is written."""
    deadline = time.monotonic() + 10
    while (pid := server.pid_of(rid)) is None:
        assert time.monotonic() < deadline, f"request {rid} not in the log"
        time.sleep(0.01)
    return pid


def test_metrics_add_up_the_requests_of_every_worker(server: Server) -> None:
    before = request_count(server)
    pids = {call(server, "GET", "/healthz")[1] for _ in range(30)}
    assert len(pids) == WORKERS, pids  # both served some of the 30
    scrapes = until_every_worker(server, lambda r: r.status_code == 200, "GET", "/metrics")
    for scrape in scrapes:
        assert parse_count(scrape.text) == before + 30
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        depths = {s.labels["pool"]: s.value for s in families["ragstore_queue_depth"].samples}
        assert set(depths) == {"search", "write", "answer"}
        assert depths["search"] >= 1  # this scrape is running on a search worker
        assert "ragstore_ingest_jobs_current" in families


def request_count(server: Server) -> float:
    """How many ``GET /healthz`` answered 200, by the metrics."""
    return parse_count(call(server, "GET", "/metrics")[0].text)


def parse_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "ragstore_http_requests":
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels["route"] == "/healthz":
                    return sample.value if labels["status"] == "200" else 0.0
    return 0.0


def test_a_collection_re_created_by_one_worker_is_seen_by_every_worker(server: Server) -> None:
    dim = 3
    assert call(server, "POST", BASE, json=vector_collection(dim))[0].status_code == 201
    for _ in range(20):  # until one worker deletes and re-creates it, under the other's eyes
        upsert_everywhere(server, dim)  # both workers now hold it open
        deleted, by = call(server, "DELETE", f"{BASE}/vec")
        assert deleted.status_code in (200, 204)
        dim += 1
        created, again_by = call(server, "POST", BASE, json=vector_collection(dim))
        assert created.status_code == 201
        if by == again_by:
            break
    assert by == again_by, "one worker never did both"
    upsert_everywhere(server, dim)
    query = {"vector": [0.0] * (dim - 1) + [1.0], "k": 5}
    only_last = lambda r: [h["doc_id"] for h in r.json()["hits"]] == [f"d{dim}"]  # noqa: E731
    until_every_worker(server, only_last, "POST", f"{BASE}/vec/search", json=query)


def vector_collection(dim: int) -> dict[str, Any]:
    return {"name": "vec", "embedder": None, "dim": dim, "index": {"kind": "flat"}}


def upsert_everywhere(server: Server, dim: int) -> None:
    """Upsert one ``dim``-long vector through each worker."""
    row = {"id": f"d{dim}", "vector": [0.0] * (dim - 1) + [1.0]}
    until_every_worker(
        server, lambda r: r.status_code == 200, "POST", f"{BASE}/vec/documents",
        json={"documents": [row]},
    )  # fmt: skip


def test_a_job_whose_worker_dies_is_failed_and_the_server_goes_on(server: Server) -> None:
    assert call(server, "POST", BASE, json={"name": "doomed"})[0].status_code == 201
    text = "A long passage about the crash safety of ingest jobs in a server. " * 12
    docs = [{"id": f"d{i}", "text": f"{i} {text}"} for i in range(600)]
    accepted, owner = call(server, "POST", f"{BASE}/doomed/documents", json={"documents": docs})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job"]["id"]
    deadline = time.monotonic() + 120
    while call(server, "GET", f"/v1/jobs/{job_id}")[0].json()["done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(owner, signal.SIGKILL)

    deadline = time.monotonic() + 120
    while (job := call(server, "GET", f"/v1/jobs/{job_id}")[0].json())["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "failed" and 0 < job["done"] < 600
    assert job["errors"][-1]["message"] == ORPHANED
    # uvicorn replaced the dead worker; both answer again
    until_every_worker(server, lambda r: r.status_code == 200, "GET", "/readyz")
    written = call(server, "POST", f"{BASE}/doomed/count", json={})[0].json()["count"]
    # every batch committed before the kill is kept, whole; nothing of the one in flight
    assert job["done"] <= written < 600 and written % JOB_BATCH == 0
    with ragstore.open(server_store(server)) as opened:
        kept = opened.get_collection("crew.doomed").get([f"d{i}" for i in range(written)])
        assert len(kept) == written and all(d.chunk_count >= 1 for d in kept)


def test_sigterm_stops_every_worker_and_removes_the_run_folder(tmp_path: Path) -> None:
    running = Server(tmp_path / "store", tmp_path / "server.log", workers=WORKERS)
    try:
        running.wait_ready()
        until_every_worker(running, lambda r: r.status_code == 200, "GET", "/readyz")
        lines = running.log_lines()
        workers = {line["pid"] for line in lines if line["msg"] == "ready: model loaded"}
        [run_dir] = [line["run_dir"] for line in lines if "run_dir" in line]
        assert len(workers) == WORKERS and Path(run_dir, "jobs.sqlite").exists()
        assert running.terminate() == 0
    finally:
        running.kill()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert sum(line["msg"] == "store closed" for line in running.log_lines()) == WORKERS
    assert not Path(run_dir).exists()


def server_store(server: Server) -> Path:
    """The store directory the server was started with."""
    args = list(server.process.args)  # type: ignore[arg-type]
    return Path(args[args.index("--store") + 1])

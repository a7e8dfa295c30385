"""The HTTP service, spoken to over real HTTP: a real uvicorn subprocess, the real
model, a real store on disk."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import BACKENDS, fresh_location
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import Server, check_error_body, write_keys

import ragstore
from ragstore.embed import Embedder
from ragstore.embed.base import Vectors
from ragstore.server.responses import JSON, hit_dict
from ragstore.store import is_url
from ragstore.types import Hit

KEYS: dict[str, dict[str, Any]] = {
    "k-ops": {"id": "ops", "role": "admin", "tenants": ["*"]},
    "k-acme-admin": {"id": "acme-admin", "role": "admin", "tenants": ["acme"]},
    "k-acme-write": {"id": "acme-write", "role": "write", "tenants": ["acme"]},
    "k-acme-read": {"id": "acme-read", "role": "read", "tenants": ["acme"]},
    "k-acme-docs-read": {
        "id": "acme-docs-read", "role": "read", "tenants": ["acme"], "collections": ["docs"]
    },
    "k-globex-admin": {"id": "globex-admin", "role": "admin", "tenants": ["globex"]},
}  # fmt: skip
LIMITS = {
    "max_body_bytes": 256 * 1024,
    "max_batch": 40,
    "max_text_chars": 5000,
    "max_query_chars": 300,
    "max_filter_depth": 4,
    "sync_max_documents": 4,
}
DOCS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days of purchase with a receipt.",
     "metadata": {"lang": "en", "topic": "returns"}},
    {"id": "headphones", "text": "Headphones can be returned within 14 days if unopened.",
     "metadata": {"lang": "en", "topic": "returns"}},
    {"id": "versand", "text": "Der Versand dauert drei bis fünf Werktage.",
     "metadata": {"lang": "de", "topic": "shipping"}},
    {"id": "folder/shipping.md", "text": "Shipping takes three to five business days.",
     "metadata": {"lang": "en", "topic": "shipping"}},
]  # fmt: skip
BASE = "/v1/tenants/acme/collections"
COLLECTION = "/tenants/{tenant}/collections/{collection}"


class RenamedModel:
    """The real model under another name: a collection built with it is another
    model's collection to the server."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self.name = "test/renamed-minilm"
        self.version = "1"
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._inner.token_offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._inner.embed_documents(texts)

    def embed_query(self, text: str) -> Vectors:
        return self._inner.embed_query(text)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[Server]:
    """One server with keys and small limits, and a store (on each backend) holding one
    collection built with another model."""
    root = tmp_path_factory.mktemp("server")
    location = fresh_location(request.param, root, request)
    with ragstore.open(location) as store:
        store.create_collection("acme.legacy", embedder=RenamedModel(embedder))
    keys = write_keys(root / "keys.json", KEYS)
    running = Server(location, root / "server.log", keys=keys, limits=LIMITS)
    try:
        yield running.wait_ready()
    finally:
        assert running.terminate() in (0, -signal.SIGTERM), running.logs()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    """The acme admin, with a text collection ``docs`` holding DOCS and a vector
    collection ``vecs``."""
    with server.client("k-acme-admin") as client:
        assert client.post(BASE, json={"name": "docs"}).status_code == 201
        assert client.post(f"{BASE}/docs/documents", json={"documents": DOCS}).status_code == 200
        created = client.post(BASE, json={"name": "vecs", "embedder": None, "dim": 8})
        assert created.status_code == 201, created.text
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error body, after checking the status."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    check_error_body(error)
    return error


# ----------------------------------------------------------------------- CRUD


def test_collections_are_created_listed_shown_and_deleted(admin: httpx.Client) -> None:
    created = admin.post(
        BASE, json={"name": "scratch", "chunk_size": 128, "index": {"kind": "hnsw"}}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "scratch" and body["tenant"] == "acme"
    assert body["config"]["index"]["kind"] == "hnsw"
    names = [c["name"] for c in admin.get(BASE).json()["collections"]]
    assert {"docs", "vecs", "scratch", "legacy"} <= set(names)
    shown = admin.get(f"{BASE}/docs").json()
    assert shown["documents"] == 4 and shown["index"]
    assert error_of(admin.post(BASE, json={"name": "scratch"}), 409)["type"] == "conflict"
    assert admin.delete(f"{BASE}/scratch").json() == {"deleted": "scratch"}
    assert error_of(admin.get(f"{BASE}/scratch"), 404)["type"] == "not_found"


def test_documents_are_upserted_read_listed_counted_and_deleted(admin: httpx.Client) -> None:
    docs = f"{BASE}/docs/documents"
    assert admin.get(f"{docs}/folder/shipping.md").json()["text"].startswith("Shipping")
    report = admin.post(docs, json={"documents": [DOCS[0]]}).json()["report"]
    assert report["documents_unchanged"] == 1
    extra = {"id": "tmp", "text": "A temporary note about gift cards.", "metadata": {"lang": "fr"}}
    assert admin.post(docs, json={"documents": [extra]}).json()["report"]["documents_added"] == 1
    seen, cursor = [], None
    while True:
        page = admin.get(docs, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [d["id"] for d in page.json()["documents"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(d["id"] for d in [*DOCS, extra])
    count = admin.post(f"{BASE}/docs/count", json={"filter": {"lang": "fr"}})
    assert count.json() == {"count": 1}
    assert admin.delete(f"{docs}/tmp").json() == {"deleted": 1}
    assert error_of(admin.get(f"{docs}/tmp"), 404)["type"] == "not_found"
    assert error_of(admin.delete(f"{docs}/tmp"), 404)["type"] == "not_found"
    admin.post(docs, json={"documents": [extra, {**extra, "id": "tmp2"}]})
    deleted = admin.post(f"{BASE}/docs/delete", json={"filter": {"lang": "fr"}})
    assert deleted.json() == {"deleted": 2}
    assert admin.post(f"{BASE}/docs/delete", json={"ids": ["nope"]}).json() == {"deleted": 0}
    error = error_of(admin.post(f"{BASE}/docs/delete", json={}), 422)
    assert error["field"] == "ids"


def test_a_large_batch_becomes_a_job_with_progress_and_per_document_errors(
    server: Server, admin: httpx.Client
) -> None:
    batch = [
        {"id": f"job-{i}", "text": f"Job document number {i} about returns."} for i in range(8)
    ]
    batch[3] = {"id": "job-3"}  # no text: reported, the rest written
    accepted = admin.post(f"{BASE}/docs/documents", json={"documents": batch})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()["job"]
    assert accepted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["total"] == 8 and job["status"] in ("queued", "running", "succeeded")
    job = wait_for_job(admin, job["id"])
    assert job["status"] == "succeeded" and job["done"] == 8 and job["progress"] == 1.0
    assert job["report"]["documents_added"] == 7
    assert job["errors"] == [
        {"index": 3, "id": "job-3", "field": "documents[3].text",
         "message": "documents[3].text is required"}
    ]  # fmt: skip
    assert admin.post(f"{BASE}/docs/count", json={}).json()["count"] == 4 + 7
    with server.client("k-globex-admin") as other:
        assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert error_of(admin.get("/v1/jobs/unknown"), 404)["type"] == "not_found"
    admin.post(f"{BASE}/docs/delete", json={"ids": [f"job-{i}" for i in range(8)]})


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it is no longer queued or running."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


# --------------------------------------------------------------------- search


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_text_search_in_every_mode(admin: httpx.Client, mode: str) -> None:
    body = {"query": "how long to return headphones", "k": 2, "mode": mode, "cache": False}
    found = admin.post(f"{BASE}/docs/search", json=body)
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert hits[0]["doc_id"] == "headphones" and 1 <= len(hits) <= 2
    assert found.json()["took_ms"] > 0


def test_search_filters_explains_and_caches(admin: httpx.Client) -> None:
    url = f"{BASE}/docs/search"
    filtered = admin.post(url, json={"query": "shipping days", "filter": {"lang": "de"}})
    assert [h["doc_id"] for h in filtered.json()["hits"]] == ["versand"]
    explained = admin.post(url, json={"query": "refund", "explain": True}).json()
    assert explained["plan"]["mode"] == "hybrid"
    first = admin.post(url, json={"query": "refund receipt policy", "k": 3}).json()
    again = admin.post(url, json={"query": "refund receipt policy", "k": 3}).json()
    assert first["hits"][0]["cached"] is None
    assert again["hits"][0]["cached"] == "exact"
    assert [h["doc_id"] for h in again["hits"]] == [h["doc_id"] for h in first["hits"]]


def test_a_cached_answer_still_checks_keys_and_limits_and_is_counted(
    server: Server, admin: httpx.Client
) -> None:
    url = f"{BASE}/docs/search"
    body = {"query": "is a receipt needed for refunds", "k": 2}
    assert admin.post(url, json=body).status_code == 200
    assert admin.post(url, json=body).json()["hits"][0]["cached"] == "exact"
    with server.client() as anonymous:
        assert error_of(anonymous.post(url, json=body), 401)["type"] == "unauthorized"
    with server.client("k-globex-admin") as globex:
        assert error_of(globex.post(url, json=body), 403)["type"] == "forbidden"
    assert error_of(admin.post(url, json=body | {"k": 10_000}), 422)["field"] == "k"
    with server.client("k-ops") as ops:
        before = _cache_hits(ops.get("/metrics").text)
        assert admin.post(url, json=body).json()["hits"][0]["cached"] == "exact"
        assert _cache_hits(ops.get("/metrics").text) == before + 1


def test_a_cached_answer_is_never_served_once_its_document_changed(admin: httpx.Client) -> None:
    url, docs = f"{BASE}/docs/search", f"{BASE}/docs/documents"
    parcel = {"id": "parcel-lockers", "text": "Parcel lockers keep a parcel for 3 days."}
    assert admin.post(docs, json={"documents": [parcel]}).status_code == 200
    body = {"query": "how long do parcel lockers keep a parcel", "k": 1}
    # a miss, an exact hit checked in the store, then one answered from memory
    answers = [admin.post(url, json=body).json()["hits"][0] for _ in range(3)]
    assert [a["cached"] for a in answers] == [None, "exact", "exact"]
    assert answers[2]["doc_id"] == "parcel-lockers"
    changed = parcel | {"text": "Parcel lockers keep a parcel for 9 days."}
    assert admin.post(docs, json={"documents": [changed]}).status_code == 200
    after = admin.post(url, json=body).json()["hits"][0]
    assert after["cached"] is None and "9 days" in after["text"]


def test_a_search_held_in_memory_skips_routing_but_not_one_check(
    server: Server, admin: httpx.Client
) -> None:
    if is_url(str(server.store)):
        pytest.skip(
            "SQLite only: answering from memory needs a commit marker readable without a "
            "statement, which a PostgreSQL store does not have (it checks every time)"
        )
    url = f"{BASE}/docs/search"
    body = {"query": "which receipts do refunds need", "k": 2}
    # a miss, an exact hit checked in the store, then one answered from memory
    answers = [admin.post(url, json=body) for _ in range(3)]
    assert [a.json()["hits"][0]["cached"] for a in answers] == [None, "exact", "exact"]
    assert answers[2].json()["hits"] == answers[1].json()["hits"]
    checked, remembered = (_access_log(server, a) for a in answers[1:])
    assert "from_memory" not in checked and remembered["from_memory"] is True
    assert (
        remembered["route"]
        == checked["route"]
        == "/v1/tenants/{tenant}/collections/{collection}/search"
    )
    assert remembered["key_id"] == "acme-admin" and remembered["status"] == 200
    with server.client() as anonymous:
        assert error_of(anonymous.post(url, json=body), 401)["type"] == "unauthorized"
    with server.client("k-acme-docs-read") as reader:
        assert reader.post(url, json=body).json()["hits"][0]["cached"] == "exact"
        assert error_of(reader.post(f"{BASE}/legacy/search", json=body), 403)
    with server.client("k-globex-admin") as globex:
        assert error_of(globex.post(url, json=body), 403)["type"] == "forbidden"
    assert error_of(admin.post(url, json=body | {"k": 10_000}), 422)["field"] == "k"
    assert error_of(admin.post(url, json=body | {"colour": "red"}), 422)
    assert error_of(admin.post(url, json=body | {"filter": {"$bogus": 1}}), 422)["field"]
    as_text = admin.post(url, content=json.dumps(body), headers={"content-type": "text/plain"})
    assert error_of(as_text, 422)
    last = admin.post(url, json=body)
    assert last.json()["hits"][0]["cached"] == "exact" and _access_log(server, last)["from_memory"]


def _access_log(server: Server, response: httpx.Response) -> dict[str, Any]:
    rid = response.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in server.log_lines():
            if line.get("request_id") == rid and line.get("msg") == "request":
                return line
        time.sleep(0.02)
    raise AssertionError(f"request {rid} not in the log")


def _cache_hits(metrics: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    return next(
        s.value
        for s in families["ragstore_cache_lookups"].samples
        if s.name.endswith("_total") and s.labels["result"] == "hit"
    )


def test_json_bodies_render_numpy_values_and_non_finite_floats_as_null() -> None:
    content = {
        "nan": float("nan"),
        "numbers": [np.float32(1.5), np.int64(2), np.arange(2), np.float32("inf"), -float("inf")],
        "tuple": (1, "é"),
    }
    body = JSON(content).body
    assert json.loads(body) == {
        "nan": None, "numbers": [1.5, 2, [0, 1], None, None], "tuple": [1, "é"]
    }  # fmt: skip
    assert "é".encode() in body  # UTF-8, not \u escapes
    hit = Hit("d", "d#0", 0.5, "text", None, {"tags": ["a"], "n": {"x": 1}}, 0, 4, cached="exact")
    assert hit_dict(hit) == hit.to_dict()


def test_vector_search_and_dimension_mismatch(admin: httpx.Client) -> None:
    vectors = np.eye(8, dtype=np.float32)
    docs = [{"id": f"v{i}", "vector": vectors[i].tolist(), "metadata": {"n": i}} for i in range(3)]
    written = admin.post(f"{BASE}/vecs/documents", json={"documents": docs})
    assert written.json()["report"]["documents_added"] == 3
    hits = admin.post(f"{BASE}/vecs/search", json={"vector": vectors[1].tolist(), "k": 2}).json()
    assert hits["hits"][0]["doc_id"] == "v1"
    wrong = admin.post(f"{BASE}/vecs/search", json={"vector": [1.0, 0.0], "k": 2})
    assert error_of(wrong, 409) == {
        "type": "dimension_mismatch",
        "message": "vector has dimension 2, collection expects 8",
        "field": "vector",
        "class": "DimensionMismatch",
        "expected": 8,
        "got": 2,
    }
    bad_doc = admin.post(f"{BASE}/vecs/documents", json={"documents": [{"id": "x", "vector": [1]}]})
    assert error_of(bad_doc, 409)["field"] == "documents[0].vector"
    text = admin.post(f"{BASE}/vecs/search", json={"query": "hello"})
    assert error_of(text, 422)["field"] == "mode"


def test_a_collection_of_another_model_is_a_conflict(admin: httpx.Client) -> None:
    error = error_of(admin.post(f"{BASE}/legacy/search", json={"query": "x"}), 409)
    assert error["type"] == "conflict" and "test/renamed-minilm" in error["message"]


# ----------------------------------------------------------------------- auth


ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    # (needed role, method, path under /v1/tenants/<tenant>, body)
    ("read", "GET", "/collections", None),
    ("read", "GET", "/collections/docs", None),
    ("read", "POST", "/collections/docs/search", {"query": "refund", "k": 1}),
    ("read", "GET", "/collections/docs/documents/refunds", None),
    ("read", "POST", "/collections/docs/count", {}),
    ("write", "POST", "/collections/docs/documents", {"documents": [DOCS[0]]}),
    ("write", "POST", "/collections/docs/delete", {"ids": ["nothing"]}),
    ("admin", "POST", "/collections", {"name": "docs"}),  # exists: 409 once allowed
    ("admin", "DELETE", "/collections/nothing-here", None),  # 404 once allowed
]
RANK = {"read": 0, "write": 1, "admin": 2}


@pytest.mark.parametrize(("needed", "method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "key", ["k-acme-read", "k-acme-write", "k-acme-admin", "k-globex-admin", "k-ops"]
)
def test_auth_matrix(
    server: Server,
    admin: httpx.Client,
    key: str,
    needed: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    entry = KEYS[key]
    with server.client(key) as client:
        response = client.request(method, "/v1/tenants/acme" + path, json=body)
    allowed = RANK[entry["role"]] >= RANK[needed] and (
        "acme" in entry["tenants"] or "*" in entry["tenants"]
    )
    if allowed:
        assert response.status_code in (200, 201, 404, 409), response.text
    else:
        assert error_of(response, 403)["type"] == "forbidden"


def test_missing_or_unknown_key_is_401(server: Server, admin: httpx.Client) -> None:
    with server.client() as anonymous:
        response = anonymous.get(BASE)
        assert error_of(response, 401)["type"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get(BASE, headers={"Authorization": "Basic abc"}).status_code == 401
    with server.client("not-a-key") as stranger:
        assert error_of(stranger.get(BASE), 401)["message"] == "unknown API key"


def test_tenants_are_isolated(server: Server, admin: httpx.Client) -> None:
    with server.client("k-globex-admin") as globex:
        assert (
            globex.post("/v1/tenants/globex/collections", json={"name": "docs"}).status_code == 201
        )
        assert globex.get("/v1/tenants/globex/collections/docs/documents").json()["documents"] == []
        hits = globex.post("/v1/tenants/globex/collections/docs/search", json={"query": "refund"})
        assert hits.json()["hits"] == []
        assert globex.get(f"{BASE}/docs/documents/refunds").status_code == 403
        names = [
            c["name"] for c in globex.get("/v1/tenants/globex/collections").json()["collections"]
        ]
        assert names == ["docs"]


def test_a_key_bound_to_collections_sees_only_those(server: Server, admin: httpx.Client) -> None:
    with server.client("k-acme-docs-read") as narrow:
        assert narrow.post(f"{BASE}/docs/search", json={"query": "refund"}).status_code == 200
        assert narrow.get(f"{BASE}/vecs").status_code == 403
        names = [c["name"] for c in narrow.get(BASE).json()["collections"]]
        assert names == ["docs"]


def test_store_wide_routes_need_the_store_wide_scope(server: Server, admin: httpx.Client) -> None:
    assert admin.get("/v1/cache/stats").status_code == 403
    assert admin.get("/metrics").status_code == 403
    with server.client("k-ops") as ops:
        assert ops.get("/v1/cache/stats").json()["backend"] == "local"
        assert ops.post("/v1/cache/clear").status_code == 200


# --------------------------------------------------------------------- limits


def test_body_size_limit_is_413(admin: httpx.Client) -> None:
    big = {"documents": [{"id": "big", "text": "x" * 300_000}]}
    error = error_of(admin.post(f"{BASE}/docs/documents", json=big), 413)
    assert error["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"documents": [{"id": "big", "text": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}]}'

    streamed = admin.post(
        f"{BASE}/docs/documents", content=chunks(), headers={"content-type": "application/json"}
    )
    assert error_of(streamed, 413)["type"] == "too_large"


def test_batch_and_text_limits_are_413(admin: httpx.Client) -> None:
    many = {"documents": [{"id": str(i), "text": "t"} for i in range(41)]}
    assert error_of(admin.post(f"{BASE}/docs/documents", json=many), 413)["field"] == "documents"
    long_text = {"documents": [DOCS[0], {"id": "long", "text": "z" * 5001}]}
    error = error_of(admin.post(f"{BASE}/docs/documents", json=long_text), 413)
    assert error["field"] == "documents[1].text"
    query = error_of(admin.post(f"{BASE}/docs/search", json={"query": "q" * 301}), 413)
    assert query["field"] == "query"
    ids = error_of(admin.post(f"{BASE}/docs/delete", json={"ids": ["a"] * 41}), 413)
    assert ids["field"] == "ids"


def test_k_and_filter_depth_limits_are_422(admin: httpx.Client) -> None:
    url = f"{BASE}/docs/search"
    assert error_of(admin.post(url, json={"query": "x", "k": 1001}), 422)["field"] == "k"
    assert error_of(admin.post(url, json={"query": "x", "k": 0}), 422)["field"] == "k"
    deep: dict[str, Any] = {"lang": "en"}
    for _ in range(5):
        deep = {"$and": [deep]}
    assert error_of(admin.post(url, json={"query": "x", "filter": deep}), 422)["field"] == "filter"
    bad = error_of(admin.post(url, json={"query": "x", "filter": {"a": {"$regex": "x"}}}), 422)
    assert bad["type"] == "invalid_input" and "$regex" in bad["message"]


def test_validation_errors_name_the_field(admin: httpx.Client) -> None:
    docs = f"{BASE}/docs/documents"
    assert error_of(admin.post(docs, json={"documents": [{"id": ""}]}), 422)["field"] == (
        "documents[0].id"
    )
    assert (
        error_of(admin.post(docs, json={"documents": [{"id": "a", "colour": 1}]}), 422)["field"]
        == "documents[0].colour"
    )
    nan = b'{"query": "x", "alpha": NaN}'
    sent = admin.post(
        f"{BASE}/docs/search", content=nan, headers={"content-type": "application/json"}
    )
    assert error_of(sent, 422)["field"] == "alpha"
    garbage = admin.post(docs, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422
    assert error_of(admin.get(docs, params={"cursor": "%%%"}), 422)["field"] == "cursor"
    assert error_of(admin.get("/v1/tenants/ACME!/collections"), 422)["field"] == "tenant"
    assert error_of(admin.get(f"{BASE}/no-such/documents/x"), 404)["type"] == "not_found"


# -------------------------------------------------------------- observability


def test_metrics_parse_and_count_what_happened(server: Server, admin: httpx.Client) -> None:
    admin.post(f"{BASE}/docs/search", json={"query": "metrics probe", "mode": "dense"})
    admin.post(f"{BASE}/docs/search", json={"query": "metrics probe", "mode": "dense"})
    with server.client("k-ops") as ops:
        text = ops.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["ragstore_http_requests"].samples
    assert any(
        s.labels["route"] == "/v1/tenants/{tenant}/collections/{collection}/search"
        and s.labels["status"] == "200" and s.value >= 2
        for s in requests
    )  # fmt: skip
    assert "ragstore_http_request_duration_seconds" in families
    search = families["ragstore_search_duration_seconds"].samples
    assert {s.labels["mode"] for s in search if s.name.endswith("_count")} >= {"dense"}
    assert {s.labels["cached"] for s in search if s.name.endswith("_count")} >= {"no", "exact"}
    cache = {s.labels["result"]: s.value for s in families["ragstore_cache_lookups"].samples
             if s.name.endswith("_total")}  # fmt: skip
    assert cache["hit"] >= 1 and cache["miss"] >= 1
    docs = {(s.labels["tenant"], s.labels["collection"]): s.value
            for s in families["ragstore_collection_documents"].samples}  # fmt: skip
    assert docs[("acme", "docs")] >= 4
    assert "ragstore_collection_chunks" in families
    queues = {s.labels["pool"] for s in families["ragstore_queue_depth"].samples}
    assert queues == {"search", "write", "answer"}
    assert {s.labels["status"] for s in families["ragstore_ingest_jobs_current"].samples} >= {
        "queued", "running", "succeeded"
    }  # fmt: skip
    kinds = {s.labels["kind"] for s in families["ragstore_embedding_duration_seconds"].samples}
    assert kinds >= {"query", "passages"}


def test_logs_are_json_with_request_ids_and_no_keys(server: Server, admin: httpx.Client) -> None:
    response = admin.get(f"{BASE}/docs", headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"
    assert len(admin.get(BASE).headers["x-request-id"]) == 32
    logs = server.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    mine = [e for e in lines if e.get("request_id") == "trace-abc.123"]
    assert mine and mine[0]["status"] == 200 and mine[0]["key_id"] == "acme-admin"
    assert mine[0]["route"] == "/v1/tenants/{tenant}/collections/{collection}"
    for key in KEYS:
        assert key not in logs


def test_health_and_openapi(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"status": "ready"}
        schema = anonymous.get("/openapi.json").json()
    assert "/v1/tenants/{tenant}/collections/{collection}/search" in schema["paths"]


def test_no_500_under_schemathesis(server: Server, admin: httpx.Client) -> None:
    """Generated requests against every operation of the served schema: no 5xx."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import openapi

    schema = openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": "Bearer k-ops"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        check()
    assert not failures, failures
    assert " 500" not in server.logs()

"""Property-based fuzzing of every POST route over real HTTP, with a valid key.

Beyond the schema-driven cases (schemathesis, bodies the OpenAPI schema allows), the
bodies here are what a careless or hostile client sends: arbitrary JSON with lone
surrogates, nesting 30 and 2,000 deep, numbers past float and int64 range, booleans
for integers, wrong types, bytes that are not JSON, with a Content-Length or chunked.
Whatever comes in, the server answers below 500, in time, with the one error shape
for an error, and a rejected request leaves the store as it was.

Bounded for CI: one server for the module, a few hundred examples in all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from server_helpers import Server, check_error_body, serving
from test_server import wait_for_job

KEYS = {"k-admin": {"id": "admin", "role": "admin", "tenants": ["acme"]}}
BASE = "/v1/tenants/acme/collections"
SEED_COLLECTIONS: list[dict[str, Any]] = [
    {"name": "docs"},
    {"name": "vecs", "embedder": None, "dim": 4},
]
SEED_DOCS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days with a receipt.",
     "metadata": {"lang": "en", "n": 1, "tags": ["a", "b"]}},
    {"id": "versand", "text": "Der Versand dauert drei bis fünf Werktage.",
     "metadata": {"lang": "de", "n": 2}},
]  # fmt: skip
SEED_VECTORS = [
    {"id": "v0", "vector": [1.0, 0.0, 0.0, 0.0], "metadata": {"n": 0}},
    {"id": "v1", "vector": [0.0, 1.0, 0.0, 0.0], "metadata": {"n": 1}},
]
ROUTES = {
    "search": f"{BASE}/docs/search",
    "vector-search": f"{BASE}/vecs/search",
    "count": f"{BASE}/docs/count",
    "delete": f"{BASE}/docs/delete",
    "documents": f"{BASE}/docs/documents",
    "collections": BASE,
}
TIMEOUT_S = 10.0
"""No request may take longer (a hang fails the test)."""

FUZZ = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


SCALE = float(os.environ.get("RAGSTORE_FUZZ_SCALE", "1"))
"""More examples for a longer run by hand (``RAGSTORE_FUZZ_SCALE=20``)."""


def fuzz(examples: int) -> settings:
    """The fuzz settings with a bound on examples (the suite runs in CI)."""
    return settings(FUZZ, max_examples=max(1, round(examples * SCALE)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("fuzz"), KEYS) as running:
        yield running


@pytest.fixture(scope="module")
def watch(server: Server) -> Iterator[Watch]:
    """The tenant's admin, with the seed collections and documents in place."""
    with server.client("k-admin", timeout=TIMEOUT_S) as admin:
        yield Watch(admin)


class Watch:
    """Sends requests and checks what they did to the store.

    The store is read after every request (and that reading is the next request's
    "before"): a rejected request must leave it as it was; after an accepted one that
    changed it, the seed state is made again.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.before: Any = None
        self.restore()

    def send(
        self,
        route: str,
        body: bytes,
        *,
        chunks: int = 0,
        content_type: str | None = "application/json",
    ) -> None:
        """POST ``body`` as is, with a Content-Length or in ``chunks`` + 1 pieces
        (chunked), and check the answer."""
        headers = {"content-type": content_type} if content_type else {}
        step = max(1, len(body) // (chunks + 1))
        pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        content = iter(pieces) if chunks else body
        self.check(self.client.post(ROUTES[route], content=content, headers=headers))

    def check(self, response: httpx.Response) -> None:
        """Below 500; an error has the one shape; a rejected request changed nothing."""
        assert response.status_code < 500, response.text
        if response.status_code == 202:  # a batch became a job: what it writes comes later
            wait_for_job(self.client, response.json()["job"]["id"])
        after = self.snapshot()
        if response.status_code < 400:
            if after != self.before:
                self.restore()
            return
        error = response.json()["error"]
        check_error_body(error)
        assert isinstance(error["type"], str) and isinstance(error["message"], str)
        assert error["field"] is None or isinstance(error["field"], str)
        assert after == self.before, response.text
        self.before = after

    def snapshot(self) -> Any:
        """The store as a client sees it: the collections with their counts, the count
        of ``docs`` and a get of each known document."""
        client = self.client
        collections = client.get(BASE).json()["collections"]
        count = client.post(f"{BASE}/docs/count", json={}).json()
        known = [client.get(f"{BASE}/docs/documents/{doc['id']}").json() for doc in SEED_DOCS]
        return sorted((c["name"], c["documents"], c["chunks"]) for c in collections), count, known

    def restore(self) -> None:
        """The seed collections and documents, and nothing else. Every collection is
        made anew, so a later example never meets an index holding deleted chunks (see
        ``test_server_hardening``: a filter on a new metadata path after a delete)."""
        client = self.client
        for info in client.get(BASE).json()["collections"]:
            assert client.delete(f"{BASE}/{info['name']}").status_code == 200
        for body, docs in zip(SEED_COLLECTIONS, (SEED_DOCS, SEED_VECTORS), strict=True):
            assert client.post(BASE, json=body).status_code == 201
            written = client.post(f"{BASE}/{body['name']}/documents", json={"documents": docs})
            assert written.status_code == 200, written.text
        self.before = self.snapshot()


def nested_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------- strategies

SURROGATES = ["\ud800", "\udbff", "\udc80", "\udfff"]
texts = st.lists(st.one_of(st.characters(), st.sampled_from(SURROGATES)), max_size=12).map("".join)
"""Short strings, some holding lone surrogates (``json.dumps`` writes ``\\udxxx``)."""

huge_ints = st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 2**64])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()  # NaN and infinities too: json.dumps writes NaN, Infinity
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)

FRAGMENTS = [
    # raw JSON text for a hole in an otherwise valid body
    "true", "false", "null", "0", "-1", "1.5", "2.0",
    "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    "100000000000000000000000000000", "-100000000000000000000000000000",
    "18446744073709551616", "9223372036854775808",
    '""', '" "', r'"\ud800"', r'"a\udc80b"', r'"\udfff\ud800"', r'"\u0000"',
    r'{"\ud800": 1}', r'{"lang": "\udc80"}', r'["\ud800"]',
    "[]", "{}", "[[[]]]", '"' + "x" * 5000 + '"',
    '{"$and": []}', '{"$or": [{}]}', '{"$in": [1, "a", null]}', '{"$bogus": 1}',
    '{"lang": {"$in": []}}', '{"n": {"$gt": "a"}}', '{"n": {"$gt": 1e400}}',
    nested_object(30), nested_object(2000), nested_array(30), nested_array(2000),
]  # fmt: skip
HOLE = "\x00hole\x00"
TEMPLATES: dict[str, list[Any]] = {
    "search": [
        {"query": HOLE}, {"query": HOLE, "cache": False}, {"query": "refund", "k": HOLE},
        {"query": "refund", "candidates": HOLE}, {"query": "refund", "alpha": HOLE},
        {"query": "refund", "fusion": "rrf", "rrf_k": HOLE},
        {"query": "refund", "ef_search": HOLE}, {"query": "refund", "nprobe": HOLE},
        {"query": "refund", "mmr_lambda": HOLE}, {"query": "refund", "mode": HOLE},
        {"query": "refund", "filter": HOLE}, {"query": "refund", "filter": {"lang": HOLE}},
        {"query": "refund", "filter": {"n": {"$in": HOLE}}}, {"query": "refund", "cache": HOLE},
        {"query": "refund", "explain": HOLE, "highlight": True}, {"query": HOLE, "vector": HOLE},
        HOLE,
    ],
    "vector-search": [
        {"vector": HOLE, "mode": "dense"}, {"vector": [HOLE, 0, 0, 0], "mode": "dense"},
        {"vector": [1, 0, 0, 0], "mode": "dense", "filter": {"n": HOLE}},
    ],
    "count": [{"filter": HOLE}, {"filter": {"lang": HOLE}}, {"filter": {"$or": [HOLE]}}, HOLE],
    "delete": [
        {"ids": HOLE}, {"ids": ["nope", HOLE]}, {"filter": HOLE},
        {"filter": {"lang": HOLE}}, {"all": HOLE}, {"ids": ["nope"], "all": HOLE}, HOLE,
    ],
    "documents": [
        {"documents": HOLE}, {"documents": [HOLE]},
        {"documents": [{"id": HOLE, "text": "t"}]},
        {"documents": [{"id": "f", "text": HOLE}]},
        {"documents": [{"id": "f", "text": "t", "title": HOLE}]},
        {"documents": [{"id": "f", "text": "t", "source": HOLE}]},
        {"documents": [{"id": "f", "text": "t", "metadata": HOLE}]},
        {"documents": [{"id": "f", "text": "t", "metadata": {"k": HOLE}}]},
        {"documents": [{"id": "f", "text": "t", "vector": HOLE}]},
        {"documents": [{"id": "ok", "text": "fine"}, {"id": "f", "text": HOLE}]},
        HOLE,
    ],
    "collections": [
        {"name": HOLE}, {"name": "fz", "embedder": None, "dim": HOLE},
        {"name": "fz", "chunk_size": HOLE}, {"name": "fz", "chunk_overlap": HOLE},
        {"name": "fz", "embedder": HOLE}, {"name": "fz", "index": HOLE},
        {"name": "fz", "index": {"kind": "hnsw", "m": HOLE}},
        {"name": "fz", "index": {"kind": HOLE}}, HOLE,
    ],
}  # fmt: skip


def fill(template: Any, fragment: str) -> bytes:
    """The template as JSON text, with its hole replaced by the raw ``fragment``."""
    return json.dumps(template).replace(json.dumps(HOLE), fragment).encode()


holes = st.sampled_from(FRAGMENTS) | json_values.map(json.dumps)
shaped = st.sampled_from(sorted(TEMPLATES)).flatmap(
    lambda route: st.tuples(st.just(route), st.sampled_from(TEMPLATES[route]), holes)
)
chunking = st.sampled_from([0, 0, 1, 3])
"""How many extra pieces a body is sent in (0: with a Content-Length)."""


# ------------------------------------------------------------------------ tests


@fuzz(250)
@given(case=shaped, chunks=chunking)
def test_bodies_with_a_bad_value_in_one_place(
    watch: Watch, case: tuple[str, Any, str], chunks: int
) -> None:
    route, template, fragment = case
    watch.send(route, fill(template, fragment), chunks=chunks)


@fuzz(100)
@given(route=st.sampled_from(sorted(ROUTES)), value=json_values, chunks=chunking)
def test_arbitrary_json_bodies(watch: Watch, route: str, value: Any, chunks: int) -> None:
    watch.send(route, json.dumps(value).encode(), chunks=chunks)


@fuzz(60)
@given(
    route=st.sampled_from(sorted(ROUTES)),
    body=st.binary(max_size=64) | texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    chunks=chunking,
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
def test_bytes_that_are_not_json(
    watch: Watch, route: str, body: bytes, chunks: int, content_type: str | None
) -> None:
    watch.send(route, body, chunks=chunks, content_type=content_type)


@pytest.mark.parametrize("depth", [30, 2000])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_deep_nesting_in_every_place(watch: Watch, route: str, depth: int) -> None:
    """Every hole of every template, an object and an array ``depth`` deep, sent with a
    Content-Length and chunked in turn."""
    for i, template in enumerate(TEMPLATES[route]):
        for j, fragment in enumerate((nested_object(depth), nested_array(depth))):
            watch.send(route, fill(template, fragment), chunks=2 * ((i + j) % 2))


def test_schema_driven_bodies_on_the_seed_collections(server: Server, watch: Watch) -> None:
    """Bodies the OpenAPI schema allows, sent to collections that exist."""
    from schemathesis import openapi

    schema = openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": "Bearer k-admin"}
    collection = "/v1/tenants/{tenant}/collections/{collection}/"
    paths = {"/v1/tenants/{tenant}/collections"}
    paths |= {collection + verb for verb in ("search", "count", "delete", "documents")}
    seen = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "POST" or operation.path not in paths:
            continue
        seen.add(operation.path)

        @fuzz(10)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.path_parameters = {
                name: {"tenant": "acme", "collection": "docs"}[name]
                for name in case.path_parameters or {}
            }
            answered = case.call(base_url=server.url, headers=headers, timeout=TIMEOUT_S)
            watch.check(httpx.Response(answered.status_code, content=answered.content))

        run()
    assert seen == paths


def test_no_request_was_answered_5xx(server: Server, watch: Watch) -> None:
    lines = [line for line in server.log_lines() if line.get("msg") == "request"]
    answered = [(line["path"], line["status"]) for line in lines if line["path"] != "/readyz"]
    assert answered and not [(path, status) for path, status in answered if status >= 500]
    assert "unexpected error" not in server.logs()

"""Malformed input over real HTTP: every bad body gets a 4xx naming the field, never a
5xx or a hang, and a rejected request never changes the store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from server_helpers import Server, check_error_body, serving

from ragstore.errors import InvalidInput
from ragstore.server.auth import main as key_tool
from ragstore.server.errors import error_response
from ragstore.server.runtime import check_json_field
from ragstore.server.schemas import DeleteRequest, DocumentIn, SearchRequest

KEYS = {"k-admin": {"id": "admin", "role": "admin", "tenants": ["acme"]}}
BASE = "/v1/tenants/acme/collections"
DOCS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days with a receipt.",
     "title": "Refunds", "source": "policy.md", "metadata": {"lang": "en", "n": 1}},
    {"id": "versand", "text": "Der Versand dauert drei bis fünf Werktage.",
     "metadata": {"lang": "de", "n": 2}},
]  # fmt: skip
JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("hardening"), KEYS) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    """The admin of tenant acme, with a text collection ``docs`` holding DOCS and a
    vector collection ``vecs``."""
    with server.client("k-admin", timeout=30) as client:
        assert client.post(BASE, json={"name": "docs"}).status_code == 201
        assert client.post(f"{BASE}/docs/documents", json={"documents": DOCS}).status_code == 200
        vecs = {"name": "vecs", "embedder": None, "dim": 4}
        assert client.post(BASE, json=vecs).status_code == 201
        yield client


def snapshot(client: httpx.Client) -> Any:
    """What a rejected request must leave as it was: the collections and their
    counts, and every document of ``docs``."""
    collections = client.get(BASE).json()["collections"]
    documents = client.get(f"{BASE}/docs/documents", params={"limit": 1000}).json()
    count = client.post(f"{BASE}/docs/count", json={}).json()
    return sorted((c["name"], c["documents"], c["chunks"]) for c in collections), documents, count


def send(client: httpx.Client, path: str, body: str | bytes, chunked: bool) -> httpx.Response:
    """POST a raw JSON body, with a Content-Length (the fast lane's way in, for a
    search) or chunked (always the framework's)."""
    raw = body.encode() if isinstance(body, str) else body
    content: bytes | Iterator[bytes] = iter([raw[: len(raw) // 2], raw[len(raw) // 2 :]])
    return client.post(path, content=raw if not chunked else content, headers=JSON_TYPE)


def error_of(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The JSON error body, after checking the status."""
    assert response.status_code in statuses, response.text
    error: dict[str, Any] = response.json()["error"]
    check_error_body(error)
    return error


# ------------------------------------------------------ 4: lone surrogates

SURROGATES = [
    # (route under BASE, raw JSON body, the field the error must name)
    ("/docs/search", r'{"query": "refund \ud800"}', "query"),
    ("/docs/search", r'{"query": "\udc80", "cache": false}', "query"),
    ("/docs/search", r'{"query": "refund", "filter": {"\ud800": "en"}}', "filter"),
    ("/docs/search", r'{"query": "refund", "filter": {"lang": "\udc80"}}', "filter.lang"),
    ("/docs/documents", r'{"documents": [{"id": "new", "text": "ok"},'
                        r' {"id": "s", "text": "a \ud800"}]}', "documents[1].text"),
    ("/docs/documents", r'{"documents": [{"id": "s", "text": "t", "title": "\udc80"}]}',
     "documents[0].title"),
    ("/docs/documents", r'{"documents": [{"id": "s", "text": "t", "source": "\ud800"}]}',
     "documents[0].source"),
    ("/docs/documents", r'{"documents": [{"id": "s", "text": "t", "metadata": {"\udc80": 1}}]}',
     "documents[0].metadata"),
    ("/docs/documents", r'{"documents": [{"id": "s", "text": "t", "metadata": {"a": "\ud800"}}]}',
     "documents[0].metadata.a"),
    ("/docs/documents", r'{"documents": [{"id": "\ud800", "text": "t"}]}', "documents[0].id"),
    ("/docs/delete", r'{"ids": ["refunds", "\ud800"]}', "ids[1]"),
    ("/docs/count", r'{"filter": {"\udc80": "en"}}', "filter"),
]  # fmt: skip


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize(("path", "body", "field"), SURROGATES)
def test_lone_surrogates_are_422_naming_the_field(
    admin: httpx.Client, path: str, body: str, field: str, chunked: bool
) -> None:
    before = snapshot(admin)
    error = error_of(send(admin, BASE + path, body, chunked), 422)
    assert error["field"] == field and error["type"] == "invalid_input"
    assert "Unicode" in error["message"] or "unicode" in error["message"]
    assert snapshot(admin) == before


def test_the_request_models_refuse_lone_surrogates_themselves() -> None:
    """The edge does not rely on the store to refuse them."""
    cases: list[tuple[Any, dict[str, Any], tuple[Any, ...]]] = [
        (SearchRequest, {"query": "\ud800"}, ("query",)),
        (DocumentIn, {"id": "a", "text": "\udc80"}, ("text",)),
        (DocumentIn, {"id": "\udc80", "text": "a"}, ("id",)),
        (DocumentIn, {"id": "a", "text": "a", "title": "\ud800"}, ("title",)),
        (DocumentIn, {"id": "a", "text": "a", "source": "\ud800"}, ("source",)),
        (DeleteRequest, {"ids": ["a", "\ud800"]}, ("ids", 1)),
    ]
    for model, data, loc in cases:
        with pytest.raises(ValidationError) as caught:
            model.model_validate(data)
        assert caught.value.errors()[0]["loc"] == loc
    for value, field in [({"\ud800": 1}, "filter"), ({"a": ["\udc80"]}, "filter.a[0]")]:
        with pytest.raises(InvalidInput) as bad:
            check_json_field(value, 8, "filter")
        assert bad.value.field == field


def test_an_error_answer_survives_text_it_cannot_encode() -> None:
    response = error_response(422, "invalid_input", "bad \ud800 value", "documents[0].\udc80")
    assert json.loads(response.body) == {
        "error": {
            "type": "invalid_input",
            "message": "bad \\ud800 value",
            "field": "documents[0].\\udc80",
        }
    }


# ---------------------------------------------------------- 5: deep nesting


def nested(depth: int) -> str:
    """A JSON object ``depth`` levels deep."""
    return '{"a": ' * depth + "1" + "}" * depth


DEEP = [
    ("/docs/search", '{"query": "refund", "filter": ' + nested(1000) + "}"),
    ("/docs/search", '{"query": "refund", "k": 2, "cache": false, "x": ' + nested(1000) + "}"),
    ("/docs/search", "[" * 1000 + "]" * 1000),
    ("/docs/count", '{"filter": ' + nested(1000) + "}"),
    ("/docs/delete", '{"filter": ' + nested(1000) + "}"),
    ("/docs/documents", '{"documents": [{"id": "d", "text": "t", "metadata": '
                        + nested(1000) + "}]}"),
    ("", '{"name": "deep", "index": ' + nested(1000) + "}"),
]  # fmt: skip


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize(("path", "body"), DEEP, ids=lambda v: v[:40] if v else "collections")
def test_a_body_nested_a_thousand_deep_is_4xx(
    admin: httpx.Client, path: str, body: str, chunked: bool
) -> None:
    before = snapshot(admin)
    error = error_of(send(admin, BASE + path, body, chunked), 400, 422)
    assert error["field"] is not None
    assert snapshot(admin) == before


def test_a_body_nested_within_the_parser_but_past_the_limits_is_422(admin: httpx.Client) -> None:
    for depth in (30, 200):
        body = '{"query": "refund", "filter": ' + nested(depth) + "}"
        error = error_of(send(admin, f"{BASE}/docs/search", body, False), 422)
        assert error["field"] == "filter" and "nested deeper" in error["message"]


# ------------------------------------------------ 6: booleans are not integers

BOOLEANS = [
    ("/docs/search", {"query": "refund", "k": True}, "k"),
    ("/docs/search", {"query": "refund", "candidates": True}, "candidates"),
    ("/docs/search", {"query": "refund", "ef_search": True}, "ef_search"),
    ("/docs/search", {"query": "refund", "nprobe": True}, "nprobe"),
    ("/docs/search", {"query": "refund", "rrf_k": False}, "rrf_k"),
    ("/docs/search", {"query": "refund", "alpha": True}, "alpha"),
    ("/docs/search", {"vector": [1, True, 0, 0]}, "vector[1]"),
    ("", {"name": "b", "embedder": None, "dim": True}, "dim"),
    ("", {"name": "b", "chunk_size": True}, "chunk_size"),
    ("", {"name": "b", "chunk_overlap": False}, "chunk_overlap"),
    ("", {"name": "b", "index": {"kind": "ivf", "nlist": True}}, "index.nlist"),
    ("/docs/delete", {"all": 1}, "all"),
]


@pytest.mark.parametrize(("path", "body", "field"), BOOLEANS)
def test_booleans_are_not_integers(
    admin: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    before = snapshot(admin)
    assert error_of(admin.post(BASE + path, json=body), 422)["field"] == field
    assert snapshot(admin) == before


def test_floats_still_take_integers(admin: httpx.Client) -> None:
    search = {"query": "refund", "alpha": 1, "mmr_lambda": 0, "cache": False}
    assert admin.post(f"{BASE}/docs/search", json=search).status_code == 200
    found = admin.post(f"{BASE}/vecs/search", json={"vector": [1, 0, 0, 0]})
    assert found.status_code == 200, found.text


# --------------------------------------------- 13: a match-all delete says so


def test_an_empty_filter_never_deletes_everything(admin: httpx.Client) -> None:
    before = snapshot(admin)
    url = f"{BASE}/docs/delete"
    error = error_of(admin.post(url, json={"filter": {}}), 422)
    assert error["field"] == "filter" and '"all": true' in error["message"]
    for body, field in [
        ({}, "ids"),
        ({"all": False}, "ids"),
        ({"filter": {}, "all": True}, "all"),
        ({"ids": ["refunds"], "all": True}, "all"),
        ({"ids": ["refunds"], "filter": {"lang": "en"}}, "filter"),
    ]:
        assert error_of(admin.post(url, json=body), 422)["field"] == field, body
    assert snapshot(admin) == before


def test_all_true_deletes_every_document(admin: httpx.Client) -> None:
    assert admin.post(BASE, json={"name": "scratch"}).status_code == 201
    try:
        docs = {"documents": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]}
        assert admin.post(f"{BASE}/scratch/documents", json=docs).status_code == 200
        narrow = admin.post(f"{BASE}/scratch/delete", json={"ids": ["a"], "all": False})
        assert narrow.json() == {"deleted": 1}
        deleted = admin.post(f"{BASE}/scratch/delete", json={"all": True})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"deleted": 1}
        assert admin.post(f"{BASE}/scratch/count", json={}).json() == {"count": 0}
    finally:
        admin.delete(f"{BASE}/scratch")


# ---------------------------------------------------- beyond: bodies not JSON


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize(
    "body", [b"{not json", b'{"query": "\xff\xfe"}', b'{"query": "refund", "alpha": NaN}']
)
def test_a_body_that_is_not_json_is_4xx_naming_it(
    admin: httpx.Client, body: bytes, chunked: bool
) -> None:
    error = error_of(send(admin, f"{BASE}/docs/search", body, chunked), 400, 422)
    assert error["field"] in ("body", "alpha")


def test_a_body_field_named_query_is_named(admin: httpx.Client) -> None:
    """``query`` is also where a URL parameter lives: the body's ``query`` is still named."""
    error = error_of(admin.post(f"{BASE}/docs/search", json={"query": 5}), 422)
    assert error["field"] == "query"


# -------------------------------------------------- 14: the key-file tool


@pytest.mark.parametrize("tenant", ["ACME", "../x", "a.b", "", "-x", "a" * 33, "\udcff"])
def test_the_key_tool_refuses_tenants_no_route_can_match(
    tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        key_tool(["ops", "read", "acme", tenant])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert "tenant" in err


def test_the_key_tool_takes_route_tenants_and_the_wildcard(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_tool(["ops", "admin", "acme", "globex-2", "*"])
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[1])["tenants"] == ["acme", "globex-2", "*"]
    with pytest.raises(SystemExit) as exited:
        key_tool(["x" * 65, "read", "acme"])
    assert exited.value.code == 2 and "id" in capsys.readouterr().err


def test_the_key_tool_exits_2_with_one_line() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "ragstore.server.auth", "ops", "read", "ACME"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.count("\n") == 1 and "'ACME'" in ran.stderr, ran.stderr


# ------------------------------------------- beyond: found by tests/test_fuzz_http.py


def test_a_filter_on_a_new_metadata_path_after_a_delete_is_answered(admin: httpx.Client) -> None:
    assert admin.post(BASE, json={"name": "paths", "embedder": None, "dim": 4}).status_code == 201
    try:
        docs = [{"id": i, "vector": [1, 0, 0, 0], "metadata": {"x": 1, "y": 1}} for i in "abc"]
        url = f"{BASE}/paths/search"
        assert admin.post(f"{BASE}/paths/documents", json={"documents": docs}).status_code == 200
        assert admin.post(url, json={"vector": [1, 0, 0, 0], "filter": {"x": 1}}).status_code == 200
        assert admin.post(f"{BASE}/paths/delete", json={"ids": ["a"]}).json() == {"deleted": 1}
        found = admin.post(url, json={"vector": [1, 0, 0, 0], "filter": {"y": 1}})
        assert found.status_code == 200, found.text
        assert sorted(hit["doc_id"] for hit in found.json()["hits"]) == ["b", "c"]
    finally:
        admin.delete(f"{BASE}/paths")

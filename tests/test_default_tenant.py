"""The store's own collections (made by the CLI or the Python API, names without a dot)
are tenant ``default`` over HTTP, for admin keys only; tenants' collections stay apart.
A real store made by the real CLI, served by a real server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import RAGSTORE_BIN, SAMPLE_DOCS
from server_helpers import serving

KEYS: dict[str, dict[str, Any]] = {
    "k-ops": {"id": "ops", "role": "admin", "tenants": ["*"]},
    "k-default-admin": {"id": "default-admin", "role": "admin", "tenants": ["default"]},
    "k-default-write": {"id": "default-write", "role": "write", "tenants": ["default"]},
    "k-all-read": {"id": "all-read", "role": "read", "tenants": ["*"]},
    "k-acme-admin": {"id": "acme-admin", "role": "admin", "tenants": ["acme"]},
}
ROUTES = [
    ("GET", "/collections", None),
    ("GET", "/collections/default", None),
    ("POST", "/collections/default/search", {"query": "refund", "k": 1}),
    ("GET", "/collections/default/documents", None),
    ("POST", "/collections/default/count", {}),
]


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store the CLI made: collection ``default`` holds the sample documents."""
    root = tmp_path_factory.mktemp("default-tenant")
    made = subprocess.run(
        [RAGSTORE_BIN, "--store", str(root / "store"), "ingest", str(SAMPLE_DOCS)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return root


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_cli_collections_are_tenant_default_for_admins_only(
    server_root: Path, method: str, path: str, body: dict[str, Any] | None
) -> None:
    with serving(server_root, KEYS) as server:
        answers = {}
        for key in KEYS:
            with server.client(key) as client:
                answers[key] = client.request(method, "/v1/tenants/default" + path, json=body)
    for key in ("k-ops", "k-default-admin"):
        assert answers[key].status_code == 200, answers[key].text
    for key in ("k-default-write", "k-all-read", "k-acme-admin"):
        assert answers[key].status_code == 403, answers[key].text
    assert "admin-only" in answers["k-all-read"].json()["error"]["message"]


def test_the_default_tenant_sees_only_the_store_own_collections(server_root: Path) -> None:
    with serving(server_root, KEYS) as server, server.client("k-ops") as client:
        assert client.post("/v1/tenants/acme/collections", json={"name": "docs"}).status_code == 201
        listed = client.get("/v1/tenants/default/collections").json()["collections"]
        hits = client.post(
            "/v1/tenants/default/collections/default/search",
            json={"query": "how long do I have to return headphones", "k": 1},
        ).json()["hits"]
        acme = client.get("/v1/tenants/acme/collections").json()["collections"]
    assert [(c["tenant"], c["name"]) for c in listed] == [("default", "default")]
    assert hits and hits[0]["doc_id"]
    assert [(c["tenant"], c["name"]) for c in acme] == [("acme", "docs")]

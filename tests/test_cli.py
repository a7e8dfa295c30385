"""The ``ragstore`` command, run as a real process and in process with click's runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RAGSTORE_BIN, SAMPLE_DOCS

from ragstore.cli import cli

INGEST_KEYS = {
    "documents_added",
    "documents_updated",
    "documents_unchanged",
    "documents_deleted",
    "documents_skipped",
    "chunks_embedded",
    "seconds",
}


def run(store: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAGSTORE_PATH": str(store)}
    return subprocess.run(
        [RAGSTORE_BIN, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def invoke(store: str | Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--store", str(store), *args])
    return result.exit_code, result.output


@pytest.fixture
def ingested(store_location: str | Path) -> str | Path:
    code, _ = invoke(store_location, "ingest", str(SAMPLE_DOCS))
    assert code == 0
    return store_location


def test_readme_flow_as_real_processes(tmp_path: Path, store_location: str | Path) -> None:
    store = store_location
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)

    first = run(store, "ingest", str(docs), "--json")
    again = run(store, "ingest", str(docs), "--json")
    found = run(store, "query", "how do I turn on two-factor login?", "-k", "3", "--json")

    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert set(summary) >= INGEST_KEYS
    assert summary["documents_added"] == 12
    assert json.loads(again.stdout)["chunks_embedded"] == 0
    result = json.loads(found.stdout)
    assert set(result) == {"hits", "took_ms"}
    top = result["hits"][0]
    assert top["doc_id"] == "guides/two-factor.html"
    assert {"doc_id", "chunk_id", "score", "text", "source", "metadata"} <= set(top)


def test_query_with_filter(ingested: str | Path) -> None:
    code, output = invoke(
        ingested, "query", "support opening hours", "--filter", '{"lang": "de"}', "--json"
    )

    assert code == 0
    assert [hit["doc_id"] for hit in json.loads(output)["hits"]] == ["faq-2"]


@pytest.mark.parametrize(
    ("filter_json", "named"),
    [
        ('{"lang": {"$regex": "d"}}', "$regex"),
        ("{not json", "--filter"),
        ('["lang"]', "--filter"),
        ('{"year": {"$gt": [1]}}', "year"),
    ],
)
def test_invalid_filter_exits_2_naming_the_problem(
    ingested: str | Path, filter_json: str, named: str
) -> None:
    code, output = invoke(ingested, "query", "hours", "--filter", filter_json)

    assert code == 2
    assert named in output


def test_usage_errors_exit_2(ingested: str | Path, tmp_path: Path) -> None:
    assert invoke(ingested, "query")[0] == 2
    assert invoke(ingested, "query", "x", "-k", "many")[0] == 2
    assert invoke(ingested, "query", "x", "-k", "0")[0] == 2
    assert invoke(ingested, "ingest", str(tmp_path / "missing"))[0] == 2
    assert invoke(ingested, "delete")[0] == 2


def test_unknown_collection_exits_1(ingested: str | Path) -> None:
    code, output = invoke(ingested, "--collection", "nope", "query", "x")

    assert code == 1
    assert "no collection named 'nope'" in output


def test_collections_count_get_delete(ingested: str | Path) -> None:
    code, listing = invoke(ingested, "collections", "--json")
    [info] = json.loads(listing)
    assert code == 0
    assert (info["name"], info["documents"]) == ("default", 12)
    assert info["config"]["chunking"] == {"chunk_size": 256, "chunk_overlap": 32}
    assert info["config"]["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"

    assert invoke(ingested, "count", "--filter", '{"topic": "payments"}') == (0, "2\n")
    assert invoke(ingested, "count", "--filter", '{"price": {"$lt": 300}}') == (0, "1\n")
    code, got = invoke(ingested, "get", "faq-3")
    assert code == 0
    assert json.loads(got)["title"] == "Gift cards"
    assert invoke(ingested, "delete", "--filter", '{"topic": "payments"}', "--yes") == (
        0,
        "deleted 2 document(s)\n",
    )
    assert invoke(ingested, "count")[1] == "10\n"
    assert invoke(ingested, "get", "faq-3")[0] == 1


def test_every_command_has_help() -> None:
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help text"
        code, output = invoke(Path("unused"), name, "--help")
        assert code == 0
        assert "Usage:" in output


def test_serve_refuses_bad_limits_as_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path / "s"), "serve", "--limits", '{"max_batch": 0}']
    )
    assert result.exit_code == 2
    assert "max_batch" in result.output

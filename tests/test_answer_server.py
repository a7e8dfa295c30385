"""``POST .../answer`` on a real server (``ragstore serve`` in a subprocess) whose language
model is the OpenAI-compatible stand-in, a real HTTP server in this process: JSON and
Server-Sent Events answers, 4xx for bad bodies, the degraded answer, metrics and logs."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_standin import Fail, OpenAIStandIn
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import Server, check_error_body, write_keys

KEYS: dict[str, dict[str, Any]] = {
    "k-ops": {"id": "ops", "role": "admin", "tenants": ["*"]},
    "k-acme-admin": {"id": "acme-admin", "role": "admin", "tenants": ["acme"]},
    "k-acme-read": {"id": "acme-read", "role": "read", "tenants": ["acme"]},
    "k-globex-read": {"id": "globex-read", "role": "read", "tenants": ["globex"]},
}
DOCS = [
    {"id": "refunds", "text": "Refunds are accepted within 30 days of purchase with a receipt.",
     "metadata": {"topic": "returns"}},
    {"id": "headphones", "text": "Headphones can be returned within 14 days if unopened.",
     "metadata": {"topic": "returns"}},
    {"id": "shipping", "text": "Shipping takes three to five business days.",
     "metadata": {"topic": "shipping"}},
]  # fmt: skip
ANSWER = "/v1/tenants/acme/collections/docs/answer"
QUESTION = "how long do refunds take?"
MODEL = "standin-http"
SECRET = "sk-served-0123456789-SECRET"


@pytest.fixture(scope="module")
def standin() -> Iterator[OpenAIStandIn]:
    """One stand-in endpoint for the module's server, its key required."""
    with OpenAIStandIn() as server:
        yield server


@pytest.fixture
def llm(standin: OpenAIStandIn) -> OpenAIStandIn:
    """The stand-in, reset for one test."""
    standin.reset()
    standin.key = SECRET
    return standin


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, standin: OpenAIStandIn) -> Iterator[Server]:
    """A server whose language model is the stand-in (``RAGSTORE_LLM_*``), with the acme
    collection ``docs``."""
    root = tmp_path_factory.mktemp("answers")
    with pytest.MonkeyPatch.context() as env:
        settings = {"URL": standin.url, "MODEL": MODEL, "API_KEY": SECRET,
                    "MAX_ATTEMPTS": "2", "BACKOFF": "0.01", "BREAKER_FAILURES": "100",
                    "PRICES": json.dumps({MODEL: {"input": 1.0, "output": 4.0}})}  # fmt: skip
        for name, value in settings.items():
            env.setenv(f"RAGSTORE_LLM_{name}", value)
        running = Server(root / "store", root / "server.log", keys=write_keys(root / "k", KEYS))
    try:
        running.wait_ready()
        with running.client("k-acme-admin") as admin:
            assert admin.post("/v1/tenants/acme/collections", json={"name": "docs"}).is_success
            upsert = admin.post("/v1/tenants/acme/collections/docs/documents",
                                json={"documents": DOCS})  # fmt: skip
            assert upsert.status_code == 200, upsert.text
        yield running
    finally:
        assert running.terminate() in (0, -signal.SIGTERM), running.logs()


@pytest.fixture
def reader(server: Server) -> Iterator[httpx.Client]:
    with server.client("k-acme-read") as client:
        yield client


def events_of(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The Server-Sent Events of a streamed answer, as they arrived."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif not line and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
    return events


def test_a_read_key_gets_a_generated_answer_with_citations(
    reader: httpx.Client, llm: OpenAIStandIn
) -> None:
    llm.respond_with("Within 30 days [1], 14 for headphones [2][5].")
    got = reader.post(ANSWER, json={"question": QUESTION, "k": 3, "cache": False})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["mode"] == "generated" and body["model"] == MODEL and not body["degraded"]
    assert body["text"] == "Within 30 days [1], 14 for headphones [2]."
    assert body["dropped_citations"] == 1
    assert [c["doc_id"] for c in body["citations"]] == [h["doc_id"] for h in body["hits"][:2]]
    assert body["usage"]["prompt_tokens"] > 0 and body["cost_usd"] > 0
    assert set(body["timings_ms"]) == {"embed", "retrieve", "generate"}
    assert llm.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    again = reader.post(ANSWER, json={"question": QUESTION, "k": 3}).json()
    assert again["cached"] is None and len(llm.requests) == 2
    cached = reader.post(ANSWER, json={"question": QUESTION, "k": 3}).json()
    assert cached["cached"] == "exact" and cached["text"] == again["text"]
    assert len(llm.requests) == 2
    offline = reader.post(ANSWER, json={"question": QUESTION, "extractive": True}).json()
    assert offline["mode"] == "extractive" and "30 days" in offline["text"]


def test_the_answer_streams_as_server_sent_events(reader: httpx.Client, llm: OpenAIStandIn) -> None:
    llm.respond_with("Refunds are accepted within 30 days [1, 2].")
    body = {"question": QUESTION, "stream": True, "cache": False}
    with reader.stream("POST", ANSWER, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = events_of(response)
    names = [name for name, _ in events]
    assert names[0] == "hits" and names[-1] == "answer"
    assert set(names[1:-1]) == {"delta"} and len(names) > 4
    assert events[0][1]["hits"][0]["doc_id"] == "refunds" and events[0][1]["cached"] is None
    streamed = "".join(data["text"] for name, data in events if name == "delta")
    assert streamed == "Refunds are accepted within 30 days [1, 2]."
    final = events[-1][1]
    assert final["text"] == "Refunds are accepted within 30 days [1][2]."
    assert [c["marker"] for c in final["citations"]] == [1, 2] and llm.requests[-1].stream


def test_a_failing_model_gives_the_degraded_answer_never_a_500(
    reader: httpx.Client, llm: OpenAIStandIn
) -> None:
    llm.script(Fail(500), Fail(500))
    got = reader.post(ANSWER, json={"question": QUESTION})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["degraded"] and body["reason"] == "server_error"
    assert body["mode"] == "extractive" and "30 days" in body["text"]
    llm.script(Fail(503), Fail(503))
    with reader.stream("POST", ANSWER, json={"question": QUESTION, "stream": True}) as response:
        events = events_of(response)
    final = events[-1][1]
    assert events[-1][0] == "answer" and final["degraded"] and final["reason"] == "server_error"
    assert [data["text"] for name, data in events if name == "delta"] == [final["text"]]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "question"),
        ({"question": ""}, 422, "question"),
        ({"question": 5}, 422, "question"),
        ({"question": QUESTION, "k": 0}, 422, "k"),
        ({"question": QUESTION, "k": "3"}, 422, "k"),
        ({"question": QUESTION, "stream": "yes"}, 422, "stream"),
        ({"question": QUESTION, "filter": {"topic": {"$bad": 1}}}, 422, None),
        ({"question": QUESTION, "mode": "fuzzy"}, 422, "mode"),
        ({"question": QUESTION, "surprise": 1}, 422, "surprise"),
        ({"question": "x" * 3000}, 413, "question"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(
    reader: httpx.Client, body: dict[str, Any], status: int, field: str | None
) -> None:
    for streamed in (False, True):
        sent = body | {"stream": True} if streamed and "stream" not in body else body
        got = reader.post(ANSWER, json=sent)
        assert got.status_code == status, got.text
        assert got.headers["content-type"].startswith("application/json")
        error = got.json()["error"]
        check_error_body(error)
        if field is not None:
            assert error["field"] == field


TEXT = st.text(st.characters(blacklist_categories=("Cs",)))  # what JSON can carry
NUMBERS = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["question", "k", "filter", "mode", "min_score", "cache", "extractive", "stream", "x"]


@settings(max_examples=60, deadline=None, database=None)
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_no_body_is_answered_5xx(server: Server, field: str, value: Any) -> None:
    body = {"question": "refund window?", "extractive": True, field: value}
    with server.client("k-acme-read") as client:
        got = client.post(ANSWER, json=body)
        assert got.status_code < 500, (body, got.text)
        if got.status_code >= 400:
            check_error_body(got.json()["error"])


def test_keys_and_names_are_checked(server: Server) -> None:
    question = {"question": QUESTION, "stream": True}
    assert httpx.post(server.url + ANSWER, json=question).status_code == 401
    with server.client("k-globex-read") as other:
        assert other.post(ANSWER, json=question).status_code == 403
    with server.client("k-acme-read") as reader:
        missing = reader.post(ANSWER.replace("/docs/", "/nope/"), json=question)
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_metrics_and_logs_after_answers(
    server: Server, reader: httpx.Client, llm: OpenAIStandIn
) -> None:
    llm.script(Fail(500))  # one retry
    assert reader.post(ANSWER, json={"question": QUESTION, "cache": False}).status_code == 200
    with server.client("k-ops") as ops:
        text = ops.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("ragstore_answers_total", mode="generated", cached="no", degraded="false") >= 1
    assert value("ragstore_llm_tokens_total", model=MODEL, kind="prompt") > 0
    assert value("ragstore_llm_tokens_total", model=MODEL, kind="completion") > 0
    assert value("ragstore_llm_cost_usd_total", model=MODEL) > 0
    assert value("ragstore_llm_retries_total", model=MODEL, reason="5xx") >= 1
    assert value("ragstore_llm_attempt_duration_seconds_count", model=MODEL, outcome="ok") >= 1
    assert value("ragstore_llm_breaker_state", model=MODEL) == 0
    assert value("ragstore_answer_stage_duration_seconds_count", stage="generate") >= 1
    lines = server.logs().splitlines()
    assert lines and not [line for line in lines if SECRET in line]
    answered = [line for line in server.log_lines() if line.get("msg") == "answer"]
    assert answered and set(answered[-1]["timings_ms"]) == {"embed", "retrieve", "generate"}
    assert answered[-1]["collection"] == "acme.docs" and answered[-1]["request_id"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
